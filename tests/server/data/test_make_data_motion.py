"""Motion of the synthetic dataset (server.data.synthetic_poses): rotations, world placement, the captured clip."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from server.data import synthetic_poses as sp


@pytest.fixture(scope="module")
def model():
    from server.body.model import load_body_model

    return load_body_model()


@pytest.mark.parametrize("make", [lambda: sp.walk_circle(12), lambda: sp.arm_raises(7), lambda: sp.squat_and_reach(5),
                                  lambda: sp.kick_and_wave(5), lambda: sp.amass_clip()])
def test_motions_are_proper_rotations(make):
    motion = make()
    n = len(motion)
    assert motion.joint_rotations.shape == (n, 24, 3, 3) and motion.root.shape == (n, 3, 3)
    rots = motion.joint_rotations.reshape(-1, 3, 3)
    np.testing.assert_allclose(rots @ rots.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rots.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(rots), 1.0, atol=1e-9)
    poses = sp.body_poses(motion)
    assert poses.shape == (n, 72) and not poses[:, :3].any()


def test_walk_swings_legs_in_antiphase():
    walk = sp.walk_circle(16)
    left = Rotation.from_matrix(walk.joint_rotations[:, sp.L_HIP]).as_rotvec()[:, 0]
    right = Rotation.from_matrix(walk.joint_rotations[:, sp.R_HIP]).as_rotvec()[:, 0]
    np.testing.assert_allclose(left, -right, atol=1e-12)
    assert left.max() > 0.4 and left.min() < -0.4  # about ±28°
    assert np.ptp(walk.heading) > 5.0  # the body turns almost a full turn relative to any camera


def test_world_params_stand_on_the_floor_facing_the_heading(model):
    motion = sp.concatenate([sp.arm_raises(3, heading0=0.0, turn=0.0), sp.arm_raises(3, heading0=np.pi / 2,
                                                                                       turn=0.0)])
    p = sp.to_world_params(model, motion)
    assert {k: v.dtype for k, v in p.items()} == dict.fromkeys(p, np.float32)
    np.testing.assert_allclose(p["vertices"][:, :, 2].min(axis=1), 0.0, atol=1e-5)  # soles on z = 0
    np.testing.assert_allclose(p["joints"][:, 0, :2], motion.ground_xy, atol=1e-5)  # pelvis above ground_xy
    np.testing.assert_allclose(p["Rh"][0], [np.pi / 2, 0, 0], atol=1e-6)  # Y-up canonical -> Z-up world
    joints = p["joints"]
    assert np.all(joints[:, 15, 2] > joints[:, 0, 2] + 0.4)  # head above pelvis
    toes_forward = (joints[:, 10] + joints[:, 11]) / 2 - (joints[:, 7] + joints[:, 8]) / 2
    assert toes_forward[0, 1] < -0.05 and abs(toes_forward[0, 0]) < 0.03  # heading 0: facing -Y
    assert toes_forward[3, 0] > 0.05 and abs(toes_forward[3, 1]) < 0.03  # heading 90°: facing +X
    assert joints[0, 16, 0] > joints[0, 17, 0]  # facing -Y, the body's left shoulder is at +X


def test_world_params_reproduce_through_the_body_model(model):
    import torch

    p = sp.to_world_params(model, sp.walk_circle(8).subsample(3))
    with torch.no_grad():
        out = model(*(torch.from_numpy(p[k]) for k in ("poses", "shapes", "Rh", "Th")))
    np.testing.assert_allclose(out.vertices.numpy(), p["vertices"], atol=2e-5)


def test_amass_clip_keeps_the_captured_body_pose():
    with np.load(sp.AMASS_CLIP) as data:
        captured = np.asarray(data["poses"])
    clip = sp.amass_clip(heading0=0.25, turn=0.0)
    assert len(clip) == captured.shape[0] == 34
    poses = sp.body_poses(clip)
    np.testing.assert_allclose(Rotation.from_rotvec(poses[:, 3:66].reshape(-1, 3)).as_matrix(),
                               Rotation.from_rotvec(captured[:, 3:66].reshape(-1, 3)).as_matrix(), atol=1e-9)
    assert not poses[:, 66:].any()  # SMPL's hand joints 22/23 stay at rest
    np.testing.assert_allclose(clip.heading, 0.25)


def test_missing_clip_says_where_it_belongs(tmp_path):
    with pytest.raises(FileNotFoundError, match="server/data/assets"):
        sp.amass_clip(tmp_path / "nope.npz")


def test_subsample_and_select():
    walk = sp.walk_circle(10)
    assert len(walk.subsample(4)) == 4 and len(walk.subsample(20)) == 10
    np.testing.assert_array_equal(walk.select([3]).heading, walk.heading[[3]])
