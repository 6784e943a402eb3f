"""Meshes of the fast path: density only inside the pose's occupancy, coarse to fine, marching cubes once.

``extract_mesh_coarse_to_fine(network, sparse_input, latent_index, *, voxel_size=0.005, threshold=5.0, colors=True,
occupancy=None, levels=None, encode=None) -> Mesh`` (``encode`` defaults to the fast path's ``FeatureTables``) gives
the surface of ``mesh.extract_mesh`` (the same grid over the posed world box, the same iso-level, the same marching
cubes and colours) while evaluating the network on a small part of that grid:

1. the grid at ``2**(levels-1)`` times the voxel size (at most 2 cm: ``levels_for``), only at points inside the
   occupancy (points outside are empty);
2. at each finer level, only the corners of the cells that straddle the iso-level and of their face neighbours
   (at the finest level: of the straddling cells, then the surface is followed cell by cell where it leaves them);
   every other point takes the trilinear value of the coarser level (it is away from the surface, so its side of
   the iso-level is already known);
3. marching cubes on the finest grid, colours only at the final vertices.

``density_levels(density_fn, inside_fn, bounds, voxel_size, threshold, levels) -> (volume, origin, evaluated)`` is
the grid core for any density of world points; ``evaluated`` counts the points it queried.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from server.neural_body.config import point_chunk
from server.neural_body.feature_tables import FeatureTables
from server.neural_body.mesh import QUERY_CHUNK, THRESHOLD, VOXEL_SIZE, Mesh, extract_mesh, grid_axes, marching_cubes
from server.neural_body.network import NeuralBodyNetwork
from server.neural_body.occupancy import DEFAULT_MARGIN, Occupancy, body_occupancy
from server.neural_body.sparse_input import SparseInput

COARSEST_SPACING = 0.02  # metres: the first grid must still see a thin limb (a forearm is ~6 cm, a finger ~1.5)


def levels_for(voxel_size: float) -> int:
    """Grid levels so that the coarsest spacing (voxel · 2^(levels-1)) stays at or below ``COARSEST_SPACING``:
    5 mm → 3 levels (2 cm, 1 cm, 5 mm), 1 cm → 2, 2 cm and coarser → 1 (the occupancy alone)."""
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0; got {voxel_size}")
    return int(max(1, min(4, 1 + math.floor(math.log2(COARSEST_SPACING / voxel_size) + 1e-9))))
OUTSIDE = -1e4  # value given to points outside the occupancy (far below any iso-level)


def _query(density_fn: Callable[[np.ndarray], np.ndarray], inside_fn: Callable[[np.ndarray], np.ndarray],
           points: np.ndarray, chunk: int) -> tuple[np.ndarray, int]:
    """Density at (P,3) points, OUTSIDE where ``inside_fn`` is False; returns (values, points evaluated)."""
    values = np.full(len(points), OUTSIDE, np.float32)
    inside = np.flatnonzero(inside_fn(points))
    for start in range(0, inside.size, chunk):
        rows = inside[start:start + chunk]
        values[rows] = np.asarray(density_fn(points[rows]), np.float32).reshape(-1)
    return values, int(inside.size)


def _grid_points(origin: np.ndarray, spacing: float, index: np.ndarray) -> np.ndarray:
    """(P,3) integer grid indices → (P,3) float32 world points."""
    return (origin + index * spacing).astype(np.float32)


def density_levels(
    density_fn: Callable[[np.ndarray], np.ndarray],
    inside_fn: Callable[[np.ndarray], np.ndarray],
    bounds: np.ndarray,
    *,
    voxel_size: float = VOXEL_SIZE,
    threshold: float = THRESHOLD,
    levels: int | None = None,
    chunk: int = QUERY_CHUNK,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Values on the ``voxel_size`` grid over ``bounds`` (the grid of ``mesh.grid_axes``), exact near the iso-level.

    Returns (volume (X,Y,Z) float32, origin (3,), number of density evaluations). ``levels`` defaults to
    ``levels_for(voxel_size)``."""
    levels = levels_for(voxel_size) if levels is None else levels
    if levels < 1:
        raise ValueError(f"levels must be >= 1; got {levels}")
    axes = grid_axes(bounds, voxel_size)
    counts = np.array([len(a) for a in axes])
    origin = np.array([a[0] for a in axes], np.float64)
    factor = 2 ** (levels - 1)
    coarse = (counts - 1 + factor - 1) // factor + 1  # coarse points covering the fine grid
    shape = tuple(int(c) for c in coarse)
    index = np.stack(np.meshgrid(*[np.arange(c) for c in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    values, evaluated = _query(density_fn, inside_fn, _grid_points(origin, voxel_size * factor, index), chunk)
    volume = values.reshape(shape)
    exact = np.ones(shape, bool)  # points whose value is the density itself (or outside), not interpolated
    for level in range(1, levels):
        spacing = voxel_size * factor / 2**level
        shape = tuple(2 * (s - 1) + 1 for s in volume.shape)
        finer = F.interpolate(torch.from_numpy(volume)[None, None], size=shape, mode="trilinear",
                              align_corners=True)[0, 0].numpy()
        finer_exact = np.zeros(shape, bool)
        finer_exact[::2, ::2, ::2] = exact  # the coarser grid's points keep their values (trilinear at the nodes)
        last = level == levels - 1  # the finest level follows the surface instead of a dilated band
        index = np.argwhere(_active_points(volume, threshold, dilate=not last) & ~finer_exact)

        def query(points: np.ndarray, grid: np.ndarray = finer, known: np.ndarray = finer_exact,
                  spacing: float = spacing) -> int:
            values, n = _query(density_fn, inside_fn, _grid_points(origin, spacing, points), chunk)
            grid[points[:, 0], points[:, 1], points[:, 2]] = values
            known[points[:, 0], points[:, 1], points[:, 2]] = True
            return n

        if index.size:
            evaluated += query(index)
            if last:
                evaluated += _follow_surface(query, finer, finer_exact, threshold, index)
        volume, exact = finer, finer_exact
    volume = volume[:counts[0], :counts[1], :counts[2]]
    return np.ascontiguousarray(volume), origin, evaluated


_CELL_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])


def _follow_surface(query: Callable[[np.ndarray], int], volume: np.ndarray, exact: np.ndarray, threshold: float,
                    changed: np.ndarray) -> int:
    """Query the missing corners of every cell that straddles ``threshold`` and has a just-queried point as a corner,
    again for the cells around those, until no straddling cell next to a queried point lacks a corner: the surface
    is followed where it leaves the band the coarser level marked (instead of querying a band three times wider).
    ``query(points (P,3)) -> evaluated`` writes the values into ``volume`` and marks them in ``exact``."""
    shape = np.array(volume.shape)
    evaluated = 0
    while changed.size:
        cells = (changed[:, None, :] - _CELL_CORNERS[None]).reshape(-1, 3)  # the cells these points are corners of
        cells = cells[np.all((cells >= 0) & (cells <= shape - 2), axis=1)]
        cells = np.stack(np.unravel_index(np.unique(np.ravel_multi_index(cells.T, volume.shape)), volume.shape), 1)
        corners = cells[:, None, :] + _CELL_CORNERS[None]  # (C,8,3)
        above = volume[corners[..., 0], corners[..., 1], corners[..., 2]] > threshold
        straddle = above.any(axis=1) & ~above.all(axis=1)
        points = corners[straddle].reshape(-1, 3)
        points = points[~exact[points[:, 0], points[:, 1], points[:, 2]]]
        if not points.size:
            break
        changed = np.stack(np.unravel_index(np.unique(np.ravel_multi_index(points.T, volume.shape)), volume.shape), 1)
        evaluated += query(changed)
    return evaluated


def _active_points(volume: np.ndarray, threshold: float, dilate: bool = True) -> np.ndarray:
    """bool mask on the next finer grid: corners of the cells that straddle ``threshold`` (and, with ``dilate``, of
    their face neighbours: a feature thinner than a cell that no corner sees is caught there, one level down)."""
    inside = volume > threshold
    corners = [inside[i:inside.shape[0] - 1 + i, j:inside.shape[1] - 1 + j, k:inside.shape[2] - 1 + k]
               for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    any_in = np.logical_or.reduce(corners)
    all_in = np.logical_and.reduce(corners)
    cells = any_in & ~all_in
    if dilate:
        cells = ndimage.binary_dilation(cells, structure=ndimage.generate_binary_structure(3, 1))
    finer = np.zeros(tuple(2 * (s - 1) + 1 for s in volume.shape), bool)
    finer[1::2, 1::2, 1::2] = cells  # cell centres on the finer grid, then their 27 neighbours = the cell's points
    return ndimage.binary_dilation(finer, structure=np.ones((3, 3, 3), bool))


def extract_mesh_coarse_to_fine(
    network: NeuralBodyNetwork,
    sparse_input: SparseInput,
    latent_index: int,
    *,
    voxel_size: float = VOXEL_SIZE,
    threshold: float = THRESHOLD,
    colors: bool = True,
    occupancy: Occupancy | None = None,
    levels: int | None = None,
    chunk: int | None = None,
    encode: Callable[[SparseInput], FeatureTables | list[torch.Tensor]] | None = None,
    margin: float = DEFAULT_MARGIN,
) -> Mesh:
    """``mesh.extract_mesh``'s surface from far fewer network queries (see the module docstring)."""
    device = network.c.weight.device
    chunk = chunk or point_chunk(device.type)  # cache-sized batches on a CPU (the dense reference uses QUERY_CHUNK)
    occupancy = (occupancy or body_occupancy(sparse_input.to(device), margin)).to(device)

    def encode_tables(s: SparseInput) -> FeatureTables:
        return FeatureTables.from_levels(network.encode_sparse_levels(s))

    def surface(density: Callable[[np.ndarray], np.ndarray], posed: SparseInput) -> Mesh:
        def inside(points: np.ndarray) -> np.ndarray:
            wpts = torch.from_numpy(points).to(device)
            return occupancy.contains(posed.world_to_smpl(wpts)).cpu().numpy()

        volume, origin, evaluated = density_levels(density, inside, posed.world_bounds.cpu().numpy(),
                                                   voxel_size=voxel_size, threshold=threshold, levels=levels,
                                                   chunk=chunk)
        verts, faces = marching_cubes(volume, threshold, origin, voxel_size)
        return Mesh(vertices=verts, faces=faces, network_points=evaluated)

    return extract_mesh(network, sparse_input, latent_index, voxel_size=voxel_size, threshold=threshold,
                        colors=colors, chunk=chunk, encode=encode or encode_tables, surface=surface)
