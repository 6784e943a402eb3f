"""Triangle-mesh geometry (pure numpy): the signed volume, and a self-intersection test where a uniform grid proposes
pairs and exact segment tests decide.

Two non-coplanar triangles intersect exactly when an edge of one crosses the other, so each candidate pair is
settled by six segment-triangle tests (Möller-Trumbore, strict interiors). Triangles sharing a vertex are
never counted: adjacent faces touch by construction.
"""

from __future__ import annotations

import numpy as np


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed mesh; positive when its faces are oriented with outward normals."""
    tri = np.asarray(vertices, np.float64)[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def _candidate_pairs(vertices: np.ndarray, faces: np.ndarray, cell: float) -> np.ndarray:
    tri = vertices[faces]
    lo = np.floor(tri.min(axis=1) / cell).astype(np.int64)
    hi = np.floor(tri.max(axis=1) / cell).astype(np.int64)
    span = hi - lo + 1
    entries_tri, entries_cell = [], []
    base = lo - lo.min(axis=0)
    dims = (hi - lo.min(axis=0)).max(axis=0) + 2
    for dx in range(int(span[:, 0].max())):
        for dy in range(int(span[:, 1].max())):
            for dz in range(int(span[:, 2].max())):
                ok = (dx < span[:, 0]) & (dy < span[:, 1]) & (dz < span[:, 2])
                c = base[ok] + np.array([dx, dy, dz])
                entries_tri.append(np.flatnonzero(ok))
                entries_cell.append((c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2])
    tris = np.concatenate(entries_tri)
    cells = np.concatenate(entries_cell)
    order = np.lexsort((tris, cells))
    tris, cells = tris[order], cells[order]
    pairs = []
    for d in range(1, len(tris)):
        same = cells[d:] == cells[:-d]
        if not same.any():
            break
        pairs.append(np.stack([tris[:-d][same], tris[d:][same]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    p = np.sort(np.concatenate(pairs), axis=1)
    p = np.unique(p, axis=0)
    # exclude pairs that share a vertex
    fa, fb = faces[p[:, 0]], faces[p[:, 1]]
    shared = (fa[:, :, None] == fb[:, None, :]).any(axis=(1, 2))
    p = p[~shared]
    # exact AABB overlap
    tmin, tmax = tri.min(axis=1), tri.max(axis=1)
    overlap = np.all((tmin[p[:, 0]] <= tmax[p[:, 1]]) & (tmin[p[:, 1]] <= tmax[p[:, 0]]), axis=1)
    return p[overlap]


def _segments_cross(p0: np.ndarray, p1: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Does segment p0-p1 cross the interior of triangle abc? All arrays (N,3)."""
    eps = 1e-12
    d = p1 - p0
    e1, e2 = b - a, c - a
    h = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, h)
    ok = np.abs(det) > eps
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = p0 - a
    u = np.einsum("ij,ij->i", s, h) * inv
    q = np.cross(s, e1)
    v = np.einsum("ij,ij->i", d, q) * inv
    t = np.einsum("ij,ij->i", e2, q) * inv
    tol = 1e-9
    return ok & (u > tol) & (v > tol) & (u + v < 1 - tol) & (t > tol) & (t < 1 - tol)


def self_intersections(vertices: np.ndarray, faces: np.ndarray, cell: float | None = None) -> np.ndarray:
    """Pairs (P,2) of faces that intersect each other, excluding faces that share a vertex."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if cell is None:
        edges = np.linalg.norm(vertices[faces[:, 0]] - vertices[faces[:, 1]], axis=1)
        cell = 2.0 * float(np.median(edges))
    pairs = _candidate_pairs(vertices, faces, cell)
    if len(pairs) == 0:
        return pairs
    ta, tb = vertices[faces[pairs[:, 0]]], vertices[faces[pairs[:, 1]]]
    hit = np.zeros(len(pairs), dtype=bool)
    for first, second in ((ta, tb), (tb, ta)):
        for i in range(3):
            p0, p1 = first[:, i], first[:, (i + 1) % 3]
            hit |= _segments_cross(p0, p1, second[:, 0], second[:, 1], second[:, 2])
    return pairs[hit]
