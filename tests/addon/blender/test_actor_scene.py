"""Actor roots in real Blender: create/bind, snapshot rig + camera into actor-world wire bodies/cameras, re-animate.

The demo body (server.body, tests only; tests/addon/demo_body.py) stands in for the actor: its rest joints build the
rig, and posing it with the snapshotted parameters checks where the body really lands."""

from __future__ import annotations

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from neural_human_addon.blender.actor_scene import (
    SOLE_CLEARANCE,
    ActorSceneError,
    apply_actor_motion,
    armature_bone_map,
    bind_armature,
    bound_armature,
    create_actor_root,
    find_actor_roots,
    snapshot_bodies,
    snapshot_cameras,
    snapshot_frames,
)
from neural_human_addon.blender.retarget_bpy import build_smpl_armature, posed_world_matrices, skeleton_from_armature
from neural_human_addon.blender.scene_camera import new_camera_object
from neural_human_addon.core.actor_space import points_to_world
from neural_human_addon.core.camera import BlenderCameraSettings, PinholeCamera, look_at_matrix_world, project
from neural_human_addon.core.retarget import Y_TO_Z_UP, RetargetError
from neural_human_addon.core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from neural_human_addon.core.smpl_skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS
from tests.addon import demo_body
from tests.addon.blender.retarget_bpy.blender_rigs import (
    CMU_WALK,
    a_pose,
    demo_rest,
    direction_errors,
    import_bvh,
)

pytestmark = pytest.mark.blender
N_FRAMES = 5
FRAMES = list(range(1, N_FRAMES + 1))
UPRIGHT = np.array([np.pi / 2, 0.0, 0.0])  # stands the Y-up demo body up in a Z-up capture
SMPL_MAP = {j: j for j in SMPL_JOINT_NAMES}
_DATA = ("objects", "armatures", "actions", "cameras")
_RENDER = ("resolution_x", "resolution_y", "resolution_percentage", "pixel_aspect_x", "pixel_aspect_y")


@pytest.fixture(autouse=True)
def actor_scene_cleanup():
    """Leave bpy.data, the scene camera, render size and frame as they were."""
    scene = bpy.context.scene
    before = {k: set(getattr(bpy.data, k).keys()) for k in _DATA}
    camera, render = scene.camera, {k: getattr(scene.render, k) for k in _RENDER}
    scene.frame_set(1)
    yield
    scene.camera = camera
    for k, v in render.items():
        setattr(scene.render, k, v)
    for k, names in before.items():
        coll = getattr(bpy.data, k)
        for key in set(coll.keys()) - names:
            coll.remove(coll[key])


def _actor(up: str) -> tuple[dict, dict]:
    joints, _ = demo_rest()
    actor = {"id": "demo", "name": "Demo actor", "frames": 60, "up_axis": up, "bounds": None}
    skeleton = {"names": list(SMPL_JOINT_NAMES), "parents": list(SMPL_PARENTS), "joints": joints.tolist(),
                "shapes": [0.0] * 10, "up_axis": up}
    return actor, skeleton


def _motion(up: str, seed: int = 0) -> dict:
    """A few frames of a made-up capture in actor world: moderate joint angles, turning and walking."""
    rng = np.random.default_rng(seed)
    poses = rng.normal(scale=0.25, size=(N_FRAMES, 72))
    poses[:, :3] = 0.0
    yaw = np.linspace(0.0, 1.2, N_FRAMES)
    rh, th = np.zeros((N_FRAMES, 3)), np.zeros((N_FRAMES, 3))
    for k in range(N_FRAMES):
        tilt = axis_angle_to_matrix(rng.normal(scale=0.1, size=3))
        if up == "z":
            rot = axis_angle_to_matrix(np.array([0.0, 0.0, yaw[k]])) @ tilt @ axis_angle_to_matrix(UPRIGHT)
            th[k] = [0.3 * k, -0.1 * k, 0.9]
        else:
            rot = axis_angle_to_matrix(np.array([0.0, yaw[k], 0.0])) @ tilt
            th[k] = [0.3 * k, 0.9, 0.1 * k]
        rh[k] = matrix_to_axis_angle(rot)
    return {"poses": poses, "Rh": rh, "Th": th, "fps": 30.0}


