"""The preview's image step (neural_human_addon.core.preview_image): uploaded arrays and the reference of the draw
handler's compositing: depth from the server's z-depth against a depth buffer filled by the same projection."""

from __future__ import annotations

import numpy as np
import pytest

from neural_human_addon.core.camera import project
from neural_human_addon.core.preview_image import composite_reference, upload_arrays
from neural_human_addon.core.viewport_camera import viewport_to_pinhole

W, H = 16, 12
WINDOW = np.array([[2.0, 0, 0, 0], [0, 2.0 * W / H, 0, 0], [0, 0, -1.0002, -0.02], [0, 0, -1.0, 0]])


def _gl_window_depth(points_view: np.ndarray) -> np.ndarray:
    """What OpenGL writes into the depth buffer for view-space points: (clip.z / clip.w) / 2 + 1/2."""
    clip = np.c_[points_view, np.ones(len(points_view))] @ WINDOW.T
    return clip[:, 2] / clip[:, 3] * 0.5 + 0.5


def _actor(z: float) -> tuple[np.ndarray, np.ndarray]:
    """A preview frame: an opaque orange square in the middle at camera depth z (metres), straight alpha."""
    rgba = np.zeros((H, W, 4), np.float32)
    rgba[3:9, 4:12] = (1.0, 0.5, 0.0, 1.0)
    rgba[3:9, 12] = (1.0, 0.5, 0.0, 0.5)  # a half-transparent edge column
    depth = np.where(rgba[..., 3] > 0, z, 0.0)
    return rgba, depth


def _scene(z_left: float) -> tuple[np.ndarray, np.ndarray]:
    """A grey wall over the left half at camera depth z_left; the right half is empty (far, depth 1)."""
    rgb = np.zeros((H, W, 3))
    rgb[:, : W // 2] = 0.3
    depth = np.ones((H, W))
    depth[:, : W // 2] = _gl_window_depth(np.array([[0.0, 0.0, -z_left]]))[0]
    return rgb, depth


def test_an_object_in_front_hides_the_actor_and_the_actor_hides_what_is_behind() -> None:
    rgba, depth = _actor(3.0)
    up_rgba, up_depth = upload_arrays(rgba, depth, WINDOW)
    image_depth = up_depth[::-1]  # back to row 0 on top, like the scene arrays here
    front_rgb, front_depth = _scene(2.0)
    out = composite_reference(front_rgb, front_depth, rgba, image_depth)
    np.testing.assert_allclose(out[5, 5], 0.3)  # wall in front: the actor is hidden there
    np.testing.assert_allclose(out[5, 10], (1.0, 0.5, 0.0))  # no wall: the actor shows
    np.testing.assert_allclose(out[5, 12], (0.5, 0.25, 0.0))  # straight alpha 0.5 over black
    behind_rgb, behind_depth = _scene(4.0)
    out = composite_reference(behind_rgb, behind_depth, rgba, image_depth)
    np.testing.assert_allclose(out[5, 5], (1.0, 0.5, 0.0))  # the actor covers the wall behind it
    np.testing.assert_allclose(out[0, 0], 0.3)  # outside the actor the scene is untouched
    out = composite_reference(front_rgb, front_depth, rgba, image_depth, use_depth=False)
    np.testing.assert_allclose(out[5, 5], (1.0, 0.5, 0.0))  # alpha only: drawn over everything


def test_depth_of_the_preview_matches_the_depth_buffer_of_the_same_point() -> None:
    """A point the server renders at its camera z-depth gets the window depth OpenGL gives that point."""
    cam = viewport_to_pinhole(np.eye(4), WINDOW, W, H)
    point = np.array([[0.2, -0.1, -2.7]])  # view space = world here (identity view matrix)
    px, z = project(point, cam)
    rgba = np.zeros((H, W, 4), np.float32)
    depth = np.zeros((H, W))
    u, v = np.round(px[0]).astype(int)
    rgba[v, u, 3], depth[v, u] = 1.0, z[0]
    _, up_depth = upload_arrays(rgba, depth, WINDOW)
    assert up_depth[H - 1 - v, u] == pytest.approx(_gl_window_depth(point)[0], abs=1e-6)
    assert up_depth[0, 0] == 1.0


def test_upload_is_premultiplied_and_the_shader_divides_it_out() -> None:
    rgba, depth = _actor(3.0)
    up_rgba, _ = upload_arrays(rgba, depth, WINDOW)
    edge = up_rgba[H - 1 - 5, 12]
    np.testing.assert_allclose(edge, (0.5, 0.25, 0.0, 0.5))  # rgb·a
    np.testing.assert_allclose(edge[:3] / edge[3], rgba[5, 12, :3])  # what the shader blends: the straight colour


def test_upload_arrays_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="rgba"):
        upload_arrays(np.zeros((4, 4, 3)), np.zeros((4, 4)), WINDOW)
    with pytest.raises(ValueError):
        upload_arrays(np.zeros((4, 4, 4)), np.zeros((4, 5)), WINDOW)
