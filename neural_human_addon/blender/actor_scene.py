# SPDX-License-Identifier: GPL-3.0-or-later
"""Actor roots in the scene: create them, bind a rig, snapshot rig + camera into wire bodies/cameras in actor world,
and re-animate a rig from an actor's captured motion (thin bpy layer over actor_space and retarget).

An actor root is an Empty with custom properties ``neural_human_role = "actor_root"``, ``neural_human_actor`` (the
actor id) and ``neural_human_up_axis``; ``neural_human_armature`` names its bound rig, whose own
``neural_human_bone_map`` names the bone-map preset (or "custom", with the map as JSON in
``neural_human_bone_map_joints``). Only names are stored, so everything is found again after undo or file load.

All rig math runs in the root's local (Z-up) frame: rest and posed bone matrices are premultiplied by the inverse
root matrix, and the SMPL parameters are expressed in actor world through the actor's up axis (retarget's
``actor_up``). Retargeting in Blender world instead would be wrong under a turned root: the SMPL rest skeleton is
world-aligned while the rig is not, and the per-bone rest offsets would lose the root's twist.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix

from ..core.actor_space import ActorSpaceError, camera_in_actor_space, check_up_axis, root_rigid_matrix
from ..core.bone_maps import EDITOR_HINT, load_presets, missing_required, resolve_map
from ..core.camera import CameraError
from ..core.errors import UserError
from ..core.retarget import (
    Y_TO_Z_UP,
    RetargetError,
    RootOptions,
    Skeleton,
    armature_to_smpl,
    quality_report,
    retarget,
    smpl_rest_origin,
    smpl_skeleton,
)
from ..core.smpl_skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS
from ..core.wire import MotionError, motion_arrays
from .retarget_bpy import (
    build_smpl_armature,
    detect_armature,
    fresh_action,
    key_result,
    resolve_bone_map,
    smpl_posed_world,
)
from .scene_camera import scene_pinhole_camera

__all__ = [
    "ActorSceneError",
    "apply_actor_motion",
    "armature_bone_map",
    "bind_armature",
    "bound_armature",
    "create_actor_root",
    "find_actor_roots",
    "is_actor_root",
    "remember_skeleton",
    "root_body",
    "snapshot_bodies",
    "snapshot_cameras",
    "snapshot_frames",
]

# Every custom-property key the add-on writes on objects, and the role values (the one definition).
ROLE_KEY = "neural_human_role"
ROOT_ROLE = "actor_root"
RIG_ROLE = "actor_rig"
MESH_ROLE = "mesh"
MESH_SEQUENCE_ROLE = "mesh_sequence"
ACTOR_KEY = "neural_human_actor"  # actor id, on roots, rigs and meshes
UP_KEY = "neural_human_up_axis"
REST_JOINTS_KEY = "neural_human_rest_joints"  # the actor's rest joints (72 floats), on the root
SHAPES_KEY = "neural_human_shapes"  # the actor's shape coefficients (10 floats), on the root
ARMATURE_KEY = "neural_human_armature"  # name of the bound rig, on the root
BONE_MAP_KEY = "neural_human_bone_map"  # on the bound rig
BONE_MAP_JOINTS_KEY = "neural_human_bone_map_joints"
FRAME_KEY = "neural_human_frame"  # frame number, on the meshes of a mesh sequence
CUSTOM_MAP = "custom"
# The created rig stands with its lowest joint (SMPL's toe joints) this far above the root's origin, about where
# those joints sit above the soles, so the body's feet rest on the root's XY plane.
SOLE_CLEARANCE = 0.02


class ActorSceneError(UserError, ValueError):
    """An actor root, rig or camera that cannot be used; the message names the object and the fix."""


# --- roots and binding -------------------------------------------------------------------------------------------


def is_actor_root(obj: Any) -> bool:
    return obj is not None and obj.get(ROLE_KEY) == ROOT_ROLE


def _require_root(root: Any) -> None:
    if not is_actor_root(root):
        name = getattr(root, "name", root)
        raise ActorSceneError(f"{name!r} is not an actor root (an Empty with neural_human_role = 'actor_root'); "
                              "add the actor from the Neural Human panel and use its root")


def _root_up_axis(root: Any, up_axis: str | None = None) -> str:
    try:
        return check_up_axis(up_axis if up_axis is not None else root.get(UP_KEY, "z"))
    except ActorSpaceError as err:
        raise ActorSceneError(f"actor root '{root.name}': {err}; set its neural_human_up_axis to 'z' or 'y'") from None


def _root_matrix(root: Any) -> np.ndarray:
    try:
        return root_rigid_matrix(np.array(root.matrix_world))
    except ActorSpaceError as err:
        raise ActorSceneError(f"actor root '{root.name}': {err}") from None


def find_actor_roots(scene: Any = None) -> list[Any]:
    """The scene's actor roots (objects with neural_human_role = 'actor_root'), sorted by name."""
    scene = scene or bpy.context.scene
    return sorted((o for o in scene.objects if is_actor_root(o)), key=lambda o: o.name)


