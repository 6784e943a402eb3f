"""Pure camera conversion (neural_human_addon.core.camera): closed-form cases, round trips, refusals."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from neural_human_addon.core.camera import (
    BlenderCameraSettings,
    CameraError,
    PinholeCamera,
    blender_to_pinhole,
    look_at_matrix_world,
    pinhole_to_blender,
    project,
    render_size,
)


def _random_settings(rng: np.random.Generator) -> BlenderCameraSettings:
    location = rng.uniform(-4, 4, 3)
    scale = np.diag(np.append(rng.uniform(0.3, 3.0, 3), 1.0))
    return BlenderCameraSettings(
        lens=float(rng.uniform(15, 120)), sensor_width=float(rng.uniform(10, 40)),
        sensor_height=float(rng.uniform(10, 40)), sensor_fit=str(rng.choice(["AUTO", "HORIZONTAL", "VERTICAL"])),
        shift_x=float(rng.uniform(-0.4, 0.4)), shift_y=float(rng.uniform(-0.4, 0.4)),
        resolution_x=int(rng.integers(16, 800)), resolution_y=int(rng.integers(16, 800)),
        resolution_percentage=int(rng.choice([25, 50, 73, 100, 150])),
        pixel_aspect_x=float(rng.choice([1.0, 1.5, 2.0])), pixel_aspect_y=float(rng.choice([1.0, 1.25, 3.0])),
        matrix_world=look_at_matrix_world(location, rng.uniform(-0.5, 0.5, 3), roll=float(rng.uniform(-1, 1)))
        @ scale)


def test_default_camera_closed_form():
    # 50 mm on a 36 mm sensor, 1920x1080, camera at (0,0,5) looking down -Z: fx = 50*1920/36.
    settings = BlenderCameraSettings(matrix_world=np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1.0]]))
    cam = blender_to_pinhole(settings)
    fx = 50 * 1920 / 36
    np.testing.assert_allclose(cam.K, [[fx, 0, 959.5], [0, fx, 539.5], [0, 0, 1]])
    np.testing.assert_allclose(cam.R, np.diag([1.0, -1.0, -1.0]))
    np.testing.assert_allclose(cam.center, [0, 0, 5])
    # the world origin lies 5 m in front, at the image centre; +X world goes right, +Y world goes up (v smaller)
    pix, depth = project(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.0]]), cam)
    np.testing.assert_allclose(depth, [5, 5, 5])
    np.testing.assert_allclose(pix, [[959.5, 539.5], [959.5 + fx / 5, 539.5], [959.5, 539.5 - fx / 5]])


def test_shift_is_a_fraction_of_the_fitted_dimension():
    # portrait 400x800, AUTO -> vertical fit, viewfac = H = 800 (not W): the commonly seen H*(0.5+shift) is wrong
    s = BlenderCameraSettings(lens=35, sensor_width=36, resolution_x=400, resolution_y=800, shift_x=0.1,
                              shift_y=-0.2)
    cam = blender_to_pinhole(s)
    np.testing.assert_allclose(cam.K[0, 0], 35 * 800 / 36)
    np.testing.assert_allclose(cam.K[:2, 2], [200 - 0.1 * 800 - 0.5, 400 - 0.2 * 800 - 0.5])


def test_pixel_aspect_and_resolution_percentage():
    s = BlenderCameraSettings(lens=40, sensor_width=30, sensor_height=20, sensor_fit="VERTICAL", resolution_x=333,
                              resolution_y=201, resolution_percentage=30, pixel_aspect_x=1.0, pixel_aspect_y=2.0)
    assert render_size(s) == (99, 60)  # integer truncation as Blender: 333*30//100, 201*30//100
    cam = blender_to_pinhole(s)
    assert (cam.width, cam.height) == (99, 60)
    ycor = 2.0
    fx = 40 * ycor * 60 / 20  # vertical fit: viewfac = ycor*H, sensor = sensor_height
    np.testing.assert_allclose([cam.K[0, 0], cam.K[1, 1]], [fx, fx / ycor])


def test_object_scale_is_dropped():
    base = look_at_matrix_world([3, -2, 1.5], [0, 0, 1])
    scaled = base @ np.diag([2.0, 0.5, 7.0, 1.0])
    a, b = blender_to_pinhole(BlenderCameraSettings(matrix_world=base)), blender_to_pinhole(
        BlenderCameraSettings(matrix_world=scaled))
    np.testing.assert_allclose(a.R, b.R, atol=1e-12)
    np.testing.assert_allclose(a.T, b.T, atol=1e-12)
    np.testing.assert_allclose(b.R @ b.R.T, np.eye(3), atol=1e-12)


def test_look_at_points_the_optical_axis_at_the_target():
    cam = blender_to_pinhole(BlenderCameraSettings(resolution_x=64, resolution_y=48,
                                                   matrix_world=look_at_matrix_world([2, 3, 1], [0.2, -0.1, 0.9])))
    pix, depth = project(np.array([[0.2, -0.1, 0.9], [0.2, -0.1, 1.9]]), cam)
    np.testing.assert_allclose(pix[0], cam.K[:2, 2], atol=1e-9)
    assert depth[0] > 0 and pix[1, 1] < pix[0, 1]  # world up is image up


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_settings_to_pinhole_and_back(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        cam = blender_to_pinhole(_random_settings(rng))
        fit = str(rng.choice(["HORIZONTAL", "VERTICAL"]))
        back = blender_to_pinhole(pinhole_to_blender(cam, sensor_fit=fit, sensor_width=float(rng.uniform(10, 50))))
        assert (back.width, back.height) == (cam.width, cam.height)
        np.testing.assert_allclose(back.K, cam.K, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(back.R, cam.R, atol=1e-10)
        np.testing.assert_allclose(back.T, cam.T, atol=1e-9)
        pts = rng.uniform(-1, 1, (20, 3))
        np.testing.assert_allclose(project(pts, back)[0], project(pts, cam)[0], atol=1e-6)


def test_pinhole_to_blender_keeps_pixel_aspects_at_least_one():
    for fx, fy in ((500.0, 250.0), (250.0, 500.0)):
        cam = PinholeCamera(K=np.array([[fx, 0, 31.5], [0, fy, 20.0], [0, 0, 1]]), R=np.eye(3), T=np.zeros(3),
                            width=64, height=40)
        s = pinhole_to_blender(cam)
        assert min(s.pixel_aspect_x, s.pixel_aspect_y) == 1.0
        np.testing.assert_allclose(blender_to_pinhole(s).K, cam.K, atol=1e-9)


def test_wire_round_trip():
    cam = blender_to_pinhole(_random_settings(np.random.default_rng(7)))
    back = PinholeCamera.from_wire(cam.to_wire())
    for a, b in ((back.K, cam.K), (back.R, cam.R), (back.T, cam.T)):
        np.testing.assert_array_equal(a, b)


def test_points_behind_the_camera_get_nan_pixels():
    cam = blender_to_pinhole(BlenderCameraSettings())  # at the origin, looking down -Z
    pix, depth = project(np.array([[0, 0, -1.0], [0, 0, 1.0]]), cam)
    assert depth[0] == 1 and depth[1] == -1
    assert np.all(np.isfinite(pix[0])) and np.all(np.isnan(pix[1]))


@pytest.mark.parametrize(("kind", "words"), [("ORTHO", "orthographic"), ("PANO", "panoramic")])
def test_non_pinhole_cameras_are_refused(kind, words):
    with pytest.raises(CameraError, match=f"{words}.*Perspective"):
        blender_to_pinhole(BlenderCameraSettings(camera_type=kind))


@pytest.mark.parametrize(("settings", "match"), [
    (BlenderCameraSettings(lens=0.0), "lens must be a positive"),
    (BlenderCameraSettings(sensor_fit="DIAGONAL"), "sensor_fit must be one of"),
    (BlenderCameraSettings(resolution_x=1, resolution_percentage=50), "raise the resolution"),
    (BlenderCameraSettings(matrix_world=np.diag([1.0, 1.0, -1.0, 1.0])), "mirrored"),
    (BlenderCameraSettings(matrix_world=np.diag([1.0, 0.0, 1.0, 1.0])), "zero scale"),
    (BlenderCameraSettings(matrix_world=np.full((4, 4), np.nan)), "NaN"),
])
def test_bad_settings_are_refused_with_a_reason(settings, match):
    with pytest.raises(CameraError, match=match):
        blender_to_pinhole(settings)


@pytest.mark.parametrize(("K", "R", "match"), [
    ([[500, 3, 32], [0, 500, 32], [0, 0, 1]], np.eye(3), "no skew"),
    ([[500, 0, 32], [0, -500, 32], [0, 0, 1]], np.eye(3), "focal lengths"),
    ([[500, 0, 32], [0, 500, 32], [0, 0, 1]], np.diag([1.0, 1.0, -1.0]), "rotation matrix"),
    ([[500, 0, 32], [0, 500, 32], [0, 0, 1]], 2 * np.eye(3), "rotation matrix"),
])
def test_bad_pinhole_cameras_are_refused(K, R, match):
    cam = PinholeCamera(K=np.array(K, dtype=float), R=R, T=np.zeros(3), width=64, height=64)
    with pytest.raises(CameraError, match=match):
        pinhole_to_blender(cam)


def test_camera_module_is_bpy_free():
    path = Path(__file__).resolve().parents[3] / "neural_human_addon" / "core" / "camera.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}  # relative: within core
    assert imported <= {"__future__", "dataclasses", "typing", "numpy"}, imported
