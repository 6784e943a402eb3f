"""Motion for the synthetic dataset: a real captured clip plus procedural motions, placed in a Z-up world.

Body poses are SMPL local rotations in the body model's canonical frame (Y-up, +Z forward, +X the body's left,
T-pose rest). A :class:`Motion` holds, per frame, the 23 joint rotations, the body's root orientation in that
canonical frame, a heading (radians about the world Z axis; 0 = facing −Y, towards Blender's front view) and the
ground position of the pelvis. :func:`to_world_params` turns it into EasyMocap/ZJU parameters in the Z-up world:
``Rh = Rz(heading) · Rx(+90°) · R_root``, ``poses[:3] = 0``, and ``Th`` puts the pelvis at the ground position and
the lowest vertex on the floor z = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation

NUM_JOINTS = 24
# SMPL joint indices (server.body.layout.SMPL_JOINT_NAMES)
L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = 1, 2, 3, 4, 5, 6, 7, 8, 9
NECK, HEAD, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 12, 15, 16, 17, 18, 19, 20, 21

# MIT-licensed AMASS-style SMPL-X clip (see the .SOURCE.txt beside it)
AMASS_CLIP = Path(__file__).resolve().parent / "assets" / "meshcapade_apose_to_handsFront_smplx.npz"
Y_UP_TO_Z_UP = Rotation.from_euler("x", 90, degrees=True)


@dataclass
class Motion:
    """N frames of motion (see the module docstring for the frames of reference)."""

    joint_rotations: np.ndarray  # (N,24,3,3) local rotations; index 0 (the root) is ignored, see root
    root: np.ndarray  # (N,3,3) root orientation in the canonical Y-up frame
    heading: np.ndarray  # (N,) radians about world Z
    ground_xy: np.ndarray  # (N,2) pelvis position on the floor, metres
    name: str = "motion"

    def __len__(self) -> int:
        return len(self.heading)

    def select(self, indices: list[int]) -> Motion:
        """The frames at ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        return Motion(self.joint_rotations[idx], self.root[idx], self.heading[idx], self.ground_xy[idx], self.name)

    def subsample(self, count: int) -> Motion:
        """``count`` frames spread evenly over the motion (all of them when count ≥ N)."""
        if count >= len(self):
            return self
        return self.select(np.round(np.linspace(0, len(self) - 1, count)).astype(np.int64).tolist())


def concatenate(motions: list[Motion], name: str = "sequence") -> Motion:
    return Motion(np.concatenate([m.joint_rotations for m in motions]), np.concatenate([m.root for m in motions]),
                  np.concatenate([m.heading for m in motions]), np.concatenate([m.ground_xy for m in motions]), name)


def _rot(axis: str, degrees: np.ndarray | float) -> np.ndarray:
    """(N,3,3) (or (3,3)) rotation matrices about one canonical axis."""
    angles = np.asarray(degrees, dtype=np.float64)
    return Rotation.from_euler(axis, angles.reshape(-1, 1), degrees=True).as_matrix().reshape(angles.shape + (3, 3))


def _identity(n: int) -> np.ndarray:
    return np.broadcast_to(np.eye(3), (n, NUM_JOINTS, 3, 3)).copy()


def _arms_down(rot: np.ndarray, down: np.ndarray | float, forward_l: np.ndarray | float = 0.0,
               forward_r: np.ndarray | float = 0.0, elbow: np.ndarray | float = 15.0) -> None:
    """Lower the T-pose arms by ``down`` degrees, then swing them forward (positive) / backward, bend elbows."""
    n = rot.shape[0]
    down, forward_l, forward_r, elbow = (np.broadcast_to(np.asarray(a, dtype=np.float64), (n,))
                                         for a in (down, forward_l, forward_r, elbow))
    rot[:, L_SHOULDER] = _rot("x", -forward_l) @ _rot("z", -down)
    rot[:, R_SHOULDER] = _rot("x", -forward_r) @ _rot("z", down)
    rot[:, L_ELBOW] = _rot("y", -elbow)  # forearm towards +Z (front)
    rot[:, R_ELBOW] = _rot("y", elbow)


