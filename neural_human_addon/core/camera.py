# SPDX-License-Identifier: GPL-3.0-or-later
"""Blender camera ⇄ OpenCV pinhole camera: the project's one camera conversion (numpy only, no bpy).

OpenCV convention (DESIGN.md §3): ``x_cam = R @ x_world + T``, the camera looks along +Z with +Y down, ``K`` is in
pixels of the ``width`` × ``height`` image and pixel (0, 0) is centred at u = 0, v = 0 (pixel i spans
[i − 0.5, i + 0.5]), the convention of Neural Body's ray generator.

Blender's projection, derived from ``BKE_camera_params_compute_viewplane`` (Blender's blenkernel/intern/camera.cc), with
W, H the rendered size after resolution %, ``ycor = pixel_aspect_y / pixel_aspect_x`` and ``viewfac`` = W for a
horizontal sensor fit, ycor·H for a vertical one::

    fx = lens · viewfac / sensor        fy = fx / ycor
    cx = W/2 − shift_x · viewfac − ½    cy = H/2 + shift_y · viewfac / ycor − ½

and the camera-to-world ``matrix_world`` (Blender camera axes: looks along −Z, +Y up) maps to
``R = diag(1, −1, −1) · R_c2wᵀ``, ``T = −R · t_c2w``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import UserError

__all__ = [
    "BlenderCameraSettings",
    "CameraError",
    "PinholeCamera",
    "blender_to_pinhole",
    "look_at_matrix_world",
    "pinhole_to_blender",
    "project",
    "render_size",
]

# Blender camera axes (−Z forward, +Y up) -> OpenCV camera axes (+Z forward, +Y down)
BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")
_ROTATION_TOLERANCE = 1e-4


class CameraError(UserError, ValueError):
    """A camera that cannot be expressed as (or built from) an OpenCV pinhole camera; the message says why."""


@dataclass(frozen=True, eq=False)
class BlenderCameraSettings:
    """The Blender camera data + render settings that decide the projection (plain values, as bpy reports them).

    ``matrix_world`` is the camera object's 4×4 camera-to-world matrix (object scale allowed; it is dropped).
    Lengths: ``lens``, ``sensor_width``, ``sensor_height`` in millimetres; ``shift_x``/``shift_y`` as fractions
    of the fitted sensor dimension, as in Blender's UI.
    """

    lens: float = 50.0
    sensor_width: float = 36.0
    sensor_height: float = 24.0
    sensor_fit: str = "AUTO"
    shift_x: float = 0.0
    shift_y: float = 0.0
    resolution_x: int = 1920
    resolution_y: int = 1080
    resolution_percentage: int = 100
    pixel_aspect_x: float = 1.0
    pixel_aspect_y: float = 1.0
    camera_type: str = "PERSP"
    matrix_world: np.ndarray = field(default_factory=lambda: np.eye(4))


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """OpenCV pinhole camera (see the module docstring for the conventions). T in metres."""

    K: np.ndarray  # (3,3) float64
    R: np.ndarray  # (3,3) float64, world -> camera rotation
    T: np.ndarray  # (3,) float64, metres
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,) metres."""
        return -self.R.T @ self.T

    def to_wire(self) -> dict[str, Any]:
        """The HTTP API camera message (DESIGN.md §4)."""
        return {"K": self.K.tolist(), "R": self.R.tolist(), "T": self.T.tolist(),
                "width": int(self.width), "height": int(self.height)}

    @classmethod
    def from_wire(cls, message: dict[str, Any]) -> PinholeCamera:
        """Parse (and check) a camera message {"K", "R", "T", "width", "height"}."""
        missing = [k for k in ("K", "R", "T", "width", "height") if k not in message]
        if missing:
            raise CameraError(f"camera message lacks {missing}; it needs K (3x3), R (3x3), T (3), width, height")
        try:
            K = np.asarray(message["K"], dtype=np.float64).reshape(3, 3)
            R = np.asarray(message["R"], dtype=np.float64).reshape(3, 3)
            T = np.asarray(message["T"], dtype=np.float64).reshape(3)
        except (TypeError, ValueError) as err:
            raise CameraError(f"camera K and R must be 3x3 numbers and T 3 numbers ({err})") from None
        cam = cls(K=K, R=R, T=T, width=int(message["width"]), height=int(message["height"]))
        _check_pinhole(cam)
        return cam


