"""The Retarget panel's operators in real Blender: the bone-map editor round-trips through a saved user map, and
motion files land as keys at the scene's frame rate. (UI drawing cannot run headless: properties and operators.)"""

from __future__ import annotations

import json

import bpy
import numpy as np
import pytest

import neural_human_addon
from neural_human_addon.blender.bone_map_editor import edited_map_for, editor_map
from neural_human_addon.blender.retarget_bpy import _fcurves, detect_armature, user_bone_map_dir
from neural_human_addon.core.smpl_skeleton import REQUIRED_JOINTS, SMPL_JOINT_NAMES
from tests.addon.blender.retarget_bpy.blender_rigs import CMU_WALK, build_standing_smpl, bvh_variant, import_bvh
from tests.addon.core.test_bone_detect import CGSPEED

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module", autouse=True)
def registered():
    neural_human_addon.register()
    yield
    neural_human_addon.unregister()


def _activate(obj) -> None:
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)


def test_editor_map_round_trips_through_a_saved_preset(tmp_path) -> None:
    arm = import_bvh(bvh_variant(CMU_WALK, tmp_path / "cg.bvh", CGSPEED))
    _activate(arm)
    settings = bpy.context.scene.neural_human
    assert bpy.ops.neural_human.detect_bone_map() == {"FINISHED"}
    slots = {s.joint: s for s in settings.bone_slots}
    assert list(slots) == list(SMPL_JOINT_NAMES) and {j for j, s in slots.items() if s.required} == set(REQUIRED_JOINTS)
    assert slots["left_shoulder"].detected == "LeftShoulder" and slots["left_collar"].bone == "LeftCollar"
    assert "99% confidence" in settings.bone_map_status or "100% confidence" in settings.bone_map_status
    # the user edits two rows: clears the hand, moves the head onto Neck1
    slots["left_hand"].bone = ""
    slots["head"].bone = "Neck1"
    edited = editor_map(settings)
    assert edited["left_hand"] is None and edited["head"] == "Neck1" and edited_map_for(settings, arm) == edited

    path = user_bone_map_dir() / "cmu_cgspeed_test.json"
    try:
        assert bpy.ops.neural_human.save_bone_map(name="CMU cgspeed test") == {"FINISHED"}
        assert json.loads(path.read_text())["joints"] == edited
        settings.bone_slots.clear()
        assert bpy.ops.neural_human.load_bone_map(preset="user_cmu_cgspeed_test") == {"FINISHED"}
        assert editor_map(settings) == edited and settings.bone_map_name == "CMU cgspeed test"
        det = detect_armature(arm)  # detection offers the saved map from now on
        assert det.method == "preset" and det.preset.key == "user_cmu_cgspeed_test" and det.bone_map == edited
    finally:
        path.unlink(missing_ok=True)


def test_motion_file_keys_land_at_the_scene_rate(tmp_path) -> None:
    scene = bpy.context.scene
    old_fps, old_base = scene.render.fps, scene.render.fps_base
    scene.render.fps, scene.render.fps_base = 30, 1.0
    smpl = build_standing_smpl("SMPL_motion")
    _activate(smpl)
    n = 121  # one second at 120 fps
    poses = np.zeros((n, 165))
    poses[:, 18 * 3 + 1] = np.linspace(0.0, 1.2, n)  # the left elbow turns 1.2 rad about Y over the second
    path = tmp_path / "clip.npz"
    np.savez(path, poses=poses, trans=np.zeros((n, 3)), mocap_framerate=np.array(120.0))
    scene.frame_set(5)
    try:
        assert bpy.ops.neural_human.load_motion_file(filepath=str(path)) == {"FINISHED"}
        curves = [fc for fc in _fcurves(smpl) if fc.data_path == 'pose.bones["left_elbow"].rotation_quaternion']
        frames = sorted({int(k.co[0]) for fc in curves for k in fc.keyframe_points})
        assert frames == list(range(5, 36))  # 31 frames at 30 fps from the current frame
        # frame 5 + 15 = half a second: the elbow has turned 0.6 rad relative to its parent
        scene.frame_set(20)
        pb = smpl.pose.bones["left_elbow"]
        rel = np.array(pb.parent.matrix.to_3x3().inverted() @ pb.matrix.to_3x3())
        angle = np.arccos(np.clip((np.trace(rel) - 1) / 2, -1, 1))
        assert angle == pytest.approx(0.6, abs=1e-3)
    finally:
        scene.render.fps, scene.render.fps_base = old_fps, old_base
