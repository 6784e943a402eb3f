"""Synthetic rigs for the retarget tests: SMPL-layout skeletons built from the demo body's rest joints."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from neural_human_addon.core.rotations import axis_angle_to_matrix, rotation_between
from neural_human_addon.core.smpl_skeleton import PRIMARY_CHILD, SMPL_JOINT_NAMES

ROOT = Path(__file__).resolve().parents[3]
DEMO_BODY = ROOT / "server" / "body" / "assets" / "demo_body.npz"
# The CMU walk ships with the project (server/data/assets); the other openly licensed sample rigs (MakeHuman BVH and
# skeleton) are read from the shared data folder beside the repo when it is there.
CMU_WALK_BVH = ROOT / "server" / "data" / "assets" / "cmu_mb_walk_delfem2.bvh"
SHARED_DATA = Path(os.environ.get("NEURAL_HUMAN_SHARED_DATA", ROOT.parent / "shared" / "data"))
BVH_DIR = SHARED_DATA / "bvh"
needs_shared_data = pytest.mark.skipif(
    not (BVH_DIR / "makehuman_legacy_walk1.bvh").is_file(),
    reason=f"sample rigs not at {SHARED_DATA} (set NEURAL_HUMAN_SHARED_DATA; see shared/data/README.md)",
)
C_Y_TO_Z = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def smpl_rest_joints() -> np.ndarray:
    """Rest joints (24, 3), Y-up, T-pose: the demo body's J_regressor applied to its template."""
    d = np.load(DEMO_BODY)
    ptr, idx, val = d["J_regressor_indptr"], d["J_regressor_indices"], d["J_regressor_data"]
    v = d["v_template"].astype(np.float64)
    return np.stack([val[ptr[i] : ptr[i + 1]] @ v[idx[ptr[i] : ptr[i + 1]]] for i in range(24)])


def a_pose(joints_y_up: np.ndarray, degrees: float = 45.0) -> np.ndarray:
    """Lower both arm chains by `degrees` about the shoulder (forward axis +Z in SMPL's canonical frame)."""
    j = joints_y_up.copy()
    for side, sign in (("left", -1.0), ("right", 1.0)):
        pivot = j[SMPL_JOINT_NAMES.index(f"{side}_shoulder")]
        rot = axis_angle_to_matrix(np.array([0.0, 0.0, sign * np.radians(degrees)]))
        for part in ("elbow", "wrist", "hand"):
            k = SMPL_JOINT_NAMES.index(f"{side}_{part}")
            j[k] = pivot + rot @ (j[k] - pivot)
    return j


def rig_rest_world(
    heads_world: np.ndarray, rng: np.random.Generator, scale: float = 1.0, names: tuple[str, ...] = SMPL_JOINT_NAMES
) -> np.ndarray:
    """Blender-like rest matrices: bone Y axis along head->child head, random roll, uniform object scale."""
    rest = np.tile(np.eye(4), (len(heads_world), 1, 1))
    for i, n in enumerate(names):
        child = PRIMARY_CHILD.get(n)
        d = heads_world[names.index(child)] - heads_world[i] if child else np.array([0.0, 0.0, 1.0])
        roll = axis_angle_to_matrix(np.array([0.0, rng.uniform(-np.pi, np.pi), 0.0]))
        rest[i, :3, :3] = scale * rotation_between(np.array([0.0, 1.0, 0.0]), d) @ roll
        rest[i, :3, 3] = heads_world[i]
    return rest


def pose_rig(rest_world: np.ndarray, parents: list[int], deltas: np.ndarray, root_shift: np.ndarray) -> np.ndarray:
    """FK in world space: deltas (F, N, 3, 3) are each bone's rotation relative to its parent's motion."""
    f, n = deltas.shape[:2]
    g = np.zeros((f, n, 3, 3))
    posed = np.tile(np.eye(4), (f, n, 1, 1))
    for i in range(n):
        p = parents[i]
        if p < 0:
            g[:, i] = deltas[:, i]
            posed[:, i, :3, 3] = rest_world[i, :3, 3] + root_shift
        else:
            g[:, i] = g[:, p] @ deltas[:, i]
            offset = rest_world[i, :3, 3] - rest_world[p, :3, 3]
            posed[:, i, :3, 3] = posed[:, p, :3, 3] + (g[:, p] @ offset)
        posed[:, i, :3, :3] = g[:, i] @ rest_world[i, :3, :3]
    return posed


def random_deltas(rng: np.random.Generator, frames: int, n: int, max_angle: float = 0.8) -> np.ndarray:
    aa = rng.normal(size=(frames, n, 3))
    aa *= rng.uniform(0, max_angle, size=(frames, n, 1)) / np.linalg.norm(aa, axis=-1, keepdims=True)
    return axis_angle_to_matrix(aa)


def bvh_joint_names(path: Path) -> list[str]:
    """Joint names from a BVH HIERARCHY section (ROOT/JOINT lines; End Sites skipped)."""
    names = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "MOTION":
            break
        if len(parts) >= 2 and parts[0] in ("ROOT", "JOINT"):
            names.append(parts[1])
    return names