def render_size(settings: BlenderCameraSettings) -> tuple[int, int]:
    """Rendered (W, H) in pixels: Blender truncates ``resolution · percentage / 100`` in integer arithmetic."""
    pct = int(settings.resolution_percentage)
    return int(settings.resolution_x) * pct // 100, int(settings.resolution_y) * pct // 100


def _check_settings(s: BlenderCameraSettings) -> None:
    if s.camera_type != "PERSP":
        names = {"ORTHO": "orthographic", "PANO": "panoramic", "CUSTOM": "custom (OSL)"}
        kind = names.get(s.camera_type, repr(s.camera_type))
        raise CameraError(f"the camera type is {kind}; only perspective cameras map to a pinhole camera. "
                          "Set the camera's Lens > Type to Perspective")
    if s.sensor_fit not in SENSOR_FITS:
        raise CameraError(f"sensor_fit must be one of {SENSOR_FITS}, got {s.sensor_fit!r}")
    for name in ("lens", "sensor_width", "sensor_height", "pixel_aspect_x", "pixel_aspect_y"):
        value = float(getattr(s, name))
        if not np.isfinite(value) or value <= 0:
            raise CameraError(f"camera {name} must be a positive number, got {value}")
    for name in ("shift_x", "shift_y"):
        if not np.isfinite(float(getattr(s, name))):
            raise CameraError(f"camera {name} must be a finite number, got {getattr(s, name)}")
    width, height = render_size(s)
    if width < 1 or height < 1:
        raise CameraError(f"render size {s.resolution_x}x{s.resolution_y} at {s.resolution_percentage}% is "
                          f"{width}x{height} pixels; raise the resolution or the percentage")


def _camera_to_world_rotation(matrix_world: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rotation (3,3), translation (3,)) of a camera-to-world matrix with the object's scale removed."""
    try:
        m = np.asarray(matrix_world, dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError):
        raise CameraError("matrix_world must be a 4x4 matrix") from None
    if not np.all(np.isfinite(m)):
        raise CameraError("the camera's matrix_world holds NaN or infinity")
    basis = m[:3, :3]
    norms = np.linalg.norm(basis, axis=0)
    if np.any(norms < 1e-12):
        raise CameraError("the camera object has zero scale on an axis; give it a non-zero scale")
    # Column normalisation drops scale (like Blender's matrix.normalized()); the SVD then removes any shear an
    # unevenly scaled parent leaves, giving the nearest rotation.
    u, _, vt = np.linalg.svd(basis / norms)
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        raise CameraError("the camera object is mirrored (negative scale); use a positive scale on the camera and "
                          "its parents")
    return rot, m[:3, 3].copy()


def _fit_and_viewfac(s: BlenderCameraSettings, width: int, height: int) -> tuple[str, float, float, float]:
    """(resolved fit, viewfac, sensor size used, ycor) as in BKE_camera_params_compute_viewplane."""
    pa_x, pa_y = float(s.pixel_aspect_x), float(s.pixel_aspect_y)
    ycor = pa_y / pa_x
    fit = s.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if pa_x * width >= pa_y * height else "VERTICAL"
    # the sensor dimension follows the camera's own setting: AUTO uses sensor_width even for portrait images
    sensor = float(s.sensor_height) if s.sensor_fit == "VERTICAL" else float(s.sensor_width)
    viewfac = float(width) if fit == "HORIZONTAL" else ycor * height
    return fit, viewfac, sensor, ycor


