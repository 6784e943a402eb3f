"""Thin bpy layer over the numpy retargeting core: read armatures into Skeletons, bake retargeted motion as keys.

Everything here runs on Blender's main thread (scene.frame_set per frame). Keys go in through keyframe_insert, which
works with both the 4.2 Action.fcurves API and 5.0's layered (slotted) actions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import bpy
import numpy as np
from bpy_extras import anim_utils

from ..core.bone_maps import EDITOR_HINT, Detection, all_presets, detect_bone_map
from ..core.retarget import (
    Y_TO_Z_UP,
    RetargetError,
    RootOptions,
    Skeleton,
    SmplParams,
    armature_to_smpl,
    quality_report,
    retarget,
    smpl_forward_joints,
    smpl_rest_origin,
    smpl_skeleton,
)
from ..core.rotations import axis_angle_to_matrix
from ..core.smpl_skeleton import PRIMARY_CHILD, SMPL_JOINT_NAMES, SMPL_PARENTS

BoneMap = Mapping[str, str | None]


def _require_armature(obj, role: str) -> None:
    if obj is None or getattr(obj, "type", None) != "ARMATURE":
        name = getattr(obj, "name", obj)
        raise RetargetError(f"the {role} must be an armature object, got {name!r}; select an armature")


def skeleton_from_armature(obj) -> tuple[Skeleton, list[str]]:
    """Armature object -> (Skeleton with rest world matrices obj.matrix_world @ bone.matrix_local, bone names)."""
    _require_armature(obj, "rig")
    bones = list(obj.data.bones)
    names = [b.name for b in bones]
    index = {n: i for i, n in enumerate(names)}
    parents = [index[b.parent.name] if b.parent else -1 for b in bones]
    mw = obj.matrix_world
    rest = np.array([np.array(mw @ b.matrix_local) for b in bones], dtype=np.float64).reshape(len(bones), 4, 4)
    return Skeleton(names, parents, rest), names


def posed_world_matrices(obj, frames: Iterable[int], scene=None, names: Sequence[str] | None = None) -> np.ndarray:
    """(F, N, 4, 4) posed world matrices obj.matrix_world @ pose_bone.matrix, evaluated with scene.frame_set.

    Restores the scene's current frame afterwards. `names` picks the bones (default: armature bone order)."""
    _require_armature(obj, "rig")
    scene = scene or bpy.context.scene
    names = list(names) if names is not None else [b.name for b in obj.data.bones]
    pbones = [obj.pose.bones[n] for n in names]
    frames = list(frames)
    out = np.zeros((len(frames), len(names), 4, 4))
    current = scene.frame_current
    try:
        for k, f in enumerate(frames):
            scene.frame_set(int(f))
            mw = obj.matrix_world
            out[k] = [np.array(mw @ pb.matrix) for pb in pbones]
    finally:
        scene.frame_set(current)
    return out


USER_BONE_MAPS = "neural_human/bone_maps"  # under Blender's user config folder


def user_bone_map_dir(create: bool = False) -> Path:
    """Where saved bone maps live: <Blender user config>/neural_human/bone_maps."""
    return Path(bpy.utils.user_resource("CONFIG", path=USER_BONE_MAPS, create=create))


def detect_armature(obj) -> Detection:
    """Detection from the armature's bone names, hierarchy and rest heads: built-in and the user's saved presets
    first (when they fit), else the structure."""
    skel, names = skeleton_from_armature(obj)
    presets = all_presets(user_bone_map_dir())
    return detect_bone_map(names, presets, parents=skel.parents, heads=skel.rest_heads)


def resolve_bone_map(obj, bone_map: BoneMap | None, role: str) -> dict[str, str | None]:
    """The given map (checked against the armature's bones) or the auto-detected one; clear error when unusable."""
    names = {b.name for b in obj.data.bones}
    if bone_map is None:
        det = detect_armature(obj)
        if not det.ok:
            raise RetargetError(f"{role} armature '{obj.name}': {det.message}")
        return dict(det.bone_map)
    bad = {j: b for j, b in bone_map.items() if b and b not in names}
    if bad:
        raise RetargetError(
            f"{role} bone map names bones that armature '{obj.name}' does not have: {bad}; {EDITOR_HINT}"
        )
    if not bone_map.get("pelvis"):
        raise RetargetError(
            f"{role} bone map must map 'pelvis' (the root bone) on armature '{obj.name}'; {EDITOR_HINT}"
        )
    return dict(bone_map)