def bound_armature(root: Any) -> Any | None:
    """The armature bound to `root`, or None when none is bound or the stored name no longer names an armature
    that is in a scene (deleted or renamed)."""
    name = root.get(ARMATURE_KEY)
    obj = bpy.data.objects.get(name) if isinstance(name, str) and name else None
    if obj is None or obj.type != "ARMATURE" or not obj.users_scene:
        return None
    return obj


def _require_bound(root: Any) -> Any:
    _require_root(root)
    arm = bound_armature(root)
    if arm is None:
        stored = root.get(ARMATURE_KEY)
        why = f" (the armature '{stored}' it was bound to no longer exists)" if stored else ""
        raise ActorSceneError(f"actor root '{root.name}' has no bound armature{why}; bind a rig to it first "
                              "(Neural Human panel: bind armature)")
    return arm


def _preset_map(armature: Any, key: str) -> dict[str, str | None]:
    presets = load_presets()
    if key not in presets:
        raise ActorSceneError(f"armature '{armature.name}': unknown bone-map preset {key!r}; use one of "
                              f"{sorted(presets)} or pass the bone map itself")
    bone_map, _ = resolve_map(presets[key].joints, [b.name for b in armature.data.bones])
    missing = missing_required(bone_map)
    if missing:
        wanted = ", ".join(f"{j} (expected '{presets[key].joints.get(j)}')" for j in missing)
        raise RetargetError(f"actor armature '{armature.name}' lacks bones the '{presets[key].name}' bone map "
                            f"requires: {wanted}; {EDITOR_HINT}")
    return bone_map


def bind_armature(root: Any, armature: Any, bone_map: str | Mapping[str, str | None] | None = None) -> dict:
    """Bind any armature to the actor root; returns the resolved bone map {smpl_joint: bone or None}.

    `bone_map`: None = auto-detect from bone names, a preset key ('smpl', 'mixamo', 'cmu_bvh', ...), or the map
    itself. Binding does not reparent the rig: its motion is read relative to the root wherever it sits."""
    _require_root(root)
    if armature is None or getattr(armature, "type", None) != "ARMATURE":
        raise ActorSceneError(f"cannot bind {getattr(armature, 'name', armature)!r} to actor root '{root.name}': "
                              "it is not an armature; select an armature object")
    if bone_map is None:
        resolved = resolve_bone_map(armature, None, "actor")  # RetargetError names missing required bones
        det = detect_armature(armature)
        key = det.preset.key if det.method == "preset" and det.preset is not None else CUSTOM_MAP
    elif isinstance(bone_map, str):
        key, resolved = bone_map, _preset_map(armature, bone_map)
    else:
        key, resolved = CUSTOM_MAP, resolve_bone_map(armature, bone_map, "actor")
    armature[BONE_MAP_KEY] = key
    if key == CUSTOM_MAP:
        armature[BONE_MAP_JOINTS_KEY] = json.dumps(resolved)
    elif BONE_MAP_JOINTS_KEY in armature:
        del armature[BONE_MAP_JOINTS_KEY]
    root[ARMATURE_KEY] = armature.name
    return resolved


