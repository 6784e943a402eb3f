"""Retargeting math in world space (numpy only): source rig motion -> target rig pose rotations, or SMPL parameters.

Each mapped target bone's world direction (head -> head of the mapped child joint) follows the source bone's,
whatever the rest poses (T vs A) and bone rolls: with D the source bone's world rotation change since rest (swung
onto the source's posed head->child direction when unmapped in-between bones also turned it) and A the rest offset
turning the target's rest direction onto the source's rest direction, the target bone's posed world orientation is
D·A·B_target. The twist about the bone comes with D (its swing-twist twist part maps through A). A mapped bone
whose direction cannot be measured (CMU's zero-length LeftHand -> LeftFingerBase) takes its nearest mapped
ancestor's rest offset A, so T- and A-pose targets still agree on it. Unmapped target bones keep their rest pose
relative to their parent.

Matrices are 4×4 world matrices (in Blender: object.matrix_world @ bone.matrix_local for rest,
object.matrix_world @ pose_bone.matrix for posed). Local results are what a bpy layer assigns to
pose_bone.rotation_quaternion / .location (L = M0⁻¹·W, M0 = parent_posed·parent_rest⁻¹·rest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError
from .rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    orthonormalize,
    rotation_between,
)
from .smpl_skeleton import FALLBACK_CHILDREN, PRIMARY_CHILD, SMPL_JOINT_NAMES, SMPL_PARENTS

Z_UP = np.array([0.0, 0.0, 1.0])
# Y-up (SMPL canonical) -> Z-up (Blender world): rotation of +90° about X.
Y_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


class RetargetError(UserError, ValueError):
    """Bad retarget input; the message names what is wrong and how to fix it."""


@dataclass
class Skeleton:
    """A rig: bone names, parent indices (-1 = root) and rest world matrices (N, 4, 4)."""

    names: list[str]
    parents: list[int]
    rest_world: np.ndarray

    def __post_init__(self) -> None:
        self.rest_world = np.asarray(self.rest_world, dtype=np.float64)
        n = len(self.names)
        if len(self.parents) != n or self.rest_world.shape != (n, 4, 4):
            raise RetargetError(
                f"skeleton has {n} names, {len(self.parents)} parents and rest matrices of shape "
                f"{self.rest_world.shape}; expected {n} parents and ({n}, 4, 4)"
            )
        for i, p in enumerate(self.parents):
            if not -1 <= p < n or p == i:
                raise RetargetError(f"bone '{self.names[i]}' has invalid parent index {p}")
        self.order = _topological_order(self.parents)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise RetargetError(f"the bone map names bone '{name}', which the armature does not have") from None

    @property
    def rest_heads(self) -> np.ndarray:
        return self.rest_world[:, :3, 3]


def _topological_order(parents: Sequence[int]) -> list[int]:
    order: list[int] = []
    state = [0] * len(parents)  # 0 new, 1 visiting, 2 done
    for start in range(len(parents)):
        stack, i = [], start
        while i != -1 and state[i] == 0:
            state[i] = 1
            stack.append(i)
            i = parents[i]
        if i != -1 and state[i] == 1:
            raise RetargetError("the bone parents form a cycle")
        for j in reversed(stack):
            state[j] = 2
            order.append(j)
    return order


def _mapped_indices(skel: Skeleton, bone_map: Mapping[str, str | None]) -> dict[str, int]:
    return {j: skel.index(b) for j, b in bone_map.items() if b}


@dataclass
class RootOptions:
    """Root motion: translation scaled by the leg-length ratio (or `scale` if given).

    keep_on_ground: on the SOURCE's foot-contact frames the target root moves vertically so that the target's lowest
    foot joint is as high above floor_height as the source's lowest foot joint times the scale (the correction is
    interpolated in between), and on every frame no target foot joint goes below floor_height."""

    scale: float | None = None
    in_place: bool = False  # drop the horizontal root motion
    keep_on_ground: bool = False
    floor_height: float = 0.0  # world height of the floor, shared by source and target
    # With keep_on_ground: hold the lowest target foot joint this high above the floor on contact frames instead of
    # following the source's foot height (joints sit above the sole). None: follow the source.
    foot_clearance: float | None = None
    fps: float = 30.0
    contact_speed: float = 0.3  # m/s, in target units (divided by the scale on the source)
    contact_height: float = 0.08  # m above the clip's lowest foot height, in target units


@dataclass
class RetargetResult:
    posed_world: np.ndarray  # (F, N, 4, 4) target world matrices
    local_rotations: np.ndarray  # (F, N, 3, 3) pose-bone rotations in the bone's rest frame (L)
    local_quaternions: np.ndarray  # (F, N, 4) w, x, y, z
    root_index: int  # target bone that carries the root translation (mapped pelvis)
    root_location: np.ndarray  # (F, 3) pose_bone.location of that bone (bone-local units)
    scale: float
    target: Skeleton
    joint_pairs: dict[str, tuple[int, int]] = field(default_factory=dict)  # smpl joint -> (source, target) index
    # smpl joint -> (source joint, target joint) whose heads give its direction
    direction_children: dict[str, tuple[str, str]] = field(default_factory=dict)
    # smpl joint -> A, the rest offset turning the target's rest frame onto the source's (see the module doc)
    rest_offsets: dict[str, np.ndarray] = field(default_factory=dict)
    pelvis_children: tuple[str, str] | None = None  # the pelvis's direction children when the hips frame turned it


def leg_length(heads: np.ndarray, idx: Mapping[str, int]) -> float | None:
    """Mean of hip->knee->ankle lengths over the sides that are mapped; None if neither is."""
    lengths = []
    for side in ("left", "right"):
        keys = [f"{side}_hip", f"{side}_knee", f"{side}_ankle"]
        if all(k in idx for k in keys):
            h, k, a = (heads[idx[x]] for x in keys)
            lengths.append(np.linalg.norm(k - h) + np.linalg.norm(a - k))
    return float(np.mean(lengths)) if lengths else None


def root_scale(
    source: Skeleton, src_idx: Mapping[str, int], target: Skeleton, tgt_idx: Mapping[str, int], up: np.ndarray = Z_UP
) -> float:
    """Target/source size ratio: leg lengths, else pelvis height above the lowest rest bone head."""
    ls, lt = leg_length(source.rest_heads, src_idx), leg_length(target.rest_heads, tgt_idx)
    if ls and lt:
        return lt / ls

    def hip_height(sk: Skeleton, idx: Mapping[str, int]) -> float:
        h = sk.rest_heads @ up
        return float(h[idx["pelvis"]] - h.min())

    hs, ht = hip_height(source, src_idx), hip_height(target, tgt_idx)
    if hs <= 1e-9 or ht <= 1e-9:
        raise RetargetError("cannot measure rig sizes: map the hips, knees and ankles, or pass RootOptions.scale")
    return ht / hs


def _direction_children(
    j: str, source: Skeleton, src_idx: Mapping[str, int], target: Skeleton, tgt_idx: Mapping[str, int]
) -> tuple[str, str] | None:
    """The joints whose heads give joint j's bone direction: (on the source, on the target).

    The target's is the nearest mapped descendant at a nonzero rest distance; the source's is the same joint or,
    where the source has it at j's head (CMU's LowerBack sits on Hips), the next one down the chain."""
    chain = [c for c in (PRIMARY_CHILD.get(j), *FALLBACK_CHILDREN.get(j, ())) if c]

    def far(sk: Skeleton, idx: Mapping[str, int], c: str) -> bool:
        tol = 1e-6 * max(1.0, float(np.abs(sk.rest_heads).max()))
        return c in idx and float(np.linalg.norm(sk.rest_heads[idx[c]] - sk.rest_heads[idx[j]])) > tol

    for k, ct in enumerate(chain):
        if ct in src_idx and far(target, tgt_idx, ct):
            cs = next((c for c in chain[k:] if far(source, src_idx, c)), None)
            return (cs, ct) if cs is not None else None
    return None


def _forward(
    target: Skeleton, world_lin: dict[int, np.ndarray], root: int, root_head: np.ndarray, n_frames: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FK over the target: mapped bones get world linear parts `world_lin` (F,3,3); the root bone its head."""
    n = len(target.names)
    posed = np.zeros((n_frames, n, 4, 4))
    local = np.tile(np.eye(3), (n_frames, n, 1, 1))
    loc = np.zeros((n_frames, 3))
    rest_inv = np.linalg.inv(target.rest_world)
    for b in target.order:
        p = target.parents[b]
        m0 = target.rest_world[b][None] if p < 0 else posed[:, p] @ (rest_inv[p] @ target.rest_world[b])[None]
        m0 = np.broadcast_to(m0, (n_frames, 4, 4))
        m0_inv = np.linalg.inv(m0)
        basis = np.tile(np.eye(4), (n_frames, 1, 1))
        if b in world_lin:
            local[:, b] = orthonormalize(m0_inv[:, :3, :3] @ world_lin[b])
            basis[:, :3, :3] = local[:, b]
        if b == root:
            loc = (m0_inv[:, :3, :3] @ root_head[..., None])[..., 0] + m0_inv[:, :3, 3]
            basis[:, :3, 3] = loc
        posed[:, b] = m0 @ basis
    return posed, local, loc


