"""Marching cubes on torch tensors, on the tensors' device: the fast mesh's last step without a trip to the host.

``closed_marching_cubes(volume, threshold) -> (vertices (V,3) float32, faces (F,3) int64)`` meshes the iso-surface
of a (X,Y,Z) grid whose outermost samples are all outside (below ``threshold``, as ``mesh.closed_volume`` makes
them), scanning only the cells that straddle the iso-level. Vertices are in grid units (sample (i,j,k) at (i,j,k)),
one per crossed grid edge, placed by linear interpolation as in any marching cubes; faces are counter-clockwise seen
from outside (outward normals), and the mesh is closed: two cells sharing a face cut it the same way.

The case table is derived from the cube, not typed in (``case_table()``): on each face of a cell the crossed edges
are joined in pairs (on a face with two diagonal inside corners, each inside corner is cut off on its own, as the
classic table's case 3), the segments oriented so that the inside lies on their right seen from outside the cell,
chained into loops, and each loop triangulated with no inner side along a cell face (a neighbour could put a side
between the same two vertices). A rule that depends only on a face's own corners makes neighbouring cells agree,
which the classic (Lorensen) table does not guarantee.

Each vertex belongs to the cell whose first corner starts its edge, so vertices are numbered by a cumulative sum
over the scanned cells, with no sort; a GPU reads back three sizes (cells, triangles, vertices) and one check.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import numpy as np
import torch

from server.neural_body.grid_masks import CELL_CORNERS, straddling

# A cell's corner c sits at offset (c & 1, c >> 1 & 1, c >> 2 & 1); its edge e runs along axis e // 4 from the corner
# START[e] (bit e // 4 clear, the other two bits from e % 4) to START[e] | 1 << (e // 4).
CORNER_OFFSETS = np.array(CELL_CORNERS, np.int64)


def _edge_start(edge: int) -> int:
    axis, rest = divmod(edge, 4)
    low, high = [b for b in range(3) if b != axis]
    return (rest & 1) << low | (rest >> 1 & 1) << high


EDGE_AXIS = np.array([e // 4 for e in range(12)], np.int64)
EDGE_START = np.array([_edge_start(e) for e in range(12)], np.int64)
EDGE_END = EDGE_START | (1 << EDGE_AXIS)


def _face_segments(inside: list[bool], axis: int, side: int) -> list[tuple[int, int, int]]:
    """The iso-line's segments on one face of a cell: (edge, edge, the inside corner they cut off or border)."""
    edges = [e for e in range(12) if EDGE_AXIS[e] != axis and (EDGE_START[e] >> axis & 1) == side]
    crossed = [e for e in edges if inside[EDGE_START[e]] != inside[EDGE_END[e]]]

    def inner(e: int) -> int:
        return int(EDGE_START[e] if inside[EDGE_START[e]] else EDGE_END[e])

    if len(crossed) == 2:
        return [(crossed[0], crossed[1], inner(crossed[0]))]
    if len(crossed) == 4:  # two diagonal inside corners: each cut off by the two crossed edges that meet at it
        corners = sorted({inner(e) for e in crossed})
        return [(*[e for e in crossed if inner(e) == c], c) for c in corners]
    return []


def _edge_midpoint(edge: int) -> np.ndarray:
    return (CORNER_OFFSETS[EDGE_START[edge]] + CORNER_OFFSETS[EDGE_END[edge]]) / 2.0


def _loops(config: int) -> list[list[int]]:
    """The iso-surface's boundary on the cell's faces as loops of edges, each in the order whose right-hand normal
    points out of the inside."""
    inside = [bool(config >> c & 1) for c in range(8)]
    following: dict[int, int] = {}
    for axis in range(3):
        for side in (0, 1):
            normal = np.zeros(3)
            normal[axis] = 1.0 if side else -1.0  # out of the cell
            for a, b, corner in _face_segments(inside, axis, side):
                p, q = _edge_midpoint(a), _edge_midpoint(b)
                # The surface's boundary runs opposite to the inside part of the face's own boundary (counter-
                # clockwise seen from outside the cell): the inside corner lies on the segment's right.
                if np.dot(np.cross(normal, q - p), CORNER_OFFSETS[corner] - p) > 0:
                    a, b = b, a
                if a in following:
                    raise AssertionError(f"case {config}: edge {a} starts two segments")
                following[a] = b
    loops = []
    while following:
        start = min(following)
        loop = [start]
        while (nxt := following.pop(loop[-1])) != start:
            loop.append(nxt)
        loops.append(loop)
    return loops


def _faces_of(edge: int) -> set[tuple[int, int]]:
    """The two cell faces (axis, side) an edge lies on."""
    start = int(EDGE_START[edge])
    return {(axis, start >> axis & 1) for axis in range(3) if axis != EDGE_AXIS[edge]}


def _triangulations(loop: list[int]) -> Iterator[list[tuple[int, int, int]]]:
    """Every triangulation of a polygon (its corners in order), each triangle in the polygon's winding."""
    if len(loop) == 3:
        yield [(loop[0], loop[1], loop[2])]
        return
    # the triangle on the side (loop[0], loop[1]) has its third corner at some loop[k]
    for k in range(len(loop) - 1, 1, -1):
        ends = [loop[1:k + 1], loop[k:] + loop[:1]]
        left = list(_triangulations(ends[0])) if len(ends[0]) >= 3 else [[]]
        right = list(_triangulations(ends[1])) if len(ends[1]) >= 3 else [[]]
        for a in left:
            for b in right:
                yield [(loop[0], loop[1], loop[k]), *a, *b]