def fresh_action(obj, name: str) -> None:
    """Give obj an empty action (keys from a previous bake would otherwise mix in) and reset its pose to rest."""
    if obj.animation_data is None:
        obj.animation_data_create()
    obj.animation_data.action = bpy.data.actions.new(name)
    for pb in obj.pose.bones:
        pb.rotation_mode = "QUATERNION"
        pb.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
        pb.location = (0.0, 0.0, 0.0)
        pb.scale = (1.0, 1.0, 1.0)


def key_result(target_obj, result, frames: Sequence[int], bone_names: Sequence[str]) -> None:
    """Key every target bone the retarget drives (mapped bones' rotations, the root bone's location)."""
    keyed = sorted({t for _, t in result.joint_pairs.values()})
    pbones = {b: target_obj.pose.bones[bone_names[b]] for b in keyed}
    root = result.root_index
    for k, f in enumerate(frames):
        for b, pb in pbones.items():
            pb.rotation_quaternion = result.local_quaternions[k, b].tolist()
            pb.keyframe_insert("rotation_quaternion", frame=f, group=pb.name)
            if b == root:
                pb.location = result.root_location[k].tolist()
                pb.keyframe_insert("location", frame=f, group=pb.name)


def bake_retarget(
    source_obj,
    target_obj,
    frame_range: tuple[int, int],
    source_map: BoneMap | None = None,
    target_map: BoneMap | None = None,
    root_options: RootOptions | None = None,
    scene=None,
) -> dict:
    """Retarget source_obj's motion over frame_range (inclusive) onto target_obj and key it into a new action.

    Bone maps are auto-detected from bone names when not given; RootOptions(keep_on_ground=True) puts the target's
    feet where the scaled source's feet are on the source's contact frames (see RootOptions).
    Returns the core's quality_report plus 'scale', 'frames', 'source_map', 'target_map' and
    'action' (the new action's name)."""
    _require_armature(source_obj, "source")
    _require_armature(target_obj, "target")
    if source_obj == target_obj:
        raise RetargetError("source and target are the same armature; pick two different armatures")
    scene = scene or bpy.context.scene
    start, end = int(frame_range[0]), int(frame_range[1])
    if end < start:
        raise RetargetError(f"frame range {frame_range} is empty; the end frame must not be before the start")
    frames = list(range(start, end + 1))
    smap = resolve_bone_map(source_obj, source_map, "source")
    tmap = resolve_bone_map(target_obj, target_map, "target")
    opts = root_options or RootOptions(fps=scene.render.fps / scene.render.fps_base)

    src, src_names = skeleton_from_armature(source_obj)
    posed = posed_world_matrices(source_obj, frames, scene, src_names)
    tgt, tgt_names = skeleton_from_armature(target_obj)
    result = retarget(src, posed, smap, tgt, tmap, opts)

    action = f"{target_obj.name}_from_{source_obj.name}"
    fresh_action(target_obj, action)
    key_result(target_obj, result, frames, tgt_names)
    evaluated = posed_world_matrices(target_obj, frames, scene, tgt_names)  # what Blender makes of the keys
    report = quality_report(src, posed, smap, tgt, tmap, result, opts, target_posed=evaluated)
    report.update(
        scale=result.scale,
        frames=(start, end),
        source_map=smap,
        target_map=tmap,
        action=target_obj.animation_data.action.name,
    )
    return report


def armature_to_smpl_frames(
    obj,
    frames: Iterable[int],
    rest_joints: np.ndarray,
    source_map: BoneMap | None = None,
    root_options: RootOptions | None = None,
    actor_up: str = "Z",
    scene=None,
) -> SmplParams:
    """SMPL parameters (poses, Rh, Th per frame; EasyMocap convention) that follow the armature over `frames`."""
    _require_armature(obj, "source")
    scene = scene or bpy.context.scene
    smap = resolve_bone_map(obj, source_map, "source")
    skel, names = skeleton_from_armature(obj)
    posed = posed_world_matrices(obj, list(frames), scene, names)
    opts = root_options or RootOptions(fps=scene.render.fps / scene.render.fps_base)
    params, _ = armature_to_smpl(skel, posed, smap, rest_joints, actor_up=actor_up, root=opts)
    return params


