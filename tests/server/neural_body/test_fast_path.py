"""The fast path against the reference path: occupancy, fast renderer, coarse-to-fine meshes, occupancy sampling.

Agreement is measured on trained weights (the bundled demo actor, and the same weights after a round trip through
the original checkpoint layout and ``import-checkpoint``): a random network has density everywhere and says nothing
about a real actor. Thresholds are DESIGN §5's: PSNR ≥ 40 dB over premultiplied RGB, max alpha difference ≤ 0.02.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from neural_human_addon.core.camera import look_at_extrinsics
from server.neural_body.fast_renderer import FastRenderer
from server.neural_body.launch_count import count_launches
from server.neural_body.occupancy import body_occupancy, refine_level
from server.neural_body.sparse_input import prepare_sparse_input
from server.neural_body.volume_renderer import (
    ImageRender,
    TrainingMarch,
    raw2outputs,
    render_image,
    render_rays,
    sample_depths,
)
from tests.server.neural_body.nb_fixtures import ellipsoid_body, random_network

DEMO_ACTOR = Path(__file__).resolve().parents[3] / "server" / "actors" / "demo"
W, H = 40, 56


def premultiplied_psnr(a: ImageRender, b: ImageRender) -> float:
    pa = a.straight_rgb * a.opacity[..., None]
    pb = b.straight_rgb * b.opacity[..., None]
    mse = float(np.mean((pa - pb) ** 2))
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def assert_agree(ref: ImageRender, fast: ImageRender) -> None:
    assert ref.opacity.max() > 0.9, "the body must be in view"
    assert premultiplied_psnr(ref, fast) >= 40.0
    assert np.abs(ref.opacity - fast.opacity).max() <= 0.02
    # the evaluation outputs (the original's rgb_map/acc_map with the 1e10 last interval) agree too
    assert -10 * math.log10(max(float(np.mean((ref.rgb - fast.rgb) ** 2)), 1e-20)) >= 40.0
    assert np.abs(ref.alpha - fast.alpha).max() <= 0.02
    solid = (ref.opacity > 0.5) & (fast.opacity > 0.5)
    assert solid.sum() > 50
    assert np.abs(ref.surface_depth - fast.surface_depth)[solid].max() < 0.01  # metres


@pytest.fixture(scope="module")
def demo_actor():
    from server.neural_body.actor import load_actor

    return load_actor(DEMO_ACTOR)


def posed_body(actor, frame: int, bend: bool = False):
    """Vertices, Rh, Th of a captured frame of the actor, or a new pose (arms and a knee moved) when ``bend``."""
    from server.body.model import load_body_model

    m = actor.motion
    poses = m.poses[frame].copy()
    if bend:  # a pose the actor never saw: shoulders raised, one knee bent
        poses[16 * 3 + 2] -= 0.9
        poses[17 * 3 + 2] += 0.9
        poses[4 * 3] += 1.0
    body = {"poses": poses, "shapes": m.shapes[frame], "Rh": m.Rh[frame], "Th": m.Th[frame]}
    verts = load_body_model(None).pose(body).vertices[0].numpy()
    return verts, m.Rh[frame], m.Th[frame]


def camera_around(verts: np.ndarray, azimuth: float, elevation: float = 0.3):
    centre = (verts.min(0) + verts.max(0)) / 2
    eye = centre + 3.0 * np.array([math.cos(azimuth), math.sin(azimuth), elevation])
    R, T = look_at_extrinsics(eye, centre)
    f = 0.85 * H * 3.0 / float(np.ptp(verts[:, 2]))
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])
    return K, R, T


def render_both(network, verts, rh, th, latent: int, azimuth: float,
                fast: FastRenderer | None = None) -> tuple[ImageRender, ImageRender, FastRenderer]:
    K, R, T = camera_around(verts, azimuth)
    ref = render_image(network, verts, rh, th, latent, K, R, T, W, H)
    fast = fast or FastRenderer()
    out = render_image(network, verts, rh, th, latent, K, R, T, W, H, renderer=fast)
    return ref, out, fast


def render_fast(network, verts, rh, th, latent: int, azimuth: float, fast: FastRenderer) -> ImageRender:
    K, R, T = camera_around(verts, azimuth)
    return render_image(network, verts, rh, th, latent, K, R, T, W, H, renderer=fast)


# ---------------------------------------------------------------------------------------------------- occupancy


def test_occupancy_holds_the_body_its_margin_and_interior_only():
    verts = ellipsoid_body(2000)
    sparse = prepare_sparse_input(verts, np.zeros(3), np.zeros(3))
    occ = body_occupancy(sparse, margin=0.03)
    smpl = sparse.world_to_smpl(torch.from_numpy(verts))
    assert bool(occ.contains(smpl).all())
    centre = smpl.mean(dim=0)
    outward = (smpl - centre) / torch.linalg.norm(smpl - centre, dim=1, keepdim=True)
    assert bool(occ.contains(smpl + 0.029 * outward).all())  # within the margin
    # points farther from every vertex than the margin plus the cells' quantisation are empty
    from scipy.spatial import cKDTree

    probes = centre + torch.rand(20000, 3, dtype=torch.float32) * 1.2 - 0.6
    distance, _ = cKDTree(smpl.numpy()).query(probes.numpy())
    outside = (((probes - torch.tensor([0.1, -0.2, 1.0])) / torch.tensor([0.15, 0.1, 0.35])) ** 2).sum(1) > 1
    far_away = torch.from_numpy(distance > 0.03 + 2 * math.sqrt(3) * occ.cell_size + 0.005) & outside
    assert int(far_away.sum()) > 1000 and not bool(occ.contains(probes[far_away]).any())
    assert 0.02 < occ.fraction < 0.9
    assert bool(occ.contains(centre[None])[0])  # the interior is kept (see-through actors)
    assert not bool(occ.contains(centre[None] + 5.0)[0])  # outside the grid
    moved = prepare_sparse_input(verts + 0.4, np.zeros(3), np.full(3, 0.4))
    shifted = occ.anchored_at(moved)
    assert bool(shifted.contains(moved.world_to_smpl(torch.from_numpy(verts + 0.4))).all())
    with pytest.raises(ValueError, match="margin"):
        body_occupancy(sparse, margin=-1.0)


def test_refine_level_keeps_the_cells_near_density_coarse_to_fine():
    verts = ellipsoid_body(2000)
    sparse = prepare_sparse_input(verts, np.zeros(3), np.zeros(3))
    occ = body_occupancy(sparse, margin=0.05)
    centre, radius = sparse.world_to_smpl(torch.from_numpy(verts)).mean(dim=0), 0.08
    queried = []

    def density(pts: torch.Tensor) -> torch.Tensor:  # a ball of density inside the body
        queried.append(pts.shape[0])
        return radius - torch.linalg.norm(pts - centre, dim=1)

    coarse = refine_level(occ, density, 2)
    refined = refine_level(coarse, density, 1)
    assert (coarse.level, refined.level) == (1, 2) and coarse.cell_size == occ.cell_size
    assert refined.cell_size == occ.cell_size / 2 and refined.probes == sum(queried)
    assert queried == [occ.next_level_probes, coarse.next_level_probes]
    assert queried[0] == int(occ.grid.sum()) and queried[1] < queried[0] * 8
    inside = centre + (torch.rand(5000, 3) * 2 - 1) * radius
    inside = inside[torch.linalg.norm(inside - centre, dim=1) < radius]
    assert bool(refined.contains(inside).all())
    # nothing farther than one fine cell (plus the cells' diagonals) from the ball, nothing outside the occupancy
    probes = centre + (torch.rand(20000, 3) * 2 - 1) * 0.5
    far = torch.linalg.norm(probes - centre, dim=1) > radius + (1 + 2 * math.sqrt(3)) * refined.cell_size
    assert int(far.sum()) > 1000 and not bool(refined.contains(probes[far]).any())
    assert not bool((refined.contains(probes) & ~occ.contains(probes)).any())
    assert not bool(refine_level(occ, lambda p: -torch.ones(p.shape[0]), 2).grid.any())
    # the level's cells are the positive probes grown by the dilation (scipy's definition), within the occupancy
    cells, centres = occ.cell_centres()
    positive = np.zeros(tuple(occ.grid.shape), bool)
    positive[tuple(cells[density(centres) > 0].T.numpy())] = True
    expected = ndimage.binary_dilation(positive, np.ones((3, 3, 3), bool), iterations=2) & occ.grid.numpy()
    assert np.array_equal(coarse.grid.numpy(), expected)
    _, count = count_launches(lambda: refine_level(coarse, density, 1))
    assert count.syncs == 1 and count.host_tensors == 0  # the probes' count; the decision stays on the device
    with pytest.raises(ValueError, match="dilation"):
        refine_level(occ, density, -1)


@pytest.mark.slow
def test_refined_occupancy_keeps_every_sample_with_density_on_the_demo_actor(demo_actor):
    """Along every ray of a new view of a new pose, the samples the refined occupancy drops have no density."""
    from server.neural_body.rays import get_rays, near_far

    verts, rh, th = posed_body(demo_actor, 50, bend=True)
    sparse = prepare_sparse_input(verts, rh, th)
    K, R, T = camera_around(verts, 2.2)
    renderer = FastRenderer()
    with torch.no_grad():
        tables = renderer.features(demo_actor.network, sparse)
        occ = renderer.occupancy(demo_actor.network, sparse)
        refined = renderer.refined_occupancy(demo_actor.network, sparse, occ, tables)
        ray_o, ray_d = get_rays(H, W, K, R, T)
        near, far, mask = near_far(sparse.world_bounds, ray_o, ray_d)
        z = sample_depths(near[mask], far[mask], 64)
        pts = sparse.world_to_smpl(ray_o[mask][:, None] + ray_d[mask][:, None] * z[..., None]).reshape(-1, 3)
        pts = pts[occ.contains(pts)]
        sigma, _ = renderer._density(demo_actor.network, tables, sparse, pts, keep_trunk=False)
    kept = refined.contains(pts)
    assert int((sigma > 0).sum()) > 1000
    assert not bool(((sigma > 0) & ~kept).any())
    assert float(kept.float().mean()) < 0.6  # most of the body occupancy's samples are skipped


# ---------------------------------------------------------------------------------------------------- renderer


def test_fused_colour_head_is_the_two_layers_values_and_gradients():
    network = random_network(300, 3)
    net = torch.randn(50, 256)
    wpts, view = torch.randn(50, 3), torch.nn.functional.normalize(torch.randn(50, 3), dim=1)
    weight, bias = network.feature_latent_layer(2)
    fused = torch.nn.functional.linear(net, weight, bias)
    features = torch.nn.functional.linear(net, network.feature_fc.weight[..., 0], network.feature_fc.bias)
    latent = network.latent.weight[2].expand(50, -1)
    plain = torch.nn.functional.linear(torch.cat([features, latent], 1), network.latent_fc.weight[..., 0],
                                       network.latent_fc.bias)
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-4)
    probe = torch.randn(50, 256)
    params = [network.feature_fc.weight, network.latent_fc.weight, network.latent.weight, network.feature_fc.bias]
    for got, expected in zip(torch.autograd.grad((fused * probe).sum(), params),
                             torch.autograd.grad((plain * probe).sum(), params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        colour = FastRenderer()._colour(network, net, wpts, view, 2)
        expected = torch.sigmoid(network.color_head(net, wpts, view, 2))
    torch.testing.assert_close(colour, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_runs_under_autocast_and_agrees(demo_actor, precision):
    """The GPU precisions run the point network under autocast; CPU autocast takes the same code paths (the fused
    and in-place layers must accept its dtypes), so they are checked here too, against the fp32 fast path."""
    verts, rh, th = posed_body(demo_actor, 20)
    full = render_fast(demo_actor.network, verts, rh, th, 20, -1.3, FastRenderer())
    reduced = render_fast(demo_actor.network, verts, rh, th, 20, -1.3, FastRenderer(precision=precision))
    assert_agree(full, reduced)


@pytest.mark.slow
def test_compiled_point_network_renders_what_the_eager_one_does_for_every_pose_and_size(demo_actor):
    """``FastRenderer(compile=True)``: the point network through torch.compile (dynamic shapes; the inductor's CPU
    code here, Triton on a GPU) gives the eager image, and one compilation serves new poses and image sizes."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    # every refinement level (its probes are batches of their own layout) and the colour head's kept rows
    compiled = FastRenderer(compile=True, refine_min_samples_per_probe=0)
    eager = FastRenderer(refine_min_samples_per_probe=0)
    graphs = []
    for frame, bend, azimuth in ((20, False, -1.3), (50, True, 2.2)):
        verts, rh, th = posed_body(demo_actor, frame, bend)
        ref, fast, _ = render_both(demo_actor.network, verts, rh, th, 20, azimuth, compiled)
        assert_agree(ref, fast)
        plain = render_fast(demo_actor.network, verts, rh, th, 20, azimuth, eager)
        assert premultiplied_psnr(plain, fast) >= 90.0
        assert np.abs(plain.opacity - fast.opacity).max() <= 1e-4
        graphs.append(counters["stats"]["unique_graphs"])
    assert 2 <= graphs[0] <= 3 and graphs[1] == graphs[0]  # trunk and colour compiled once, not for a new pose


