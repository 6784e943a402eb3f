"""A Z-up AMASS file keyed onto an actor's rig (a Y-up actor here): the actor's body then moves as the file says."""

from __future__ import annotations

import bpy
import numpy as np
import pytest

from neural_human_addon.blender.actor_scene import create_actor_root, remember_skeleton, snapshot_bodies
from neural_human_addon.blender.motion_import import apply_motion_file
from neural_human_addon.core.actor_space import points_to_world
from neural_human_addon.core.motion_files import read_motion, resample
from neural_human_addon.core.retarget import smpl_forward_joints
from neural_human_addon.core.smpl_skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS
from tests.addon.blender.retarget_bpy.blender_rigs import demo_rest

pytestmark = pytest.mark.blender


def test_amass_file_drives_a_y_up_actor(tmp_path) -> None:
    scene = bpy.context.scene
    old = scene.render.fps, scene.render.fps_base
    scene.render.fps, scene.render.fps_base = 30, 1.0
    joints, _ = demo_rest()
    actor = {"id": "demo", "name": "Demo", "frames": 1, "up_axis": "y", "bounds": None}
    skeleton = {"names": list(SMPL_JOINT_NAMES), "parents": list(SMPL_PARENTS), "joints": joints.tolist(),
                "shapes": [0.0] * 10, "up_axis": "y"}  # fmt: skip
    root, _rig = create_actor_root(actor, skeleton, location=(0.5, -1.0, 0.0))
    root.rotation_euler = (0.0, 0.0, 0.7)
    bpy.context.view_layer.update()
    remember_skeleton(root, actor, skeleton)
    rng = np.random.default_rng(1)
    n = 31
    poses = rng.normal(scale=0.2, size=(n, 156))  # SMPL+H
    poses[:, :3] = [np.pi / 2, 0.0, 0.0]  # AMASS bodies stand up along Z
    trans = np.stack([np.linspace(0, 0.5, n), np.zeros(n), np.full(n, 0.95)], axis=1)
    path = tmp_path / "amass.npz"
    np.savez(path, poses=poses, trans=trans, mocap_frame_rate=np.array(60.0), betas=np.zeros(16))
    try:
        report = apply_motion_file(root, path, frame_start=3)
        assert report["frames"] == (3, 18) and report["fps"] == 30.0 and report["source_fps"] == 60.0
        bodies = snapshot_bodies(root, range(3, 19), joints, np.zeros(10))
        got = np.array([smpl_forward_joints(b["poses"], b["Rh"], b["Th"], joints)[0] for b in bodies])
        m = resample(read_motion(path), 30.0)
        p, rh, th = m.easymocap(joints)
        want = smpl_forward_joints(p, rh, th, joints)
        mat = np.array(root.matrix_world)
        np.testing.assert_allclose(points_to_world(got, mat, "y"), points_to_world(want, mat, "z"), atol=1e-4)
    finally:
        scene.render.fps, scene.render.fps_base = old
