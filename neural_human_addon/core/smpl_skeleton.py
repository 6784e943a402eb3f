"""SMPL's 24-joint skeleton (names, parents): the one definition, shared by the add-on and the server (numpy-free)."""

from __future__ import annotations

SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
SMPL_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# Joints a rig must map for a usable retarget; the rest (collars, feet, hands, spine2/3) are optional.
REQUIRED_JOINTS: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "spine1", "neck",
    "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)  # fmt: skip

# The child whose head defines a joint's bone direction (pelvis and spine3 have several children: pick the spine's).
PRIMARY_CHILD: dict[str, str] = {
    "pelvis": "spine1", "left_hip": "left_knee", "right_hip": "right_knee", "spine1": "spine2",
    "left_knee": "left_ankle", "right_knee": "right_ankle", "spine2": "spine3", "left_ankle": "left_foot",
    "right_ankle": "right_foot", "spine3": "neck", "neck": "head", "left_collar": "left_shoulder",
    "right_collar": "right_shoulder", "left_shoulder": "left_elbow", "right_shoulder": "right_elbow",
    "left_elbow": "left_wrist", "right_elbow": "right_wrist", "left_wrist": "left_hand", "right_wrist": "right_hand",
}  # fmt: skip
# When the primary child is not mapped, a direction may still come from a farther descendant (e.g. spine1 -> neck).
FALLBACK_CHILDREN: dict[str, tuple[str, ...]] = {
    "pelvis": ("spine2", "spine3", "neck"), "spine1": ("spine3", "neck"), "spine2": ("neck",),
    "left_collar": ("left_elbow",), "right_collar": ("right_elbow",),
}  # fmt: skip