@pytest.mark.slow
def test_compiling_ahead_on_a_random_network_serves_the_actors_frames_without_compiling_again(demo_actor):
    """What ``serve --compile`` does before it listens (``RenderSettings.compile_point_network``): the compiled code
    built on a random network of the demo body's size serves a trained actor's frames (no new graph)."""
    from torch._dynamo.utils import counters

    from server.neural_body.render_settings import RenderSettings

    torch._dynamo.reset()
    counters.clear()
    assert RenderSettings().compile_point_network("cpu") == 0.0  # nothing to do without compile
    settings = RenderSettings(compile=True)
    assert settings.compile_point_network("cpu") > 0
    built = counters["stats"]["unique_graphs"]
    assert built >= 2
    verts, rh, th = posed_body(demo_actor, 50, bend=True)
    fast = render_fast(demo_actor.network, verts, rh, th, 50, 2.2, settings.image_renderer())
    assert fast.opacity.max() > 0.9
    assert counters["stats"]["unique_graphs"] == built


def test_compiled_point_network_falls_back_to_eager_where_it_cannot_build(recwarn):
    from server.neural_body.fast_renderer import _CompiledOrEager

    def broken_backend(graph, inputs):
        raise RuntimeError("no C++ compiler")

    def affine(x: torch.Tensor) -> torch.Tensor:
        return 2 * x + 1

    torch._dynamo.reset()
    fn = _CompiledOrEager(affine)
    fn.compiled = torch.compile(affine, backend=broken_backend, dynamic=True)
    x = torch.arange(4.0)
    torch.testing.assert_close(fn(x), affine(x))
    assert fn.compiled is None  # eager from then on
    assert any("torch.compile cannot build" in str(w.message) for w in recwarn)
    torch.testing.assert_close(fn(x + 1), affine(x + 1))


