"""Procedural clothing texture of the demo body for the synthetic dataset (numpy only, deterministic).

Every texel of a square UV texture is traced back to the rest-pose (T-pose, Y-up, metres) surface point it
covers; its colour then follows from the clothing region of that point and a high-frequency pattern in rest-pose
coordinates: a striped shirt with a chest print, checked trousers with a belt, shoes with white soles, skin with
eyes and a mouth, hair with strands. The patterns are fine enough (1–5 cm) that a renderer has to learn them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SKIN, SHIRT, TROUSERS, SHOES, HAIR = range(5)
REGION_NAMES = ("skin", "shirt", "trousers", "shoes", "hair")

# SMPL joints (server.body.layout.SMPL_JOINT_NAMES order) whose vertices may be shirt / head
_TORSO_PARTS = (0, 3, 6, 9, 13, 14, 16, 17)
_HEAD = 15


@dataclass(frozen=True)
class BodyLandmarks:
    """Rest-pose heights and widths (metres, canonical Y-up frame, +Z forward, +X the body's left)."""

    sole_y: float  # lowest rest vertex
    pelvis_y: float
    chest_y: float  # spine3 joint
    head: np.ndarray  # (3,) head joint
    sleeve_x: float  # |x| where the short sleeves end


def landmarks(rest_vertices: np.ndarray, rest_joints: np.ndarray) -> BodyLandmarks:
    """Landmarks from rest vertices (V,3) and the 24 rest joints (24,3)."""
    shoulder_x = abs(float(rest_joints[16, 0]))
    elbow_x = abs(float(rest_joints[18, 0]))
    return BodyLandmarks(sole_y=float(rest_vertices[:, 1].min()), pelvis_y=float(rest_joints[0, 1]),
                         chest_y=float(rest_joints[9, 1]), head=np.asarray(rest_joints[_HEAD], dtype=np.float64),
                         sleeve_x=shoulder_x + 0.45 * (elbow_x - shoulder_x))


def vertex_regions(rest_vertices: np.ndarray, vertex_parts: np.ndarray, marks: BodyLandmarks) -> np.ndarray:
    """(V,) clothing region per vertex from its dominant SMPL joint and rest position."""
    x, y, z = (rest_vertices[:, i] for i in range(3))
    regions = np.full(len(rest_vertices), SKIN, dtype=np.int64)
    torso = np.isin(vertex_parts, _TORSO_PARTS) & (np.abs(x) < marks.sleeve_x)
    regions[torso] = SHIRT
    regions[y < marks.pelvis_y + 0.07] = TROUSERS  # the arms are at shoulder height in the T-pose rest
    regions[y < marks.sole_y + 0.11] = SHOES
    head_y, head_z = marks.head[1], marks.head[2]
    hair = (vertex_parts == _HEAD) & ((y > head_y + 0.075) | ((z < head_z - 0.01) & (y > head_y - 0.04)))
    regions[hair] = HAIR
    return regions


def face_regions(faces: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """(F,) region per face: the region shared by at least two of its corners (else the first corner's)."""
    r = regions[faces]
    return np.where(r[:, 1] == r[:, 2], r[:, 1], r[:, 0])


def rasterize_uv(face_uvs: np.ndarray, face_values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate per-corner values (F,3,C) over the UV triangles (F,3,2) into a size×size texture.

    Returns (values (size,size,C) float64, face index (size,size) int64, -1 where no triangle covers the texel).
    Row 0 is v = 0 (Blender's bottom-first pixel order); texel (i, j) is centred at uv ((j+½)/size, (i+½)/size).
    """
    pts = face_uvs.astype(np.float64) * size - 0.5  # texel-centre coordinates
    lo = np.clip(np.floor(pts.min(axis=1)).astype(np.int64), 0, size - 1)
    hi = np.clip(np.ceil(pts.max(axis=1)).astype(np.int64), 0, size - 1)
    (a, b, c) = (pts[:, k] for k in range(3))
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    keep = np.abs(det) > 1e-12  # degenerate UV triangles cover no texel
    faces = np.nonzero(keep)[0]
    w = hi[faces, 0] - lo[faces, 0] + 1
    h = hi[faces, 1] - lo[faces, 1] + 1
    counts = w * h
    face_idx = np.repeat(faces, counts)  # one row per candidate texel of each triangle's bounding box
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ww = np.repeat(w, counts)
    xs = lo[face_idx, 0] + local % ww
    ys = lo[face_idx, 1] + local // ww
    ax, ay = a[face_idx, 0], a[face_idx, 1]
    d = det[face_idx]
    l1 = ((xs - ax) * (c[face_idx, 1] - ay) - (c[face_idx, 0] - ax) * (ys - ay)) / d
    l2 = ((b[face_idx, 0] - ax) * (ys - ay) - (xs - ax) * (b[face_idx, 1] - ay)) / d
    l0 = 1.0 - l1 - l2
    inside = (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
    face_idx, xs, ys = face_idx[inside], xs[inside], ys[inside]
    bary = np.stack([l0[inside], l1[inside], l2[inside]], axis=1)
    values = np.zeros((size, size, face_values.shape[2]))
    owner = np.full((size, size), -1, dtype=np.int64)
    values[ys, xs] = np.einsum("nk,nkc->nc", bary, face_values[face_idx])
    owner[ys, xs] = face_idx
    return values, owner


def _stripes(t: np.ndarray, period: float, duty: float = 0.5) -> np.ndarray:
    return (np.mod(t / period, 1.0) < duty).astype(np.float64)


def paint(points: np.ndarray, regions: np.ndarray, marks: BodyLandmarks) -> np.ndarray:
    """sRGB colours in [0,1] (N,3) of rest-pose surface points (N,3) in the given regions (N,)."""
    x, y, z = (points[:, i] for i in range(3))
    rgb = np.zeros((len(points), 3))

    def put(mask: np.ndarray, colour: np.ndarray | tuple[float, float, float]) -> None:
        rgb[mask] = np.broadcast_to(np.asarray(colour, dtype=np.float64), rgb.shape)[mask]

    # skin, with eyes and a mouth on the front of the head
    put(regions == SKIN, (0.86, 0.64, 0.52))
    hx, hy, hz = marks.head
    front = (regions == SKIN) & (z > hz + 0.07)
    eyes = front & (np.abs(np.abs(x - hx) - 0.032) < 0.011) & (np.abs(y - (hy + 0.045)) < 0.007)
    put(eyes, (0.08, 0.07, 0.1))
    mouth = front & (np.abs(x - hx) < 0.022) & (np.abs(y - (hy - 0.02)) < 0.005)
    put(mouth, (0.65, 0.2, 0.22))
    # shirt: 5 cm horizontal stripes (teal / cream) with a thin red pinstripe, a yellow disc-and-ring print on
    # the chest front, a dark back panel
    shirt = regions == SHIRT
    band = _stripes(y, 0.05)[:, None]
    stripes = band * np.array([0.06, 0.38, 0.46]) + (1 - band) * np.array([0.92, 0.87, 0.72])
    pin = _stripes(y + 0.011, 0.05, 0.12)[:, None]
    put(shirt, pin * np.array([0.75, 0.1, 0.12]) + (1 - pin) * stripes)
    r = np.hypot(x, y - (marks.chest_y - 0.04))
    chest = shirt & (z > 0.06)
    put(chest & ((r < 0.045) | ((r > 0.07) & (r < 0.085))), (0.97, 0.8, 0.1))
    put(chest & (r < 0.02), (0.75, 0.1, 0.12))
    put(shirt & (z < -0.01) & (np.abs(x) < 0.08) & (y > marks.pelvis_y + 0.15), (0.12, 0.14, 0.2))
    # trousers: denim with a 3-D check (4 cm), a belt with a buckle
    trousers = regions == TROUSERS
    check = (np.floor(x / 0.04) + np.floor(y / 0.04) + np.floor(z / 0.04)) % 2
    denim = np.array([0.16, 0.22, 0.42])
    put(trousers, denim * (0.7 + 0.45 * check[:, None]))
    belt = trousers & (y > marks.pelvis_y + 0.035)
    put(belt, (0.28, 0.16, 0.08))
    put(belt & (z > 0.05) & (np.abs(x) < 0.025), (0.85, 0.72, 0.3))
    # shoes with white soles and a side stripe
    shoes = regions == SHOES
    put(shoes, (0.55, 0.08, 0.1))
    put(shoes & (np.abs(y - (marks.sole_y + 0.05)) < 0.008), (0.95, 0.95, 0.95))
    put(shoes & (y < marks.sole_y + 0.02), (0.95, 0.95, 0.92))
    # hair: dark brown strands (1 cm)
    hair = regions == HAIR
    strands = _stripes(x + 0.3 * z, 0.012, 0.4)[:, None]
    put(hair, np.array([0.2, 0.12, 0.06]) * (0.75 + 0.5 * strands))
    return rgb


def body_texture(rest_vertices: np.ndarray, rest_joints: np.ndarray, vertex_parts: np.ndarray, faces: np.ndarray,
                 face_uvs: np.ndarray, size: int = 1024) -> np.ndarray:
    """The demo body's clothing texture: (size,size,3) uint8 sRGB, row 0 = v 0 (Blender's bottom-first order).

    Texels no UV triangle covers take the colour of the nearest covered texel, so seams do not bleed black.
    """
    if face_uvs.shape != (len(faces), 3, 2):
        raise ValueError(f"face_uvs must have shape ({len(faces)}, 3, 2), got {face_uvs.shape}")
    marks = landmarks(rest_vertices, rest_joints)
    regions = face_regions(faces, vertex_regions(rest_vertices, vertex_parts, marks))
    positions, owner = rasterize_uv(face_uvs, rest_vertices[faces], size)
    covered = owner >= 0
    if not covered.any():
        raise ValueError("the body's UVs cover no texel; check face_uvs (expected values in [0, 1])")
    rgb = np.zeros((size, size, 3))
    rgb[covered] = paint(positions[covered], regions[owner[covered]], marks)
    nearest = ndimage.distance_transform_edt(~covered, return_distances=False, return_indices=True)
    rgb = rgb[nearest[0], nearest[1]]
    return np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
