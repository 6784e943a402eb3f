import json
from pathlib import Path

import pytest

from neural_human_addon.core.bone_maps import (
    BoneMapError,
    apply_overrides,
    detect_bone_map,
    load_preset,
    load_presets,
    normalize_bone_name,
)
from neural_human_addon.core.smpl_skeleton import REQUIRED_JOINTS, SMPL_JOINT_NAMES
from tests.addon.core.rig_fixtures import BVH_DIR, CMU_WALK_BVH, bvh_joint_names, needs_shared_data

MHSKEL = BVH_DIR.parent / "makehuman" / "default.mhskel"

RIGIFY_METARIG = [
    "spine", "spine.001", "spine.002", "spine.003", "spine.004", "spine.005", "spine.006", "face", "breast.L",
    "breast.R", "pelvis.L", "pelvis.R", "thigh.L", "shin.L", "foot.L", "toe.L", "heel.02.L", "thigh.R", "shin.R",
    "foot.R", "toe.R", "heel.02.R", "shoulder.L", "upper_arm.L", "forearm.L", "hand.L", "palm.01.L", "f_index.01.L",
    "thumb.01.L", "shoulder.R", "upper_arm.R", "forearm.R", "hand.R", "palm.01.R", "f_index.01.R", "thumb.01.R",
]  # fmt: skip
SMPLX_ADDON = list(SMPL_JOINT_NAMES) + ["jaw", "left_eye_smplhf", "right_eye_smplhf", "left_index1", "right_index1"]


def _rigify_generated() -> list[str]:
    names = ["root", "torso", "hips", "chest", "neck", "head", "MCH-torso.parent"]
    for b in RIGIFY_METARIG:
        names += [f"ORG-{b}", f"DEF-{b}", f"MCH-{b}"]
        if b.split(".")[0] in ("thigh", "upper_arm", "shin", "forearm"):
            names += [f"DEF-{b}.001", b.replace(".", "_fk."), b.replace(".", "_ik.")]
    return names


def _mixamo(prefix: str = "mixamorig:") -> list[str]:
    bones = [b for b in load_presets()["mixamo_plain"].joints.values() if b]
    bones += ["HeadTop_End", "LeftHandIndex1", "RightHandIndex1", "LeftToe_End", "RightToe_End"]
    return [prefix + b for b in bones]


def test_all_presets_load_and_cover_all_joints() -> None:
    presets = load_presets()
    assert {"smpl", "smpl_fbx_m", "rigify_metarig", "rigify_def", "mixamo", "cmu_bvh", "3dsmax_biped",
            "makehuman_default", "makehuman_legacy"} <= set(presets)  # fmt: skip
    for p in presets.values():
        assert list(p.joints) == list(SMPL_JOINT_NAMES)
        assert all(p.joints[j] for j in REQUIRED_JOINTS), p.key


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param(lambda: bvh_joint_names(CMU_WALK_BVH), "cmu_bvh"),
        pytest.param(
            lambda: bvh_joint_names(BVH_DIR / "makehuman_legacy_walk1.bvh"), "makehuman_legacy", marks=needs_shared_data
        ),
        pytest.param(
            lambda: list(json.loads(MHSKEL.read_text())["bones"]), "makehuman_default", marks=needs_shared_data
        ),
        (lambda: _mixamo("mixamorig:"), "mixamo"),
        (lambda: _mixamo(""), "mixamo_plain"),
        (lambda: _mixamo("mixamorig1:"), "mixamo"),
        (lambda: RIGIFY_METARIG, "rigify_metarig"),
        (_rigify_generated, "rigify_def"),
        (lambda: SMPLX_ADDON, "smpl"),
        (lambda: [b for b in load_presets()["smpl_fbx_f"].joints.values() if b], "smpl_fbx_f"),
        (
            lambda: [b for b in load_presets()["3dsmax_biped"].joints.values() if b] + ["Bip01", "Bip01 L Toe0Nub"],
            "3dsmax_biped",
        ),
    ],
)
def test_detection_picks_the_family(names, expected: str) -> None:
    rig = names()
    det = detect_bone_map(rig)
    assert det.preset is not None and det.preset.key == expected, det.scores
    assert det.missing_required == [] and det.ok, det.message
    assert all(b in rig for b in det.bone_map.values() if b)  # resolved to the rig's own names


@needs_shared_data  # also reads the MakeHuman skeleton
def test_detection_resolves_real_bvh_names() -> None:
    det = detect_bone_map(bvh_joint_names(CMU_WALK_BVH))
    assert det.bone_map["left_hip"] == "LeftUpLeg" and det.bone_map["spine1"] == "LowerBack"
    assert det.coverage == 1.0
    mh = detect_bone_map(list(json.loads(MHSKEL.read_text())["bones"]))
    assert mh.bone_map["left_knee"] == "lowerleg01.L" and mh.bone_map["pelvis"] == "root"
    # mixamo preset names resolve onto a namespace-prefixed rig via normalisation
    det = detect_bone_map(_mixamo("mixamorig2:"))
    assert det.bone_map["right_elbow"] == "mixamorig2:RightForeArm"


def test_partial_rig_reports_missing_bones() -> None:
    rig = [b for b in _mixamo() if "LeftArm" not in b and "LeftForeArm" not in b]
    det = detect_bone_map(rig)
    assert det.preset is not None and det.preset.key == "mixamo"
    assert det.missing_required == ["left_shoulder", "left_elbow"]
    assert not det.ok
    assert "left_shoulder" in det.message and "mixamorig:LeftArm" in det.message
    assert det.coverage == pytest.approx(22 / 24)


def test_unknown_rig_gives_no_preset() -> None:
    det = detect_bone_map(["Bone", "Bone.001", "Bone.002"])
    assert det.preset is None and det.missing_required == list(REQUIRED_JOINTS)
    assert "by hand" in det.message


def test_overrides_merge_and_validate() -> None:
    rig = _mixamo()
    det = detect_bone_map(rig)
    merged = apply_overrides(det.bone_map, {"left_hand": None, "spine2": "mixamorig:Spine2"}, rig)
    assert merged["left_hand"] is None and merged["spine2"] == "mixamorig:Spine2"
    assert merged["pelvis"] == "mixamorig:Hips"
    assert det.bone_map["left_hand"] == "mixamorig:LeftHandMiddle1"  # input untouched
    with pytest.raises(BoneMapError, match="no bone named 'Nope'"):
        apply_overrides(det.bone_map, {"head": "Nope"}, rig)
    with pytest.raises(BoneMapError, match="unknown SMPL joint"):
        apply_overrides(det.bone_map, {"skull": "mixamorig:Head"})


def test_bad_preset_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "joints": {}}')
    with pytest.raises(BoneMapError, match="lacks the 'family' field"):
        load_preset(bad)
    bad.write_text("{not json")
    with pytest.raises(BoneMapError, match="cannot read"):
        load_preset(bad)


@pytest.mark.parametrize(
    ("a", "b"),
    [("mixamorig:LeftUpLeg", "LeftUpLeg"), ("DEF-thigh.L", "thigh.L"), ("Bip01 L Thigh", "thigh_l"),
     ("m_avg_L_Hip", "left_hip"), ("UpLeg_R", "RightUpLeg"), ("LHipJoint", "left-hipjoint")],
)  # fmt: skip
def test_normalisation_equates_spellings(a: str, b: str) -> None:
    assert normalize_bone_name(a) == normalize_bone_name(b)
    assert normalize_bone_name("thigh.L") != normalize_bone_name("thigh.R")
