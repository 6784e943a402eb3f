import numpy as np
import pytest

from neural_human_addon.core.bone_maps import detect_bone_map
from neural_human_addon.core.retarget import (
    RetargetError,
    RootOptions,
    Skeleton,
    armature_to_smpl,
    foot_contacts,
    quality_report,
    retarget,
    smpl_forward_joints,
)
from neural_human_addon.core.rotations import axis_angle_to_matrix, quaternion_to_matrix, twist_angle
from neural_human_addon.core.smpl_skeleton import PRIMARY_CHILD, SMPL_JOINT_NAMES, SMPL_PARENTS
from tests.addon.core.rig_fixtures import (
    BVH_DIR,
    C_Y_TO_Z,
    CMU_WALK_BVH,
    a_pose,
    needs_shared_data,
    pose_rig,
    random_deltas,
    read_bvh,
    rig_rest_world,
    smpl_rest_joints,
)

IDENTITY_MAP = {j: j for j in SMPL_JOINT_NAMES}


def _source(rng: np.random.Generator, frames: int = 6, scale: float = 1.0):
    heads = smpl_rest_joints() @ C_Y_TO_Z.T + np.array([0.3, -0.2, 1.2])
    skel = Skeleton(list(SMPL_JOINT_NAMES), list(SMPL_PARENTS), rig_rest_world(heads, rng, scale))
    shift = np.cumsum(rng.normal(scale=0.05, size=(frames, 3)), axis=0)
    posed = pose_rig(skel.rest_world, skel.parents, random_deltas(rng, frames, 24), shift)
    return skel, posed


def _a_pose_target(rng: np.random.Generator, size: float = 1.3, obj_scale: float = 0.01) -> Skeleton:
    """A-pose copy, scaled, with random rolls, a cm-unit object scale and an extra unmapped 'root' bone."""
    heads = a_pose(smpl_rest_joints()) @ C_Y_TO_Z.T * size + np.array([-1.0, 2.0, 1.2 * size])
    rest = rig_rest_world(heads, rng, obj_scale)
    root = np.eye(4)
    root[:3, :3] *= obj_scale
    root[:3, 3] = [-1.0, 2.0, 0.0]
    names = ["root"] + [f"T_{j}" for j in SMPL_JOINT_NAMES]
    parents = [-1] + [0 if p < 0 else p + 1 for p in SMPL_PARENTS]
    return Skeleton(names, parents, np.concatenate([root[None], rest]))


def _directions(posed: np.ndarray, names: list[str], prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for j, c in PRIMARY_CHILD.items():
        d = posed[:, names.index(prefix + c), :3, 3] - posed[:, names.index(prefix + j), :3, 3]
        out[j] = d / np.linalg.norm(d, axis=-1, keepdims=True)
    return out


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1, 1)))


def _blender_fk(skel: Skeleton, local_rot: np.ndarray, root_index: int, root_loc: np.ndarray) -> np.ndarray:
    """Independent FK the way Blender composes pose bones: parent_pose · parent_rest⁻¹ · rest · T(loc) · R(L)."""
    f = local_rot.shape[0]
    posed = np.zeros((f, len(skel.names), 4, 4))
    for b in range(len(skel.names)):  # parents come first in these rigs
        basis = np.tile(np.eye(4), (f, 1, 1))
        basis[:, :3, :3] = local_rot[:, b]
        if b == root_index:
            basis[:, :3, 3] = root_loc
        p = skel.parents[b]
        m0 = skel.rest_world[b] if p < 0 else posed[:, p] @ np.linalg.inv(skel.rest_world[p]) @ skel.rest_world[b]
        posed[:, b] = m0 @ basis
    return posed


