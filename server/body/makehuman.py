"""Readers for the CC0 MakeHuman assets the demo body is built from (pure numpy, no MakeHuman code).

Facts about the files are in ``shared/data/makehuman/SOURCE.txt``: ``base.obj`` is in decimetres, Y up, facing +Z,
A-pose; ``default.mhskel`` gives joint positions as means of listed base-mesh vertices; ``default_weights.mhw``
holds per-bone vertex weights; ``targets_young_subset.npz`` holds shape targets as int16 offsets in 1e-3 dm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGET_UNIT_DM = 1e-3  # one int16 step of a target offset, in base.obj units (decimetres)


@dataclass
class BaseMesh:
    """The whole base mesh (all groups) plus the quads of one group with per-corner texture indices."""

    vertices: np.ndarray  # (N,3) float64, decimetres, every vertex of base.obj
    uvs: np.ndarray  # (T,2) float64, the obj's vt
    quads: np.ndarray  # (Q,4) int64 vertex indices into `vertices` (the selected group only)
    quad_uvs: np.ndarray  # (Q,4) int64 indices into `uvs`


@dataclass
class Skeleton:
    bone_names: list[str]  # ordered so that every parent comes before its children
    parents: np.ndarray  # (K,) int64, -1 for the root
    head_joint: list[str]  # name of the joint (vertex list) giving each bone's head
    tail_joint: list[str]
    joints: dict[str, np.ndarray]  # joint name -> base-mesh vertex indices; joint position = their mean

    def joint_position(self, vertices: np.ndarray, name: str) -> np.ndarray:
        return vertices[self.joints[name]].mean(axis=0)

    def heads(self, vertices: np.ndarray) -> np.ndarray:
        return np.stack([self.joint_position(vertices, j) for j in self.head_joint])

    def tails(self, vertices: np.ndarray) -> np.ndarray:
        return np.stack([self.joint_position(vertices, j) for j in self.tail_joint])

    def index(self, bone: str) -> int:
        return self.bone_names.index(bone)


def read_obj(path: Path, group: str = "body") -> BaseMesh:
    """Read base.obj: all vertices, all texture coordinates, and the faces of ``group`` (quads)."""
    vertices: list[list[float]] = []
    uvs: list[list[float]] = []
    quads: list[list[int]] = []
    quad_uvs: list[list[int]] = []
    current = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("v "):
                vertices.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("vt "):
                uvs.append([float(x) for x in line.split()[1:3]])
            elif line.startswith("g "):
                current = line.split(maxsplit=1)[1].strip()
            elif line.startswith("f ") and current == group:
                corners = [c.split("/") for c in line.split()[1:]]
                if len(corners) != 4:
                    raise ValueError(f"{path}: group {group!r} has a face with {len(corners)} corners, expected quads")
                quads.append([int(c[0]) - 1 for c in corners])
                quad_uvs.append([int(c[1]) - 1 for c in corners])
    if not quads:
        raise ValueError(f"{path}: no faces in group {group!r}")
    return BaseMesh(np.asarray(vertices), np.asarray(uvs), np.asarray(quads), np.asarray(quad_uvs))


def read_skeleton(path: Path) -> Skeleton:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    bones = data["bones"]
    order: list[str] = []
    placed: set[str] = set()

    def place(name: str) -> None:  # depth-first so parents precede children; sorted for determinism
        if name in placed:
            return
        parent = bones[name]["parent"]
        if parent is not None:
            place(parent)
        order.append(name)
        placed.add(name)

    for name in sorted(bones):
        place(name)
    index = {n: i for i, n in enumerate(order)}
    parents = np.array([-1 if bones[n]["parent"] is None else index[bones[n]["parent"]] for n in order], dtype=np.int64)
    joints = {k: np.asarray(v, dtype=np.int64) for k, v in data["joints"].items()}
    return Skeleton(order, parents, [bones[n]["head"] for n in order], [bones[n]["tail"] for n in order], joints)


def read_weights(path: Path, skeleton: Skeleton, num_vertices: int) -> np.ndarray:
    """Dense (N, K) bone weights over all base-mesh vertices, rows renormalised to sum 1 (the file's sum 0.95-1.06)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))["weights"]
    weights = np.zeros((num_vertices, len(skeleton.bone_names)))
    for bone, pairs in data.items():
        arr = np.asarray(pairs, dtype=np.float64)
        weights[arr[:, 0].astype(np.int64), skeleton.index(bone)] += arr[:, 1]
    sums = weights.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise ValueError(f"{path}: {int(np.sum(sums <= 0))} vertices have no skinning weight")
    return weights / sums


def read_targets(path: Path, num_vertices: int) -> dict[str, np.ndarray]:
    """Shape targets as dense (N,3) float64 offsets in decimetres, keyed by target path without 'targets/'."""
    out: dict[str, np.ndarray] = {}
    with np.load(path) as z:
        for key in sorted(z.files):
            if not key.endswith(".index"):
                continue
            name = key[: -len(".index")]
            delta = np.zeros((num_vertices, 3))
            index = z[key].astype(np.int64)
            if index.size:
                delta[index] = z[name + ".vector"].astype(np.float64) * TARGET_UNIT_DM
            out[name.removeprefix("targets/")] = delta
    return out
