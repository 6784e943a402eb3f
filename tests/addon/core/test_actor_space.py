"""Actor space (pure numpy): Blender world <-> actor world through the actor root and the actor's up axis."""

from __future__ import annotations

import numpy as np
import pytest

from neural_human_addon.core.actor_space import (
    ActorSpaceError,
    actor_to_root,
    actor_to_world,
    camera_in_actor_space,
    points_to_actor,
    points_to_world,
    root_rigid_matrix,
    world_to_actor,
)
from neural_human_addon.core.camera import PinholeCamera, look_at_extrinsics, project
from neural_human_addon.core.rotations import axis_angle_to_matrix


def _rigid(rng: np.random.Generator) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = axis_angle_to_matrix(rng.normal(size=3))
    m[:3, 3] = rng.uniform(-5, 5, 3)
    return m


def _camera(location, target, up=(0.0, 0.0, 1.0)) -> PinholeCamera:
    R, T = look_at_extrinsics(location, target, up)
    K = np.array([[400.0, 0.0, 159.5], [0.0, 400.0, 119.5], [0.0, 0.0, 1.0]])
    return PinholeCamera(K=K, R=R, T=T, width=320, height=240)


def test_up_axes() -> None:
    np.testing.assert_array_equal(actor_to_root("z"), np.eye(4))
    y = actor_to_root("Y")
    # a Y-up actor's up (+Y) is the root's +Z, its forward (+Z) the root's -Y; a proper rotation
    np.testing.assert_allclose(y[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(y[:3, :3] @ [0, 0, 1], [0, -1, 0], atol=1e-15)
    assert np.isclose(np.linalg.det(y[:3, :3]), 1.0)
    with pytest.raises(ActorSpaceError, match="'z' or 'y'"):
        actor_to_root("x")


@pytest.mark.parametrize("up", ["z", "y"])
def test_world_to_actor_inverts_actor_to_world(up: str) -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        root = _rigid(rng)
        np.testing.assert_allclose(world_to_actor(root, up) @ actor_to_world(root, up), np.eye(4), atol=1e-12)
        pts = rng.normal(size=(7, 3))
        np.testing.assert_allclose(points_to_actor(points_to_world(pts, root, up), root, up), pts, atol=1e-12)
        # distances are kept: the actor frame is rigid
        w = points_to_world(pts, root, up)
        np.testing.assert_allclose(np.linalg.norm(w[1:] - w[0], axis=1), np.linalg.norm(pts[1:] - pts[0], axis=1))


def test_points_follow_the_root() -> None:
    # root at (1, 2, 3) turned 90° about Z: the actor's +X points along world +Y
    root = np.eye(4)
    root[:3, :3] = axis_angle_to_matrix(np.array([0.0, 0.0, np.pi / 2]))
    root[:3, 3] = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(points_to_world([[0.0, 0.0, 0.0]], root, "z"), [[1.0, 2.0, 3.0]], atol=1e-12)
    np.testing.assert_allclose(points_to_world([[1.0, 0.0, 0.0]], root, "z"), [[1.0, 3.0, 3.0]], atol=1e-12)
    # a Y-up actor: 1 m up (actor +Y) is 1 m up in Blender (+Z) whatever the root's yaw
    np.testing.assert_allclose(points_to_world([[0.0, 1.0, 0.0]], root, "y"), [[1.0, 2.0, 4.0]], atol=1e-12)
    np.testing.assert_allclose(points_to_world([[0.0, 0.0, 1.0]], root, "y"), [[2.0, 2.0, 3.0]], atol=1e-12)
    assert points_to_world(np.zeros((2, 5, 3)), root, "z").shape == (2, 5, 3)
    with pytest.raises(ActorSpaceError, match=r"\(\.\.\., 3\)"):
        points_to_world(np.zeros((4, 2)), root, "z")


@pytest.mark.parametrize("up", ["z", "y"])
def test_camera_in_actor_space_projects_like_the_world_camera(up: str) -> None:
    rng = np.random.default_rng(2)
    cam = _camera([0.5, -4.0, 1.6], [0.0, 0.0, 1.0])
    for _ in range(10):
        root = _rigid(rng)
        root[:3, 3] *= 0.2  # keep the body in front of the camera
        actor_pts = rng.normal(scale=0.4, size=(30, 3)) + ([0, 0, 1] if up == "z" else [0, 1, 0])
        world_pts = points_to_world(actor_pts, root, up)
        cam_a = camera_in_actor_space(cam, root, up)
        px_w, d_w = project(world_pts, cam)
        px_a, d_a = project(actor_pts, cam_a)
        np.testing.assert_allclose(px_a, px_w, atol=1e-9, equal_nan=True)
        np.testing.assert_allclose(d_a, d_w, atol=1e-12)
        np.testing.assert_allclose(cam_a.center, points_to_actor(cam.center, root, up), atol=1e-12)
        np.testing.assert_allclose(cam_a.R @ cam_a.R.T, np.eye(3), atol=1e-12)
        assert (cam_a.width, cam_a.height) == (cam.width, cam.height)
        np.testing.assert_array_equal(cam_a.K, cam.K)
    # a root at the identity leaves a Z-up actor's camera as it is
    same = camera_in_actor_space(cam, np.eye(4), "z")
    np.testing.assert_allclose(same.R, cam.R)
    np.testing.assert_allclose(same.T, cam.T)
    wire = same.to_wire()
    assert set(wire) == {"K", "R", "T", "width", "height"}


@pytest.mark.parametrize(
    "scale",
    [(2.0, 2.0, 2.0), (1.0, 1.0, 0.5), (1.01, 1.0, 1.0)],
)
def test_scaled_root_is_refused(scale) -> None:
    root = np.diag([*scale, 1.0])
    root[:3, :3] = axis_angle_to_matrix(np.array([0.3, 0.2, 0.1])) @ root[:3, :3]
    with pytest.raises(ActorSpaceError, match="apply scale on the actor root"):
        world_to_actor(root, "z")


def test_shear_mirror_and_garbage_are_refused() -> None:
    shear = np.eye(4)
    shear[0, 1] = 0.2
    shear[:3, :3] /= np.linalg.norm(shear[:3, :3], axis=0)  # unit columns, but not orthogonal
    with pytest.raises(ActorSpaceError, match="sheared"):
        root_rigid_matrix(shear)
    with pytest.raises(ActorSpaceError, match="mirrored"):
        root_rigid_matrix(np.diag([1.0, -1.0, 1.0, 1.0]))
    bad = np.eye(4)
    bad[1, 1] = np.nan
    with pytest.raises(ActorSpaceError, match="NaN"):
        root_rigid_matrix(bad)
    with pytest.raises(ActorSpaceError, match="4x4"):
        root_rigid_matrix(np.eye(3))


def test_float32_round_off_is_accepted_and_cleaned() -> None:
    rng = np.random.default_rng(4)
    root = _rigid(rng).astype(np.float32)  # Blender stores matrices in float32
    root[:3, :3] *= np.float32(1.0 + 3e-6)
    clean = root_rigid_matrix(root)
    np.testing.assert_allclose(clean[:3, :3] @ clean[:3, :3].T, np.eye(3), atol=1e-14)
    np.testing.assert_allclose(clean, root, atol=1e-5)
