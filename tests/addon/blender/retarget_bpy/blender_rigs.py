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


def import_bvh(path: Path = CMU_WALK, scale: float = CMU_UNIT, axis_forward: str = "-Z", axis_up: str = "Y"):
    """Blender's own BVH importer, one BVH frame per scene frame from frame 1; returns the armature object."""
    result = bpy.ops.import_anim.bvh(
        filepath=str(path), global_scale=scale, frame_start=1, use_fps_scale=False, rotate_mode="NATIVE",
        axis_forward=axis_forward, axis_up=axis_up,
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


def bvh_variant(src: Path, out: Path, rename: dict[str, str] | None = None, zero_positions: bool = False) -> Path:
    """A copy of a BVH file with joints renamed and/or a 0 0 0 position channel triple added to every non-root joint
    (what some exporters write meaning 'at rest'; Blender's importer reads them as absolute offsets)."""
    rename = rename or {}
    head, motion = src.read_text().split("MOTION", 1)
    lines, counts = [], []
    for line in head.splitlines():
        parts = line.split()
        if parts and parts[0] in ("ROOT", "JOINT"):
            line = line.replace(parts[1], rename.get(parts[1], parts[1]))
        if parts and parts[0] == "CHANNELS":
            counts.append(int(parts[1]))
            if zero_positions and len(counts) > 1 and int(parts[1]) == 3:
                line = line.replace("CHANNELS 3", "CHANNELS 6 Xposition Yposition Zposition")
        lines.append(line)
    rows = motion.strip().splitlines()
    body = []
    for row in rows[2:]:
        vals = row.split()
        if zero_positions:
            new, k = [], 0
            for j, c in enumerate(counts):
                if j > 0 and c == 3:
                    new += ["0", "0", "0"]
                new += vals[k : k + c]
                k += c
            vals = new
        body.append(" ".join(vals))
    out.write_text("\n".join(lines) + "\nMOTION\n" + "\n".join(rows[:2] + body) + "\n")
    return out


def build_armature(name: str, names: list[str], parents: list[int], heads: np.ndarray, tails: np.ndarray):
    """An armature object from bone heads and tails (world = armature space), linked to the scene."""
    data = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        ebones = []
        for n, h, t in zip(names, heads, tails, strict=True):
            eb = data.edit_bones.new(n)
            eb.head, eb.tail = h.tolist(), t.tolist()
            ebones.append(eb)
        for i, p in enumerate(parents):
            if p >= 0:
                ebones[i].parent = ebones[p]
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    return obj
