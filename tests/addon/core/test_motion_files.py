"""Motion-file readers (AMASS npz, Meshcapade .smpl, EasyMocap params) and frame-rate conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neural_human_addon.core.motion_files import MotionFileError, read_motion, resample
from neural_human_addon.core.retarget import smpl_forward_joints
from neural_human_addon.core.smpl_skeleton import GENERIC_REST_JOINTS
from tests.addon.core.rig_fixtures import SHARED_DATA

MESHCAPADE_NPZ = SHARED_DATA / "smpl_motion" / "meshcapade_apose_to_handsFront_smplx.npz"
REST = np.asarray(GENERIC_REST_JOINTS)


def _ramp(n: int, width: int = 165) -> np.ndarray:
    """Poses whose left elbow (joint 18) turns about Y at 1 rad per 100 frames; everything else still."""
    poses = np.zeros((n, width))
    poses[:, 18 * 3 + 1] = np.arange(n) / 100.0
    return poses


@pytest.mark.skipif(not MESHCAPADE_NPZ.is_file(), reason="shared data folder not present")
def test_real_smplx_npz_reads_body_joints_with_an_assumed_rate() -> None:
    m = read_motion(MESHCAPADE_NPZ)
    raw = np.load(MESHCAPADE_NPZ)
    assert m.poses.shape == (34, 72) and m.fps == 60.0 and m.fps_assumed and m.up_axis == "z"
    np.testing.assert_array_equal(m.poses[:, :66], raw["poses"][:, :66])
    assert not m.poses[:, 66:].any() and m.betas.shape == (10,)


@pytest.mark.parametrize("key", ["mocap_framerate", "mocap_frame_rate"])
def test_amass_frame_rate_converts(tmp_path: Path, key: str) -> None:
    path = tmp_path / "walk.npz"
    np.savez(path, poses=_ramp(121), trans=np.linspace([0, 0, 0], [1.2, 0, 0], 121), **{key: np.array(120.0)})
    m = read_motion(path)
    assert m.fps == 120.0 and not m.fps_assumed
    r = resample(m, 30.0)
    assert len(r.poses) == 31 and r.fps == 30.0  # one second, both ends included
    np.testing.assert_allclose(r.poses[:, 18 * 3 + 1], np.arange(31) * 4 / 100.0, atol=1e-9)
    np.testing.assert_allclose(r.trans[:, 0], np.linspace(0, 1.2, 31), atol=1e-12)
    up = resample(m, 24.0 * 10)  # upsampling interpolates between frames (slerp)
    np.testing.assert_allclose(up.poses[1, 18 * 3 + 1], 0.5 / 100.0, atol=1e-9)


def test_meshcapade_smpl_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.smpl"
    body = _ramp(10, 66).reshape(10, 22, 3)
    with path.open("wb") as f:
        np.savez(f, bodyPose=body, bodyTranslation=np.ones((10, 3)), shapeParameters=np.zeros(10),
                 frameRate=np.array(24.0), codecVersion=np.array(1))  # fmt: skip
    m = read_motion(path)
    assert m.poses.shape == (10, 72) and m.fps == 24.0 and m.up_axis == "y" and m.convention == "pelvis"
    assert len(resample(m, 48.0).poses) == 19


def test_pelvis_convention_converts_to_easymocap(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    poses = _ramp(5, 72)
    poses[:, :3] = [0.3, -0.2, 1.0]
    trans = np.array([[0.5, 0.1, 0.9]] * 5)
    np.savez(path, poses=poses, trans=trans, mocap_framerate=np.array(30.0))
    m = read_motion(path)
    p, rh, th = m.easymocap(REST)
    pelvis = smpl_forward_joints(p, rh, th, REST)[:, 0]
    np.testing.assert_allclose(pelvis, REST[0] + trans, atol=1e-12)  # the pelvis rotates in place, then moves


def test_easymocap_params_folder(tmp_path: Path) -> None:
    for i in range(3):
        frame = [{"id": 0, "poses": [_ramp(3, 72)[i].tolist()], "Rh": [[0, 0.1 * i, 0]], "Th": [[0, 0, i]],
                  "shapes": [[0.0] * 10]}]  # fmt: skip
        (tmp_path / f"{i:06d}.json").write_text(json.dumps(frame))
    m = read_motion(tmp_path, default_fps=50.0)
    assert m.poses.shape == (3, 72) and m.convention == "origin" and m.fps == 50.0
    np.testing.assert_allclose(m.poses[:, 1], [0, 0.1, 0.2])
    p, rh, th = m.easymocap(REST)
    np.testing.assert_allclose(th[:, 2], [0, 1, 2]) and np.testing.assert_allclose(rh[:, 1], [0, 0.1, 0.2])


def test_pickles_and_strangers_are_refused(tmp_path: Path) -> None:
    pick = tmp_path / "p.npz"
    np.savez(pick, poses=np.array([{"a": 1}], dtype=object))
    with pytest.raises(MotionFileError, match="without pickles"):
        read_motion(pick)
    folder = tmp_path / "params"
    folder.mkdir()
    np.save(folder / "0.npy", np.array([{"poses": 1}], dtype=object))
    with pytest.raises(MotionFileError, match="pickled"):
        read_motion(folder)
    with pytest.raises(MotionFileError, match="unknown motion file"):
        read_motion(tmp_path / "p.npz.txt") if (tmp_path / "p.npz.txt").write_text("x") else None
