"""Rays at integer pixel coordinates and near/far as camera z-depth (as the original's if_nerf_data_utils.py)."""

from __future__ import annotations

import numpy as np
import torch

from server.neural_body.rays import get_rays, near_far
from tests.server.neural_body.nb_fixtures import look_at


def test_rays_go_through_integer_pixel_coordinates() -> None:
    K = np.array([[100.0, 0, 8.0], [0, 120.0, 6.0], [0, 0, 1]])
    ray_o, ray_d = get_rays(12, 16, K, np.eye(3), np.zeros(3))
    assert ray_o.shape == ray_d.shape == (12, 16, 3)
    torch.testing.assert_close(ray_d[6, 8], torch.tensor([0.0, 0.0, 1.0]))  # pixel (u=8, v=6) is the principal point
    torch.testing.assert_close(ray_d[0, 0], torch.tensor([-8 / 100, -6 / 120, 1.0]))  # no +0.5
    torch.testing.assert_close(ray_d[11, 15], torch.tensor([7 / 100, 5 / 120, 1.0]))


def test_ray_origin_and_unnormalised_direction_reach_camera_z_1() -> None:
    R, T = look_at([3.0, -2.0, 1.5], [0.0, 0.0, 1.0])
    K = np.array([[50.0, 0, 10], [0, 50.0, 7], [0, 0, 1]])
    ray_o, ray_d = get_rays(15, 21, K, R, T)
    np.testing.assert_allclose(ray_o[0, 0].numpy(), -R.T @ T, atol=1e-5)
    np.testing.assert_allclose(ray_o[0, 0].numpy(), [3.0, -2.0, 1.5], atol=1e-5)
    cam = (ray_o + ray_d).double().numpy() @ R.T + T  # the tip of each ray_d in camera space
    np.testing.assert_allclose(cam[..., 2], 1.0, atol=1e-5)
    pix = cam @ K.T
    u, v = np.meshgrid(np.arange(21), np.arange(15))
    np.testing.assert_allclose(pix[..., 0] / pix[..., 2], u, atol=1e-4)
    np.testing.assert_allclose(pix[..., 1] / pix[..., 2], v, atol=1e-4)


def test_near_far_are_camera_z_depths_of_box_faces() -> None:
    # camera at the origin looking down +z; box spans z in [4, 6]: every ray that enters through the front face
    # and leaves through the back face has near = 4, far = 6 whatever its angle
    box = torch.tensor([[-1.0, -1.0, 4.0], [1.0, 1.0, 6.0]])
    K = np.array([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]])
    ray_o, ray_d = get_rays(11, 11, K, np.eye(3), np.zeros(3))
    near, far, mask = near_far(box, ray_o, ray_d)
    inner = slice(4, 7)  # |x/z|, |y/z| <= 0.1: enters through the front face, leaves through the back face
    assert bool(mask[inner, inner].all())
    torch.testing.assert_close(near[inner, inner], torch.full((3, 3), 4.0))
    torch.testing.assert_close(far[inner, inner], torch.full((3, 3), 6.0))
    # pixel (6, 5): x/z = 0.2 → leaves through the side x = 1 at z-depth 5
    torch.testing.assert_close((near[5, 7], far[5, 7]), (torch.tensor(4.0), torch.tensor(5.0)))
    # corner pixels (|x/z| = 0.5): at z >= 4 they are at |x| >= 2, outside the box
    assert not bool(mask[0, 0]) and not bool(mask[10, 10])


def test_near_far_match_entry_exit_points_for_a_general_camera() -> None:
    rng = np.random.default_rng(0)
    box = np.array([[-0.3, -0.2, 0.2], [0.4, 0.3, 1.9]], np.float32)
    R, T = look_at([2.0, 1.5, 1.4], [0.0, 0.0, 1.0])
    K = np.array([[30.0, 0, 15], [0, 30.0, 15], [0, 0, 1]])
    ray_o, ray_d = get_rays(31, 31, K, R, T)
    near, far, mask = near_far(torch.from_numpy(box), ray_o, ray_d)
    assert 0 < int(mask.sum()) < mask.numel()
    o, d = ray_o[mask].double().numpy(), ray_d[mask].double().numpy()
    for depth in (near[mask].double().numpy(), far[mask].double().numpy()):
        points = o + d * depth[:, None]
        np.testing.assert_allclose((points @ R.T + T)[:, 2], depth, atol=1e-4)  # camera z-depth
        on_face = np.isclose(points, box[0], atol=1e-3) | np.isclose(points, box[1], atol=1e-3)
        assert np.all(on_face.any(axis=1))
        assert np.all((points >= box[0] - 1e-3) & (points <= box[1] + 1e-3))
    # rays outside the mask miss the box: sample points along them stay outside
    miss_o, miss_d = ray_o[~mask].double().numpy(), ray_d[~mask].double().numpy()
    ts = np.linspace(0.0, 10.0, 400)
    pts = miss_o[:, None] + miss_d[:, None] * ts[None, :, None]
    inside = np.all((pts > box[0] + 1e-3) & (pts < box[1] - 1e-3), axis=-1)
    assert not inside.any()
    assert float(near[~mask].abs().max()) == 0.0 and float(far[~mask].abs().max()) == 0.0
    assert rng is not None


def test_axis_aligned_rays_are_finite_and_only_the_box_in_front_counts() -> None:
    box = torch.tensor([[-1.0, -1.0, 2.0], [1.0, 1.0, 3.0]])
    ray_o = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.5]])
    ray_d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    near, far, mask = near_far(box, ray_o, ray_d)
    assert mask.tolist() == [True, False, True]  # the box behind the camera is a miss
    assert bool(torch.isfinite(near).all() and torch.isfinite(far).all())
    torch.testing.assert_close((near[0], far[0]), (torch.tensor(2.0), torch.tensor(3.0)))
    torch.testing.assert_close((near[2], far[2]), (torch.tensor(0.0), torch.tensor(0.5)))  # camera inside the box