def armature_bone_map(armature: Any) -> dict[str, str | None]:
    """The bone map stored on a bound armature (preset key or custom JSON); auto-detected when none is stored."""
    key = armature.get(BONE_MAP_KEY)
    if key == CUSTOM_MAP:
        try:
            stored = json.loads(armature.get(BONE_MAP_JOINTS_KEY, ""))
        except json.JSONDecodeError:
            raise ActorSceneError(f"armature '{armature.name}': its stored custom bone map is not valid JSON; "
                                  "bind the armature again") from None
        return resolve_bone_map(armature, stored, "actor")
    if isinstance(key, str) and key:
        return _preset_map(armature, key)
    return resolve_bone_map(armature, None, "actor")


def create_actor_root(
    actor: Mapping[str, Any],
    skeleton: Mapping[str, Any],
    location: Sequence[float] = (0.0, 0.0, 0.0),
    collection: Any = None,
) -> tuple[Any, Any]:
    """An actor root Empty (named after the actor, at `location`) and an SMPL armature bound to it -> (root, rig).

    `actor` is an entry of GET /v1/actors (id, name, up_axis, ...); `skeleton` is GET /v1/actors/{id}/skeleton
    (names, parents, joints (24,3) in the body's Y-up canonical frame, shapes, up_axis). The rig is a child of the
    root; its rest pose is the actor's body standing upright in the root's frame (Z-up in Blender for both up axes),
    pelvis over the root's origin, lowest joint SOLE_CLEARANCE above the root's XY plane. `collection` (default:
    the scene's master collection) must be in the active view layer (the rig's bones are added in edit mode)."""
    if not actor.get("id"):
        raise ActorSceneError(f"the actor description has no 'id' (got keys {sorted(actor)}); pass an entry of "
                              "GET /v1/actors")
    actor_id = str(actor["id"])
    up_values = {check_up_axis(v) for v in (actor.get("up_axis"), skeleton.get("up_axis")) if v}
    if len(up_values) > 1:
        raise ActorSceneError(f"actor {actor_id!r}: the actor and its skeleton disagree on the up axis "
                              f"({sorted(up_values)}); refresh the actor list from the server")
    up = up_values.pop() if up_values else "z"
    joints = np.asarray(skeleton.get("joints"), dtype=np.float64)
    names = list(skeleton.get("names") or SMPL_JOINT_NAMES)
    parents = list(skeleton.get("parents") or SMPL_PARENTS)
    if joints.shape != (len(names), 3) or len(parents) != len(names):
        raise ActorSceneError(f"actor {actor_id!r}: the skeleton needs one joint (x, y, z) and one parent per name; "
                              f"got joints {joints.shape}, {len(parents)} parents, {len(names)} names")

    scene_collection = collection if collection is not None else bpy.context.scene.collection
    root = bpy.data.objects.new(str(actor.get("name") or actor_id), None)
    root.empty_display_type = "ARROWS"
    root.location = [float(v) for v in location]
    root[ROLE_KEY] = ROOT_ROLE
    root[ACTOR_KEY] = actor_id
    root[UP_KEY] = up
    scene_collection.objects.link(root)

    heads = joints @ Y_TO_Z_UP.T
    origin = np.array([0.0, 0.0, heads[0, 2] - heads[:, 2].min() + SOLE_CLEARANCE])
    rig = build_smpl_armature(f"{root.name} rig", joints, parents, names, origin=origin, collection=scene_collection)
    rig.parent = root
    rig.matrix_parent_inverse = Matrix.Identity(4)  # the rig's frame is the root's frame
    rig[ROLE_KEY] = RIG_ROLE
    rig[ACTOR_KEY] = actor_id
    bind_armature(root, rig, "smpl" if tuple(names) == SMPL_JOINT_NAMES else None)
    return root, rig


# --- snapshots ---------------------------------------------------------------------------------------------------


