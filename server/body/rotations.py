"""The server's one Rodrigues formula (numpy): axis-angle vectors -> rotation matrices. On torch tensors the body model
uses smplx's ``batch_rodrigues``; the add-on has its own in ``neural_human_addon/core/rotations.py`` (no server code
runs in Blender)."""

from __future__ import annotations

import numpy as np


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: (..., 3) axis-angle vectors (radians) -> (..., 3, 3) rotation matrices (float64);
    the zero vector gives the identity."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    theta = np.linalg.norm(rotvec, axis=-1, keepdims=True)  # (..., 1)
    k = rotvec / np.maximum(theta, 1e-12)  # (..., 3) unit axis
    kx = np.zeros(rotvec.shape[:-1] + (3, 3))  # (..., 3, 3) cross-product matrix [k]x
    kx[..., 0, 1], kx[..., 0, 2] = -k[..., 2], k[..., 1]
    kx[..., 1, 0], kx[..., 1, 2] = k[..., 2], -k[..., 0]
    kx[..., 2, 0], kx[..., 2, 1] = -k[..., 1], k[..., 0]
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * kx + (1 - c) * (kx @ kx)
