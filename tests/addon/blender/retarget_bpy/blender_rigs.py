"""Helpers for the real-Blender retarget tests: shared sample data, the demo body's rest joints, BVH import."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import bpy
import numpy as np

from neural_human_addon.core.smpl_skeleton import PRIMARY_CHILD
from tests.addon import demo_body
from tests.addon.core.rig_fixtures import a_pose  # noqa: F401  (re-exported for the Blender tests)

ROOT = Path(__file__).resolve().parents[4]
CMU_WALK = ROOT / "server" / "data" / "assets" / "cmu_mb_walk_delfem2.bvh"  # ships with the project
CMU_UNIT = 0.056  # CMU BVH units -> metres (the same factor as tests/retarget)
FOOT_JOINTS = ("left_ankle", "right_ankle", "left_foot", "right_foot")


@lru_cache(maxsize=1)
def demo_rest() -> tuple[np.ndarray, float]:
    """(rest joints (24, 3) Y-up, height of the pelvis above the template's soles)."""
    joints, sole = demo_body.rest()
    return joints, float(joints[0, 1]) - sole


def build_standing_smpl(name: str, rest_joints: np.ndarray | None = None):
    """An SMPL armature (demo body proportions, or `rest_joints`) standing on the floor at the world origin."""
    from neural_human_addon.blender.retarget_bpy import build_smpl_armature

    joints, pelvis_height = demo_rest()
    return build_smpl_armature(name, joints if rest_joints is None else rest_joints, origin=(0.0, 0.0, pelvis_height))


def bvh_fps(path: Path) -> float:
    for line in path.read_text().splitlines():
        if line.strip().startswith("Frame Time:"):
            return 1.0 / float(line.split(":")[1])
    raise ValueError(f"{path} has no 'Frame Time:' line")


def import_bvh(path: Path = CMU_WALK, scale: float = CMU_UNIT):
    """Blender's own BVH importer, one BVH frame per scene frame from frame 1; returns the armature object."""
    result = bpy.ops.import_anim.bvh(
        filepath=str(path), global_scale=scale, frame_start=1, use_fps_scale=False, rotate_mode="NATIVE",
        axis_forward="-Z", axis_up="Y",
    )  # fmt: skip
    assert result == {"FINISHED"}, result
    obj = bpy.context.view_layer.objects.active
    assert obj is not None and obj.type == "ARMATURE"
    return obj


def direction_errors(
    posed_a: np.ndarray, names_a: list[str], map_a: dict, posed_b: np.ndarray, names_b: list[str], map_b: dict
) -> dict[str, np.ndarray]:
    """Per SMPL joint: angle (deg, per frame) between the two rigs' joint->primary-child world directions.

    Joints whose child sits on their head in either rig (CMU's Spine1 -> Neck) have no direction and are skipped."""
    out = {}
    for j, c in PRIMARY_CHILD.items():
        if not all(m.get(x) for m in (map_a, map_b) for x in (j, c)):
            continue
        dirs = []
        for posed, names, m in ((posed_a, names_a, map_a), (posed_b, names_b, map_b)):
            d = posed[:, names.index(m[c]), :3, 3] - posed[:, names.index(m[j]), :3, 3]
            dirs.append(d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12))
            if np.linalg.norm(d[0]) < 1e-4:
                break
        else:
            out[j] = np.degrees(np.arccos(np.clip(np.sum(dirs[0] * dirs[1], axis=-1), -1.0, 1.0)))
    return out