def _relative_rest(root: Any, arm: Any) -> tuple[Skeleton, list[str]]:
    """The rig's rest skeleton in the root's local frame (at the scene's current frame)."""
    bones = list(arm.data.bones)
    names = [b.name for b in bones]
    index = {n: i for i, n in enumerate(names)}
    parents = [index[b.parent.name] if b.parent else -1 for b in bones]
    to_root = np.linalg.inv(_root_matrix(root)) @ np.array(arm.matrix_world)
    rest = np.array([to_root @ np.array(b.matrix_local) for b in bones]).reshape(len(bones), 4, 4)
    return Skeleton(names, parents, rest), names


def _sample(root: Any, frames: Sequence[int], scene: Any, arm: Any | None, names: Sequence[str], up: str,
            camera_obj: Any | None, with_camera: bool) -> tuple[np.ndarray, list[Any]]:
    """One frame_set pass: (posed rig matrices in the root's frame (F, N, 4, 4), actor-world cameras per frame)."""
    posed = np.zeros((len(frames), len(names), 4, 4))
    cameras: list[Any] = []
    pbones = [arm.pose.bones[n] for n in names] if arm is not None else []
    current, subframe = scene.frame_current, scene.frame_subframe
    try:
        for k, f in enumerate(frames):
            scene.frame_set(int(f))
            m = _root_matrix(root)
            if arm is not None:
                to_root = np.linalg.inv(m) @ np.array(arm.matrix_world)
                posed[k] = [to_root @ np.array(pb.matrix) for pb in pbones]
            if with_camera:
                try:
                    cam = scene_pinhole_camera(scene, camera_obj)
                except CameraError as err:
                    raise ActorSceneError(f"cannot send the camera for actor root '{root.name}' at frame {f}: "
                                          f"{err}") from None
                cameras.append(camera_in_actor_space(cam, m, up))
    finally:
        scene.frame_set(current, subframe=subframe)
    return posed, cameras


def _shapes(shapes: Any) -> list[float]:
    s = np.asarray(shapes, dtype=np.float64).reshape(-1)
    if s.size != 10 or not np.all(np.isfinite(s)):
        raise ActorSceneError(f"shapes must be 10 finite numbers (the actor's β from its skeleton), got {s.size}")
    return s.tolist()


def _rest_joints(rest_joints: Any) -> np.ndarray:
    j = np.asarray(rest_joints, dtype=np.float64)
    if j.shape != (24, 3):
        raise ActorSceneError(f"rest joints must have shape (24, 3) (the actor's skeleton joints), got {j.shape}")
    return j


def snapshot_frames(
    root: Any,
    frames: Iterable[int],
    rest_joints: Any,
    shapes: Any,
    with_camera: bool = True,
    scene: Any = None,
    camera_obj: Any = None,
) -> list[dict]:
    """[{"frame": f, "body": wire body, "camera": wire camera}] in actor world, for POST /v1/jobs.

    Bodies: the bound rig at each frame relative to the root, retargeted onto the actor's SMPL skeleton
    (`rest_joints` (24,3) Y-up, `shapes` (10)). Cameras: `camera_obj` or the scene camera (animation included).
    Without a camera the entries carry no "camera". Restores the scene's current frame."""
    scene = scene or bpy.context.scene
    arm = _require_bound(root)
    up = _root_up_axis(root)
    rest_joints, shape_list = _rest_joints(rest_joints), _shapes(shapes)
    frames = [int(f) for f in frames]
    bone_map = armature_bone_map(arm)
    skel, names = _relative_rest(root, arm)
    posed, cameras = _sample(root, frames, scene, arm, names, up, camera_obj, with_camera)
    opts = RootOptions(fps=scene.render.fps / scene.render.fps_base)
    params, _ = armature_to_smpl(skel, posed, bone_map, rest_joints, actor_up=up.upper(), root=opts)
    out = []
    for k, f in enumerate(frames):
        entry: dict[str, Any] = {"frame": f, "body": {
            "poses": params.poses[k].tolist(), "shapes": list(shape_list),
            "Rh": params.Rh[k].tolist(), "Th": params.Th[k].tolist()}}
        if with_camera:
            entry["camera"] = cameras[k].to_wire()
        out.append(entry)
    return out