def foot_contacts(
    foot_heights: np.ndarray, fps: float, speed: float, height: float, foot_positions: np.ndarray | None = None
) -> np.ndarray:
    """Contact mask (F, K): foot speed below `speed` and height within `height` of the clip's lowest foot height."""
    h = np.asarray(foot_heights, dtype=np.float64)
    pos = h[..., None] if foot_positions is None else np.asarray(foot_positions)
    vel = np.zeros(h.shape)
    if len(h) > 1:
        d = np.linalg.norm(np.diff(pos, axis=0), axis=-1) * fps
        vel[1:] = d
        vel[0] = d[0]
    return (vel < speed) & (h - h.min() < height)


_FOOT_JOINTS = ("left_ankle", "right_ankle", "left_foot", "right_foot")


def _inherited_offset(j: str, offsets: Mapping[str, np.ndarray]) -> np.ndarray:
    """The rest offset of j's nearest ancestor that has one (identity if none): the default for a bone whose
    source direction cannot be measured, so its world change follows the source's composed with the parent's."""
    p = SMPL_PARENTS[SMPL_JOINT_NAMES.index(j)]
    while p >= 0:
        if SMPL_JOINT_NAMES[p] in offsets:
            return offsets[SMPL_JOINT_NAMES[p]]
        p = SMPL_PARENTS[p]
    return np.eye(3)


