"""Detection by structure: unseen namings still map; generic names do not make a wrong family win."""

from __future__ import annotations

import numpy as np
import pytest

from neural_human_addon.core.bone_maps import detect_bone_map, load_presets
from neural_human_addon.core.smpl_skeleton import SMPL_JOINT_NAMES
from tests.addon.core.rig_fixtures import BVH_DIR, CMU_WALK_BVH, needs_shared_data, read_bvh

# cgspeed's "3ds Max-friendly" CMU conversion names, for the MotionBuilder-style joints of the same skeleton.
CGSPEED = {
    "LeftUpLeg": "LeftHip", "LeftLeg": "LeftKnee", "LeftFoot": "LeftAnkle", "LeftToeBase": "LeftToe",
    "RightUpLeg": "RightHip", "RightLeg": "RightKnee", "RightFoot": "RightAnkle", "RightToeBase": "RightToe",
    "LowerBack": "lowerback", "Spine": "Chest", "Spine1": "Chest2", "LeftShoulder": "LeftCollar",
    "LeftArm": "LeftShoulder", "LeftForeArm": "LeftElbow", "LeftHand": "LeftWrist", "RightShoulder": "RightCollar",
    "RightArm": "RightShoulder", "RightForeArm": "RightElbow", "RightHand": "RightWrist",
}  # fmt: skip
FACING_PLUS_Y = np.diag([-1.0, -1.0, 1.0])  # the rig turned 180° about Z


def _cmu():
    return read_bvh(CMU_WALK_BVH, 0.056)


def _expected(preset: str, rename: dict[str, str]) -> dict[str, str | None]:
    return {j: (rename.get(b, b) if b else None) for j, b in load_presets()[preset].joints.items()}


def test_cgspeed_naming_is_not_taken_for_smpl() -> None:
    names, parents, rest, _, _ = _cmu()
    cg = [CGSPEED.get(n, n) for n in names]
    by_names = detect_bone_map(cg)  # names only: synonyms and side cues, not SMPL's look-alike names
    assert by_names.preset is None and by_names.method == "names" and by_names.ok, by_names.scores
    expected = _expected("cmu_bvh", CGSPEED)
    assert by_names.bone_map == {**expected, "left_hand": None, "right_hand": None}
    det = detect_bone_map(cg, parents=parents, heads=rest[:, :3, 3])
    assert det.ok and det.method == "structure" and det.confidence > 0.9, det.message
    assert det.bone_map == _expected("cmu_bvh", CGSPEED)  # LeftShoulder is the upper arm here, not the collar
    assert "left_shoulder=LeftShoulder" in det.message and "left_collar=LeftCollar" in det.chosen()


@pytest.mark.parametrize("turn", [np.eye(3), FACING_PLUS_Y], ids=["facing-Y", "facing+Y"])
@pytest.mark.parametrize(
    ("path", "unit", "up", "preset"),
    [(CMU_WALK_BVH, 0.056, "Y", "cmu_bvh"),
     pytest.param(BVH_DIR / "makehuman_legacy_walk1.bvh", 0.1, "Z", "makehuman_legacy", marks=needs_shared_data)],
)  # fmt: skip
def test_rig_with_unseen_names_is_mapped_by_structure(path, unit, up, preset, turn) -> None:
    names, parents, rest, _, _ = read_bvh(path, unit, up)
    scheme = {n: f"jnt{i:03d}_x" for i, n in enumerate(names)}  # no side cues, no words: structure only
    det = detect_bone_map([scheme[n] for n in names], parents=parents, heads=rest[:, :3, 3] @ turn.T)
    assert det.ok and det.method == "structure", det.message
    assert "sides from toes" in det.notes
    assert det.bone_map == _expected(preset, scheme)


def test_presets_still_win_when_they_fit() -> None:
    names, parents, rest, _, _ = _cmu()
    det = detect_bone_map(names, parents=parents, heads=rest[:, :3, 3])
    assert det.method == "preset" and det.preset.key == "cmu_bvh" and det.confidence > 0.9
    assert det.bone_map == _expected("cmu_bvh", {})


def test_structure_failure_is_explained() -> None:
    names = [f"b{i}" for i in range(12)]
    parents = [-1] + list(range(11))  # one straight chain: no legs, no arms
    heads = np.stack([np.zeros(12), np.zeros(12), np.linspace(0, 1.7, 12)], axis=1)
    det = detect_bone_map(names, parents=parents, heads=heads)
    assert not det.ok and det.method == "none" and "by hand" in det.message
    assert "Retarget > Bone Map" in det.message  # names the UI control that fixes it
    assert set(det.missing_required) <= set(SMPL_JOINT_NAMES)


def test_unknown_prefix_and_synonyms_map_by_names() -> None:
    names, _, _, _, _ = _cmu()
    hik = ["Character1_" + n for n in names]  # HumanIK-style prefix: no preset holds it
    det = detect_bone_map(hik)
    assert det.ok and det.method == "names" and 0.5 < det.confidence < 0.9, det.message
    want = {j: (f"Character1_{b}" if b else None) for j, b in _expected("cmu_bvh", {}).items()}
    assert det.bone_map == {**want, "left_hand": None, "right_hand": None}
    ue = ["root", "pelvis", "spine_01", "spine_02", "spine_03", "neck_01", "head", "clavicle_l", "upperarm_l",
          "lowerarm_l", "hand_l", "clavicle_r", "upperarm_r", "lowerarm_r", "hand_r", "thigh_l", "calf_l", "foot_l",
          "ball_l", "thigh_r", "calf_r", "foot_r", "ball_r"]  # fmt: skip
    det = detect_bone_map(ue)
    assert det.ok and det.bone_map["pelvis"] == "pelvis" and det.bone_map["left_knee"] == "calf_l", det.message
    assert det.bone_map["right_shoulder"] == "upperarm_r" and det.bone_map["spine3"] == "spine_03"
