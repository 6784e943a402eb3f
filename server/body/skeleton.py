"""SMPL skeleton layout for the server: names and tree (from the add-on), mirror pairs, the demo body path."""

from __future__ import annotations

from pathlib import Path

# The add-on's pure skeleton module owns the names and tree (DESIGN §3: one module owns each convention).
from neural_human_addon.core.smpl_skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS

__all__ = ["DEMO_BODY_PATH", "SMPL_JOINT_NAMES", "SMPL_MIRROR_PAIRS", "SMPL_PARENTS", "SMPL_VERTEX_COUNT"]

# left joint index -> right joint index (mirror pairs across x = 0)
SMPL_MIRROR_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (i, SMPL_JOINT_NAMES.index("right_" + n[len("left_"):])) for i, n in enumerate(SMPL_JOINT_NAMES)
    if n.startswith("left_")
)

SMPL_VERTEX_COUNT = 6890  # vertices of the SMPL mesh (the demo body has its own count)

DEMO_BODY_PATH = Path(__file__).resolve().parent / "assets" / "demo_body.npz"