def test_t_to_a_pose_with_rolls_keeps_world_directions() -> None:
    rng = np.random.default_rng(0)
    src, posed = _source(rng)
    tgt = _a_pose_target(rng)
    tgt_map = {j: f"T_{j}" for j in SMPL_JOINT_NAMES}
    res = retarget(src, posed, IDENTITY_MAP, tgt, tgt_map)

    ds, dt = _directions(posed, src.names), _directions(res.posed_world, tgt.names, "T_")
    worst = max(_angle_deg(ds[j], dt[j]).max() for j in ds)
    assert worst <= 0.5
    report = quality_report(src, posed, IDENTITY_MAP, tgt, tgt_map, res)
    assert report["direction_error_max_deg"] <= 0.5 and len(report["bones"]) == len(PRIMARY_CHILD)

    # (a) the local rotations, composed the Blender way, rebuild the same posed matrices
    local = quaternion_to_matrix(res.local_quaternions)
    np.testing.assert_allclose(_blender_fk(tgt, local, res.root_index, res.root_location), res.posed_world, atol=1e-8)
    # the unmapped root bone stays at rest
    np.testing.assert_allclose(res.local_rotations[:, 0], np.broadcast_to(np.eye(3), (len(posed), 3, 3)), atol=1e-12)
    # root motion scaled by the leg-length ratio (the target is 1.3× the source)
    assert res.scale == pytest.approx(1.3, rel=1e-6)
    assert report["root"]["horizontal_max_m"] < 1e-9 and report["root"]["vertical_max_m"] < 1e-9


def test_twist_follows_source() -> None:
    """Twisting the source forearm about its own axis twists the target forearm by the same angle."""
    rng = np.random.default_rng(1)
    src, _ = _source(rng, frames=1)
    tgt = _a_pose_target(rng, size=1.0, obj_scale=1.0)
    tgt_map = {j: f"T_{j}" for j in SMPL_JOINT_NAMES}
    e = SMPL_JOINT_NAMES.index("left_elbow")
    axis = src.rest_heads[SMPL_JOINT_NAMES.index("left_wrist")] - src.rest_heads[e]
    axis /= np.linalg.norm(axis)
    deltas = np.tile(np.eye(3), (1, 24, 1, 1))
    deltas[0, e] = axis_angle_to_matrix(axis * 0.9)
    posed = pose_rig(src.rest_world, src.parents, deltas, np.zeros((1, 3)))
    res = retarget(src, posed, IDENTITY_MAP, tgt, tgt_map)
    t = tgt.names.index("T_left_elbow")
    world_delta = res.posed_world[0, t, :3, :3] @ np.linalg.inv(tgt.rest_world[t, :3, :3])
    t_axis = tgt.rest_heads[tgt.names.index("T_left_wrist")] - tgt.rest_heads[t]
    assert twist_angle(world_delta, t_axis / np.linalg.norm(t_axis)) == pytest.approx(0.9, abs=1e-6)


def test_armature_to_smpl_reproduces_directions() -> None:
    rng = np.random.default_rng(2)
    heads = a_pose(smpl_rest_joints(), 40) @ C_Y_TO_Z.T * 0.9 + np.array([0.0, 0.0, 1.0])
    names = [f"B_{j}" for j in SMPL_JOINT_NAMES]
    src = Skeleton(names, list(SMPL_PARENTS), rig_rest_world(heads, rng, 100.0))
    posed = pose_rig(src.rest_world, src.parents, random_deltas(rng, 5, 24), rng.normal(scale=0.3, size=(5, 3)))
    src_map = {j: f"B_{j}" for j in SMPL_JOINT_NAMES}
    rest = smpl_rest_joints()
    for up in ("Z", "Y"):
        params, res = armature_to_smpl(src, posed, src_map, rest, actor_up=up)
        assert params.poses.shape == (5, 72) and np.all(params.poses[:, :3] == 0)
        joints = smpl_forward_joints(params.poses, params.Rh, params.Th, rest)
        if up == "Y":
            joints = joints @ C_Y_TO_Z.T
        np.testing.assert_allclose(joints, res.posed_world[:, :, :3, 3], atol=1e-9)
        fk = np.zeros((5, 24, 4, 4))
        fk[..., :3, 3] = joints
        ds, dt = _directions(posed, names, "B_"), _directions(fk, list(SMPL_JOINT_NAMES))
        assert max(_angle_deg(ds[j], dt[j]).max() for j in ds) <= 0.5
        # scaled root trajectory: the SMPL body is 1/0.9 the source
        src_pel = posed[:, 0, :3, 3] - src.rest_heads[0]
        np.testing.assert_allclose(joints[:, 0] - joints[:1, 0], (src_pel - src_pel[:1]) * res.scale, atol=1e-9)
        assert res.scale == pytest.approx(1 / 0.9, rel=1e-6)