def _pose_body(bodies) -> tuple[np.ndarray, np.ndarray]:
    """(joints (F,24,3), vertices (F,V,3)) of the demo body posed by wire bodies or a motion dict, actor world."""
    if isinstance(bodies, dict):
        p, rh, th = bodies["poses"], bodies["Rh"], bodies["Th"]
    else:
        p, rh, th = ([b[k] for b in bodies] for k in ("poses", "Rh", "Th"))
    return demo_body.pose(p, rh, th)


def _root_matrix(root) -> np.ndarray:
    return np.array(root.matrix_world)


def _rig_heads(rig, frames) -> np.ndarray:
    """(F, 24, 3) world heads of the SMPL-named bones, as Blender evaluates the keys."""
    return posed_world_matrices(rig, frames, names=list(SMPL_JOINT_NAMES))[..., :3, 3]


def _place(root, location, euler) -> None:
    root.location, root.rotation_euler = location, euler
    bpy.context.view_layer.update()


@pytest.mark.parametrize("up", ["z", "y"])
def test_created_root_and_rig_stand_on_the_root(up: str) -> None:
    actor, skeleton = _actor(up)
    root, rig = create_actor_root(actor, skeleton, location=(1.0, 2.0, 0.5))
    assert root.type == "EMPTY" and root.name == "Demo actor" and root.location.z == 0.5
    assert (root["neural_human_role"], root["neural_human_actor"], root["neural_human_up_axis"]) == ("actor_root",
                                                                                                     "demo", up)
    assert rig.parent == root and root["neural_human_armature"] == rig.name and rig["neural_human_bone_map"] == "smpl"
    assert bound_armature(root) == rig and find_actor_roots() == [root]
    assert armature_bone_map(rig) == SMPL_MAP

    # The unposed rig is the actor's body at rest, standing upright on the root's XY plane over its origin.
    joints, _ = demo_rest()
    (body,) = snapshot_bodies(root, [1], joints, np.zeros(10))
    assert np.allclose(body["poses"], 0.0, atol=1e-5) and body["shapes"] == [0.0] * 10
    if up == "z":  # the ZJU-style stand-up rotation; a Y-up actor stands without one
        np.testing.assert_allclose(body["Rh"], UPRIGHT, atol=1e-6)
    else:
        np.testing.assert_allclose(body["Rh"], 0.0, atol=1e-6)
    bj, bv = _pose_body([body])
    world_v = points_to_world(bv[0], _root_matrix(root), up)
    sole = world_v[:, 2].min() - 0.5
    assert abs(sole - (SOLE_CLEARANCE - (joints[:, 1].min() - demo_body.rest()[1]))) < 1e-5
    assert abs(sole) < 0.01, sole  # feet on the root's ground plane (within a centimetre)
    np.testing.assert_allclose(points_to_world(bj[0, 0], _root_matrix(root), up)[:2], [1.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(_rig_heads(rig, [1])[0], points_to_world(bj[0], _root_matrix(root), up), atol=1e-5)


@pytest.mark.parametrize("up", ["z", "y"])
def test_motion_round_trip_at_identity_and_turned_root(up: str) -> None:
    """apply_actor_motion then snapshot_bodies returns the motion, and the keyed rig is the body in actor world
    mapped through the root, for a root at the identity and for a moved, turned and tilted one."""
    actor, skeleton = _actor(up)
    joints, _ = demo_rest()
    motion = _motion(up)
    want_j, want_v = _pose_body(motion)
    root, rig = create_actor_root(actor, skeleton)
    for place in (((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)), ((1.5, -2.0, 0.3), (0.2, -0.1, 2.5))):
        _place(root, *place)
        report = apply_actor_motion(root, motion, joints, frame_start=1)
        assert report["frames"] == (1, N_FRAMES) and abs(report["scale"] - 1.0) < 1e-6
        bodies = snapshot_bodies(root, FRAMES, joints, np.zeros(10))
        got_j, got_v = _pose_body(bodies)
        assert np.abs(got_j - want_j).max() <= 1e-4, np.abs(got_j - want_j).max()
        assert np.abs(got_v - want_v).max() <= 1e-4, np.abs(got_v - want_v).max()
        got_rh = axis_angle_to_matrix(np.array([b["Rh"] for b in bodies]))
        np.testing.assert_allclose(got_rh, axis_angle_to_matrix(motion["Rh"]), atol=1e-5)
        # Blender's evaluated rig: every bone head sits on the body's joint, in world through the root
        heads = _rig_heads(rig, FRAMES)
        world_j = points_to_world(want_j, _root_matrix(root), up)
        assert np.abs(heads - world_j).max() <= 1e-4, np.abs(heads - world_j).max()
    assert bpy.context.scene.frame_current == 1


@pytest.mark.parametrize("up", ["z", "y"])
def test_moving_the_root_moves_the_camera_not_the_body(up: str) -> None:
    scene = bpy.context.scene
    actor, skeleton = _actor(up)
    joints, _ = demo_rest()
    root, rig = create_actor_root(actor, skeleton)
    apply_actor_motion(root, _motion(up, seed=1), joints)
    cam = new_camera_object("nh_test_cam", BlenderCameraSettings(
        lens=35.0, resolution_x=320, resolution_y=240,
        matrix_world=look_at_matrix_world([0.8, -4.5, 1.7], [0.5, 0.0, 1.0])), scene)
    scene.camera = cam
    for f, x in ((1, 0.0), (N_FRAMES, 1.5)):  # an animated camera: it dollies sideways
        cam.location.x = 0.8 + x
        cam.keyframe_insert("location", frame=f)

    first = snapshot_frames(root, FRAMES, joints, np.zeros(10))
    _place(root, (0.7, -0.4, 0.2), (0.0, 0.0, 0.6))
    moved = snapshot_frames(root, FRAMES, joints, np.zeros(10))
    assert [e["frame"] for e in moved] == FRAMES
    for a, b in zip(first, moved, strict=True):  # the rig rides on the root: the same bodies
        for k in ("poses", "Rh", "Th"):
            np.testing.assert_allclose(b["body"][k], a["body"][k], atol=2e-6)
    t_first = np.array([e["camera"]["T"] for e in first])
    t_moved = np.array([e["camera"]["T"] for e in moved])
    assert np.linalg.norm(t_first - t_moved, axis=1).min() > 0.3  # ... but the camera sees it from elsewhere
    assert np.linalg.norm(t_first[0] - t_first[-1]) > 1.0  # and the keyed camera move is in the snapshot
    assert snapshot_cameras(root, FRAMES) == [e["camera"] for e in moved]

    # The server's view of the actor-world pelvis is Blender's view of the rig's pelvis bone.
    body_j, _ = _pose_body([e["body"] for e in moved])
    pelvis_world = posed_world_matrices(rig, FRAMES, names=["pelvis"])[:, 0, :3, 3]
    worst = 0.0
    for k, f in enumerate(FRAMES):
        scene.frame_set(f)
        ndc = world_to_camera_view(scene, cam, Vector(pelvis_world[k].tolist()))
        blender_px = np.array([ndc.x * 320 - 0.5, (1.0 - ndc.y) * 240 - 0.5])
        px, depth = project(body_j[k, :1], PinholeCamera.from_wire(moved[k]["camera"]))
        assert 0 < px[0, 0] < 320 and 0 < px[0, 1] < 240 and depth[0] > 1.0
        worst = max(worst, float(np.abs(px[0] - blender_px).max()))
    scene.frame_set(1)
    assert worst <= 0.01, worst


def test_cmu_bvh_rig_binds_and_drives_the_body() -> None:
    """A rig the root does not own (CMU BVH, Blender's importer, not parented): bodies follow its bones in world."""
    actor, skeleton = _actor("z")
    joints, _ = demo_rest()
    root, _ = create_actor_root(actor, skeleton, location=(0.5, 1.0, 0.0))
    root.rotation_euler.z = 0.8
    bvh = import_bvh(CMU_WALK)
    bone_map = bind_armature(root, bvh)
    assert bone_map["pelvis"] == "Hips" and bvh["neural_human_bone_map"] == "cmu_bvh" and bvh.parent is None
    assert bound_armature(root) == bvh
    frames = list(range(2, 42))
    bodies = snapshot_bodies(root, frames, joints, np.zeros(10))
    body_j, _ = _pose_body(bodies)
    body_posed = np.tile(np.eye(4), (len(frames), 24, 1, 1))
    body_posed[..., :3, 3] = points_to_world(body_j, _root_matrix(root), "z")
    _, names = skeleton_from_armature(bvh)
    rig_posed = posed_world_matrices(bvh, frames, names=names)
    errs = direction_errors(rig_posed, names, bone_map, body_posed, list(SMPL_JOINT_NAMES), SMPL_MAP)
    medians = {j: float(np.median(e)) for j, e in errs.items()}
    assert len(errs) >= 14 and max(medians.values()) <= 3.0, medians
    # the body walks where the rig walks (scaled to the body's size), upright
    hips = rig_posed[:, names.index("Hips"), :3, 3]
    walked_rig = np.linalg.norm((hips[-1] - hips[0])[:2])
    walked_body = np.linalg.norm((body_posed[-1, 0, :3, 3] - body_posed[0, 0, :3, 3])[:2])
    assert walked_rig > 0.3 and 0.5 < walked_body / walked_rig < 1.5, (walked_body, walked_rig)
    up = body_posed[:, SMPL_JOINT_NAMES.index("neck"), :3, 3] - body_posed[:, 0, :3, 3]
    assert (up[:, 2] / np.linalg.norm(up, axis=1)).min() > 0.8


def _mixamo_rig(root):
    """A Mixamo-named A-pose rig as an FBX import leaves it: bones in centimetres, Y-up armature space, object turned
    +90° about X and scaled 0.01; parented to the root."""
    joints, pelvis_height = demo_rest()
    names = [
        "Hips", "LeftUpLeg", "RightUpLeg", "Spine", "LeftLeg", "RightLeg", "Spine1", "LeftFoot", "RightFoot",
        "Spine2", "LeftToeBase", "RightToeBase", "Neck", "LeftShoulder", "RightShoulder", "Head", "LeftArm",
        "RightArm", "LeftForeArm", "RightForeArm", "LeftHand", "RightHand", "LeftHandMiddle1", "RightHandMiddle1",
    ]  # fmt: skip
    heads_cm = 100.0 * (a_pose(joints, 40.0) - joints[0] + [0.0, pelvis_height, 0.0])  # Y-up, feet at 0
    # build_smpl_armature turns its input by Y_TO_Z_UP; hand it the inverse so armature space stays Y-up
    rig = build_smpl_armature("mixamo_rig", heads_cm @ Y_TO_Z_UP, names=[f"mixamorig:{n}" for n in names])
    rig.rotation_euler = (np.pi / 2, 0.0, 0.0)
    rig.scale = (0.01, 0.01, 0.01)
    rig.parent = root
    bpy.context.view_layer.update()
    return rig


def test_mixamo_rig_round_trip_through_a_turned_root() -> None:
    actor, skeleton = _actor("z")
    joints, _ = demo_rest()
    root, smpl_rig = create_actor_root(actor, skeleton, location=(-1.0, 0.5, 0.0))
    root.rotation_euler.z = -1.1
    rig = _mixamo_rig(root)
    assert bind_armature(root, rig)["left_shoulder"] == "mixamorig:LeftArm"
    assert rig["neural_human_bone_map"] == "mixamo" and bound_armature(root) == rig
    motion = _motion("z", seed=2)
    report = apply_actor_motion(root, motion, joints)
    assert abs(report["scale"] - 1.0) < 1e-5
    bodies = snapshot_bodies(root, FRAMES, joints, np.zeros(10))
    want_j, _ = _pose_body(motion)
    got_j, _ = _pose_body(bodies)
    assert np.abs(got_j - want_j).max() <= 1e-3, np.abs(got_j - want_j).max()
    # the A-pose rig's bones point where the posed body's do (world, through the root)
    body_posed = np.tile(np.eye(4), (N_FRAMES, 24, 1, 1))
    body_posed[..., :3, 3] = points_to_world(want_j, _root_matrix(root), "z")
    _, names = skeleton_from_armature(rig)
    rig_posed = posed_world_matrices(rig, FRAMES, names=names)
    errs = direction_errors(rig_posed, names, armature_bone_map(rig), body_posed, list(SMPL_JOINT_NAMES), SMPL_MAP)
    assert len(errs) >= 18 and max(float(e.max()) for e in errs.values()) <= 0.1, errs
    # binding another rig leaves the SMPL rig alone; binding it back by preset name works
    assert bind_armature(root, smpl_rig, "smpl") == SMPL_MAP and bound_armature(root) == smpl_rig


def test_errors_name_the_object_and_the_fix() -> None:
    scene = bpy.context.scene
    actor, skeleton = _actor("z")
    joints, _ = demo_rest()
    root, rig = create_actor_root(actor, skeleton)

    root.scale = (2.0, 2.0, 2.0)
    with pytest.raises(ActorSceneError, match=r"'Demo actor'.*apply scale on the actor root"):
        snapshot_bodies(root, [1], joints, np.zeros(10))
    root.scale = (1.0, 1.0, 1.0)

    # cameras: none, orthographic
    scene.camera = None
    with pytest.raises(ActorSceneError, match="no active camera"):
        snapshot_cameras(root, [1])
    cam = new_camera_object("nh_test_cam", BlenderCameraSettings(matrix_world=look_at_matrix_world([0, -4, 1],
                                                                                                    [0, 0, 1])), scene)
    scene.camera = cam
    cam.data.type = "ORTHO"
    with pytest.raises(ActorSceneError, match="nh_test_cam.*orthographic.*Perspective"):
        snapshot_frames(root, [1], joints, np.zeros(10))
    assert snapshot_frames(root, [1], joints, np.zeros(10), with_camera=False)[0].keys() == {"frame", "body"}

    # binding: not an armature, not a root, a rig without the preset's bones, an unknown preset
    with pytest.raises(ActorSceneError, match="not an armature"):
        bind_armature(root, cam)
    with pytest.raises(ActorSceneError, match="not an actor root"):
        bind_armature(cam, rig)
    with pytest.raises(RetargetError, match="left_hip.*mixamorig:LeftUpLeg"):
        bind_armature(root, rig, "mixamo")
    with pytest.raises(ActorSceneError, match="unknown bone-map preset"):
        bind_armature(root, rig, "no_such_preset")
    assert bound_armature(root) == rig  # failed binds keep the old one

    # a renamed (stale name) or deleted rig: no dangling reference, a clear error
    rig.name = "renamed rig"
    assert bound_armature(root) is None
    with pytest.raises(ActorSceneError, match="no bound armature.*no longer exists"):
        snapshot_bodies(root, [1], joints, np.zeros(10))
    bind_armature(root, rig)
    assert rig["neural_human_bone_map"] == "smpl" and bound_armature(root) == rig
    bpy.data.objects.remove(rig)
    assert bound_armature(root) is None
    with pytest.raises(ActorSceneError, match="'Demo actor' has no bound armature"):
        apply_actor_motion(root, _motion("z"), joints)
    del root["neural_human_armature"]
    with pytest.raises(ActorSceneError, match="has no bound armature; bind"):
        snapshot_bodies(root, [1], joints, np.zeros(10))

    # bad inputs
    other, _ = create_actor_root(actor, skeleton)
    with pytest.raises(ActorSceneError, match="shapes must be 10"):
        snapshot_bodies(other, [1], joints, np.zeros(3))
    with pytest.raises(ActorSceneError, match=r"poses must have shape \(N, 72\)"):
        apply_actor_motion(other, {"poses": np.zeros((2, 69)), "Rh": np.zeros(3), "Th": np.zeros(3)}, joints)
    with pytest.raises(ActorSceneError, match="disagree on the up axis"):
        create_actor_root(actor, {**skeleton, "up_axis": "y"})
    assert find_actor_roots() == sorted([root, other], key=lambda o: o.name)


def test_motion_from_the_server_message_shape() -> None:
    """GET /v1/actors/{id}/motion's {"fps", "frames": [body, ...]} is accepted as is."""
    actor, skeleton = _actor("z")
    joints, _ = demo_rest()
    root, _ = create_actor_root(actor, skeleton)
    motion = _motion("z", seed=3)
    message = {"fps": 25.0, "frames": [{"poses": motion["poses"][k].tolist(), "shapes": [0.0] * 10,
                                        "Rh": motion["Rh"][k].tolist(), "Th": motion["Th"][k].tolist()}
                                       for k in range(N_FRAMES)]}
    report = apply_actor_motion(root, message, joints, frame_start=10)
    assert report["frames"] == (10, 9 + N_FRAMES) and report["fps"] == 25.0
    got_j, _ = _pose_body(snapshot_bodies(root, range(10, 10 + N_FRAMES), joints, np.zeros(10)))
    want_j, _ = _pose_body(motion)
    assert np.abs(got_j - want_j).max() <= 1e-4