def _triangles(loop: list[int]) -> list[tuple[int, int, int]]:
    """A triangulation of the loop with no inner side along a cell face: a neighbour cell may cut that face with a
    side between the same two vertices, and the mesh would not be a surface there."""
    sides_of_loop = {frozenset(p) for p in zip(loop, loop[1:] + loop[:1], strict=True)}
    for triangles in _triangulations(loop):
        inner = {frozenset(p) for t in triangles for p in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))} - sides_of_loop
        if all(not (_faces_of(a) & _faces_of(b)) for a, b in map(tuple, inner)):
            return triangles
    raise AssertionError(f"no triangulation of {loop} keeps its inner sides off the cell's faces")


@cache
def case_table() -> tuple[np.ndarray, np.ndarray]:
    """(256, T, 3) int64 triangles per corner configuration (bit c set = corner c inside), padded with -1, and (256,)
    their counts. T is the most any configuration needs."""
    triangles = [[t for loop in _loops(config) for t in _triangles(loop)] for config in range(256)]
    table = np.full((256, max(len(t) for t in triangles), 3), -1, np.int64)
    for config, tris in enumerate(triangles):
        if tris:
            table[config, :len(tris)] = tris
    return table, np.array([len(t) for t in triangles], np.int64)


@cache
def _device_tables(device: torch.device) -> tuple[torch.Tensor, ...]:
    """The case table and the cell's geometry as tensors on ``device`` (made once: no host copies per mesh)."""
    table, counts = case_table()
    arrays = (table, counts, EDGE_AXIS, EDGE_START, CORNER_OFFSETS, np.eye(3, dtype=np.int64))
    return tuple(torch.as_tensor(a, device=device) for a in arrays)


def _flat(index: torch.Tensor, strides: tuple[int, int, int]) -> torch.Tensor:
    """(..., 3) grid indices → flat indices of a C-ordered grid with these strides."""
    return index[..., 0] * strides[0] + index[..., 1] * strides[1] + index[..., 2] * strides[2]


def closed_marching_cubes(volume: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Iso-surface of ``volume`` (X,Y,Z) where values above ``threshold`` are inside and every outermost sample is
    outside: (vertices (V,3) float32 in grid units, faces (F,3) int64 with outward normals), on the volume's device."""
    if volume.dim() != 3 or min(volume.shape) < 2:
        raise ValueError(f"need a (X,Y,Z) volume with at least 2 samples per axis; got {tuple(volume.shape)}")
    above = volume > threshold
    border = [above.narrow(axis, at, 1).any() for axis in range(3) for at in (0, volume.shape[axis] - 1)]
    if bool(torch.stack(border).any()):
        raise ValueError("the volume's outermost samples must all be below the threshold; pad it with "
                         "mesh.closed_volume")
    device = volume.device
    table, counts, edge_axis, edge_start, corner_offsets, unit = _device_tables(device)
    sx, sy, sz = volume.shape
    cell_index = torch.nonzero(straddling(above))  # (N,3), C order
    if len(cell_index) == 0:
        return (torch.zeros((0, 3), dtype=torch.float32, device=device),
                torch.zeros((0, 3), dtype=torch.long, device=device))
    point_strides, cell_strides = (sy * sz, sz, 1), ((sy - 1) * (sz - 1), sz - 1, 1)
    first = _flat(cell_index, point_strides)  # flat index of each cell's first corner
    inside = above.view(-1).take(first[:, None] + _flat(corner_offsets, point_strides))  # (N,8)
    config = (inside.long() << torch.arange(8, device=device)).sum(1)

    # Vertices: the crossed edges each cell starts (its edges 0, 4 and 8, from its first corner along x, y, z).
    owned = torch.stack((inside[:, 1], inside[:, 2], inside[:, 4]), 1) != inside[:, :1]  # (N,3)
    vertex_id = torch.cumsum(owned.view(-1), 0) - 1  # (N·3,): cell n's edge along axis a at n·3 + a
    cell_of, axis_of = torch.nonzero(owned, as_tuple=True)
    direction = unit.index_select(0, axis_of)
    start = first.take(cell_of)
    v0, v1 = volume.take(start), volume.take(start + _flat(direction, point_strides))
    along = ((threshold - v0) / (v1 - v0)).float()  # the crossing's place on the edge, 0..1
    vertices = cell_index.index_select(0, cell_of).float() + direction * along[:, None]

    # Triangles: the table's rows for each cell, each local edge → the cell that starts it → its vertex.
    per_cell = counts.take(config)
    tri_cell = torch.repeat_interleave(torch.arange(len(config), device=device), per_cell)
    slot = torch.arange(len(tri_cell), device=device) - (torch.cumsum(per_cell, 0) - per_cell).take(tri_cell)
    row = (config.take(tri_cell) * table.shape[1] + slot) * 3
    local = table.take(row[:, None] + torch.arange(3, device=device))  # (T,3) local edges
    cell_flat = _flat(cell_index, cell_strides)
    position = torch.full(((sx - 1) * (sy - 1) * (sz - 1),), -1, dtype=torch.int32, device=device)
    position[cell_flat] = torch.arange(len(cell_index), dtype=torch.int32, device=device)
    edge_cell_offset = _flat(corner_offsets.index_select(0, edge_start), cell_strides)  # (12,) edge → its starting cell
    starting_cell = cell_flat.take(tri_cell)[:, None] + edge_cell_offset.take(local)
    faces = vertex_id.take(position.take(starting_cell).long() * 3 + edge_axis.take(local))
    return vertices, faces
