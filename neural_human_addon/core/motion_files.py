"""SMPL-family motion files -> one SMPL motion (numpy only, no pickles), resampled to a frame rate.

Readers:
- AMASS ``.npz``: ``poses`` (N, 72 SMPL | 156 SMPL+H | 165 SMPL-X), ``trans`` (N, 3), ``mocap_framerate`` or
  ``mocap_frame_rate``, ``betas``; Z-up; global orient about the pelvis (v = R(v0 − J0) + J0 + trans).
- Meshcapade ``.smpl`` (an npz): ``bodyPose`` (N, 22, 3) SMPL-X body joints incl. the global orient,
  ``bodyTranslation`` (N, 3), ``shapeParameters``, ``frameRate``; Y-up; global orient about the pelvis.
- EasyMocap / ZJU-MoCap ``params/`` folder of per-frame ``.json`` files (``[{"poses", "Rh", "Th", "shapes"}]`` or a
  bare dict); Y-up; Rh about the SMPL origin (v = R(Rh)·v0 + Th). Pickled ``.npy`` dicts are refused.

SMPL's 24 joints: the 22 body joints of SMPL-H/SMPL-X plus the two hand joints (23, 24) at rest.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import UserError
from .rotations import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_quaternion, quaternion_to_matrix


class MotionFileError(UserError, ValueError):
    """A motion file that cannot be read; the message names the file, what is wrong and what is accepted."""


@dataclass
class SmplMotion:
    poses: np.ndarray  # (N, 72) axis-angle; [:3] = global orient (convention below)
    trans: np.ndarray  # (N, 3) metres
    fps: float
    up_axis: str  # "z" (AMASS) or "y"
    convention: str  # "pelvis": orient about the pelvis + trans (AMASS, SMPL-X); "origin": Rh about origin + Th
    betas: np.ndarray | None = None
    source: str = ""
    fps_assumed: bool = False  # the file has no frame rate: `fps` is the reader's default

    def easymocap(self, rest_joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(poses with a zero root, Rh, Th) in the EasyMocap convention for a body with these rest joints (24, 3):
        from the pelvis convention Th = trans + J0 − R·J0."""
        rh = self.poses[:, :3].copy()
        poses = self.poses.copy()
        poses[:, :3] = 0.0
        if self.convention == "origin":
            return poses, rh, self.trans.copy()
        j0 = np.asarray(rest_joints, dtype=np.float64)[0]
        th = self.trans + j0 - (axis_angle_to_matrix(rh) @ j0[:, None])[..., 0]
        return poses, rh, th


def _body24(poses: np.ndarray, where: str) -> np.ndarray:
    """(N, 72) SMPL poses from SMPL (72), SMPL+H (156) or SMPL-X (165) axis-angle vectors, or (N, 22|24, 3)."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim == 3:
        poses = poses.reshape(len(poses), -1)
    if poses.ndim != 2 or poses.shape[1] not in (66, 72, 156, 165):
        raise MotionFileError(f"{where}: poses of shape {poses.shape}; expected (N, 72) SMPL, (N, 156) SMPL+H, "
                              "(N, 165) SMPL-X or (N, 22, 3) body joints")  # fmt: skip
    if poses.shape[1] == 72:
        return poses.copy()
    return np.concatenate([poses[:, :66], np.zeros((len(poses), 6))], axis=1)


def _npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise MotionFileError(f"cannot read {path.name} as an npz archive without pickles: {e}") from None


def _check(m: SmplMotion, where: str) -> SmplMotion:
    if len(m.poses) == 0 or m.trans.shape != (len(m.poses), 3):
        raise MotionFileError(f"{where}: {len(m.poses)} poses but translations of shape {m.trans.shape}")
    if not (np.isfinite(m.poses).all() and np.isfinite(m.trans).all() and np.isfinite(m.fps) and m.fps > 0):
        raise MotionFileError(f"{where}: holds NaN or infinite numbers, or a frame rate of {m.fps}")
    return m


def read_amass(path: str | Path, default_fps: float = 60.0) -> SmplMotion:
    """AMASS-style npz (SMPL / SMPL+H / SMPL-X poses, trans, mocap_framerate or mocap_frame_rate)."""
    path = Path(path)
    d = _npz(path)
    if "poses" not in d:
        raise MotionFileError(f"{path.name}: no 'poses' array; an AMASS npz holds poses, trans, mocap_framerate")
    poses = _body24(d["poses"], path.name)
    trans = np.asarray(d.get("trans", d.get("transl", np.zeros((len(poses), 3)))), dtype=np.float64)
    fps_key = next((k for k in ("mocap_framerate", "mocap_frame_rate", "fps", "frame_rate") if k in d), None)
    fps = float(d[fps_key]) if fps_key else float(default_fps)
    betas = np.asarray(d["betas"], dtype=np.float64).reshape(-1) if "betas" in d else None
    return _check(SmplMotion(poses, trans.reshape(-1, 3), fps, "z", "pelvis", betas, path.name, fps_key is None),
                  path.name)  # fmt: skip


def read_smpl_codec(path: str | Path, default_fps: float = 30.0) -> SmplMotion:
    """Meshcapade .smpl (npz: bodyPose (N,22,3), bodyTranslation (N,3), shapeParameters, frameRate)."""
    path = Path(path)
    d = _npz(path)
    if "bodyPose" not in d:
        raise MotionFileError(f"{path.name}: no 'bodyPose'; a .smpl file holds bodyPose (N, 22, 3), bodyTranslation")
    poses = _body24(d["bodyPose"], path.name)
    trans = np.asarray(d.get("bodyTranslation", np.zeros((len(poses), 3))), dtype=np.float64).reshape(-1, 3)
    has_fps = "frameRate" in d
    fps = float(d["frameRate"]) if has_fps else float(default_fps)
    betas = np.asarray(d["shapeParameters"], dtype=np.float64).reshape(-1) if "shapeParameters" in d else None
    return _check(SmplMotion(poses, trans, fps, "y", "pelvis", betas, path.name, not has_fps), path.name)


def _easymocap_frame(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MotionFileError(f"cannot read {path}: {e}") from None
    if isinstance(data, dict) and "annots" in data:
        data = data["annots"]
    person = data[0] if isinstance(data, list) and data else data
    if not isinstance(person, dict) or not {"poses", "Rh", "Th"} <= set(person):
        raise MotionFileError(f"{path.name}: expected EasyMocap SMPL parameters [{{'poses', 'Rh', 'Th', 'shapes'}}]")
    return person


def read_easymocap(folder: str | Path, fps: float = 30.0) -> SmplMotion:
    """An EasyMocap/ZJU-MoCap params folder: one .json per frame, in file-name order (no frame rate stored)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.json"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        pickles = sorted(folder.glob("*.npy"))
        why = " (its .npy files are pickled dicts, which the add-on does not load)" if pickles else ""
        raise MotionFileError(f"{folder}: no per-frame .json SMPL parameters{why}; export EasyMocap's json output")
    frames = [_easymocap_frame(f) for f in files]
    poses = _body24(np.stack([np.asarray(f["poses"], dtype=np.float64).reshape(-1) for f in frames]), folder.name)
    poses[:, :3] = np.stack([np.asarray(f["Rh"], dtype=np.float64).reshape(3) for f in frames])
    trans = np.stack([np.asarray(f["Th"], dtype=np.float64).reshape(3) for f in frames])
    shapes = frames[0].get("shapes")
    betas = None if shapes is None else np.asarray(shapes, dtype=np.float64).reshape(-1)
    return _check(SmplMotion(poses, trans, float(fps), "y", "origin", betas, folder.name, True), folder.name)


