"""Rigs of several namings, imported with Blender's own BVH importer and baked onto SMPL without a hand map."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from neural_human_addon.blender.retarget_bpy import bake_retarget, detect_armature, ignore_nonroot_positions
from neural_human_addon.core.bone_maps import load_presets
from neural_human_addon.core.retarget import RetargetError, RootOptions
from tests.addon.blender.retarget_bpy.blender_rigs import (
    CMU_WALK,
    build_armature,
    build_standing_smpl,
    bvh_fps,
    bvh_variant,
    import_bvh,
)
from tests.addon.core.rig_fixtures import BVH_DIR, SHARED_DATA, makehuman_default_bones
from tests.addon.core.test_bone_detect import CGSPEED

pytestmark = pytest.mark.blender
FRAMES = (2, 61)
CMU_NAMES = [ln.split()[1] for ln in CMU_WALK.read_text().split("MOTION")[0].splitlines()
             if ln.split()[:1] in (["ROOT"], ["JOINT"])]  # fmt: skip
MH_WALK = BVH_DIR / "makehuman_legacy_walk1.bvh"
UNSEEN = {n: f"Knochen_{i:02d}" for i, n in enumerate(CMU_NAMES)}  # no side cue, no body-part word


def _proof(report: dict) -> dict[str, float]:
    bones = report["bones"].values()
    return {
        "direction_median_deg": float(np.median([b["median_deg"] for b in bones])),
        "twist_median_deg": float(np.median([b["twist_median_deg"] for b in bones if "twist_median_deg" in b])),
        "feet_max_m": report["foot_contact"]["max_abs_m"],
        "pelvis_median_deg": report["pelvis"]["hips_axis_median_deg"],
    }


@pytest.mark.parametrize("rename", [{}, CGSPEED, UNSEEN], ids=["motionbuilder", "cgspeed", "unseen"])
def test_cmu_namings_bake_onto_smpl_without_a_hand_map(tmp_path, rename) -> None:
    src = import_bvh(bvh_variant(CMU_WALK, tmp_path / "walk.bvh", rename))
    det = detect_armature(src)
    assert det.ok, det.message
    expected = {j: (rename.get(b, b) if b else None) for j, b in load_presets()["cmu_bvh"].joints.items()}
    assert det.bone_map == expected, det.message
    assert (det.method == "preset") == (not rename)  # cgspeed's names are no preset's: the structure maps them
    smpl = build_standing_smpl("SMPL_T")
    report = bake_retarget(src, smpl, FRAMES, root_options=RootOptions(fps=bvh_fps(CMU_WALK), keep_on_ground=True))
    proof = _proof(report)  # judged on what Blender evaluates from the keys
    print(rename and "renamed", proof)
    assert proof["direction_median_deg"] <= 2.0 and proof["twist_median_deg"] <= 5.0, report["bones"]
    assert proof["feet_max_m"] <= 0.02 and report["foot_contact"]["contact_frames"] >= 10, report["foot_contact"]
    assert proof["pelvis_median_deg"] <= 5.0, report["pelvis"]


@pytest.mark.skipif(not MH_WALK.is_file(), reason="shared data folder not present")
def test_makehuman_legacy_walk_bakes_onto_smpl() -> None:
    src = import_bvh(MH_WALK, 0.1, axis_forward="-Y", axis_up="Z")  # a Z-up file, decimetres
    det = detect_armature(src)
    assert det.ok and det.preset.key == "makehuman_legacy", det.message
    smpl = build_standing_smpl("SMPL_T")
    report = bake_retarget(src, smpl, (1, 14), root_options=RootOptions(fps=bvh_fps(MH_WALK), keep_on_ground=True))
    proof = _proof(report)
    print("makehuman legacy", proof)
    assert proof["direction_median_deg"] <= 2.0 and proof["twist_median_deg"] <= 5.0, report["bones"]
    # a walk in place (the planted foot slides back at walking speed): no contact frames by speed; never below ground
    assert report["foot_contact"]["below_floor_max_m"] <= 0.001, report["foot_contact"]
    assert proof["pelvis_median_deg"] <= 5.0, report["pelvis"]


@pytest.mark.skipif(not (SHARED_DATA / "makehuman" / "default.mhskel").is_file(), reason="no shared data")
def test_cmu_walk_onto_the_makehuman_default_rig() -> None:
    mh = build_armature("MakeHuman", *makehuman_default_bones())
    det = detect_armature(mh)
    assert det.ok and det.preset.key == "makehuman_default" and det.bone_map["pelvis"] == "root", det.message
    src = import_bvh()
    report = bake_retarget(src, mh, FRAMES, root_options=RootOptions(fps=bvh_fps(CMU_WALK), keep_on_ground=True))
    proof = _proof(report)
    print("makehuman default", proof)
    assert proof["direction_median_deg"] <= 2.0 and proof["twist_median_deg"] <= 5.0, report["bones"]
    assert proof["feet_max_m"] <= 0.02 and report["foot_contact"]["contact_frames"] >= 10, report["foot_contact"]
    assert proof["pelvis_median_deg"] <= 5.0, report["pelvis"]


def test_zero_position_channels_are_refused_then_ignored(tmp_path) -> None:
    src = import_bvh(bvh_variant(CMU_WALK, tmp_path / "zeros.bvh", zero_positions=True))
    smpl = build_standing_smpl("SMPL_T")
    opts = RootOptions(fps=bvh_fps(CMU_WALK))
    with pytest.raises(RetargetError, match="collapses bones.*Ignore Non-root Positions"):
        bake_retarget(src, smpl, FRAMES, root_options=opts)
    removed = ignore_nonroot_positions(src)
    assert len(removed) == len(CMU_NAMES) - 1 and "Hips" not in removed
    proof = _proof(bake_retarget(src, smpl, FRAMES, root_options=opts))
    assert proof["direction_median_deg"] <= 2.0 and proof["twist_median_deg"] <= 5.0, proof


def test_cmu_walk_onto_rigifys_human_metarig() -> None:
    import addon_utils

    was_enabled = addon_utils.check("rigify")[1]
    addon_utils.enable("rigify", default_set=True)
    try:
        bpy.ops.object.armature_human_metarig_add()  # made by Rigify itself
        meta = bpy.context.view_layer.objects.active
        det = detect_armature(meta)
        assert det.ok and det.preset.key == "rigify_metarig", det.message
        src = import_bvh()
        opts = RootOptions(fps=bvh_fps(CMU_WALK), keep_on_ground=True)
        proof = _proof(report := bake_retarget(src, meta, FRAMES, root_options=opts))
        print("rigify metarig", proof)
        assert proof["direction_median_deg"] <= 2.0 and proof["twist_median_deg"] <= 5.0, report["bones"]
        assert proof["feet_max_m"] <= 0.02 and report["foot_contact"]["contact_frames"] >= 10, report["foot_contact"]
        assert proof["pelvis_median_deg"] <= 5.0, report["pelvis"]
    finally:
        if not was_enabled:
            addon_utils.disable("rigify", default_set=True)
