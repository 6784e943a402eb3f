# SPDX-License-Identifier: GPL-3.0-or-later
"""The live preview's image step in numpy (no bpy): what is uploaded to the GPU, and a reference of what the draw
handler's shader does with it, so the compositing rules are tested where no GPU context exists.

The server sends straight-alpha RGBA (sRGB-encoded RGB, row 0 on top) and camera z-depth in metres (0 where empty,
DESIGN.md §3). The viewport's depth buffer holds window depth (OpenGL: ``ndc_z/2 + ½`` of the projected point), so
the preview's depth is converted with the viewport's own projection (:func:`viewport_camera.ndc_depth`) and the
shader writes it as ``gl_FragDepth``: a fragment is kept where its depth is ≤ the scene's (LESS_EQUAL), so scene
objects in front hide the actor and the actor covers what is behind it; straight alpha blends as
``src·a + dst·(1 − a)``. "Alpha only" skips the depth test.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .viewport_camera import ndc_depth

__all__ = ["composite_reference", "upload_arrays"]


def upload_arrays(rgba: Any, depth: Any, window_matrix: Any) -> tuple[np.ndarray, np.ndarray]:
    """(RGBA (H,W,4), window depth (H,W)) as float32, contiguous, rows flipped so row 0 is the bottom (OpenGL
    textures); window depth is 1 (far) where the preview is empty. RGB is premultiplied by alpha for the upload, so
    the texture's bilinear filtering does not darken the silhouette; the shader divides it out again and blends
    straight alpha."""
    rgba = np.asarray(rgba, dtype=np.float32)
    depth = np.asarray(depth, dtype=np.float64)
    if rgba.ndim != 3 or rgba.shape[2] != 4 or depth.shape != rgba.shape[:2]:
        raise ValueError(f"the preview needs rgba (H,W,4) and depth (H,W), got {rgba.shape} and {depth.shape}")
    window = np.where(rgba[..., 3] > 0, ndc_depth(depth, window_matrix), 1.0)
    premultiplied = np.concatenate([rgba[..., :3] * rgba[..., 3:4], rgba[..., 3:4]], axis=-1)
    return np.ascontiguousarray(premultiplied[::-1]), np.ascontiguousarray(window[::-1], dtype=np.float32)


def composite_reference(scene_rgb: Any, scene_depth: Any, rgba: Any, window_depth: Any,
                        use_depth: bool = True) -> np.ndarray:
    """What the draw handler does, per pixel, in numpy (all arrays in the same row order): the preview's straight
    alpha over the scene's colour where its depth passes LESS_EQUAL against the scene's window depth (or
    everywhere when ``use_depth`` is False). Returns the new scene RGB."""
    scene_rgb = np.asarray(scene_rgb, dtype=np.float64)
    rgba = np.asarray(rgba, dtype=np.float64)
    alpha = rgba[..., 3:4]
    keep = alpha[..., 0] > 0
    if use_depth:
        keep &= np.asarray(window_depth) <= np.asarray(scene_depth)
    blended = rgba[..., :3] * alpha + scene_rgb * (1.0 - alpha)
    return np.where(keep[..., None], blended, scene_rgb)
