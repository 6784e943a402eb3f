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

# A generic adult's rest joints (24 × (x, y, z), metres, Y-up, T-pose, pelvis at the origin's height offset as in the
# body model): the project's CC0 demo body (server/body/assets, derived from MakeHuman's CC0 assets) regressed to
# SMPL's joints. Used where SMPL motion drives a rig that has no actor (and so no body of its own).
GENERIC_REST_JOINTS: tuple[tuple[float, float, float], ...] = (
    (0.0, -0.23, 0.03), (0.11, -0.254, 0.028), (-0.11, -0.254, 0.028), (0.0, -0.116, 0.03), (0.101, -0.674, 0.055),
    (-0.101, -0.674, 0.055), (0.0, -0.023, 0.042), (0.101, -1.056, 0.055), (-0.101, -1.056, 0.055),
    (0.0, 0.13, 0.009), (0.109, -1.112, 0.187), (-0.109, -1.112, 0.187), (0.0, 0.286, 0.022), (0.027, 0.216, 0.085),
    (-0.027, 0.216, 0.085), (0.0, 0.395, 0.032), (0.168, 0.222, 0.03), (-0.168, 0.222, 0.03), (0.395, 0.222, 0.03),
    (-0.395, 0.222, 0.03), (0.622, 0.222, 0.03), (-0.622, 0.222, 0.03), (0.713, 0.222, 0.03), (-0.713, 0.222, 0.03),
)  # fmt: skip