@pytest.mark.slow
@pytest.mark.parametrize(("frame", "bend", "azimuth"), [(20, False, -1.3), (50, True, 2.2)],
                         ids=["captured-pose-novel-view", "novel-pose"])
def test_fast_renderer_agrees_with_reference_on_the_demo_actor(demo_actor, frame, bend, azimuth):
    verts, rh, th = posed_body(demo_actor, frame, bend)
    ref, fast, renderer = render_both(demo_actor.network, verts, rh, th, min(frame, 67), azimuth)
    assert_agree(ref, fast)
    stats = renderer.last_stats
    assert stats["occupied_rays"] < stats["box_rays"]  # rays that miss the body never reached the network
    assert stats["density_points"] < 0.5 * stats["box_rays"] * 64
    assert stats["probe_points"] == 0  # this small image does not pay for refining the occupancy
    # the occupancy refined by density (what larger images get)
    refined = FastRenderer(refine_min_samples_per_probe=0.0)
    assert_agree(ref, render_fast(demo_actor.network, verts, rh, th, min(frame, 67), azimuth, refined))
    assert refined.last_stats["probe_points"] > 0
    assert refined.last_stats["density_points"] < 0.7 * stats["density_points"]


@pytest.mark.slow
def test_gpu_march_schedule_agrees_and_reads_back_a_bounded_number_of_times(demo_actor):
    """A GPU's schedule (one pass over every sample of a ray, large batches: config.march_segment / point_chunk /
    ray_chunk for "cuda") on this CPU: the same image as the reference, and a number of operations and read-backs
    that does not grow with the point batches, where the CPU schedule's does (launch_count, the same on any device)."""
    from server.neural_body.config import march_segment, point_chunk, ray_chunk

    assert march_segment("cuda") == 64 and march_segment("cpu") == 8
    verts, rh, th = posed_body(demo_actor, 50, bend=True)
    gpu = FastRenderer(segment=march_segment("cuda"), chunk_points=point_chunk("cuda"), chunk_rays=ray_chunk("cuda"),
                       refine_min_samples_per_probe=0)
    ref, fast, _ = render_both(demo_actor.network, verts, rh, th, 50, 2.2, gpu)
    assert_agree(ref, fast)
    one_pass = render_fast(demo_actor.network, verts, rh, th, 50, 2.2, gpu)
    np.testing.assert_array_equal(one_pass.rgb, fast.rgb)  # deterministic
    _, gpu_count = count_launches(lambda: render_fast(demo_actor.network, verts, rh, th, 50, 2.2, gpu))
    cpu = FastRenderer(refine_min_samples_per_probe=0)
    _, cpu_count = count_launches(lambda: render_fast(demo_actor.network, verts, rh, th, 50, 2.2, cpu))
    assert gpu.last_stats["density_points"] > cpu.last_stats["density_points"]  # no stop at the surface
    assert gpu_count.syncs <= 30, gpu_count.by_op.most_common(10)
    assert cpu_count.syncs >= gpu_count.syncs + 7  # at least one read-back per further segment
    assert gpu_count.ops < 0.5 * cpu_count.ops
    # host data for the frame's inputs (camera, body, its occupancy grid): none per level, segment or batch
    assert gpu_count.host_tensors <= cpu_count.host_tensors <= 11, cpu_count.by_op["aten::lift_fresh"]