def read_motion(path: str | Path, default_fps: float | None = None) -> SmplMotion:
    """Pick the reader from the path: a folder (EasyMocap), '.smpl' (Meshcapade), '.npz' (AMASS or .smpl keys)."""
    path = Path(path)
    kw = {} if default_fps is None else {"default_fps": default_fps}
    if path.is_dir():
        return read_easymocap(path, **({} if default_fps is None else {"fps": default_fps}))
    if not path.is_file():
        raise MotionFileError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".smpl":
        return read_smpl_codec(path, **kw)
    if path.suffix.lower() == ".npz":
        keys = set(_npz(path))
        return read_smpl_codec(path, **kw) if "bodyPose" in keys else read_amass(path, **kw)
    raise MotionFileError(f"{path.name}: unknown motion file; pick an AMASS .npz, a Meshcapade .smpl or an "
                          "EasyMocap params folder")  # fmt: skip


def resample(motion: SmplMotion, fps: float) -> SmplMotion:
    """The motion at `fps` over the same duration: rotations slerped per joint, translations linear."""
    fps = float(fps)
    if fps <= 0:
        raise MotionFileError(f"cannot resample to {fps} frames per second")
    n = len(motion.poses)
    if n == 1 or abs(fps - motion.fps) < 1e-9:
        return replace(motion, fps=fps)
    duration = (n - 1) / motion.fps
    t = np.arange(int(np.floor(duration * fps + 1e-9)) + 1) / fps * motion.fps  # in source frames
    i0 = np.minimum(np.floor(t).astype(int), n - 2)
    w = (t - i0)[:, None]
    trans = (1 - w) * motion.trans[i0] + w * motion.trans[i0 + 1]
    q = matrix_to_quaternion(axis_angle_to_matrix(motion.poses.reshape(n, 24, 3)))
    qa, qb = q[i0], q[i0 + 1]
    dot = np.sum(qa * qb, axis=-1, keepdims=True)
    qb = np.where(dot < 0, -qb, qb)
    dot = np.abs(dot).clip(-1.0, 1.0)
    theta = np.arccos(dot)
    sin = np.sin(theta)
    ww = w[:, None]
    small = sin < 1e-6
    a = np.where(small, 1 - ww, np.sin((1 - ww) * theta) / np.where(small, 1.0, sin))
    b = np.where(small, ww, np.sin(ww * theta) / np.where(small, 1.0, sin))
    qi = a * qa + b * qb
    qi /= np.linalg.norm(qi, axis=-1, keepdims=True)
    poses = matrix_to_axis_angle(quaternion_to_matrix(qi)).reshape(len(t), 72)
    return replace(motion, poses=poses, trans=trans, fps=fps)


def change_up(rh: np.ndarray, th: np.ndarray, from_up: str, to_up: str) -> tuple[np.ndarray, np.ndarray]:
    """EasyMocap Rh, Th (rotation about the origin) re-expressed in a frame with another up axis ('y' or 'z'):
    a Z-up frame is the Y-up frame turned +90° about X (world_z = C·actor_y)."""
    f, t = from_up.lower(), to_up.lower()
    if {f, t} - {"y", "z"}:
        raise MotionFileError(f"up axes must be 'y' or 'z', got {from_up!r} and {to_up!r}")
    if f == t:
        return np.array(rh, dtype=np.float64), np.array(th, dtype=np.float64)
    c = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # y-up -> z-up
    m = c.T if f == "z" else c
    rot = m @ axis_angle_to_matrix(np.asarray(rh, dtype=np.float64))
    return matrix_to_axis_angle(rot), np.asarray(th, dtype=np.float64) @ m.T