def smpl_posed_world(
    poses: np.ndarray, rh: np.ndarray, th: np.ndarray, rest_joints: np.ndarray, actor_up: str = "Z"
) -> np.ndarray:
    """SMPL forward kinematics -> (F, 24, 4, 4) world matrices matching smpl_skeleton(rest_joints, up_axis='Z')."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 24, 3)
    n = len(poses)
    rh = np.broadcast_to(np.asarray(rh, dtype=np.float64).reshape(-1, 3), (n, 3))
    th = np.broadcast_to(np.asarray(th, dtype=np.float64).reshape(-1, 3), (n, 3))
    if actor_up.upper() not in ("Y", "Z"):
        raise RetargetError(f"actor up axis must be 'Y' or 'Z', got {actor_up!r}")
    u = Y_TO_Z_UP if actor_up.upper() == "Y" else np.eye(3)  # world = u · actor
    local = axis_angle_to_matrix(poses)
    local[:, 0] = axis_angle_to_matrix(rh)
    g = np.zeros_like(local)
    for i in range(24):
        p = SMPL_PARENTS[i]
        g[:, i] = local[:, i] if p < 0 else g[:, p] @ local[:, i]
    out = np.tile(np.eye(4), (n, 24, 1, 1))
    out[..., :3, :3] = u @ g  # canonical-local axes -> world
    out[..., :3, 3] = smpl_forward_joints(poses.reshape(n, 72), rh, th, rest_joints) @ u.T
    return out


def apply_smpl_motion(
    target_obj,
    poses: np.ndarray,
    Rh: np.ndarray,  # noqa: N803 (wire-format name)
    Th: np.ndarray,  # noqa: N803
    rest_joints: np.ndarray,
    frame_start: int,
    target_map: BoneMap | None = None,
    root_options: RootOptions | None = None,
    actor_up: str = "Z",
    origin: np.ndarray | None = None,
    scene=None,
) -> dict:
    """SMPL motion (poses (F,72), Rh, Th; actor frame `actor_up`) -> keys on any mapped rig from frame_start on.

    The SMPL skeleton's rest pelvis sits at `origin` (default: where armature_to_smpl puts it for this rig, so
    rig -> SMPL -> rig returns the rig's own root motion). Returns the core's quality report plus 'scale'."""
    _require_armature(target_obj, "target")
    rest_joints = np.asarray(rest_joints, dtype=np.float64)
    if rest_joints.shape != (24, 3):
        raise RetargetError(f"SMPL rest joints must have shape (24, 3), got {rest_joints.shape}")
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] != 72:
        raise RetargetError(f"poses must have shape (frames, 72), got {poses.shape}")
    scene = scene or bpy.context.scene
    tmap = resolve_bone_map(target_obj, target_map, "target")
    tgt, tgt_names = skeleton_from_armature(target_obj)
    if origin is None:
        origin = smpl_rest_origin(tgt, tmap, rest_joints)
    src = smpl_skeleton(rest_joints, origin=origin, up_axis="Z")
    posed = smpl_posed_world(poses, Rh, Th, rest_joints, actor_up)
    smap = {j: j for j in SMPL_JOINT_NAMES}
    opts = root_options or RootOptions(fps=scene.render.fps / scene.render.fps_base)
    result = retarget(src, posed, smap, tgt, tmap, opts)
    frames = list(range(int(frame_start), int(frame_start) + len(poses)))
    fresh_action(target_obj, f"{target_obj.name}_smpl")
    key_result(target_obj, result, frames, tgt_names)
    report = quality_report(src, posed, smap, tgt, tmap, result, opts)
    report.update(scale=result.scale, frames=(frames[0], frames[-1]), target_map=tmap)
    return report


def build_smpl_armature(
    name: str,
    rest_joints: np.ndarray,
    parents: Sequence[int] = SMPL_PARENTS,
    names: Sequence[str] = SMPL_JOINT_NAMES,
    origin: np.ndarray | None = None,
    collection=None,
):
    """An armature object with one bone per SMPL joint: heads at rest_joints (Y-up canonical, turned Z-up),
    tails toward the primary child (leaves continue their parent's direction), pelvis at `origin` if given."""
    rest_joints = np.asarray(rest_joints, dtype=np.float64)
    n = len(names)
    if rest_joints.shape != (n, 3) or len(parents) != n:
        raise RetargetError(
            f"build_smpl_armature needs one rest joint and parent per name: got joints {rest_joints.shape}, "
            f"{len(parents)} parents, {n} names"
        )
    heads = rest_joints @ Y_TO_Z_UP.T
    if origin is not None:
        heads = heads - heads[0] + np.asarray(origin, dtype=np.float64)
    index = {nm: i for i, nm in enumerate(names)}
    tails = np.zeros_like(heads)
    for i, nm in enumerate(names):
        child = PRIMARY_CHILD.get(nm)
        kids = [index[child]] if child in index else [k for k, p in enumerate(parents) if p == i]
        d = heads[kids].mean(axis=0) - heads[i] if kids else np.zeros(3)
        if np.linalg.norm(d) < 1e-4:  # leaf: continue the parent's direction, a third of its length
            p = parents[i]
            d = (heads[i] - heads[p]) / 3.0 if p >= 0 else np.array([0.0, 0.0, 0.1])
            if np.linalg.norm(d) < 1e-4:
                d = np.array([0.0, 0.0, 0.05])
        tails[i] = heads[i] + d

    data = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, data)
    (collection or bpy.context.scene.collection).objects.link(obj)
    view_layer = bpy.context.view_layer
    previous = view_layer.objects.active
    view_layer.objects.active = obj
    obj.select_set(True)
    bpy.ops.object.mode_set(mode="EDIT")
    if obj.mode != "EDIT":
        raise RuntimeError(f"could not enter edit mode on '{name}' to add its bones")
    try:
        ebones = []
        for i, nm in enumerate(names):
            eb = data.edit_bones.new(nm)
            eb.head, eb.tail = heads[i].tolist(), tails[i].tolist()
            ebones.append(eb)
        for i, p in enumerate(parents):
            if p >= 0:
                ebones[i].parent = ebones[p]
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    obj.select_set(False)
    if previous is not None:
        view_layer.objects.active = previous
    return obj


