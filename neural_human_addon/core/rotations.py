"""Rotation conversions in numpy: axis-angle, 3×3 matrices, quaternions (w, x, y, z — Blender's order), swing-twist.

All functions take batches: (..., 3) axis-angle, (..., 3, 3) matrices, (..., 4) quaternions.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Rodrigues: (..., 3) axis-angle (axis × angle in radians) -> (..., 3, 3)."""
    aa = np.asarray(aa, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.maximum(angle, _EPS)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(aa.shape[:-1] + (3, 3))
    s = np.sin(angle)[..., None]
    c = np.cos(angle)[..., None]
    return np.eye(3) + s * k + (1.0 - c) * (k @ k)


def matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z) with w >= 0."""
    m = np.asarray(m, dtype=np.float64)
    tr = np.trace(m, axis1=-2, axis2=-1)
    # Four candidate formulas; use the one with the largest denominator for stability (Shepperd's method).
    cand = np.stack([tr, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], axis=-1)
    best = np.argmax(cand, axis=-1)
    q = np.empty(m.shape[:-2] + (4,))
    r = np.sqrt(np.maximum(1.0 + 2.0 * np.take_along_axis(cand, best[..., None], -1)[..., 0] - tr, _EPS))
    w = np.stack([
        np.stack([r, (m[..., 2, 1] - m[..., 1, 2]) / r, (m[..., 0, 2] - m[..., 2, 0]) / r,
                  (m[..., 1, 0] - m[..., 0, 1]) / r], -1),
        np.stack([(m[..., 2, 1] - m[..., 1, 2]) / r, r, (m[..., 0, 1] + m[..., 1, 0]) / r,
                  (m[..., 0, 2] + m[..., 2, 0]) / r], -1),
        np.stack([(m[..., 0, 2] - m[..., 2, 0]) / r, (m[..., 0, 1] + m[..., 1, 0]) / r, r,
                  (m[..., 1, 2] + m[..., 2, 1]) / r], -1),
        np.stack([(m[..., 1, 0] - m[..., 0, 1]) / r, (m[..., 0, 2] + m[..., 2, 0]) / r,
                  (m[..., 1, 2] + m[..., 2, 1]) / r, r], -1),
    ], axis=-2)  # fmt: skip
    q = 0.5 * np.take_along_axis(w, best[..., None, None], -2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z), normalised first -> (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    m = np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1)  # fmt: skip
    return m.reshape(q.shape[:-1] + (3, 3))


def quaternion_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z) -> (..., 3) axis-angle with angle in [0, π]."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., :1] < 0, -q, q)
    s = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    return q[..., 1:] * (angle / np.maximum(s, _EPS))


def axis_angle_to_quaternion(aa: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 4) quaternions (w, x, y, z)."""
    aa = np.asarray(aa, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.maximum(angle, _EPS)
    return np.concatenate([np.cos(angle / 2), axis * np.sin(angle / 2)], axis=-1)


def matrix_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle."""
    return quaternion_to_axis_angle(matrix_to_quaternion(m))


def orthonormalize(m: np.ndarray) -> np.ndarray:
    """Nearest rotation (polar decomposition) of (..., 3, 3) linear maps; removes uniform/non-uniform scale."""
    u, _, vt = np.linalg.svd(np.asarray(m, dtype=np.float64))
    r = u @ vt
    flip = np.linalg.det(r) < 0
    if np.any(flip):
        u = u.copy()
        u[flip, :, -1] *= -1
        r = u @ vt
    return r


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking direction(s) a to b: (..., 3), (..., 3) -> (..., 3, 3). Opposite vectors turn 180°."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = np.broadcast_arrays(a, b)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), _EPS)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), _EPS)
    axis = np.cross(a, b)
    s = np.linalg.norm(axis, axis=-1, keepdims=True)
    c = np.sum(a * b, axis=-1, keepdims=True)
    # For antiparallel vectors any axis perpendicular to a works: cross with the least-aligned basis vector.
    basis = np.eye(3)[np.argmin(np.abs(a), axis=-1)]
    perp = np.cross(a, basis)
    axis = np.where(s < 1e-9, perp, axis)
    axis = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), _EPS)
    return axis_angle_to_matrix(axis * np.arctan2(s, c))


def swing_twist(r: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split rotation(s) r = swing · twist, twist about `axis` (unit, (..., 3)); returns (swing, twist) matrices."""
    q = matrix_to_quaternion(r)
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    proj = np.sum(q[..., 1:] * axis, axis=-1, keepdims=True) * axis
    tq = np.concatenate([q[..., :1], proj], axis=-1)
    n = np.linalg.norm(tq, axis=-1, keepdims=True)
    tq = np.where(n < _EPS, np.array([1.0, 0.0, 0.0, 0.0]), tq / np.maximum(n, _EPS))
    twist = quaternion_to_matrix(tq)
    swing = r @ np.swapaxes(twist, -1, -2)
    return swing, twist


def twist_angle(r: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Signed twist angle (radians) of rotation(s) r about `axis`."""
    _, tw = swing_twist(r, axis)
    aa = matrix_to_axis_angle(tw)
    return np.sum(aa * np.asarray(axis, dtype=np.float64), axis=-1) / np.linalg.norm(axis, axis=-1)