def read_blender_settings(camera_data: Any, render: Any, matrix_world: Any) -> BlenderCameraSettings:
    """The projection-relevant settings of a Blender camera datablock under a scene's render settings, with the
    object's world matrix (4x4). Plain attribute reads of the objects passed in: this module never imports bpy."""
    cam = camera_data
    return BlenderCameraSettings(
        lens=float(cam.lens), sensor_width=float(cam.sensor_width), sensor_height=float(cam.sensor_height),
        sensor_fit=str(cam.sensor_fit), shift_x=float(cam.shift_x), shift_y=float(cam.shift_y),
        resolution_x=int(render.resolution_x), resolution_y=int(render.resolution_y),
        resolution_percentage=int(render.resolution_percentage), pixel_aspect_x=float(render.pixel_aspect_x),
        pixel_aspect_y=float(render.pixel_aspect_y), camera_type=str(cam.type),
        matrix_world=np.array(matrix_world, dtype=np.float64))


def write_blender_settings(settings: BlenderCameraSettings, camera_data: Any, render: Any) -> None:
    """Write ``settings`` into a Blender camera datablock and a scene's render settings (resolution, %, pixel
    aspect). The world matrix is the caller's to set (it needs mathutils)."""
    cam = camera_data
    cam.type = settings.camera_type
    cam.lens_unit = "MILLIMETERS"
    cam.sensor_fit = settings.sensor_fit
    cam.sensor_width, cam.sensor_height = settings.sensor_width, settings.sensor_height
    cam.lens = settings.lens
    cam.shift_x, cam.shift_y = settings.shift_x, settings.shift_y
    render.resolution_x, render.resolution_y = int(settings.resolution_x), int(settings.resolution_y)
    render.resolution_percentage = int(settings.resolution_percentage)
    render.pixel_aspect_x, render.pixel_aspect_y = settings.pixel_aspect_x, settings.pixel_aspect_y


def blender_to_pinhole(settings: BlenderCameraSettings) -> PinholeCamera:
    """OpenCV pinhole camera of a Blender perspective camera (raises CameraError for ortho/panoramic ones)."""
    _check_settings(settings)
    width, height = render_size(settings)
    _, viewfac, sensor, ycor = _fit_and_viewfac(settings, width, height)
    fx = float(settings.lens) * viewfac / sensor
    fy = fx / ycor
    cx = width / 2.0 - float(settings.shift_x) * viewfac - 0.5
    cy = height / 2.0 + float(settings.shift_y) * viewfac / ycor - 0.5
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    R, T = world_to_camera(settings.matrix_world)
    return PinholeCamera(K=K, R=R, T=T, width=width, height=height)


def world_to_camera(matrix_world: Any) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV extrinsics (R, T), ``x_cam = R·x_world + T``, of a Blender camera's ``matrix_world`` (scale dropped)."""
    rot_c2w, t = _camera_to_world_rotation(matrix_world)
    R = BLENDER_TO_OPENCV @ rot_c2w.T
    return R, -R @ t


