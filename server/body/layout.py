"""SMPL's skeleton layout (24 joint names, kinematic tree) and where the bundled demo body lives (no torch import)."""

from __future__ import annotations

from pathlib import Path

SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
SMPL_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# left joint index -> right joint index (mirror pairs across x = 0)
SMPL_MIRROR_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (i, SMPL_JOINT_NAMES.index("right_" + n[len("left_"):])) for i, n in enumerate(SMPL_JOINT_NAMES)
    if n.startswith("left_")
)

DEMO_BODY_PATH = Path(__file__).resolve().parent / "assets" / "demo_body.npz"
