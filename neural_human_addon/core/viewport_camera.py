# SPDX-License-Identifier: GPL-3.0-or-later
"""A 3D viewport's view and projection as an OpenCV pinhole camera (numpy only, no bpy), for the live preview.

Blender's ``RegionView3D.view_matrix`` V is world → view (OpenGL eye: looks along −Z, +Y up, rigid) and
``window_matrix`` P the OpenGL projection. ``bpy_extras.view3d_utils.location_3d_to_region_2d`` places a world
point at region pixel coordinates ``x = W/2·(1 + clip.x/clip.w)``, ``y = H/2·(1 + clip.y/clip.w)`` (origin at the
region's bottom-left corner, pixel i spanning [i, i+1]). For a perspective P = [[a, 0, b, 0], [0, c, d, 0],
[0, 0, e, f], [0, 0, −1, 0]] this is the pinhole camera, in the conventions of :mod:`camera` (integer pixel
centres, row 0 on top)::

    fx = a·W/2    cx = W/2·(1 − b) − ½        fy = c·H/2    cy = H/2·(1 + d) − ½

with ``R = diag(1, −1, −1)·V[:3, :3]`` and ``T = diag(1, −1, −1)·V[:3, 3]`` (``camera.world_to_camera`` of V⁻¹).
``W``×``H`` may be any image size with the region's aspect (a scaled-down preview): the formulas follow the
normalised device coordinates, so an image of any size stretched over the region lines up with it.
Orthographic projections (P[3] = [0, 0, 0, 1]) have no pinhole camera and are refused with a clear message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .camera import CameraError, PinholeCamera, world_to_camera

__all__ = [
    "ORTHO_MESSAGE",
    "is_perspective",
    "ndc_depth",
    "pinhole_to_projection",
    "preview_size",
    "project_to_region",
    "viewport_to_pinhole",
]

ORTHO_MESSAGE = ("the viewport is orthographic; the actor can only be previewed in a perspective view: switch to "
                 "perspective (View > Perspective/Orthographic, or numpad 5)")
_EPS = 1e-9


def _matrix4(m: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(m, dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError):
        raise CameraError(f"{name} must be a 4x4 matrix") from None
    if not np.all(np.isfinite(a)):
        raise CameraError(f"{name} holds NaN or infinity")
    return a


def is_perspective(window_matrix: Any) -> bool:
    """True for a perspective OpenGL projection (last row [0, 0, −1, 0]), False for an orthographic one."""
    p = _matrix4(window_matrix, "window_matrix")
    return abs(p[3, 3]) < 1e-6 and p[3, 2] < -_EPS


def preview_size(region_width: int, region_height: int, scale: float) -> tuple[int, int]:
    """The preview image size for a region at ``scale`` (at least 1×1, rounded to the nearest pixel)."""
    if region_width < 1 or region_height < 1:
        raise CameraError(f"the viewport region is {region_width}x{region_height} pixels; it has nothing to draw")
    s = float(scale)
    if not np.isfinite(s) or s <= 0:
        raise CameraError(f"the preview resolution scale must be positive, got {scale}")
    return max(1, int(round(region_width * s))), max(1, int(round(region_height * s)))


def viewport_to_pinhole(view_matrix: Any, window_matrix: Any, width: int, height: int) -> PinholeCamera:
    """The OpenCV pinhole camera (K for a ``width``×``height`` image, R, T world → camera) of a perspective viewport.

    ``view_matrix`` and ``window_matrix`` are ``RegionView3D.view_matrix`` / ``.window_matrix`` (4×4, as nested
    lists or mathutils matrices). Raises CameraError with a "switch to perspective" note for orthographic views."""
    v = _matrix4(view_matrix, "view_matrix")
    p = _matrix4(window_matrix, "window_matrix")
    if not is_perspective(p):
        raise CameraError(ORTHO_MESSAGE)
    if int(width) < 1 or int(height) < 1:
        raise CameraError(f"the preview image must be at least 1x1 pixels, got {width}x{height}")
    if abs(p[0, 1]) > _EPS or abs(p[1, 0]) > _EPS or abs(p[0, 3]) > _EPS or abs(p[1, 3]) > _EPS:
        raise CameraError("the viewport projection is skewed or shifted in a way a pinhole camera cannot express")
    a, b, c, d = p[0, 0], p[0, 2], p[1, 1], p[1, 2]
    # P[3, 2] is −1 for Blender's projections; divide through so any positive multiple of P works too
    w_scale = -p[3, 2]
    a, b, c, d = a / w_scale, b / w_scale, c / w_scale, d / w_scale
    if a <= 0 or c <= 0:
        raise CameraError("the viewport projection is mirrored; a pinhole camera needs positive focal lengths")
    w, h = int(width), int(height)
    K = np.array([[a * w / 2.0, 0.0, w / 2.0 * (1.0 - b) - 0.5],
                  [0.0, c * h / 2.0, h / 2.0 * (1.0 + d) - 0.5],
                  [0.0, 0.0, 1.0]])
    try:
        inv = np.linalg.inv(v)
    except np.linalg.LinAlgError:
        raise CameraError("the view matrix is singular") from None
    R, T = world_to_camera(inv)
    return PinholeCamera(K=K, R=R, T=T, width=w, height=h)


def pinhole_to_projection(camera: PinholeCamera, near: float = 0.01, far: float = 1000.0) -> np.ndarray:
    """The OpenGL projection (4×4) whose region image is ``camera``'s (the inverse of the intrinsics above)."""
    K = np.asarray(camera.K, dtype=np.float64)
    w, h = float(camera.width), float(camera.height)
    p = np.zeros((4, 4))
    p[0, 0], p[0, 2] = 2.0 * K[0, 0] / w, 1.0 - 2.0 * (K[0, 2] + 0.5) / w
    p[1, 1], p[1, 2] = 2.0 * K[1, 1] / h, 2.0 * (K[1, 2] + 0.5) / h - 1.0
    p[2, 2], p[2, 3] = -(far + near) / (far - near), -2.0 * far * near / (far - near)
    p[3, 2] = -1.0
    return p


def project_to_region(points: Any, view_matrix: Any, window_matrix: Any, region_width: int,
                      region_height: int) -> np.ndarray:
    """``view3d_utils.location_3d_to_region_2d`` for many points: region pixels (N, 2), origin bottom-left; NaN
    behind the view (as the function returns None there)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    persp = _matrix4(window_matrix, "window_matrix") @ _matrix4(view_matrix, "view_matrix")
    clip = np.c_[pts, np.ones(len(pts))] @ persp.T
    out = np.full((len(pts), 2), np.nan)
    ok = clip[:, 3] > 0
    out[ok, 0] = region_width / 2.0 * (1.0 + clip[ok, 0] / clip[ok, 3])
    out[ok, 1] = region_height / 2.0 * (1.0 + clip[ok, 1] / clip[ok, 3])
    return out


def ndc_depth(depth: Any, window_matrix: Any) -> np.ndarray:
    """Camera z-depth in metres (0 = empty) → the window depth in [0, 1] that the viewport's depth buffer holds
    (OpenGL: ``ndc_z = (P[2,2]·z_eye + P[2,3]) / −z_eye``, window = ndc/2 + ½); 1 (far) where depth is 0."""
    p = _matrix4(window_matrix, "window_matrix")
    z = np.asarray(depth, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndc = (p[2, 2] * -z + p[2, 3]) / z
    out = np.clip(ndc * 0.5 + 0.5, 0.0, 1.0)
    return np.where(z > 0, out, 1.0)