def _check_pinhole(cam: PinholeCamera) -> None:
    K, R, T = (np.asarray(a, dtype=np.float64) for a in (cam.K, cam.R, cam.T))
    if K.shape != (3, 3) or R.shape != (3, 3) or T.shape != (3,):
        raise CameraError(f"K and R must be 3x3 and T 3 numbers, got {K.shape}, {R.shape}, {T.shape}")
    if not all(np.all(np.isfinite(a)) for a in (K, R, T)):
        raise CameraError("camera K, R or T holds NaN or infinity")
    if int(cam.width) < 1 or int(cam.height) < 1:
        raise CameraError(f"camera width and height must be positive, got {cam.width}x{cam.height}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CameraError(f"focal lengths K[0,0], K[1,1] must be positive, got {K[0, 0]}, {K[1, 1]}")
    if abs(K[0, 1]) > 1e-9 * K[0, 0] or np.any(K[1, 0] != 0) or not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise CameraError(f"K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew), got {K.tolist()}")
    if not np.allclose(R @ R.T, np.eye(3), atol=_ROTATION_TOLERANCE) or np.linalg.det(R) <= 0:
        raise CameraError(f"R must be a rotation matrix (orthonormal, determinant +1), got {R.tolist()}")


def pinhole_to_blender(camera: PinholeCamera, *, sensor_width: float = 36.0, sensor_height: float = 24.0,
                       sensor_fit: str = "HORIZONTAL") -> BlenderCameraSettings:
    """Blender settings (100 %, square or stretched pixels) reproducing an OpenCV pinhole camera exactly.

    ``sensor_fit`` is "HORIZONTAL" (lens from ``sensor_width``) or "VERTICAL" (from ``sensor_height``); fx ≠ fy
    becomes a pixel aspect (Blender keeps both aspects ≥ 1). Skewed K cannot be represented and is refused.
    """
    _check_pinhole(camera)
    if sensor_fit not in ("HORIZONTAL", "VERTICAL"):
        raise CameraError(f"sensor_fit must be 'HORIZONTAL' or 'VERTICAL' to build a camera, got {sensor_fit!r}")
    K = np.asarray(camera.K, dtype=np.float64)
    fx, fy = K[0, 0], K[1, 1]
    ycor = fx / fy
    pa_x, pa_y = (1.0, ycor) if ycor >= 1.0 else (1.0 / ycor, 1.0)
    width, height = int(camera.width), int(camera.height)
    viewfac = float(width) if sensor_fit == "HORIZONTAL" else ycor * height
    sensor = float(sensor_width) if sensor_fit == "HORIZONTAL" else float(sensor_height)
    R = np.asarray(camera.R, dtype=np.float64)
    u, _, vt = np.linalg.svd(R)  # exact rotation (R passed the tolerance check)
    R = u @ vt
    matrix_world = np.eye(4)
    matrix_world[:3, :3] = R.T @ BLENDER_TO_OPENCV
    matrix_world[:3, 3] = -R.T @ np.asarray(camera.T, dtype=np.float64)
    return BlenderCameraSettings(
        lens=fx * sensor / viewfac, sensor_width=float(sensor_width), sensor_height=float(sensor_height),
        sensor_fit=sensor_fit, shift_x=(width / 2.0 - (K[0, 2] + 0.5)) / viewfac,
        shift_y=((K[1, 2] + 0.5) - height / 2.0) * ycor / viewfac, resolution_x=width, resolution_y=height,
        resolution_percentage=100, pixel_aspect_x=pa_x, pixel_aspect_y=pa_y, camera_type="PERSP",
        matrix_world=matrix_world)


def project(points: np.ndarray, camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    """World points (N,3) → pixel coordinates (N,2) (u right, v down, integer pixel centres) and camera z-depth (N,).

    Points behind the camera (depth ≤ 0) get NaN pixels.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise CameraError(f"points must have shape (N, 3), got {pts.shape}")
    cam_pts = pts @ np.asarray(camera.R, dtype=np.float64).T + np.asarray(camera.T, dtype=np.float64)
    depth = cam_pts[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = cam_pts @ np.asarray(camera.K, dtype=np.float64).T
        pixels = uvw[:, :2] / uvw[:, 2:3]
    pixels[depth <= 0] = np.nan
    return pixels, depth


def look_at_matrix_world(location: Any, target: Any, up: Any = (0.0, 0.0, 1.0), roll: float = 0.0) -> np.ndarray:
    """Blender camera-to-world 4×4 matrix of a camera at ``location`` looking at ``target`` (Blender axes: the
    camera's −Z points at the target, its +Y towards ``up``), rolled by ``roll`` radians about the view axis."""
    loc = np.asarray(location, dtype=np.float64).reshape(3)
    forward = np.asarray(target, dtype=np.float64).reshape(3) - loc
    if np.linalg.norm(forward) < 1e-12:
        raise CameraError("camera location and target coincide; move the camera away from its target")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, dtype=np.float64).reshape(3))
    if np.linalg.norm(right) < 1e-9:
        raise CameraError("camera looks straight along the up vector; choose another up vector")
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    c, s = np.cos(roll), np.sin(roll)
    right, cam_up = c * right + s * cam_up, -s * right + c * cam_up
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, cam_up, -forward, loc
    return m


def look_at_extrinsics(location: Any, target: Any, up: Any = (0.0, 0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV extrinsics (R, T) of a camera at ``location`` looking at ``target`` with ``up`` pointing up."""
    return world_to_camera(look_at_matrix_world(location, target, up))