def test_root_scaled_and_in_place() -> None:
    rng = np.random.default_rng(3)
    frames = 40
    heads = smpl_rest_joints() @ C_Y_TO_Z.T
    heads[:, 2] -= heads[:, 2].min() - 0.05  # standing on the floor (ankle heads 5 cm up)
    src = Skeleton(list(SMPL_JOINT_NAMES), list(SMPL_PARENTS), rig_rest_world(heads, rng))
    t = np.arange(frames) / 30.0
    shift = np.stack([1.2 * t, 0.1 * t, 0.02 * np.sin(2 * np.pi * t)], axis=-1)  # walk forward with a small bob
    posed = pose_rig(src.rest_world, src.parents, np.tile(np.eye(3), (frames, 24, 1, 1)), shift)
    tgt_heads = heads * 1.5
    tgt = Skeleton(list(SMPL_JOINT_NAMES), list(SMPL_PARENTS), rig_rest_world(tgt_heads, rng))

    res = retarget(src, posed, IDENTITY_MAP, tgt, IDENTITY_MAP)
    np.testing.assert_allclose(res.posed_world[:, 0, :3, 3] - tgt.rest_heads[0], shift * 1.5, atol=1e-9)

    opts = RootOptions(in_place=True)
    res = retarget(src, posed, IDENTITY_MAP, tgt, IDENTITY_MAP, opts)
    np.testing.assert_allclose(res.posed_world[:, 0, :2, 3], np.broadcast_to(tgt.rest_heads[0, :2], (frames, 2)))
    np.testing.assert_allclose(res.posed_world[:, 0, 2, 3] - tgt.rest_heads[0, 2], shift[:, 2] * 1.5, atol=1e-9)
    assert quality_report(src, posed, IDENTITY_MAP, tgt, IDENTITY_MAP, res, opts)["root"]["horizontal_max_m"] < 1e-9


FOOT_IDX = [SMPL_JOINT_NAMES.index(j) for j in ("left_ankle", "right_ankle", "left_foot", "right_foot")]


def _standing_pair(rng: np.random.Generator, lift: float) -> tuple[Skeleton, Skeleton]:
    """A source standing on the floor (lowest foot joint 5 cm up) and a 1.5× target whose rest floats `lift` up."""
    heads = smpl_rest_joints() @ C_Y_TO_Z.T
    heads[:, 2] -= heads[:, 2].min() - 0.05
    src = Skeleton(list(SMPL_JOINT_NAMES), list(SMPL_PARENTS), rig_rest_world(heads, rng))
    tgt = Skeleton(list(SMPL_JOINT_NAMES), list(SMPL_PARENTS), rig_rest_world(heads * 1.5 + [0, 0, lift], rng))
    return src, tgt


def test_keep_on_ground_follows_source_feet_and_never_sinks() -> None:
    """Every frame a contact: the target's lowest foot sits at 1.5× the source's, clamped at the floor where the
    source's own feet dip 3 cm below it."""
    rng = np.random.default_rng(5)
    frames = 40
    src, tgt = _standing_pair(rng, lift=0.1)
    bob = 0.08 * np.sin(2 * np.pi * np.arange(frames) / frames)
    shift = np.stack([np.zeros(frames), np.zeros(frames), bob], axis=-1)
    posed = pose_rig(src.rest_world, src.parents, random_deltas(rng, frames, 24, 0.05), shift)
    opts = RootOptions(keep_on_ground=True, contact_speed=100.0, contact_height=100.0)
    res = retarget(src, posed, IDENTITY_MAP, tgt, IDENTITY_MAP, opts)
    src_low = posed[:, FOOT_IDX, 2, 3].min(axis=1)
    tgt_low = res.posed_world[:, FOOT_IDX, 2, 3].min(axis=1)
    assert src_low.min() < -0.02  # the source really goes through the floor
    np.testing.assert_allclose(tgt_low, np.maximum(1.5 * src_low, 0.0), atol=1e-9)
    report = quality_report(src, posed, IDENTITY_MAP, tgt, IDENTITY_MAP, res, opts)["foot_contact"]
    assert report["contact_frames"] == frames and report["max_abs_m"] < 1e-9 and report["below_floor_max_m"] < 1e-9
    # without it the target floats with its rest lift
    plain = retarget(src, posed, IDENTITY_MAP, tgt, IDENTITY_MAP, RootOptions())
    np.testing.assert_allclose(plain.posed_world[:, FOOT_IDX, 2, 3].min(axis=1) - 1.5 * src_low, 0.1, atol=1e-9)
    # the correction moves the root only vertically and leaves the rotations alone
    np.testing.assert_allclose(res.local_rotations, plain.local_rotations, atol=1e-12)
    np.testing.assert_allclose(res.posed_world[:, 0, :2, 3], plain.posed_world[:, 0, :2, 3], atol=1e-12)


