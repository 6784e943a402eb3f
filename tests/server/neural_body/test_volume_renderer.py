"""raw2outputs, sampling and the reference image renderer (as the original's if_clight_renderer.py)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from server.neural_body.rays import get_rays, near_far
from server.neural_body.sparse_input import prepare_sparse_input
from server.neural_body.volume_renderer import raw2outputs, render_image, render_rays, sample_depths
from tests.server.neural_body.nb_fixtures import ellipsoid_body, look_at, make_semi_transparent, pinhole, random_network


def test_raw2outputs_by_hand() -> None:
    z = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    ray_d = torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64)  # ‖ray_d‖ = 2: z steps of 1 are 2 m
    raw = torch.tensor([[[0.0, 1.0, -1.0, 0.5], [2.0, 0.0, 0.0, -3.0], [-2.0, 0.5, 1.0, 1.0]]], dtype=torch.float64)
    out = raw2outputs(raw, z, ray_d)
    a0 = 1 - math.exp(-0.5 * 2)  # relu(0.5) · 2 m
    a1 = 0.0  # relu(−3) = 0
    a2 = 1 - math.exp(-1.0 * 1e10 * 2)  # last interval 1e10 · ‖ray_d‖ → 1
    t1 = 1 - a0 + 1e-10
    t2 = t1 * (1 - a1 + 1e-10)
    w = [a0, a1 * t1, a2 * t2]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    rgb = [sum(w[i] * sig(raw[0, i, c].item()) for i in range(3)) for c in range(3)]
    torch.testing.assert_close(out.weights[0], torch.tensor(w, dtype=torch.float64))
    torch.testing.assert_close(out.rgb_map[0], torch.tensor(rgb, dtype=torch.float64))
    torch.testing.assert_close(out.acc_map[0], torch.tensor(sum(w), dtype=torch.float64))
    torch.testing.assert_close(out.depth_map[0], torch.tensor(w[0] * 1 + w[2] * 3, dtype=torch.float64))
    assert out["rgb_map"] is out.rgb_map
    white = raw2outputs(raw, z, ray_d, white_bkgd=True)
    torch.testing.assert_close(white.rgb_map, out.rgb_map + (1 - out.acc_map[:, None]))
    # The compositing sums leave out the last sample (its 1e10 interval makes any density there opaque).
    torch.testing.assert_close(out.opacity_map[0], torch.tensor(w[0] + w[1], dtype=torch.float64))
    torch.testing.assert_close(out.inner_depth_map[0], torch.tensor(w[0] * 1, dtype=torch.float64))
    inner = [w[0] * sig(raw[0, 0, c].item()) + w[1] * sig(raw[0, 1, c].item()) for c in range(3)]
    torch.testing.assert_close(out.inner_rgb_map[0], torch.tensor(inner, dtype=torch.float64))


def test_fog_at_the_far_end_is_opaque_in_acc_but_not_in_the_compositing_opacity(scene) -> None:
    """A faint density everywhere: the original's acc_map is 1 on every box ray (the last interval is 1e10 long),
    while the opacity of the box's own volume stays faint, so the server's alpha does not show a black box."""
    network = copy.deepcopy(scene["network"])
    with torch.no_grad():
        network.alpha_fc.weight.zero_()
        network.alpha_fc.bias.fill_(0.01)  # density 0.01 /m everywhere
    out = render_image(network, scene["verts"], scene["Rh"], scene["Th"], 0, scene["K"], scene["R"], scene["T"],
                       20, 24)
    box = out.mask_at_box
    np.testing.assert_allclose(out.alpha[box], 1.0, atol=1e-5)
    assert out.opacity[box].max() < 0.05 and out.opacity[box].min() > 0
    assert np.all(out.opacity[~box] == 0) and np.all(out.surface_depth[~box] == 0)
    sparse = prepare_sparse_input(scene["verts"], scene["Rh"], scene["Th"])
    near, far, mask = near_far(sparse.world_bounds, *get_rays(24, 20, scene["K"], scene["R"], scene["T"]))
    depth = out.surface_depth[box]  # expected z of a uniform fog: between near and far
    assert np.all(depth > near.numpy()[mask.numpy()]) and np.all(depth < far.numpy()[mask.numpy()])
    rgb = out.straight_rgb[box]  # straight colour of the fog = the colour head's sigmoid output, not darkened
    assert rgb.min() > 0.05 and np.all(rgb <= 1)


def test_sample_depths() -> None:
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.5])
    z = sample_depths(near, far, 5)
    torch.testing.assert_close(z[0], torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))
    torch.testing.assert_close(z[:, 0], near)
    torch.testing.assert_close(z[:, -1], far)
    g = torch.Generator().manual_seed(0)
    jittered = sample_depths(near, far, 5, perturb=True, generator=g)
    mids = 0.5 * (z[:, 1:] + z[:, :-1])
    lower = torch.cat([z[:, :1], mids], 1)
    upper = torch.cat([mids, z[:, -1:]], 1)
    assert bool(((jittered >= lower) & (jittered <= upper)).all())
    assert not torch.equal(jittered, z)


@pytest.fixture(scope="module")
def scene():
    verts = ellipsoid_body(250, seed=2)
    R, T = look_at([2.2, -0.6, 1.3], [0.1, -0.2, 1.0])
    return {"verts": verts, "Rh": np.array([0.0, 0.0, 0.4]), "Th": np.array([0.02, -0.01, 0.0]), "R": R, "T": T,
            "K": pinhole(20, 24, 45.0), "network": random_network(250, 3, seed=4)}


def test_render_rays_chunking_and_perturb_only_in_training(scene) -> None:
    network = scene["network"]
    sparse = prepare_sparse_input(scene["verts"], scene["Rh"], scene["Th"])
    ray_o, ray_d = get_rays(24, 20, scene["K"], scene["R"], scene["T"])
    near, far, mask = near_far(sparse.world_bounds, ray_o, ray_d)
    o, d, n, f = ray_o[mask][:40], ray_d[mask][:40], near[mask][:40], far[mask][:40]
    with torch.no_grad():
        volumes = network.encode_sparse_voxels(sparse)
        whole = render_rays(network, volumes, sparse, o, d, n, f, 1, n_samples=16)
        chunked = render_rays(network, volumes, sparse, o, d, n, f, 1, n_samples=16, chunk=7)
        eval_perturb = render_rays(network, volumes, sparse, o, d, n, f, 1, n_samples=16, perturb=True)
    for name in ("rgb_map", "acc_map", "depth_map"):
        torch.testing.assert_close(chunked[name], whole[name])
        torch.testing.assert_close(eval_perturb[name], whole[name])  # perturb ignored outside training
    assert whole.rgb_map.shape == (40, 3) and whole.weights.shape == (40, 16)
    network.train()
    try:
        torch.manual_seed(0)
        trained = render_rays(network, volumes, sparse, o, d, n, f, 1, n_samples=16, perturb=True)
        trained.rgb_map.sum().backward()  # differentiable for training
        assert network.latent.weight.grad is not None and network.fc_0.weight.grad is not None
    finally:
        network.zero_grad(set_to_none=True)
        network.eval()
    assert not torch.allclose(trained.depth_map.detach(), whole.depth_map)


def test_render_image_outputs(scene) -> None:
    network = copy.deepcopy(scene["network"])
    make_semi_transparent(network, prepare_sparse_input(scene["verts"], scene["Rh"], scene["Th"]))
    out = render_image(network, scene["verts"], scene["Rh"], scene["Th"], 1, scene["K"], scene["R"], scene["T"],
                       20, 24)
    assert out.rgb.shape == (24, 20, 3) and out.alpha.shape == out.depth.shape == out.mask_at_box.shape == (24, 20)
    assert all(np.isfinite(a).all() for a in (out.rgb, out.alpha, out.depth))
    assert out.alpha.min() >= 0 and out.alpha.max() <= 1 + 1e-5
    assert 0 < out.mask_at_box.sum() < out.mask_at_box.size
    assert np.all(out.alpha[~out.mask_at_box] == 0) and np.all(out.rgb[~out.mask_at_box] == 0)
    sparse = prepare_sparse_input(scene["verts"], scene["Rh"], scene["Th"])
    near, far, mask = near_far(sparse.world_bounds, *get_rays(24, 20, scene["K"], scene["R"], scene["T"]))
    np.testing.assert_array_equal(mask.numpy(), out.mask_at_box)
    hit = out.alpha > 1e-3
    assert hit.sum() > 10 and np.sum((out.alpha > 0.05) & (out.alpha < 0.95)) >= 3
    mean_depth = out.depth[hit] / out.alpha[hit]  # Σ w·z / Σ w lies between near and far
    assert np.all(mean_depth >= near.numpy()[hit] - 1e-4) and np.all(mean_depth <= far.numpy()[hit] + 1e-4)
    assert np.all((out.rgb >= 0) & (out.rgb <= out.alpha[..., None] + 1e-5))


def test_opaque_body_renders_depth_at_the_box_entry(scene) -> None:
    network = copy.deepcopy(scene["network"])
    network.alpha_fc.bias.data.fill_(1e5)  # every sample opaque: all weight on the first sample, z = near
    out = render_image(network, scene["verts"], scene["Rh"], scene["Th"], 0, scene["K"], scene["R"], scene["T"],
                       20, 24)
    sparse = prepare_sparse_input(scene["verts"], scene["Rh"], scene["Th"])
    near, _, mask = near_far(sparse.world_bounds, *get_rays(24, 20, scene["K"], scene["R"], scene["T"]))
    np.testing.assert_allclose(out.alpha[out.mask_at_box], 1.0, atol=1e-5)
    np.testing.assert_allclose(out.depth[out.mask_at_box], near.numpy()[mask.numpy()], rtol=1e-5)


def test_render_image_rejects_a_bad_latent_index(scene) -> None:
    with pytest.raises(ValueError, match=r"latent_index must be in \[0, 2\]"):
        render_image(scene["network"], scene["verts"], scene["Rh"], scene["Th"], 3, scene["K"], scene["R"],
                     scene["T"], 20, 24)
