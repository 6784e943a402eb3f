"""Retargeting in real Blender: a CMU walk imported with Blender's BVH importer, baked onto SMPL and Rigify rigs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import bpy
import numpy as np
import pytest

from neural_human_addon.blender.retarget_bpy import (
    apply_smpl_motion,
    armature_to_smpl_frames,
    bake_retarget,
    build_smpl_armature,
    posed_world_matrices,
    skeleton_from_armature,
)
from neural_human_addon.core.retarget import RetargetError, RootOptions, foot_contacts
from neural_human_addon.core.smpl_skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS
from tests.addon import demo_body
from tests.addon.blender.retarget_bpy.blender_rigs import (
    CMU_WALK,
    FOOT_JOINTS,
    ROOT,
    a_pose,
    build_standing_smpl,
    bvh_fps,
    demo_rest,
    direction_errors,
    import_bvh,
)

pytestmark = pytest.mark.blender
FRAMES = (2, 41)  # BVH frame 1 (scene frame 1) jumps away from the rest of the clip
FRAME_LIST = list(range(FRAMES[0], FRAMES[1] + 1))
SMPL_MAP = {j: j for j in SMPL_JOINT_NAMES}


def _posed(obj) -> tuple[np.ndarray, list[str]]:
    _, names = skeleton_from_armature(obj)
    return posed_world_matrices(obj, FRAME_LIST, names=names), names


def _strip_animation(obj) -> None:
    obj.animation_data_clear()
    for pb in obj.pose.bones:
        pb.rotation_mode = "QUATERNION"
        pb.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
        pb.location = (0.0, 0.0, 0.0)


def test_skeleton_and_posed_matrices_match_blender() -> None:
    src = import_bvh()
    skel, names = skeleton_from_armature(src)
    assert names[0] == "Hips" and skel.parents[0] == -1 and len(names) == 31
    bone = src.data.bones["LeftLeg"]
    np.testing.assert_allclose(skel.rest_heads[names.index("LeftLeg")], src.matrix_world @ bone.head_local, atol=1e-6)
    posed = posed_world_matrices(src, [5, 9], names=names)
    bpy.context.scene.frame_set(9)
    np.testing.assert_allclose(posed[1, 3], np.array(src.matrix_world @ src.pose.bones[names[3]].matrix), atol=1e-6)
    assert not np.allclose(posed[0], posed[1])  # the walk moves
    assert bpy.context.scene.frame_current == 9  # restored to the frame it was on


def test_cmu_walk_onto_smpl_rig_directions_feet_and_round_trip() -> None:
    src = import_bvh()
    fps = bvh_fps(CMU_WALK)
    smpl = build_standing_smpl("SMPL_T")
    opts = RootOptions(fps=fps, keep_on_ground=True)
    report = bake_retarget(src, smpl, FRAMES, root_options=opts)
    assert report["target_map"] == SMPL_MAP and report["source_map"]["pelvis"] == "Hips"
    assert smpl.animation_data.action.name == report["action"]

    # What Blender evaluates from the keys, not what the core computed.
    ps, sn = _posed(src)
    pt, tn = _posed(smpl)
    errs = direction_errors(ps, sn, report["source_map"], pt, tn, SMPL_MAP)
    assert len(errs) >= 14, sorted(errs)
    medians = {j: float(np.median(e)) for j, e in errs.items()}
    assert max(medians.values()) <= 3.0, medians

    # Feet: on the source's contact frames the SMPL feet stand where the (scaled) source feet stand.
    scale = report["scale"]
    src_feet = ps[:, [sn.index(report["source_map"][j]) for j in FOOT_JOINTS]][..., :3, 3]
    contact = foot_contacts(src_feet[..., 2], fps, opts.contact_speed / scale, opts.contact_height / scale, src_feet)
    on = contact.any(axis=1)
    assert on.sum() >= 10
    src_low = src_feet[..., 2].min(axis=1)
    tgt_low = pt[:, [tn.index(j) for j in FOOT_JOINTS], 2, 3].min(axis=1)
    foot_gap = np.abs(tgt_low[on] - scale * src_low[on])
    assert foot_gap.max() <= 0.02, foot_gap
    assert tgt_low.min() >= -0.001  # never through the floor, contact or not
    assert report["foot_contact"]["max_abs_m"] <= 0.02 and report["foot_contact"]["below_floor_max_m"] <= 0.001

    # Round trip A -> SMPL -> A': a fresh copy of the source rig follows the SMPL rig back to the source.
    back = import_bvh()
    _strip_animation(back)
    bake_retarget(smpl, back, FRAMES, root_options=RootOptions(fps=fps))
    pb_, bn = _posed(back)
    errs_back = direction_errors(ps, sn, report["source_map"], pb_, bn, report["source_map"])
    worst = {j: float(e.max()) for j, e in errs_back.items()}
    assert max(worst.values()) <= 2.0, worst


def test_a_pose_and_t_pose_rigs_get_the_same_world_directions() -> None:
    src = import_bvh()
    joints, _ = demo_rest()
    t_rig = build_standing_smpl("SMPL_T", joints)
    a_rig = build_standing_smpl("SMPL_A", a_pose(joints, 40.0))
    # the two rests really differ: the A-pose upper arm points 40° lower
    ta = skeleton_from_armature(t_rig)[0].rest_heads
    aa = skeleton_from_armature(a_rig)[0].rest_heads
    assert np.linalg.norm(ta[18] - aa[18]) > 0.1
    opts = RootOptions(fps=bvh_fps(CMU_WALK))
    bake_retarget(src, t_rig, FRAMES, root_options=opts)
    bake_retarget(src, a_rig, FRAMES, root_options=opts)
    pt, tn = _posed(t_rig)
    pa, an = _posed(a_rig)
    errs = direction_errors(pt, tn, SMPL_MAP, pa, an, SMPL_MAP)
    assert {"left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist"} <= set(errs)
    # CMU's hands have zero length (LeftHand -> LeftFingerBase): the source gives the wrists no direction, so they
    # inherit the forearm's rest-offset correction and the two rigs agree on them too.
    worst = {j: float(e.max()) for j, e in errs.items()}
    assert max(worst.values()) <= 0.5, worst


def test_armature_to_smpl_drives_the_demo_body() -> None:
    src = import_bvh()
    smpl_rig = build_standing_smpl("SMPL_T")
    fps = bvh_fps(CMU_WALK)
    bake_retarget(src, smpl_rig, FRAMES, root_options=RootOptions(fps=fps))
    joints, _ = demo_rest()

    def body_joints(params) -> np.ndarray:
        return demo_body.pose(params.poses, params.Rh, params.Th)[0]

    # The rig with the body's proportions: the posed body's joints land on the rig's bone heads.
    params = armature_to_smpl_frames(smpl_rig, FRAME_LIST, joints, root_options=RootOptions(fps=fps))
    assert params.poses.shape == (len(FRAME_LIST), 72) and params.Th.shape == (len(FRAME_LIST), 3)
    pr, rn = _posed(smpl_rig)
    gap = np.linalg.norm(body_joints(params) - pr[:, [rn.index(j) for j in SMPL_JOINT_NAMES]][..., :3, 3], axis=-1)
    assert gap.max() <= 0.03, gap.max()

    # The CMU rig itself (other proportions): the body's joint -> child directions follow the rig's,
    # and its pelvis follows the rig's root motion after scaling.
    params = armature_to_smpl_frames(src, FRAME_LIST, joints, root_options=RootOptions(fps=fps))
    bj = body_joints(params)
    body_posed = np.tile(np.eye(4), (len(FRAME_LIST), 24, 1, 1))
    body_posed[..., :3, 3] = bj
    ps, sn = _posed(src)
    smap = armature_to_smpl_bone_map(src)
    errs = direction_errors(ps, sn, smap, body_posed, list(SMPL_JOINT_NAMES), SMPL_MAP)
    medians = {j: float(np.median(e)) for j, e in errs.items()}
    assert len(errs) >= 14 and max(medians.values()) <= 3.0, medians
    src_skel, _ = skeleton_from_armature(src)
    scale = _leg_ratio(src_skel, sn, smap, joints)
    hips = ps[:, sn.index("Hips"), :3, 3]
    walked_src = (hips[-1] - hips[0]) * scale
    walked_body = bj[-1, 0] - bj[0, 0]
    assert np.linalg.norm(walked_body - walked_src) <= 0.03, (walked_body, walked_src)


def armature_to_smpl_bone_map(obj) -> dict:
    from neural_human_addon.blender.retarget_bpy import resolve_bone_map

    return resolve_bone_map(obj, None, "source")


def _leg_ratio(skel, names: list[str], bone_map: dict, joints: np.ndarray) -> float:
    def leg(points: dict) -> float:
        return float(
            np.mean([
                np.linalg.norm(points[f"{s}_knee"] - points[f"{s}_hip"])
                + np.linalg.norm(points[f"{s}_ankle"] - points[f"{s}_knee"])
                for s in ("left", "right")
            ])
        )  # fmt: skip

    keys = [f"{s}_{p}" for s in ("left", "right") for p in ("hip", "knee", "ankle")]
    src = {k: skel.rest_heads[names.index(bone_map[k])] for k in keys}
    body = {k: joints[SMPL_JOINT_NAMES.index(k)] for k in keys}
    return leg(body) / leg(src)


def test_smpl_motion_onto_rig_round_trip() -> None:
    src = import_bvh()
    fps = bvh_fps(CMU_WALK)
    joints, _ = demo_rest()
    params = armature_to_smpl_frames(src, FRAME_LIST, joints, root_options=RootOptions(fps=fps))
    back = import_bvh()
    _strip_animation(back)
    report = apply_smpl_motion(back, params.poses, params.Rh, params.Th, joints, FRAMES[0])
    assert report["frames"] == FRAMES and back.animation_data.action is not None
    ps, sn = _posed(src)
    pb_, _ = _posed(back)
    smap = armature_to_smpl_bone_map(src)
    errs = direction_errors(ps, sn, smap, pb_, sn, smap)
    worst = {j: float(e.max()) for j, e in errs.items()}
    assert len(errs) >= 14 and max(worst.values()) <= 2.0, worst
    hips = sn.index("Hips")
    assert np.abs(pb_[:, hips, :3, 3] - ps[:, hips, :3, 3]).max() <= 0.01  # root motion comes back too


# Run in a subprocess: with Rigify enabled, bpy itself misbehaves at interpreter exit (not the add-on's doing):
# bpy 4.2.23 segfaults (rc 139, `bpy_class_free` after the interpreter is gone) and 4.5.15 deadlocks when torch was
# imported too. The child prints its result and leaves with os._exit, so neither bug can fail or hang the suite.
RIGIFY_SCRIPT = r"""
import json, os, sys
import bpy
import addon_utils  # after bpy: the bpy module puts Blender's scripts on sys.path
import numpy as np
from neural_human_addon.blender.retarget_bpy import bake_retarget, posed_world_matrices, skeleton_from_armature
from neural_human_addon.core.retarget import RootOptions
from tests.addon.blender.retarget_bpy.blender_rigs import CMU_WALK, bvh_fps, direction_errors, import_bvh