def _fcurves(obj) -> list:
    """The F-curves animating obj (5.0's slotted actions and 4.2's Action.fcurves alike)."""
    ad = obj.animation_data
    action = ad.action if ad is not None else None
    if action is None:
        return []
    if getattr(action, "is_action_layered", False) or not hasattr(action, "fcurves"):
        bag = anim_utils.action_get_channelbag_for_slot(action, ad.action_slot)
        return [] if bag is None else list(bag.fcurves)
    return list(action.fcurves)


def ignore_nonroot_positions(obj) -> list[str]:
    """Drop the location animation of every bone but the roots (BVH files that write 0 in non-root position
    channels mean 'at rest'; Blender's importer takes them as offsets and the bones collapse onto their parents).
    Returns the names of the bones whose location keys were removed."""
    _require_armature(obj, "source")
    roots = {b.name for b in obj.data.bones if b.parent is None}
    ad = obj.animation_data
    bag = None
    if ad is not None and ad.action is not None and not hasattr(ad.action, "fcurves"):
        bag = anim_utils.action_get_channelbag_for_slot(ad.action, ad.action_slot)
    removed = []
    for fc in _fcurves(obj):
        path = fc.data_path
        if path.startswith('pose.bones["') and path.endswith('"].location'):
            bone = path[len('pose.bones["') : -len('"].location')]
            if bone not in roots:
                removed.append(bone)
                (bag.fcurves if bag is not None else ad.action.fcurves).remove(fc)
    for pb in obj.pose.bones:
        if pb.name not in roots:
            pb.location = (0.0, 0.0, 0.0)
    return sorted(set(removed))