def test_keep_on_ground_contacts_come_from_the_source() -> None:
    """Stand, jump, land: contacts only while the source stands; the correction is interpolated through the jump,
    so the airborne target follows the scaled source jump; foot_clearance pins the contact height instead."""
    rng = np.random.default_rng(6)
    frames = 40
    src, tgt = _standing_pair(rng, lift=-0.04)  # this target's rest sinks 4 cm into the floor
    t = np.arange(frames)
    jump = np.where((t >= 12) & (t < 28), 0.4 * np.sin(np.pi * (t - 12) / 16), 0.0)
    posed = pose_rig(src.rest_world, src.parents, np.tile(np.eye(3), (frames, 24, 1, 1)), jump[:, None] * [0, 0, 1])
    opts = RootOptions(keep_on_ground=True, fps=30.0)
    res = retarget(src, posed, IDENTITY_MAP, tgt, IDENTITY_MAP, opts)
    report = quality_report(src, posed, IDENTITY_MAP, tgt, IDENTITY_MAP, res, opts)["foot_contact"]
    assert 20 <= report["contact_frames"] < frames and report["max_abs_m"] < 1e-9
    tgt_low = res.posed_world[:, FOOT_IDX, 2, 3].min(axis=1)
    np.testing.assert_allclose(tgt_low, 1.5 * posed[:, FOOT_IDX, 2, 3].min(axis=1), atol=1e-9)

    opts = RootOptions(keep_on_ground=True, fps=30.0, foot_clearance=0.02)
    res = retarget(src, posed, IDENTITY_MAP, tgt, IDENTITY_MAP, opts)
    tgt_low = res.posed_world[:, FOOT_IDX, 2, 3].min(axis=1)
    np.testing.assert_allclose(tgt_low[:10], 0.02, atol=1e-9)
    assert tgt_low[20] > 0.5


def test_bad_input_messages() -> None:
    rng = np.random.default_rng(4)
    src, posed = _source(rng, frames=2)
    with pytest.raises(RetargetError, match="expected \\(frames, 24, 4, 4\\)"):
        retarget(src, posed[:, :10], IDENTITY_MAP, src, IDENTITY_MAP)
    with pytest.raises(RetargetError, match="does not have"):
        retarget(src, posed, {"pelvis": "Hips"}, src, IDENTITY_MAP)
    with pytest.raises(RetargetError, match="must map 'pelvis'"):
        retarget(src, posed, {"head": "head"}, src, IDENTITY_MAP)
    with pytest.raises(RetargetError, match="cycle"):
        Skeleton(["a", "b"], [1, 0], np.tile(np.eye(4), (2, 1, 1)))


