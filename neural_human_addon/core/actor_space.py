# SPDX-License-Identifier: GPL-3.0-or-later
"""Actor space: Blender world <-> an actor's world frame, placed by its actor root (numpy only, no bpy).

An actor lives in the world frame of its capture ("actor world"). In Blender an actor root object (an Empty)
places it: actor world = the root's local coordinates turned by the actor's up axis,

    up_axis "z": root-local = actor                (both Z-up)
    up_axis "y": root-local = Rx(+90°) · actor     (a Y-up capture stood up in Blender's Z-up)

so ``world = root.matrix_world · actor_to_root(up_axis) · actor``. Cameras and bodies go to the server in actor world,
hence moving the root moves the actor. The root must be rigid (unit scale, no shear): a neural actor cannot be
scaled, and a scaled root is refused rather than silently normalised.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .camera import PinholeCamera
from .errors import UserError

__all__ = [
    "UP_AXES",
    "ActorSpaceError",
    "actor_to_root",
    "actor_to_world",
    "camera_in_actor_space",
    "check_up_axis",
    "points_to_actor",
    "points_to_world",
    "root_rigid_matrix",
    "world_to_actor",
]

UP_AXES = ("z", "y")
# Rx(+90°): maps a Y-up frame onto Blender's Z-up (y -> z, z -> -y); the same matrix as retarget.Y_TO_Z_UP.
_RX90 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
SCALE_TOLERANCE = 1e-4  # |scale - 1| and shear allowed on the root (float32 round-off of Blender matrices)


class ActorSpaceError(UserError, ValueError):
    """An actor root or up axis that cannot define an actor frame; the message says what to fix."""


def check_up_axis(up_axis: str) -> str:
    """'z' or 'y' (any case) -> lower case; anything else is refused."""
    axis = str(up_axis).strip().lower()
    if axis not in UP_AXES:
        raise ActorSpaceError(f"actor up axis must be 'z' or 'y', got {up_axis!r}")
    return axis


def actor_to_root(up_axis: str) -> np.ndarray:
    """(4,4) actor world -> the root's local coordinates: identity for 'z', Rx(+90°) for 'y'."""
    m = np.eye(4)
    if check_up_axis(up_axis) == "y":
        m[:3, :3] = _RX90
    return m


def root_rigid_matrix(root_matrix_world: Any) -> np.ndarray:
    """The root's matrix_world as an exact rigid (4,4) matrix; refuses scale, shear, mirroring and projection."""
    try:
        m = np.asarray(root_matrix_world, dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError):
        raise ActorSpaceError("the actor root's matrix_world must be a 4x4 matrix") from None
    if not np.all(np.isfinite(m)):
        raise ActorSpaceError("the actor root's matrix_world holds NaN or infinity; reset its transform")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise ActorSpaceError("the actor root's matrix_world is not affine (last row != [0, 0, 0, 1])")
    basis = m[:3, :3]
    scale = np.linalg.norm(basis, axis=0)
    gram = basis.T @ basis
    if np.any(np.abs(scale - 1.0) > SCALE_TOLERANCE) or np.any(np.abs(gram - np.diag(np.diag(gram))) > SCALE_TOLERANCE):
        raise ActorSpaceError(
            f"the actor root is scaled or sheared (axis scales {np.round(scale, 4).tolist()}, also through its "
            "parents); a neural actor cannot be scaled: apply scale on the actor root (Object > Apply > Scale) "
            "and keep its parents unscaled"
        )
    if np.linalg.det(basis) < 0:
        raise ActorSpaceError("the actor root is mirrored (negative scale); apply scale on the actor root")
    u, _, vt = np.linalg.svd(basis)  # remove the round-off the tolerance allowed
    out = np.eye(4)
    out[:3, :3] = u @ vt
    out[:3, 3] = m[:3, 3]
    return out


def actor_to_world(root_matrix_world: Any, up_axis: str) -> np.ndarray:
    """(4,4) actor world -> Blender world: root.matrix_world · actor_to_root(up_axis)."""
    return root_rigid_matrix(root_matrix_world) @ actor_to_root(up_axis)


def world_to_actor(root_matrix_world: Any, up_axis: str) -> np.ndarray:
    """(4,4) Blender world -> actor world (the exact rigid inverse of actor_to_world)."""
    m = actor_to_world(root_matrix_world, up_axis)
    inv = np.eye(4)
    inv[:3, :3] = m[:3, :3].T
    inv[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return inv


def _transform(points: Any, m: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1:] != (3,):
        raise ActorSpaceError(f"points must have shape (..., 3), got {p.shape}")
    return p @ m[:3, :3].T + m[:3, 3]


def points_to_world(points_actor: Any, root_matrix_world: Any, up_axis: str) -> np.ndarray:
    """Actor-world points (..., 3) -> Blender world (e.g. where an imported mesh's vertices land)."""
    return _transform(points_actor, actor_to_world(root_matrix_world, up_axis))


def points_to_actor(points_world: Any, root_matrix_world: Any, up_axis: str) -> np.ndarray:
    """Blender-world points (..., 3) -> actor world."""
    return _transform(points_world, world_to_actor(root_matrix_world, up_axis))


def camera_in_actor_space(camera: PinholeCamera, root_matrix_world: Any, up_axis: str) -> PinholeCamera:
    """A world pinhole camera (x_cam = R·x_world + T) re-expressed for actor-world points: x_cam = R'·x_actor + T'."""
    a2w = actor_to_world(root_matrix_world, up_axis)
    R = np.asarray(camera.R, dtype=np.float64)
    T = np.asarray(camera.T, dtype=np.float64)
    return PinholeCamera(K=np.asarray(camera.K, dtype=np.float64).copy(), R=R @ a2w[:3, :3], T=R @ a2w[:3, 3] + T,
                         width=int(camera.width), height=int(camera.height))
