"""Viewport view/projection → OpenCV K, R, T (neural_human_addon.core.viewport_camera), checked against
`view3d_utils.location_3d_to_region_2d`'s math and, in camera view, against the scene camera conversion."""

from __future__ import annotations

import numpy as np
import pytest

from neural_human_addon.core.camera import (
    BlenderCameraSettings,
    CameraError,
    blender_to_pinhole,
    look_at_matrix_world,
    project,
    render_size,
)
from neural_human_addon.core.viewport_camera import (
    ORTHO_MESSAGE,
    ndc_depth,
    pinhole_to_projection,
    preview_size,
    project_to_region,
    viewport_to_pinhole,
)


def _frustum(left: float, right: float, bottom: float, top: float, near: float, far: float) -> np.ndarray:
    """Blender's perspective_m4 (BLI math_geom)."""
    p = np.zeros((4, 4))
    p[0, 0], p[0, 2] = 2 * near / (right - left), (right + left) / (right - left)
    p[1, 1], p[1, 2] = 2 * near / (top - bottom), (top + bottom) / (top - bottom)
    p[2, 2], p[2, 3] = -(far + near) / (far - near), -2 * far * near / (far - near)
    p[3, 2] = -1.0
    return p


def _camera_window_matrix(s: BlenderCameraSettings, near: float = 0.1, far: float = 100.0) -> np.ndarray:
    """The projection Blender builds for a camera (BKE_camera_params_compute_viewplane + perspective_m4),
    re-derived here independently of the module under test."""
    winx, winy = render_size(s)
    ycor = s.pixel_aspect_y / s.pixel_aspect_x
    fit = s.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if s.pixel_aspect_x * winx >= s.pixel_aspect_y * winy else "VERTICAL"
    sensor = s.sensor_height if s.sensor_fit == "VERTICAL" else s.sensor_width
    viewfac = winx if fit == "HORIZONTAL" else ycor * winy
    pixsize = sensor * near / s.lens / viewfac
    dx, dy = s.shift_x * viewfac, s.shift_y * viewfac
    xmin, xmax = -0.5 * winx + dx, 0.5 * winx + dx
    ymin, ymax = -0.5 * ycor * winy + dy, 0.5 * ycor * winy + dy
    return _frustum(xmin * pixsize, xmax * pixsize, ymin * pixsize, ymax * pixsize, near, far)


