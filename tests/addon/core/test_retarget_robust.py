"""Retargeting real rigs: MakeHuman's forward-pointing root, sources without toes, collapsed poses, twist."""

from __future__ import annotations

import numpy as np
import pytest

from neural_human_addon.core.bone_maps import detect_bone_map
from neural_human_addon.core.retarget import RetargetError, RootOptions, Skeleton, quality_report, retarget
from neural_human_addon.core.rotations import axis_angle_to_matrix
from tests.addon.core.rig_fixtures import CMU_WALK_BVH, makehuman_default_rig, needs_makehuman, read_bvh

FRAMES = slice(1, 120)  # BVH frame 0 jumps away from the rest of the clip


def _cmu():
    names, parents, rest, posed, fps = read_bvh(CMU_WALK_BVH, 0.056)
    det = detect_bone_map(names, parents=parents, heads=rest[:, :3, 3])
    assert det.ok and det.preset.key == "cmu_bvh", det.message
    return Skeleton(names, parents, rest), posed[FRAMES], det.bone_map, fps


def _makehuman():
    names, parents, rest = makehuman_default_rig(np.random.default_rng(3))
    det = detect_bone_map(names, parents=parents, heads=rest[:, :3, 3])
    assert det.ok and det.method == "preset" and det.preset.key == "makehuman_default", det.message
    assert det.bone_map["pelvis"] == "root" and det.bone_map["left_hip"] == "upperleg01.L"
    return Skeleton(names, parents, rest), det.bone_map


def _median_errors(report: dict) -> tuple[float, float]:
    bones = report["bones"].values()
    return (float(np.median([b["median_deg"] for b in bones])),
            float(np.median([b["twist_median_deg"] for b in bones if "twist_median_deg" in b])))  # fmt: skip


@needs_makehuman
def test_cmu_walk_onto_makehuman_default_keeps_the_pelvis_upright() -> None:
    src, posed, smap, fps = _cmu()
    tgt, tmap = _makehuman()
    opts = RootOptions(fps=fps, keep_on_ground=True)
    res = retarget(src, posed, smap, tgt, tmap, opts)
    report = quality_report(src, posed, smap, tgt, tmap, res, opts)
    direction, twist = _median_errors(report)
    assert direction <= 2.0 and twist <= 5.0, report["bones"]
    assert max(b["median_deg"] for b in report["bones"].values()) <= 2.0
    assert report["pelvis"]["hips_axis_median_deg"] <= 5.0, report["pelvis"]
    assert report["foot_contact"]["max_abs_m"] <= 0.02 and report["foot_contact"]["contact_frames"] > 10
    # the root bone points forward at rest: the pelvis -> neck line must still follow the source's, not fold (the
    # old direction-only pelvis turned it ~90°); what remains is the rigs' rest difference (MakeHuman's root sits
    # behind the pelvis)
    def line(posed_or_rest: np.ndarray, names: list[str], a: str, b: str) -> np.ndarray:
        d = posed_or_rest[..., names.index(b), :3, 3] - posed_or_rest[..., names.index(a), :3, 3]
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def angle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.degrees(np.arccos(np.clip(np.sum(x * y, -1), -1, 1)))

    at_rest = angle(line(tgt.rest_world, tgt.names, "root", "neck01"), line(src.rest_world, src.names, "Hips", "Neck"))
    posed_ang = angle(line(res.posed_world, tgt.names, "root", "neck01"), line(posed, src.names, "Hips", "Neck"))
    assert np.abs(posed_ang - at_rest).max() <= 3.0 and at_rest < 20.0


def test_source_without_toes_keeps_ankles_on_the_ground() -> None:
    src, posed, smap, fps = _cmu()
    smap = {**smap, "left_foot": None, "right_foot": None}
    names, parents, rest, _, _ = read_bvh(CMU_WALK_BVH, 0.056)
    tgt = Skeleton([f"T_{n}" for n in names], parents, rest * np.array([1, 1, 1, 1.0]))
    tgt.rest_world[:, :3, 3] *= 1.2  # a taller copy that keeps its toes
    tmap = {j: f"T_{b}" for j, b in detect_bone_map(names).bone_map.items() if b}
    opts = RootOptions(fps=fps, keep_on_ground=True)
    res = retarget(src, posed, smap, tgt, tmap, opts)
    report = quality_report(src, posed, smap, tgt, tmap, res, opts)
    foot = report["foot_contact"]
    assert foot["joints"] == ["left_ankle", "right_ankle"]  # the same joints on both sides
    assert foot["contact_frames"] > 10 and foot["max_abs_m"] <= 0.02, foot
    # the ankles themselves: the lower one at the scaled source's height on contact frames
    ankles = [names.index("LeftFoot"), names.index("RightFoot")]
    got = res.posed_world[:, ankles, 2, 3].min(axis=1)
    want = posed[:, ankles, 2, 3].min(axis=1) * res.scale
    low = want < np.quantile(want, 0.3)
    assert np.abs(got - want)[low].max() <= 0.02


def test_collapsed_source_pose_is_refused_with_the_fix() -> None:
    src, posed, smap, fps = _cmu()
    tgt, tmap = src, smap
    broken = posed.copy()
    k, p = src.names.index("LeftLeg"), src.names.index("LeftUpLeg")
    broken[:, k, :3, 3] = broken[:, p, :3, 3]  # the knee sits on the hip: a 0 position channel taken as offset
    with pytest.raises(RetargetError, match=r"'LeftUpLeg'->'LeftLeg'.*Ignore Non-root Positions"):
        retarget(src, broken, smap, tgt, tmap, RootOptions(fps=fps))


def test_twist_error_is_measured_about_the_bone() -> None:
    src, posed, smap, fps = _cmu()
    res = retarget(src, posed, smap, src, smap, RootOptions(fps=fps))
    report = quality_report(src, posed, smap, src, smap, res)
    assert max(b["twist_max_deg"] for b in report["bones"].values() if "twist_max_deg" in b) <= 1e-3
    # twist the target's left forearm 20° about its own axis (children follow): direction unchanged, twist 20°
    twisted = res.posed_world.copy()
    e, w = src.names.index("LeftForeArm"), src.names.index("LeftHand")
    axis = twisted[:, w, :3, 3] - twisted[:, e, :3, 3]
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    turn = axis_angle_to_matrix(axis * np.radians(20.0))
    twisted[:, e, :3, :3] = turn @ twisted[:, e, :3, :3]
    report = quality_report(src, posed, smap, src, smap, res, target_posed=twisted)
    elbow = report["bones"]["left_elbow"]
    assert elbow["median_deg"] <= 1e-3 and elbow["twist_median_deg"] == pytest.approx(20.0, abs=0.01)