def walk_circle(n: int, radius: float = 0.5, steps_per_circle: int = 8, turns: float = 1.0) -> Motion:
    """Walking along a circle of ``radius`` around the origin: the body turns ``turns`` full turns in world."""
    t = np.arange(n) / max(n, 1)
    theta = 2 * np.pi * turns * t  # position angle on the circle
    phase = 2 * np.pi * steps_per_circle / 2 * turns * t  # one gait cycle = two steps
    s = np.sin(phase)
    rot = _identity(n)
    rot[:, L_HIP], rot[:, R_HIP] = _rot("x", -28 * s), _rot("x", 28 * s)  # negative x rotation: thigh forward
    rot[:, L_KNEE] = _rot("x", 8 + 45 * np.clip(np.cos(phase + 0.6), 0, None) ** 2)
    rot[:, R_KNEE] = _rot("x", 8 + 45 * np.clip(np.cos(phase + 0.6 + np.pi), 0, None) ** 2)
    rot[:, L_ANKLE], rot[:, R_ANKLE] = _rot("x", 10 * s), _rot("x", -10 * s)
    rot[:, SPINE1] = _rot("y", 6 * s)
    _arms_down(rot, 72, forward_l=-25 * s, forward_r=25 * s, elbow=20 + 10 * np.abs(s))
    heading = theta + np.pi  # facing along the direction of travel (counter-clockwise)
    xy = radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return Motion(rot, np.broadcast_to(np.eye(3), (n, 3, 3)).copy(), heading, xy, "walk")


def arm_raises(n: int, heading0: float = 0.0, turn: float = np.pi) -> Motion:
    """Standing and turning by ``turn`` radians while raising the arms sideways, then to the front."""
    t = np.arange(n) / max(n - 1, 1)
    lift = 0.5 - 0.5 * np.cos(4 * np.pi * t)  # two raises
    rot = _identity(n)
    side = t < 0.5
    down = np.where(side, 75 - 150 * lift, 75)  # sideways: from arms down to above the shoulders
    forward = np.where(side, 0.0, 100 * lift)
    _arms_down(rot, down, forward_l=forward, forward_r=forward, elbow=10)
    rot[:, L_HIP], rot[:, R_HIP] = _rot("z", -4), _rot("z", 4)  # feet slightly apart
    rot[:, NECK] = _rot("y", 25 * np.sin(2 * np.pi * t))
    return Motion(rot, np.broadcast_to(np.eye(3), (n, 3, 3)).copy(), heading0 + turn * t, np.zeros((n, 2)),
                  "arm_raises")


def squat_and_reach(n: int, heading0: float = 0.6) -> Motion:
    """Held-out motion: squats with the arms reaching forward and a side bend (not in the training motions)."""
    t = np.arange(n) / max(n - 1, 1)
    depth = 0.5 - 0.5 * np.cos(2 * np.pi * t)
    rot = _identity(n)
    rot[:, L_HIP] = _rot("x", -85 * depth) @ _rot("z", -10)
    rot[:, R_HIP] = _rot("x", -85 * depth) @ _rot("z", 10)
    rot[:, L_KNEE] = rot[:, R_KNEE] = _rot("x", 110 * depth)
    rot[:, L_ANKLE] = rot[:, R_ANKLE] = _rot("x", -30 * depth)
    rot[:, SPINE2] = _rot("z", 15 * np.sin(2 * np.pi * t))
    _arms_down(rot, 75, forward_l=95 * depth, forward_r=70 * depth, elbow=5)  # reaching forward
    return Motion(rot, np.broadcast_to(np.eye(3), (n, 3, 3)).copy(), heading0 - 0.8 * t, np.zeros((n, 2)),
                  "squat_and_reach")