def _feet(skel_idx: Mapping[str, int], other: Mapping[str, int] | None = None) -> list[int]:
    """Indices of the mapped foot joints (ankles, toes); with `other`, only those the other rig maps too, so that
    both sides compare the same joints (a source without toes is matched on the ankles)."""
    return [skel_idx[j] for j in _FOOT_JOINTS if j in skel_idx and (other is None or j in other)]


def source_ground_targets(
    source_posed: np.ndarray,
    src_idx: Mapping[str, int],
    scale: float,
    root: RootOptions,
    up: np.ndarray = Z_UP,
    tgt_idx: Mapping[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(contact (F,) bool, wanted lowest target foot height (F,)): contacts detected on the source's mapped foot
    joints (thresholds in target units, divided by the scale); wanted height = floor + scale · the source's lowest
    foot height above the floor (or floor + foot_clearance), never below the floor."""
    s_feet = _feet(src_idx, tgt_idx)
    if not s_feet:
        raise RetargetError("keep_on_ground needs the ankles or feet mapped on both rigs; map them")
    pos = np.asarray(source_posed)[:, s_feet][..., :3, 3]
    h = pos @ up
    contact = foot_contacts(h, root.fps, root.contact_speed / scale, root.contact_height / scale, pos).any(axis=1)
    if root.foot_clearance is not None:
        want = np.full(len(h), root.floor_height + root.foot_clearance)
    else:
        want = root.floor_height + scale * (h.min(axis=1) - root.floor_height)
    return contact, np.maximum(want, root.floor_height)


def ground_shift(
    source_posed: np.ndarray,
    src_idx: Mapping[str, int],
    target_posed: np.ndarray,
    tgt_idx: Mapping[str, int],
    scale: float,
    root: RootOptions,
    up: np.ndarray = Z_UP,
) -> np.ndarray:
    """Vertical root shift (F,) for keep_on_ground: exact on the source's contact frames, interpolated in between
    (no pops), then raised wherever a target foot joint would still be below the floor."""
    t_feet = _feet(tgt_idx, src_idx)
    if not t_feet:
        raise RetargetError("keep_on_ground needs the ankles or feet mapped on both rigs; map them")
    contact, want = source_ground_targets(source_posed, src_idx, scale, root, up, tgt_idx)
    got = (target_posed[:, t_feet][..., :3, 3] @ up).min(axis=1)
    lowest = (target_posed[:, _feet(tgt_idx)][..., :3, 3] @ up).min(axis=1)  # every target foot joint
    frames = np.flatnonzero(contact)
    shift = np.zeros(len(got))
    if len(frames):
        shift = np.interp(np.arange(len(got)), frames, (want - got)[frames])
    return np.maximum(shift, root.floor_height - lowest)


def hips_frame(heads: np.ndarray, idx: Mapping[str, int], child: str) -> np.ndarray:
    """Pelvis frame(s) (..., 3, 3) from joint heads (..., N, 3): Y = pelvis -> `child` (the spine), X = right hip ->
    left hip made perpendicular to Y, Z = X × Y. Independent of where the root bone points."""
    y = heads[..., idx[child], :] - heads[..., idx["pelvis"], :]
    y = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12)
    x = heads[..., idx["left_hip"], :] - heads[..., idx["right_hip"], :]
    x = x - np.sum(x * y, axis=-1, keepdims=True) * y
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def _hip_frames(
    j: str,
    cc: tuple[str, str] | None,
    source: Skeleton,
    source_posed: np.ndarray,
    src_idx: Mapping[str, int],
    target: Skeleton,
    tgt_idx: Mapping[str, int],
) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(offset A (3,3), source motion D (F,3,3), whether both spine axes are the pelvis's direction child) for the
    pelvis from hips frames; None for other joints or when the hips are not mapped on both rigs.

    D: the change since rest of the source's frame on the hips and the pelvis's direction child (which move with
    the pelvis). A: turns the target's rest frame on the hips and its spine direction onto the source's; on a rig
    whose pelvis child lies more than 30° off the line to the highest spine joint both rigs map (MakeHuman's
    root -> spine05 points forward), that line is the spine direction instead, so the root bone cannot tilt the
    pelvis."""
    if j != "pelvis" or cc is None or not all(h in m for h in ("left_hip", "right_hip") for m in (src_idx, tgt_idx)):
        return None
    up = next(c for c in ("neck", "spine3", "spine2", "spine1", cc[0]) if c in src_idx and c in tgt_idx)

    def axis(sk: Skeleton, idx: Mapping[str, int], child: str) -> str:
        d = sk.rest_heads[idx[child]] - sk.rest_heads[idx["pelvis"]]
        spine = sk.rest_heads[idx[up]] - sk.rest_heads[idx["pelvis"]]
        cos = float(d @ spine) / max(float(np.linalg.norm(d) * np.linalg.norm(spine)), 1e-12)
        return child if cos > np.cos(np.radians(30.0)) else up

    a_s, a_t = axis(source, src_idx, cc[0]), axis(target, tgt_idx, cc[1])
    offset = hips_frame(source.rest_heads, src_idx, a_s) @ hips_frame(target.rest_heads, tgt_idx, a_t).T
    moved = hips_frame(source_posed[..., :3, 3], src_idx, cc[0]) @ hips_frame(source.rest_heads, src_idx, cc[0]).T
    return offset, moved, (a_s, a_t) == cc


def check_collapsed(
    source: Skeleton,
    source_posed: np.ndarray,
    src_idx: Mapping[str, int],
    target: Skeleton,
    tgt_idx: Mapping[str, int],
    ratio: float = 0.05,
) -> None:
    """Refuse a source pose whose mapped bones collapse (posed length under `ratio` × the rest length): the BVH
    importer takes 0 in non-root position channels as absolute offsets, and directions become noise."""
    bad = []
    for j in src_idx:
        cc = _direction_children(j, source, src_idx, target, tgt_idx) if j in tgt_idx else None
        if cc is None:
            continue
        s, c = src_idx[j], src_idx[cc[0]]
        rest = float(np.linalg.norm(source.rest_heads[c] - source.rest_heads[s]))
        posed = np.linalg.norm(source_posed[:, c, :3, 3] - source_posed[:, s, :3, 3], axis=-1)
        if rest > 0 and posed.min() < ratio * rest:
            k = int(posed.argmin())
            where = f"{posed[k]:.3f} m at frame {k}, {rest:.3f} m at rest"
            bad.append(f"'{source.names[s]}'->'{source.names[c]}' ({where})")
    if bad:
        raise RetargetError(
            f"the source pose collapses bones onto their parents: {', '.join(bad[:6])}"
            f"{' ...' if len(bad) > 6 else ''}. BVH files that write 0 in non-root position channels (meaning "
            "'at rest') import as absolute offsets: click Neural Human > Retarget > 'Ignore Non-root Positions' with "
            "the source armature selected (keeps the root's translation only), then retarget again"
        )


def _world_rotations(
    source: Skeleton,
    source_posed: np.ndarray,
    src_idx: Mapping[str, int],
    target: Skeleton,
    tgt_idx: Mapping[str, int],
    pairs: Mapping[str, tuple[int, int]],
) -> tuple[dict[int, np.ndarray], dict[str, tuple[str, str]], dict[str, np.ndarray], tuple[str, str] | None]:
    """Posed world rotations (F,3,3) of the mapped target bones: D·A·B_target (see the module doc); also the
    direction children, the rest offsets A and the pelvis's direction children."""
    src_rest_rot = orthonormalize(source.rest_world[:, :3, :3])
    world_lin: dict[int, np.ndarray] = {}
    pelvis_cc = None
    children: dict[str, tuple[str, str]] = {}
    offsets: dict[str, np.ndarray] = {}
    for j, (s, t) in pairs.items():  # SMPL order: parents before children
        delta = orthonormalize(source_posed[:, s, :3, :3]) @ src_rest_rot[s].T  # (F,3,3) world change since rest
        offset = _inherited_offset(j, offsets)
        cc = _direction_children(j, source, src_idx, target, tgt_idx)
        hips = _hip_frames(j, cc, source, source_posed, src_idx, target, tgt_idx)
        if hips is not None:  # pelvis: from the hips and the spine, whatever the root bone points at
            offset, delta, on_line = hips
            pelvis_cc = cc
            if on_line:  # else the pelvis->child line is no anatomical direction: the report's "pelvis" judges it
                children[j] = cc
        elif cc is not None:
            children[j] = cc
            d_src = source.rest_heads[src_idx[cc[0]]] - source.rest_heads[s]
            d_tgt = target.rest_heads[tgt_idx[cc[1]]] - target.rest_heads[t]
            offset = rotation_between(d_tgt, d_src)
            # Unmapped source bones between j and c (CMU's Neck1, LHipJoint) also turn the j->c direction: swing the
            # delta onto the posed direction, keeping its twist.
            d_posed = source_posed[:, src_idx[cc[0]], :3, 3] - source_posed[:, s, :3, 3]
            delta = rotation_between((delta @ d_src[:, None])[..., 0], d_posed) @ delta
        offsets[j] = offset
        world_lin[t] = delta @ offset @ target.rest_world[t, :3, :3]
    return world_lin, children, offsets, pelvis_cc


def retarget(
    source: Skeleton,
    source_posed: np.ndarray,
    source_map: Mapping[str, str | None],
    target: Skeleton,
    target_map: Mapping[str, str | None],
    root: RootOptions | None = None,
    up: np.ndarray = Z_UP,
) -> RetargetResult:
    """Retarget F frames of source world matrices (F, N_source, 4, 4) onto the target skeleton."""
    root = root or RootOptions()
    up = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    source_posed = np.asarray(source_posed, dtype=np.float64)
    if source_posed.ndim == 3:
        source_posed = source_posed[None]
    if source_posed.shape[1:] != (len(source.names), 4, 4):
        raise RetargetError(
            f"source_posed has shape {source_posed.shape}; expected (frames, {len(source.names)}, 4, 4), "
            "one world matrix per source bone in Skeleton.names order"
        )
    n_frames = source_posed.shape[0]
    src_idx, tgt_idx = _mapped_indices(source, source_map), _mapped_indices(target, target_map)
    pairs = {j: (src_idx[j], tgt_idx[j]) for j in SMPL_JOINT_NAMES if j in src_idx and j in tgt_idx}
    if "pelvis" not in pairs:
        raise RetargetError("both bone maps must map 'pelvis' (the root bone); set it in the bone map")

    check_collapsed(source, source_posed, src_idx, target, tgt_idx)
    world_lin, children, offsets, pelvis_cc = _world_rotations(source, source_posed, src_idx, target, tgt_idx, pairs)

    scale = root.scale if root.scale is not None else root_scale(source, src_idx, target, tgt_idx, up)
    s_pel, t_pel = pairs["pelvis"]
    delta_root = (source_posed[:, s_pel, :3, 3] - source.rest_heads[s_pel]) * scale
    if root.in_place:
        delta_root = (delta_root @ up)[:, None] * up
    root_head = target.rest_heads[t_pel] + delta_root
    posed, local, loc = _forward(target, world_lin, t_pel, root_head, n_frames)

    if root.keep_on_ground:
        lift = ground_shift(source_posed, src_idx, posed, tgt_idx, scale, root, up)
        root_head = root_head + lift[:, None] * up
        posed, local, loc = _forward(target, world_lin, t_pel, root_head, n_frames)

    res = RetargetResult(posed, local, matrix_to_quaternion(local), t_pel, loc, float(scale), target, pairs, children)
    res.rest_offsets = offsets
    res.pelvis_children = pelvis_cc
    return res


# --- SMPL as a target --------------------------------------------------------------------------------------------


def smpl_skeleton(rest_joints: np.ndarray, origin: np.ndarray | None = None, up_axis: str = "Z") -> Skeleton:
    """SMPL's 24 joints as a target skeleton in the world: rest joints (24, 3) in SMPL's Y-up canonical frame,
    every bone's rest orientation = the canonical axes (B = I), placed with the world's up axis ('Z' or 'Y')
    and the pelvis at `origin` (world, default: where the canonical pelvis lands)."""
    rest_joints = np.asarray(rest_joints, dtype=np.float64)
    if rest_joints.shape != (24, 3):
        raise RetargetError(f"SMPL rest joints must have shape (24, 3), got {rest_joints.shape}")
    c = _up_matrix(up_axis)
    heads = rest_joints @ c.T
    if origin is not None:
        heads = heads - heads[0] + np.asarray(origin, dtype=np.float64)
    rest = np.tile(np.eye(4), (24, 1, 1))
    rest[:, :3, :3] = c
    rest[:, :3, 3] = heads
    return Skeleton(list(SMPL_JOINT_NAMES), list(SMPL_PARENTS), rest)


def _up_matrix(up_axis: str) -> np.ndarray:
    if up_axis.upper() == "Z":
        return Y_TO_Z_UP
    if up_axis.upper() == "Y":
        return np.eye(3)
    raise RetargetError(f"up axis must be 'Y' or 'Z', got {up_axis!r}")


def smpl_rest_origin(
    source: Skeleton,
    source_map: Mapping[str, str | None],
    rest_joints: np.ndarray,
    up: np.ndarray = Z_UP,
    up_axis: str = "Z",
) -> np.ndarray:
    """Where to place the SMPL pelvis at rest: over the source's rest pelvis, at the source's hip height scaled by
    the leg-length ratio (both standing on the plane through the world origin)."""
    src_idx = _mapped_indices(source, source_map)
    smpl = smpl_skeleton(rest_joints, up_axis=up_axis)
    s = root_scale(source, src_idx, smpl, {j: i for i, j in enumerate(SMPL_JOINT_NAMES)}, up)
    p = source.rest_heads[src_idx["pelvis"]]
    return p - (p @ up) * up + s * (p @ up) * up


@dataclass
class SmplParams:
    poses: np.ndarray  # (F, 72) axis-angle, first 3 = 0 (EasyMocap)
    Rh: np.ndarray  # (F, 3)  # noqa: N815 (wire-format name)
    Th: np.ndarray  # (F, 3)  # noqa: N815


def smpl_params_from_posed(posed_world: np.ndarray, rest_joints: np.ndarray, actor_up: str = "Z") -> SmplParams:
    """SMPL posed world matrices (F, 24, 4, 4) from `retarget(..., smpl_skeleton(...))` -> poses, Rh, Th.

    Rh/Th are in the actor frame: 'Z' = the (Z-up) world itself, 'Y' = a Y-up frame with world = Rx(90°)·actor.
    Posed actor-frame vertices = SMPL(poses)·R(Rh)ᵀ + Th (rotation about the SMPL origin)."""
    posed_world = np.asarray(posed_world, dtype=np.float64)
    if actor_up.upper() not in ("Y", "Z"):
        raise RetargetError(f"actor up axis must be 'Y' or 'Z', got {actor_up!r}")
    u = Y_TO_Z_UP if actor_up.upper() == "Y" else np.eye(3)  # world = u · actor
    w = orthonormalize(posed_world[..., :3, :3])  # (F,24,3,3): canonical-local -> world
    rh = u.T @ w[:, 0]
    g = np.swapaxes(w[:, :1], -1, -2) @ w  # SMPL global rotations with a zero root: W0ᵀ·Wi
    theta = np.tile(np.eye(3), (len(w), 24, 1, 1))
    for i in range(1, 24):
        theta[:, i] = np.swapaxes(g[:, SMPL_PARENTS[i]], -1, -2) @ g[:, i]
    poses = matrix_to_axis_angle(theta).reshape(len(w), 72)
    poses[:, :3] = 0.0
    pelvis = posed_world[:, 0, :3, 3] @ u  # = uᵀ·p per frame
    th = pelvis - (rh @ np.asarray(rest_joints, dtype=np.float64)[0][:, None])[..., 0]
    return SmplParams(poses, matrix_to_axis_angle(rh), th)


def armature_to_smpl(
    source: Skeleton,
    source_posed: np.ndarray,
    source_map: Mapping[str, str | None],
    rest_joints: np.ndarray,
    actor_up: str = "Z",
    root: RootOptions | None = None,
    up: np.ndarray = Z_UP,
) -> tuple[SmplParams, RetargetResult]:
    """Any mapped armature -> SMPL parameters (EasyMocap convention) for a body with these rest joints (24×3, Y-up)."""
    origin = smpl_rest_origin(source, source_map, rest_joints, up)
    smpl = smpl_skeleton(rest_joints, origin=origin, up_axis="Z" if np.allclose(up, Z_UP) else "Y")
    result = retarget(source, source_posed, source_map, smpl, {j: j for j in SMPL_JOINT_NAMES}, root, up)
    return smpl_params_from_posed(result.posed_world, rest_joints, actor_up), result


def smpl_forward_joints(poses: np.ndarray, rh: np.ndarray, th: np.ndarray, rest_joints: np.ndarray) -> np.ndarray:
    """SMPL joint positions (F, 24, 3) in the actor frame: FK of `poses` (root forced to Rh), then R(Rh)·x + Th."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 24, 3)
    rest_joints = np.asarray(rest_joints, dtype=np.float64)
    rot = axis_angle_to_matrix(poses)
    rot[:, 0] = axis_angle_to_matrix(np.asarray(rh, dtype=np.float64).reshape(-1, 3))
    g = np.zeros_like(rot)
    pos = np.zeros((len(poses), 24, 3))
    g[:, 0], pos[:, 0] = rot[:, 0], 0.0
    for i in range(1, 24):
        p = SMPL_PARENTS[i]
        g[:, i] = g[:, p] @ rot[:, i]
        pos[:, i] = pos[:, p] + (g[:, p] @ (rest_joints[i] - rest_joints[p]))
    return pos + (g[:, :1] @ rest_joints[0])[:, 0][:, None] + np.asarray(th).reshape(-1, 1, 3)


# --- quality report ----------------------------------------------------------------------------------------------


def _bone_directions(
    posed: np.ndarray, idx: Mapping[str, int], children: Mapping[str, tuple[str, str]], side: int
) -> dict[str, np.ndarray]:
    out = {}
    for j, cc in children.items():
        c = cc[side]
        d = posed[:, idx[c], :3, 3] - posed[:, idx[j], :3, 3]
        out[j] = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    return out


def _twist_deg(rel: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """|Twist| (degrees) of rotations rel (F,3,3) about the unit `axis` (swing-twist split)."""
    q = matrix_to_quaternion(rel)
    ang = 2.0 * np.arctan2(q[:, 1:] @ axis, q[:, 0])
    return np.degrees(np.abs((ang + np.pi) % (2 * np.pi) - np.pi))


def _angle_deg(rel: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)))


def _bone_errors(
    source: Skeleton, source_posed: np.ndarray, src_idx: Mapping[str, int], target: Skeleton,
    target_posed: np.ndarray, tgt_idx: Mapping[str, int], result: RetargetResult,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per joint with a direction: world direction error and twist error about the bone (degrees, mean and max).

    Twist: the target's world change since rest, carried back through the rest offset A, against the source's:
    R = D_sᵀ·D_t·Aᵀ has no twist about the source's rest direction when the bone turns alike about its axis."""
    ds = _bone_directions(source_posed, src_idx, result.direction_children, 0)
    dt = _bone_directions(target_posed, tgt_idx, result.direction_children, 1)
    out = {}
    for j in ds:
        ang = np.degrees(np.arccos(np.clip(np.sum(ds[j] * dt[j], axis=-1), -1.0, 1.0)))
        s, t = src_idx[j], tgt_idx[j]
        entry = {"mean_deg": float(ang.mean()), "max_deg": float(ang.max()), "median_deg": float(np.median(ang))}
        a = result.rest_offsets.get(j)
        if a is not None and j != "pelvis":
            d_s = orthonormalize(source_posed[:, s, :3, :3]) @ orthonormalize(source.rest_world[s, :3, :3]).T
            d_t = orthonormalize(target_posed[:, t, :3, :3]) @ orthonormalize(target.rest_world[t, :3, :3]).T
            axis = source.rest_heads[src_idx[result.direction_children[j][0]]] - source.rest_heads[s]
            tw = _twist_deg(np.swapaxes(d_s, -1, -2) @ d_t @ a.T, axis / np.linalg.norm(axis))
            entry.update(twist_mean_deg=float(tw.mean()), twist_max_deg=float(tw.max()),
                         twist_median_deg=float(np.median(tw)))  # fmt: skip
        out[j] = entry
    return out


def _pelvis_error(
    source: Skeleton, source_posed: np.ndarray, src_idx: Mapping[str, int], target: Skeleton,
    target_posed: np.ndarray, tgt_idx: Mapping[str, int], result: RetargetResult,
) -> dict[str, float] | None:  # fmt: skip
    """The pelvis against the source's hips (degrees): 'hips_axis' = angle between the two rigs' world right -> left
    hip lines (no implementation detail involved); 'frame' = the target's hips-frame change since rest against the
    source's carried through the rest offset A (turn about every axis)."""
    if not all(h in m for h in ("pelvis", "left_hip", "right_hip") for m in (src_idx, tgt_idx)):
        return None

    def axis(posed: np.ndarray, idx: Mapping[str, int]) -> np.ndarray:
        v = posed[:, idx["left_hip"], :3, 3] - posed[:, idx["right_hip"], :3, 3]
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)

    hips = np.degrees(np.arccos(np.clip(np.sum(axis(source_posed, src_idx) * axis(target_posed, tgt_idx), -1), -1, 1)))
    out = {"hips_axis_median_deg": float(np.median(hips)), "hips_axis_max_deg": float(hips.max())}
    cc, a = result.pelvis_children, result.rest_offsets.get("pelvis")
    if cc is not None and a is not None:
        ds = hips_frame(source_posed[..., :3, 3], src_idx, cc[0]) @ hips_frame(source.rest_heads, src_idx, cc[0]).T
        dt = hips_frame(target_posed[..., :3, 3], tgt_idx, cc[1]) @ hips_frame(target.rest_heads, tgt_idx, cc[1]).T
        ang = _angle_deg(np.swapaxes(ds @ a, -1, -2) @ dt)
        out.update(frame_median_deg=float(np.median(ang)), frame_max_deg=float(ang.max()))
    return out


def quality_report(
    source: Skeleton,
    source_posed: np.ndarray,
    source_map: Mapping[str, str | None],
    target: Skeleton,
    target_map: Mapping[str, str | None],
    result: RetargetResult,
    root: RootOptions | None = None,
    up: np.ndarray = Z_UP,
    target_posed: np.ndarray | None = None,
) -> dict:
    """Per-bone world direction error and twist error about the bone (degrees), the pelvis (hips frame) error, the
    foot-height error on the source's contact frames (the lowest of the foot joints mapped on BOTH rigs vs where
    keep_on_ground wants it, see source_ground_targets), the deepest target foot below the floor, and the
    root-trajectory error.

    `target_posed` (F, N_target, 4, 4): the target's posed world matrices to judge (e.g. what Blender evaluates from
    the keys); default: the result's own. Root error compares the target root with the scaled source root (horizontal
    part skipped when in_place)."""
    root = root or RootOptions()
    up = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    source_posed = np.asarray(source_posed, dtype=np.float64).reshape(-1, len(source.names), 4, 4)
    tposed = result.posed_world if target_posed is None else np.asarray(target_posed, dtype=np.float64)
    src_idx, tgt_idx = _mapped_indices(source, source_map), _mapped_indices(target, target_map)
    pairs = result.joint_pairs
    bones = _bone_errors(source, source_posed, src_idx, target, tposed, tgt_idx, result)

    foot = {"contact_frames": 0, "mean_abs_m": 0.0, "max_abs_m": 0.0, "below_floor_max_m": 0.0, "joints": []}
    t_feet, s_feet = _feet(tgt_idx, src_idx), _feet(src_idx, tgt_idx)
    if _feet(tgt_idx):
        lowest = (tposed[:, _feet(tgt_idx)][..., :3, 3] @ up).min(axis=1)
        foot["below_floor_max_m"] = float(max(0.0, root.floor_height - lowest.min()))
    if t_feet and s_feet:
        foot["joints"] = [j for j in _FOOT_JOINTS if j in src_idx and j in tgt_idx]
        low = (tposed[:, t_feet][..., :3, 3] @ up).min(axis=1)
        on, want = source_ground_targets(source_posed, src_idx, result.scale, root, up, tgt_idx)
        if on.any():
            err = np.abs(low[on] - want[on])
            foot.update(contact_frames=int(on.sum()), mean_abs_m=float(err.mean()), max_abs_m=float(err.max()))

    s, t = pairs["pelvis"]
    want = (source_posed[:, s, :3, 3] - source.rest_heads[s]) * result.scale
    got = tposed[:, t, :3, 3] - target.rest_heads[t]
    diff = got - want
    vertical = np.abs(diff @ up)  # nonzero where keep_on_ground moved the root
    horiz = got if root.in_place else diff  # in place: any horizontal root motion left is an error
    horiz = np.linalg.norm(horiz - (horiz @ up)[:, None] * up, axis=-1)
    return {
        "bones": bones,
        "direction_error_max_deg": max((b["max_deg"] for b in bones.values()), default=0.0),
        "direction_error_median_deg": float(np.median([b["median_deg"] for b in bones.values()])) if bones else 0.0,
        "twist_error_max_deg": max((b.get("twist_max_deg", 0.0) for b in bones.values()), default=0.0),
        "pelvis": _pelvis_error(source, source_posed, src_idx, target, tposed, tgt_idx, result),
        "foot_contact": foot,
        "root": {
            "scale": result.scale,
            "horizontal_mean_m": float(horiz.mean()),
            "horizontal_max_m": float(horiz.max()),
            "vertical_mean_m": float(vertical.mean()),
            "vertical_max_m": float(vertical.max()),
        },  # fmt: skip
    }