def read_bvh(path: Path, unit: float,  # noqa: PLR0915 (a reader's one pass over the file; a test helper)
             up: str = "Y") -> tuple[list[str], list[int], np.ndarray, np.ndarray, float]:
    """Tiny BVH reader -> (names, parents, rest_world (N,4,4), posed_world (F,N,4,4), fps) in a Z-up world.

    Joint frames are the BVH axes (rest rotation = the file's up -> Z-up change), positions scaled by `unit` to
    metres. `up` is the file's up axis (CMU: Y; MakeHuman's legacy export: Z).
    """
    tokens = path.read_text().split()
    names: list[str] = []
    parents: list[int] = []
    offsets: list[np.ndarray] = []
    channels: list[list[str]] = []
    stack: list[int] = []
    i = 0
    while tokens[i] != "MOTION":
        t = tokens[i]
        if t in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            stack.append(len(names) - 1)
            i += 2
        elif t == "End":  # End Site: skip its block
            i = tokens.index("}", i) + 1
        elif t == "OFFSET":
            offsets.append(np.array(tokens[i + 1 : i + 4], dtype=np.float64))
            i += 4
        elif t == "CHANNELS":
            n = int(tokens[i + 1])
            channels.append(tokens[i + 2 : i + 2 + n])
            i += 2 + n
        elif t == "}":
            stack.pop()
            i += 1
        else:
            i += 1
    n_frames = int(tokens[tokens.index("Frames:") + 1])
    fps = 1.0 / float(tokens[tokens.index("Time:") + 1])
    start = tokens.index("Time:") + 2
    width = sum(len(c) for c in channels)
    motion = np.array(tokens[start : start + n_frames * width], dtype=np.float64).reshape(n_frames, width)

    axes = {"X": 0, "Y": 1, "Z": 2}
    local = np.tile(np.eye(4), (n_frames, len(names), 1, 1))
    col = 0
    for j, chans in enumerate(channels):
        local[:, j, :3, 3] = offsets[j]
        rot = np.tile(np.eye(3), (n_frames, 1, 1))
        for c in chans:
            v = motion[:, col]
            col += 1
            if c.endswith("position"):
                local[:, j, axes[c[0]], 3] += v  # offset + channel, as most readers do
            else:
                aa = np.zeros((n_frames, 3))
                aa[:, axes[c[0]]] = np.radians(v)
                rot = rot @ axis_angle_to_matrix(aa)
        local[:, j, :3, :3] = rot
    world = np.zeros_like(local)
    rest = np.tile(np.eye(4), (len(names), 1, 1))
    for j, p in enumerate(parents):
        world[:, j] = local[:, j] if p < 0 else world[:, p] @ local[:, j]
        rest[j, :3, 3] = offsets[j] + (rest[p, :3, 3] if p >= 0 else 0.0)
    to_z = np.eye(4)
    to_z[:3, :3] = C_Y_TO_Z if up == "Y" else np.eye(3)
    units = np.diag([unit, unit, unit, 1.0])
    # world_z = to_z · units · world_bvh · units⁻¹ (scales positions, keeps rotations pure)
    conv = to_z @ units
    return names, parents, conv @ rest @ np.linalg.inv(units), conv @ world @ np.linalg.inv(units), fps


MAKEHUMAN_DIR = SHARED_DATA / "makehuman"


def makehuman_default_bones() -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
    """MakeHuman's default 163-bone skeleton (CC0, shared data) -> (names, parents, heads, tails) in metres, Z-up,
    facing -Y: joints are means of base-mesh vertices (decimetres, Y-up). Its root bone starts behind the pelvis
    and points forward at spine05."""
    import json

    skel = json.loads((MAKEHUMAN_DIR / "default.mhskel").read_text())
    verts = np.array(
        [[float(x) for x in line.split()[1:4]] for line in (MAKEHUMAN_DIR / "base.obj").read_text().splitlines()
         if line.startswith("v ")]
    )  # fmt: skip
    joint = {k: (verts[v].mean(axis=0) * 0.1) @ C_Y_TO_Z.T for k, v in skel["joints"].items()}
    names = list(skel["bones"])
    parents = [names.index(b["parent"]) if b["parent"] else -1 for b in skel["bones"].values()]
    heads = np.array([joint[b["head"]] for b in skel["bones"].values()])
    tails = np.array([joint[b["tail"]] for b in skel["bones"].values()])
    return names, parents, heads, tails


def makehuman_default_rig(rng: np.random.Generator) -> tuple[list[str], list[int], np.ndarray]:
    """makehuman_default_bones as (names, parents, rest_world (N,4,4)): each bone's Y axis runs head -> tail, with a
    random roll."""
    names, parents, heads, tails = makehuman_default_bones()
    rest = np.tile(np.eye(4), (len(names), 1, 1))
    for i in range(len(names)):
        roll = axis_angle_to_matrix(np.array([0.0, rng.uniform(-np.pi, np.pi), 0.0]))
        rest[i, :3, :3] = rotation_between(np.array([0.0, 1.0, 0.0]), tails[i] - heads[i]) @ roll
        rest[i, :3, 3] = heads[i]
    return names, parents, rest


needs_makehuman = pytest.mark.skipif(
    not (MAKEHUMAN_DIR / "default.mhskel").is_file(), reason=f"MakeHuman skeleton not at {MAKEHUMAN_DIR}"
)
