# SPDX-License-Identifier: GPL-3.0-or-later
"""Wire formats that the server and the add-on share beyond the HTTP messages: the file name of a job frame (the
server's job folder and the add-on's output folder hold the same files) and the captured-motion message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import UserError

FRAME_FILE_GLOB = "frame_*.npz"


class MotionError(UserError, ValueError):
    """A motion message that cannot be used; the message says which part is wrong."""


def frame_file_name(n: int) -> str:
    """The file of job frame ``n``: ``frame_NNNNNN.npz`` (six digits, more for frames past 999999)."""
    return f"frame_{int(n):06d}.npz"


def motion_arrays(motion: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(poses (N,72), Rh (N,3), Th (N,3), fps) from {"poses", "Rh", "Th", "fps"} or GET .../motion's
    {"fps", "frames": [body, ...]}; MotionError names what is wrong."""
    if "frames" in motion:
        bodies = list(motion["frames"])
        if not bodies:
            raise MotionError("the actor motion has no frames")
        motion = {k: [b[k] for b in bodies] for k in ("poses", "Rh", "Th")} | {"fps": motion.get("fps", 30.0)}
    missing = [k for k in ("poses", "Rh", "Th") if k not in motion]
    if missing:
        raise MotionError(f"the actor motion lacks {missing}; it needs poses (N, 72), Rh (N, 3), Th (N, 3)")
    poses = np.asarray(motion["poses"], dtype=np.float64)
    poses = poses.reshape(1, -1) if poses.ndim == 1 else poses
    n = len(poses)
    try:
        rh = np.broadcast_to(np.asarray(motion["Rh"], dtype=np.float64).reshape(-1, 3), (n, 3))
        th = np.broadcast_to(np.asarray(motion["Th"], dtype=np.float64).reshape(-1, 3), (n, 3))
    except ValueError:
        raise MotionError(f"the actor motion's Rh and Th must be (N, 3) for its {n} poses") from None
    if poses.shape[1:] != (72,) or n == 0:
        raise MotionError(f"the actor motion's poses must have shape (N, 72), got {poses.shape}")
    fps = float(motion.get("fps") or 30.0)
    if not all(np.all(np.isfinite(a)) for a in (poses, rh, th)) or not np.isfinite(fps) or fps <= 0:
        raise MotionError("the actor motion holds NaN or infinite numbers, or a non-positive fps")
    return poses, np.array(rh), np.array(th), fps