@pytest.mark.slow
def test_fast_renderer_agrees_on_an_imported_checkpoint(demo_actor, tmp_path):
    """The demo actor's weights written in the original layout (spconv 1.x) and imported back."""
    from server.neural_body.actor import load_actor
    from server.neural_body.checkpoint_import import import_checkpoint
    from tests.server.neural_body.test_checkpoint_import import original_checkpoint

    path = tmp_path / "latest.pth"
    torch.save(original_checkpoint(demo_actor.network), path)
    import_checkpoint(path, tmp_path / "imported", body_model="demo")
    imported = load_actor(tmp_path / "imported")
    verts, rh, th = posed_body(demo_actor, 33, bend=True)
    ref, fast, _ = render_both(imported.network, verts, rh, th, 0, 0.4)
    assert_agree(ref, fast)
    eager = FastRenderer(refine_min_samples_per_probe=0)
    assert_agree(ref, render_fast(imported.network, verts, rh, th, 0, 0.4, eager))


def test_occupancy_sampler_is_the_box_sampler_with_zero_density_outside():
    """Training with the occupancy: the samples outside it are empty, and gradients reach the network only
    through the samples inside it. Marching every kept sample (``TrainingMarch(0, 0)``) is exactly the box sampler
    with the network zeroed outside; marching with stops (rays stop when hidden, colours only where they count)
    evaluates fewer points and differs by no more than what it skipped could add."""
    from server.neural_body.rays import get_rays, near_far
    from tests.server.neural_body.nb_fixtures import look_at, pinhole

    verts = ellipsoid_body(400)
    sparse = prepare_sparse_input(verts, np.zeros(3), np.zeros(3))
    network = random_network(400, 1).train()
    with torch.no_grad():
        network.alpha_fc.bias.fill_(100.0)  # opaque inside the occupancy: rays become hidden within it
    R, T = look_at(np.array([0.1, -2.5, 1.0]), np.array([0.1, -0.2, 1.0]))
    o, d = get_rays(12, 10, pinhole(10, 12, 20.0), R, T)
    near, far, mask = near_far(sparse.world_bounds, o, d)
    o, d, near, far = o[mask], d[mask], near[mask], far[mask]
    occ = body_occupancy(sparse, margin=0.02)
    volumes = network.encode_sparse_voxels(sparse)
    torch.manual_seed(3)
    z = sample_depths(near, far, 16, perturb=True)
    pts = o[:, None] + d[:, None] * z[..., None]
    inside = occ.contains(sparse.world_to_smpl(pts))
    assert 0 < int(inside.sum()) < inside.numel()
    view = (d / torch.linalg.norm(d, dim=-1, keepdim=True))[:, None].expand_as(pts)
    raw = network.calculate_density_color(pts.reshape(-1, 3), view.reshape(-1, 3), volumes, sparse, 0)
    expected = raw2outputs(raw.reshape(-1, 16, 4) * inside[..., None], z, d)
    expected_grad = torch.autograd.grad(expected.rgb_map.sum(), network.fc_0.weight, retain_graph=True)[0]

    points = []
    trunk_at = network.trunk_at

    def counted(grid, vols):
        points.append(grid.shape[0])
        return trunk_at(grid, vols)

    network.trunk_at = counted
    outputs = {}
    for name, march in (("every", TrainingMarch(0.0, 0.0)), ("stopping", TrainingMarch(segment=2))):
        points.clear()
        torch.manual_seed(3)  # the same stratified jitter
        out = render_rays(network, volumes, sparse, o, d, near, far, 0, n_samples=16, perturb=True, occupancy=occ,
                          march=march)
        grad = torch.autograd.grad(out.rgb_map.sum(), network.fc_0.weight, retain_graph=True)[0]
        outputs[name] = (out, grad, sum(points))
    out, grad, evaluated = outputs["every"]
    assert evaluated == int(inside.sum())
    torch.testing.assert_close(out.rgb_map, expected.rgb_map)
    torch.testing.assert_close(out.acc_map, expected.acc_map)
    torch.testing.assert_close(grad, expected_grad)
    assert float(grad.abs().sum()) > 0

    out, grad, evaluated = outputs["stopping"]
    assert evaluated < int(inside.sum())  # hidden samples were skipped
    bound = TrainingMarch().stop_transmittance + 16 * TrainingMarch().min_weight
    assert float((out.rgb_map - expected.rgb_map).detach().abs().max()) <= bound
    assert float((out.acc_map - expected.acc_map).detach().abs().max()) <= bound
    cosine = F.cosine_similarity(grad.flatten(), expected_grad.flatten(), dim=0)
    assert float(cosine) > 0.999