def snapshot_bodies(root: Any, frames: Iterable[int], rest_joints: Any, shapes: Any, scene: Any = None) -> list[dict]:
    """Wire bodies {"poses", "shapes", "Rh", "Th"} of the bound rig at `frames`, in actor world."""
    return [e["body"] for e in snapshot_frames(root, frames, rest_joints, shapes, with_camera=False, scene=scene)]


def snapshot_cameras(root: Any, frames: Iterable[int], scene: Any = None, camera_obj: Any = None) -> list[dict]:
    """Wire cameras {"K", "R", "T", "width", "height"} of `camera_obj` (default: the scene camera) at `frames`,
    with x_cam = R·x_actor + T in the root's actor world. Restores the scene's current frame."""
    scene = scene or bpy.context.scene
    _require_root(root)
    up = _root_up_axis(root)
    _, cameras = _sample(root, [int(f) for f in frames], scene, None, [], up, camera_obj, True)
    return [c.to_wire() for c in cameras]


# --- re-animation ------------------------------------------------------------------------------------------------


def apply_actor_motion(
    root: Any,
    motion: Mapping[str, Any],
    rest_joints: Any,
    frame_start: int = 1,
    up_axis: str | None = None,
    root_options: RootOptions | None = None,
) -> dict:
    """Key the bound rig with an actor motion (actor world) from `frame_start` on, in a fresh action.

    The motion is retargeted in the root's frame, so snapshot_bodies of the keyed frames gives the motion back
    (exactly for the actor's own SMPL rig; up to retargeting for other rigs). `up_axis` defaults to the root's.
    Returns retarget's quality report plus 'scale', 'frames', 'target_map' and 'fps'."""
    arm = _require_bound(root)
    up = _root_up_axis(root, up_axis)
    rest_joints = _rest_joints(rest_joints)
    try:
        poses, rh, th, fps = motion_arrays(motion)
    except MotionError as err:
        raise ActorSceneError(str(err)) from None
    tmap = armature_bone_map(arm)
    tgt, names = _relative_rest(root, arm)
    src = smpl_skeleton(rest_joints, origin=smpl_rest_origin(tgt, tmap, rest_joints), up_axis="Z")
    posed = smpl_posed_world(poses, rh, th, rest_joints, actor_up=up.upper())  # actor -> root's (Z-up) frame
    smap = {j: j for j in SMPL_JOINT_NAMES}
    opts = root_options or RootOptions(fps=fps)
    result = retarget(src, posed, smap, tgt, tmap, opts)
    frames = list(range(int(frame_start), int(frame_start) + len(poses)))
    fresh_action(arm, f"{arm.name}_{root.get(ACTOR_KEY, 'actor')}_motion")
    key_result(arm, result, frames, names)
    report = quality_report(src, posed, smap, tgt, tmap, result, opts)
    report.update(scale=result.scale, frames=(frames[0], frames[-1]), target_map=tmap, fps=fps)
    return report


# --- the actor's skeleton on its root -------------------------------------------------------------------------------


def remember_skeleton(root: Any, actor: Mapping[str, Any], skeleton: Mapping[str, Any]) -> None:
    """Store the actor id, up axis, rest joints and shapes (from GET .../skeleton) on an actor root."""
    root[ACTOR_KEY] = str(actor["id"])
    root[UP_KEY] = str(skeleton.get("up_axis") or actor.get("up_axis") or "z").lower()
    root[REST_JOINTS_KEY] = np.asarray(skeleton["joints"], dtype=np.float64).reshape(72).tolist()
    root[SHAPES_KEY] = np.asarray(skeleton["shapes"], dtype=np.float64).reshape(10).tolist()


def root_body(root: Any) -> tuple[str, str, np.ndarray, np.ndarray]:
    """(actor id, up axis, rest joints (24,3), shapes (10,)) stored on an actor root."""
    joints, shapes = root.get(REST_JOINTS_KEY), root.get(SHAPES_KEY)
    if joints is None or shapes is None:
        raise ActorSceneError(f"'{root.name}' has no actor skeleton stored: add the actor to the scene again")
    return (str(root[ACTOR_KEY]), str(root.get(UP_KEY, "z")),
            np.asarray(list(joints), dtype=np.float64).reshape(24, 3), np.asarray(list(shapes), dtype=np.float64))