def kick_and_wave(n: int, heading0: float = -2.2) -> Motion:
    """Held-out motion: a front kick with the right leg while waving the left arm above the head."""
    t = np.arange(n) / max(n - 1, 1)
    kick = np.sin(np.pi * t) ** 2
    wave = np.sin(6 * np.pi * t)
    rot = _identity(n)
    rot[:, R_HIP] = _rot("x", -70 * kick)
    rot[:, R_KNEE] = _rot("x", 60 * (1 - kick) * np.sin(np.pi * t))
    rot[:, L_KNEE] = _rot("x", 12 * kick)
    rot[:, L_SHOULDER] = _rot("x", -10) @ _rot("z", 70 + 20 * wave)  # left arm up, waving
    rot[:, L_ELBOW] = _rot("y", -30 - 30 * wave)
    rot[:, R_SHOULDER] = _rot("z", 55)
    rot[:, R_ELBOW] = _rot("y", 70)
    rot[:, SPINE3] = _rot("x", -10 * kick)
    return Motion(rot, np.broadcast_to(np.eye(3), (n, 3, 3)).copy(), heading0 + 0.5 * t, np.zeros((n, 2)),
                  "kick_and_wave")


def amass_clip(path: str | Path = AMASS_CLIP, heading0: float = 0.0, turn: float = np.pi / 2) -> Motion:
    """The captured SMPL-X clip (AMASS-style npz, Y-up): its 21 body joints (SMPL joints 22/23 stay at rest) and
    root orientation, turned by ``turn`` radians over the clip. Its own translation is replaced by the origin."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion clip not found: {path}; the project ships it in server/data/assets/ "
                                "(restore it from git)")
    with np.load(path) as data:
        poses = np.asarray(data["poses"], dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] < 66:
        raise ValueError(f"{path}: 'poses' must be (N, >=66) axis-angle values (AMASS layout), got {poses.shape}")
    n = poses.shape[0]
    rot = _identity(n)
    rot[:, 1:22] = Rotation.from_rotvec(poses[:, 3:66].reshape(-1, 3)).as_matrix().reshape(n, 21, 3, 3)
    root = Rotation.from_rotvec(poses[:, :3]).as_matrix()
    t = np.arange(n) / max(n - 1, 1)
    return Motion(rot, root, heading0 + turn * t, np.zeros((n, 2)), "amass_apose_to_hands_front")


def body_poses(motion: Motion) -> np.ndarray:
    """(N,72) SMPL axis-angle poses with the first 3 (root) zero: the root goes into Rh."""
    n = len(motion)
    rotvec = Rotation.from_matrix(motion.joint_rotations.reshape(-1, 3, 3)).as_rotvec().reshape(n, NUM_JOINTS, 3)
    rotvec[:, 0] = 0.0
    return rotvec.reshape(n, NUM_JOINTS * 3)


def world_rotations(motion: Motion) -> np.ndarray:
    """(N,3) Rh axis-angle: heading about world Z ∘ Y-up→Z-up ∘ root orientation."""
    heading = Rotation.from_euler("z", np.asarray(motion.heading, dtype=np.float64).reshape(-1, 1))
    return (heading * Y_UP_TO_Z_UP * Rotation.from_matrix(motion.root)).as_rotvec()


def to_world_params(model: Any, motion: Motion, shapes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """EasyMocap parameters + posed world vertices of every frame of ``motion``.

    Returns {'poses' (N,72), 'shapes' (N,10), 'Rh' (N,3), 'Th' (N,3), 'vertices' (N,V,3), 'joints' (N,24,3)},
    float32, with each frame's lowest vertex at z = 0 and its pelvis above ``ground_xy``.
    """
    n = len(motion)
    poses = body_poses(motion).astype(np.float32)
    rh = world_rotations(motion).astype(np.float32)
    betas = np.zeros((n, 10), dtype=np.float32) if shapes is None else np.broadcast_to(
        np.asarray(shapes, dtype=np.float32).reshape(-1, 10), (n, 10)).copy()
    with torch.no_grad():
        out = model(torch.from_numpy(poses), torch.from_numpy(betas), torch.from_numpy(rh), torch.zeros(n, 3))
    verts, joints = out.vertices.cpu().numpy(), out.joints.cpu().numpy()
    th = np.zeros((n, 3), dtype=np.float32)
    th[:, :2] = motion.ground_xy - joints[:, 0, :2]
    th[:, 2] = -verts[:, :, 2].min(axis=1)
    return {"poses": poses, "shapes": betas, "Rh": rh, "Th": th,
            "vertices": (verts + th[:, None]).astype(np.float32), "joints": (joints + th[:, None]).astype(np.float32)}