def test_emptiness_term_is_the_opacity_of_the_evaluated_samples_outside_the_occupancy():
    """The occupancy sampler's emptiness term (``train.outside_loss``): ``outside_alpha`` sums the opacities of the
    outside samples the step evaluated (the outside share), equal to the box sampler's α there; the loss adds it per
    ray and over the share, and its gradient lowers the density (the network learns the space it skips is empty)."""
    from server.neural_body.rays import get_rays, near_far
    from server.neural_body.train import render_loss_module
    from server.neural_body.volume_renderer import RayNoise, sample_intervals
    from tests.server.neural_body.nb_fixtures import look_at, pinhole

    verts = ellipsoid_body(400)
    sparse = prepare_sparse_input(verts, np.zeros(3), np.zeros(3))
    network = random_network(400, 1).train()
    R, T = look_at(np.array([0.1, -2.5, 1.0]), np.array([0.1, -0.2, 1.0]))
    o, d = get_rays(12, 10, pinhole(10, 12, 20.0), R, T)
    near, far, mask = near_far(sparse.world_bounds, o, d)
    o, d, near, far = o[mask], d[mask], near[mask], far[mask]
    occ = body_occupancy(sparse, margin=0.02)
    share = 0.3
    noise = RayNoise.draw(o.shape[0], 16, torch.Generator().manual_seed(5), outside=True)
    z = sample_depths(near, far, 16, perturb=True, uniforms=noise.jitter)
    pts = o[:, None] + d[:, None] * z[..., None]
    outside = ~occ.contains(sparse.world_to_smpl(pts)) & (noise.outside < share)
    assert int(outside.sum()) > 0
    volumes = network.encode_sparse_voxels(sparse)
    view = (d / torch.linalg.norm(d, dim=-1, keepdim=True))[:, None].expand_as(pts)
    raw = network.calculate_density_color(pts.reshape(-1, 3), view.reshape(-1, 3), volumes, sparse, 0)
    alpha = 1.0 - torch.exp(-F.relu(raw.reshape(-1, 16, 4)[..., 3]) * sample_intervals(z, d))
    expected = float((alpha * outside).sum().detach())
    assert expected > 0  # a random network has density everywhere

    out = render_rays(network, volumes, sparse, o, d, near, far, 0, n_samples=16, perturb=True, occupancy=occ,
                      outside_share=share, noise=noise, march=TrainingMarch(0.0, 0.0), outside_alpha=True)
    assert float(out.outside_alpha.detach()) == pytest.approx(expected, rel=1e-4)
    (bias_grad,) = torch.autograd.grad(out.outside_alpha, network.alpha_fc.bias)
    assert float(bias_grad.sum()) > 0  # descending it lowers the density outside

    plain = render_rays(network, volumes, sparse, o, d, near, far, 0, n_samples=16, perturb=True, occupancy=occ,
                        outside_share=share, noise=noise, march=TrainingMarch(0.0, 0.0))
    assert plain.outside_alpha is None  # not summed unless asked for (the term is off by default)
    torch.testing.assert_close(plain.rgb_map, out.rgb_map)

    rgb = torch.zeros(o.shape[0], 3)
    losses = []
    for weight in (0.0, 2.0):
        module = render_loss_module(network, 16, outside_share=share, outside_loss=weight)
        loss, colour = module(sparse, o, d, near, far, 0, rgb, occupancy=occ, noise=noise)
        losses.append((float(loss), float(colour)))
    (plain, colour0), (with_term, colour2) = losses
    assert plain == pytest.approx(colour0) and colour2 == pytest.approx(colour0)
    assert with_term - plain == pytest.approx(2.0 * expected / (o.shape[0] * share), rel=1e-3)