frames = tuple(json.loads(sys.argv[-1]))
frame_list = list(range(frames[0], frames[1] + 1))

def posed(obj):
    _, names = skeleton_from_armature(obj)
    return posed_world_matrices(obj, frame_list, names=names), names

# Rigify ships with Blender; enabling it headless needs default_set=True (it reads its own add-on preferences).
result = {"enabled": addon_utils.enable("rigify", default_set=True) is not None}
src = import_bvh()
result["metarig_add"] = sorted(bpy.ops.object.armature_human_metarig_add())
rig = bpy.context.view_layer.objects.active
result["rig"] = [rig.type, "upper_arm.L" in rig.data.bones]
report = bake_retarget(src, rig, frames, root_options=RootOptions(fps=bvh_fps(CMU_WALK), keep_on_ground=True))
result["left_shoulder"] = report["target_map"]["left_shoulder"]
ps, sn = posed(src)
pr, rn = posed(rig)
errs = direction_errors(ps, sn, report["source_map"], pr, rn, report["target_map"])
result["medians"] = {j: float(np.median(e)) for j, e in errs.items()}
addon_utils.disable("rigify", default_set=True)
print("RESULT " + json.dumps(result), flush=True)
os._exit(0)
"""


def test_onto_rigify_metarig_generated_by_rigify(tmp_path) -> None:
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender"), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", RIGIFY_SCRIPT, json.dumps(FRAMES)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    assert result["enabled"], "Rigify failed to enable in this bpy build"
    assert result["metarig_add"] == ["FINISHED"] and result["rig"] == ["ARMATURE", True]
    assert result["left_shoulder"] == "upper_arm.L"
    medians = result["medians"]
    assert len(medians) >= 12 and max(medians.values()) <= 3.0, medians


def test_build_smpl_armature_layout() -> None:
    joints, pelvis_height = demo_rest()
    rig = build_smpl_armature("SMPL_layout", joints, origin=(0.0, 0.0, pelvis_height))
    bones = rig.data.bones
    assert sorted(b.name for b in bones) == sorted(SMPL_JOINT_NAMES)
    for name, p in zip(SMPL_JOINT_NAMES, SMPL_PARENTS, strict=True):
        parent = bones[name].parent
        assert (parent.name if parent else None) == (SMPL_JOINT_NAMES[p] if p >= 0 else None)
    heads = np.array([bones[n].head_local for n in SMPL_JOINT_NAMES])
    assert heads[SMPL_JOINT_NAMES.index("head"), 2] > heads[0, 2] > heads[SMPL_JOINT_NAMES.index("left_ankle"), 2]
    assert abs(heads[0, 2] - pelvis_height) < 1e-6
    # the upper arm's tail points at the elbow (Z-up world, SMPL's left is +X)
    arm = bones["left_shoulder"]
    elbow = heads[SMPL_JOINT_NAMES.index("left_elbow")]
    np.testing.assert_allclose(np.array(arm.tail_local), elbow, atol=1e-5)
    assert elbow[0] > heads[0, 0] + 0.3
    assert rig.mode == "OBJECT"


def test_bad_inputs_have_clear_errors() -> None:
    src = import_bvh()
    rig = build_standing_smpl("SMPL_T")
    with pytest.raises(RetargetError, match="does not have"):
        bake_retarget(src, rig, FRAMES, source_map={"pelvis": "NoSuchBone"})
    with pytest.raises(RetargetError, match="must map 'pelvis'"):
        bake_retarget(src, rig, FRAMES, target_map={"head": "head"})
    with pytest.raises(RetargetError, match="empty"):
        bake_retarget(src, rig, (10, 5))
    with pytest.raises(RetargetError, match="same armature"):
        bake_retarget(src, src, FRAMES)
    # a rig whose names match no preset is mapped by its structure
    odd = build_smpl_armature("odd", demo_rest()[0], names=[f"bone{i:02d}" for i in range(24)])
    report = bake_retarget(src, odd, FRAMES)
    assert report["target_map"] == {j: f"bone{i:02d}" for i, j in enumerate(SMPL_JOINT_NAMES)}
    # one that is no humanoid at all: the message says to map the bones by hand, and where
    line = np.stack([np.zeros(12), np.linspace(0, 1.7, 12), np.zeros(12)], axis=1)
    stick = build_smpl_armature("stick", line, parents=[-1, *range(11)], names=[f"s{i}" for i in range(12)])
    with pytest.raises(RetargetError, match="map the bones by hand.*Retarget > Bone Map"):
        bake_retarget(src, stick, FRAMES)
    with pytest.raises(RetargetError, match="armature object"):
        bake_retarget(src, None, FRAMES)