def _random_view(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    c2w = look_at_matrix_world(rng.uniform(-5, 5, 3) + [0, 0, 1], rng.uniform(-0.3, 0.3, 3), roll=rng.uniform(-1, 1))
    near = 0.05
    half_w = near * rng.uniform(0.2, 1.0)
    half_h = half_w * rng.uniform(0.4, 1.2)
    sx, sy = rng.uniform(-0.3, 0.3, 2) * near
    return np.linalg.inv(c2w), _frustum(-half_w + sx, half_w + sx, -half_h + sy, half_h + sy, near, 500.0)


def _region_to_opencv(xy: np.ndarray, region_w: int, region_h: int, w: int, h: int) -> np.ndarray:
    """Region pixels (origin bottom-left, pixel i spans [i, i+1]) → pixels of a w×h image stretched over the
    region (row 0 on top, integer pixel centres)."""
    return np.c_[xy[:, 0] / region_w * w - 0.5, (region_h - xy[:, 1]) / region_h * h - 0.5]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("scale", [1.0, 0.25, 0.5])
def test_points_land_where_blender_projects_them(seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    view, window = _random_view(rng)
    region_w, region_h = int(rng.integers(40, 1900)), int(rng.integers(30, 1100))
    w, h = preview_size(region_w, region_h, scale)
    cam = viewport_to_pinhole(view, window, w, h)
    pts = rng.uniform(-1, 1, (200, 3))
    expected = _region_to_opencv(project_to_region(pts, view, window, region_w, region_h), region_w, region_h, w, h)
    got, depth = project(pts, cam)
    seen = ~np.isnan(expected[:, 0])
    assert seen.sum() > 50
    np.testing.assert_allclose(got[seen], expected[seen], atol=1e-6 * max(w, h))
    # camera z-depth equals the view-space distance along the view axis
    np.testing.assert_allclose(depth, -(np.c_[pts, np.ones(len(pts))] @ view.T)[:, 2], atol=1e-9)


def test_region_centre_and_corners_closed_form() -> None:
    # symmetric frustum, 1:1 pixels: the principal point is the image centre (W/2 − ½ with integer centres)
    view = np.eye(4)
    window = _frustum(-0.1, 0.1, -0.075, 0.075, 0.1, 100)
    cam = viewport_to_pinhole(view, window, 40, 30)
    np.testing.assert_allclose(cam.K, [[20.0, 0, 19.5], [0, 20.0, 14.5], [0, 0, 1]])  # a·W/2 with a = 2n/(r−l) = 1
    np.testing.assert_allclose(cam.R, np.diag([1.0, -1.0, -1.0]))
    # the world point straight ahead projects to the image centre; up in the view is row 0's side
    px, _ = project(np.array([[0, 0, -2.0], [0, 0.5, -2.0]]), cam)
    np.testing.assert_allclose(px[0], [19.5, 14.5])
    assert px[1, 1] < 14.5


@pytest.mark.parametrize("seed", range(12))
def test_camera_view_gives_the_scene_cameras_numbers(seed: int) -> None:
    """In camera view Blender's view matrix is the camera's inverse world matrix and its projection the camera's;
    with the region at the render size the conversion must equal the scene camera conversion."""
    rng = np.random.default_rng(100 + seed)
    settings = BlenderCameraSettings(
        lens=float(rng.uniform(15, 120)), sensor_width=float(rng.uniform(10, 40)),
        sensor_height=float(rng.uniform(10, 40)), sensor_fit=str(rng.choice(["AUTO", "HORIZONTAL", "VERTICAL"])),
        shift_x=float(rng.uniform(-0.4, 0.4)), shift_y=float(rng.uniform(-0.4, 0.4)),
        resolution_x=int(rng.integers(16, 800)), resolution_y=int(rng.integers(16, 800)),
        pixel_aspect_x=float(rng.choice([1.0, 2.0])), pixel_aspect_y=float(rng.choice([1.0, 1.25])),
        matrix_world=look_at_matrix_world(rng.uniform(-4, 4, 3), rng.uniform(-0.5, 0.5, 3), roll=rng.uniform(-1, 1)))
    scene_cam = blender_to_pinhole(settings)
    view_cam = viewport_to_pinhole(np.linalg.inv(settings.matrix_world), _camera_window_matrix(settings),
                                   scene_cam.width, scene_cam.height)
    np.testing.assert_allclose(view_cam.K, scene_cam.K, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(view_cam.R, scene_cam.R, atol=1e-9)
    np.testing.assert_allclose(view_cam.T, scene_cam.T, atol=1e-9)


def test_orthographic_view_is_refused_with_a_switch_to_perspective_note() -> None:
    ortho = np.diag([0.2, 0.3, -0.01, 1.0])
    with pytest.raises(CameraError, match="switch to perspective") as err:
        viewport_to_pinhole(np.eye(4), ortho, 40, 30)
    assert str(err.value) == ORTHO_MESSAGE


@pytest.mark.parametrize("bad", [np.full((4, 4), np.nan), np.zeros((3, 3))])
def test_bad_matrices_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(CameraError):
        viewport_to_pinhole(np.eye(4), bad, 40, 30)


def test_preview_size_and_refusals() -> None:
    assert preview_size(1000, 600, 0.25) == (250, 150)
    assert preview_size(3, 2, 0.1) == (1, 1)
    with pytest.raises(CameraError):
        preview_size(0, 10, 1.0)
    with pytest.raises(CameraError):
        preview_size(10, 10, 0.0)


def test_projection_round_trip_and_depth() -> None:
    rng = np.random.default_rng(7)
    view, window = _random_view(rng)
    cam = viewport_to_pinhole(view, window, 64, 48)
    back = viewport_to_pinhole(view, pinhole_to_projection(cam, 0.05, 500.0), 64, 48)
    np.testing.assert_allclose(back.K, cam.K, atol=1e-9)
    # window depth of a point = what the depth buffer holds: (ndc_z + 1) / 2 of the projected point
    pts = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, -7.5]])
    clip = np.c_[pts, np.ones(2)] @ window.T
    expected = clip[:, 2] / clip[:, 3] * 0.5 + 0.5
    np.testing.assert_allclose(ndc_depth([1.0, 7.5], window), expected, atol=1e-12)
    assert ndc_depth([0.0], window)[0] == 1.0