def test_training_march_backpropagates_only_through_samples_with_density(demo_actor):
    """On the trained demo actor most occupied samples have no density; the training march recomputes with autograd
    only the ones that have some, and the loss and every parameter's gradient are those of one pass over all."""
    from server.neural_body.feature_tables import FeatureTables
    from server.neural_body.rays import get_rays, near_far

    network = demo_actor.network
    verts, rh, th = posed_body(demo_actor, 5)
    sparse = prepare_sparse_input(verts, rh, th)
    occ = body_occupancy(sparse)
    K, R, T = camera_around(verts, 0.8)
    o, d = get_rays(64, 64, K, R, T)
    near, far, mask = near_far(sparse.world_bounds, o, d)
    o, d, near, far = o[mask], d[mask], near[mask], far[mask]
    params = [p for p in network.parameters() if p.requires_grad]
    rows = {True: 0, False: 0}
    trunk_at = network.trunk_at

    def counted(grid, vols):
        rows[torch.is_grad_enabled()] += grid.shape[0]
        return trunk_at(grid, vols)

    network.trunk_at = counted
    results = {}
    network.train()
    try:
        for name, march in (("one pass", TrainingMarch(recompute_below=0.0)), ("recompute", TrainingMarch())):
            rows.update({True: 0, False: 0})
            volumes = FeatureTables.from_levels(network.encode_sparse_levels(sparse))
            torch.manual_seed(11)  # the same jitter and outside samples
            out = render_rays(network, volumes, sparse, o, d, near, far, 0, perturb=True, occupancy=occ,
                              outside_share=0.05, march=march)
            loss = (out.rgb_map - 0.5).square().mean() + out.acc_map.mean()
            results[name] = (float(loss.detach()), torch.autograd.grad(loss, params), dict(rows))
    finally:
        network.eval()
        del network.trunk_at
    (loss, grads, one), (loss2, grads2, two) = results["one pass"], results["recompute"]
    assert one[False] == 0 and two[False] > 0  # the recompute ran
    assert two[True] < 0.6 * one[True]  # the backward covers far fewer samples
    assert loss2 == pytest.approx(loss, rel=1e-5)
    for want, got in zip(grads, grads2, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- meshes


def surface_samples(vertices: np.ndarray, faces: np.ndarray, n: int) -> np.ndarray:
    """Points on every triangle at the barycentric grid of step 1/n (the vertices and edges included)."""
    steps = [(i / n, j / n) for i in range(n + 1) for j in range(n + 1 - i)]
    tri = vertices[faces].astype(np.float64)  # (M,3,3)
    return np.concatenate([tri[:, 0] + a * (tri[:, 1] - tri[:, 0]) + b * (tri[:, 2] - tri[:, 0]) for a, b in steps])



@pytest.mark.slow
def test_coarse_to_fine_mesh_is_the_dense_mesh(demo_actor):
    """Same grid, same iso-level: the inside sets agree (IoU ≥ 0.99) and every vertex lies within half a voxel of
    the dense mesh's surface. (1 cm, two levels: 2 cm then 1 cm, so that the dense reference stays affordable on a
    CPU; the raised shoulders put thin arms away from the body, which a too coarse first grid would lose.)"""
    from scipy.spatial import cKDTree

    from server.neural_body.batchnorm_mode import batch_statistics
    from server.neural_body.mesh import THRESHOLD, extract_mesh, extract_mesh_from_density
    from server.neural_body.mesh_coarse_to_fine import density_levels, extract_mesh_coarse_to_fine, levels_for

    assert (levels_for(0.005), levels_for(0.01), levels_for(0.02), levels_for(0.05)) == (3, 2, 1, 1)
    network = demo_actor.network
    verts, rh, th = posed_body(demo_actor, 10, bend=True)
    sparse = prepare_sparse_input(verts, rh, th)
    voxel = 0.01
    dense = extract_mesh(network, sparse, 10, voxel_size=voxel, colors=False)
    fast = extract_mesh_coarse_to_fine(network, sparse, 10, voxel_size=voxel, colors=True)
    assert len(dense.faces) > 1000 and fast.colors is not None and len(fast.colors) == len(fast.vertices)
    dist, _ = cKDTree(surface_samples(dense.vertices, dense.faces, 8)).query(fast.vertices)
    assert dist.max() <= 0.5 * voxel  # (up to the samples' spacing, about a tenth of a voxel)
    # the inside sets on the grid
    occ = body_occupancy(sparse)
    with torch.no_grad(), batch_statistics(network):
        volumes = network.encode_sparse_voxels(sparse)

        def density(points):
            return network.calculate_density(points, volumes, sparse)[:, 0]

        def inside(points):
            return occ.contains(sparse.world_to_smpl(points))

        box = sparse.world_bounds.numpy()
        levels, _, evaluated = density_levels(density, inside, box, voxel_size=voxel)
        levels = levels.numpy()
        captured = {}

        def dense_density(points):
            values = density(torch.from_numpy(points)).numpy()
            captured.setdefault("parts", []).append(values)
            return values

        extract_mesh_from_density(dense_density, box, voxel_size=voxel)
    full = np.concatenate(captured["parts"]).reshape(levels.shape) > THRESHOLD
    mine = levels > THRESHOLD
    iou = (full & mine).sum() / (full | mine).sum()
    assert iou >= 0.99
    assert evaluated < 0.5 * full.size
    assert fast.network_points == evaluated  # the mesher reports the queries it took