@pytest.mark.parametrize(
    ("path", "unit", "up"),
    [(CMU_WALK_BVH, 0.056, "Y"), pytest.param(BVH_DIR / "makehuman_legacy_walk1.bvh", 0.1, "Z",
                                              marks=needs_shared_data)],
)
def test_real_bvh_walk_to_smpl(path, unit: float, up: str) -> None:
    names, parents, rest, posed, fps = read_bvh(path, unit, up)
    src = Skeleton(names, parents, rest)
    det = detect_bone_map(names)
    assert det.ok, det.message
    opts = RootOptions(fps=fps)
    params, res = armature_to_smpl(src, posed, det.bone_map, smpl_rest_joints(), root=opts)
    assert np.isfinite(params.poses).all() and np.isfinite(params.Th).all()
    smpl_map = dict(IDENTITY_MAP)
    report = quality_report(src, posed, det.bone_map, res.target, smpl_map, res, opts)
    assert report["direction_error_max_deg"] <= 0.5, report["bones"]
    assert len(report["bones"]) >= 16  # CMU has Spine1->Neck and Hand->FingerBase at zero length: no direction
    # the SMPL joints from the parameters sit where the retarget put them
    joints = smpl_forward_joints(params.poses, params.Rh, params.Th, smpl_rest_joints())
    np.testing.assert_allclose(joints, res.posed_world[..., :3, 3], atol=1e-8)
    assert 0.8 < res.scale < 1.25  # both are adult-sized once in metres
    # standing upright: SMPL pelvis 0.6-1.2 m above its lowest ankle (T-pose: 0.83), head above the pelvis
    height = joints[..., 2]
    assert np.all(
        (height[:, 0] - height[:, [7, 8]].min(axis=1) > 0.6) & (height[:, 0] - height[:, [7, 8]].min(1) < 1.2)
    )
    assert np.all(height[:, 15] > height[:, 0] + 0.4)


def test_cmu_walk_feet_and_a_vs_t_pose_targets() -> None:
    """CMU walk onto a T- and an A-pose SMPL-layout rig standing on the floor, with keep_on_ground."""
    names, parents, rest, posed, fps = read_bvh(CMU_WALK_BVH, 0.056, "Y")
    posed = posed[1:]  # BVH frame 0 jumps away from the rest of the clip
    src = Skeleton(names, parents, rest)
    src_map = detect_bone_map(names).bone_map
    # CMU's hand bone has zero length (LeftHand -> LeftFingerBase): the wrist has no source direction
    hand, wrist = (rest[names.index(src_map[f"left_{j}"]), :3, 3] for j in ("hand", "wrist"))
    np.testing.assert_allclose(hand, wrist, atol=1e-9)
    rng = np.random.default_rng(7)
    opts = RootOptions(fps=fps, keep_on_ground=True)
    results = {}
    for pose, joints in (("T", smpl_rest_joints()), ("A", a_pose(smpl_rest_joints(), 40.0))):
        heads = joints @ C_Y_TO_Z.T
        heads[:, 2] -= heads[:, 2].min() - 0.06
        tgt = Skeleton(list(SMPL_JOINT_NAMES), list(SMPL_PARENTS), rig_rest_world(heads, rng))
        res = results[pose] = retarget(src, posed, src_map, tgt, IDENTITY_MAP, opts)
        src_feet = posed[:, [names.index(src_map[SMPL_JOINT_NAMES[i]]) for i in FOOT_IDX]][..., :3, 3]
        contact = foot_contacts(
            src_feet[..., 2], fps, opts.contact_speed / res.scale, opts.contact_height / res.scale, src_feet
        ).any(axis=1)
        assert contact.sum() > len(posed) // 2
        tgt_low = res.posed_world[:, FOOT_IDX, 2, 3].min(axis=1)
        gap = np.abs(tgt_low - res.scale * src_feet[..., 2].min(axis=1))[contact]
        assert gap.max() <= 0.02, gap.max()
        assert tgt_low.min() >= -0.001, tgt_low.min()
        report = quality_report(src, posed, src_map, tgt, IDENTITY_MAP, res, opts)["foot_contact"]
        assert report["max_abs_m"] <= 0.02 and report["below_floor_max_m"] <= 0.001
    # the two rests differ by 40° at the shoulders, yet every bone (wrists included) points the same way
    dt, da = (_directions(results[p].posed_world, list(SMPL_JOINT_NAMES)) for p in ("T", "A"))
    worst = {j: float(_angle_deg(dt[j], da[j]).max()) for j in dt}
    assert max(worst.values()) <= 0.5, worst
