"""Motion files (AMASS .npz, Meshcapade .smpl, EasyMocap params folders) keyed onto a rig or an actor's rig."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
import numpy as np

from ..core.motion_files import SmplMotion, change_up, read_motion, resample
from ..core.retarget import RootOptions
from ..core.smpl_skeleton import GENERIC_REST_JOINTS
from .actor_scene import apply_actor_motion, is_actor_root, root_body
from .retarget_bpy import RetargetError, apply_smpl_motion


def scene_fps(scene: Any) -> float:
    return float(scene.render.fps) / float(scene.render.fps_base or 1.0)


def load_motion(path: str | Path, scene: Any = None) -> SmplMotion:
    """The file's motion resampled to the scene's frame rate."""
    scene = scene or bpy.context.scene
    return resample(read_motion(path), scene_fps(scene))


def apply_motion_file(target: Any, path: str | Path, frame_start: int | None = None, scene: Any = None) -> dict:
    """Key a motion file onto `target` from `frame_start` (default: the current frame), in a fresh action.

    `target`: an actor root (its bound rig, with the actor's own body) or any armature whose bones detection maps
    (driven through a generic adult body). Returns the retarget quality report plus 'fps', 'frames', 'source',
    'fps_assumed' (the file stores no frame rate) and 'source_fps'."""
    scene = scene or bpy.context.scene
    start = scene.frame_current if frame_start is None else int(frame_start)
    raw = read_motion(path)
    motion = resample(raw, scene_fps(scene))
    if is_actor_root(target):
        _, up, rest, _ = root_body(target)
        poses, rh, th = motion.easymocap(rest)
        rh, th = change_up(rh, th, motion.up_axis, up)  # into the actor's own frame
        report = apply_actor_motion(target, {"poses": poses, "Rh": rh, "Th": th, "fps": motion.fps}, rest,
                                    frame_start=start)  # fmt: skip
    elif getattr(target, "type", None) == "ARMATURE":
        rest = np.asarray(GENERIC_REST_JOINTS, dtype=np.float64)
        poses, rh, th = motion.easymocap(rest)
        report = apply_smpl_motion(target, poses, rh, th, rest, start, root_options=RootOptions(fps=motion.fps),
                                   actor_up=motion.up_axis.upper(), scene=scene)  # fmt: skip
    else:
        name = getattr(target, "name", target)
        raise RetargetError(f"cannot key motion onto {name!r}: select an armature or an actor root")
    report.update(fps=motion.fps, source=raw.source, source_fps=raw.fps, fps_assumed=raw.fps_assumed)
    return report
