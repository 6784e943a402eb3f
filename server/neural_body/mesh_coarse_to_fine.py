"""Meshes of the fast path: density only inside the pose's occupancy, coarse to fine, marching cubes once.

``extract_mesh_coarse_to_fine(network, sparse_input, latent_index, *, voxel_size=0.005, threshold=5.0, colors=True,
occupancy=None, levels=None, encode=None) -> Mesh`` (``encode`` defaults to the fast path's ``FeatureTables``) gives
the surface of ``mesh.extract_mesh`` (the same grid over the posed world box, the same iso-level, the same vertices
and colours; triangles differ from PyMCubes' only where a cell's face is ambiguous) while evaluating the network on
a small part of that grid:

1. the grid at ``2**(levels-1)`` times the voxel size (at most 2 cm: ``levels_for``), only at points inside the
   occupancy (points outside are empty);
2. every finer point takes the trilinear value of the coarser level, then the network is asked only near the
   iso-level: at a middle level, at the corners of the coarser cells that straddle it and of their face neighbours
   (a feature thinner than a cell is caught there); at the finest level, at the corners of the cells where the
   interpolated grid crosses it, then the surface is followed cell by cell wherever the true values move it
   (a straddling cell with a queried corner gets all its corners queried), until no such cell lacks one. Every
   other point is away from the surface, so its side of the iso-level is already known;
3. marching cubes on the finest grid, scanning only the cells that straddle the iso-level (``marching_cubes``, on
   the device); colours only at the final vertices.

The grids, their bookkeeping and marching cubes live on the network's device (a GPU reads back only the sizes of
the point sets it queries and the finished mesh).

``density_levels(density_fn, inside_fn, bounds, voxel_size, threshold, levels, device) -> (volume, origin,
evaluated)`` is the grid core for any density of world points (torch tensors in and out); ``evaluated`` counts the
points it queried.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from server.neural_body.config import point_chunk
from server.neural_body.device_values import device_values
from server.neural_body.feature_tables import FeatureTables
from server.neural_body.grid_masks import any_corner, cell_corner_offsets, cell_corners, dilated, straddling_cells
from server.neural_body.marching_cubes import closed_marching_cubes
from server.neural_body.mesh import (
    QUERY_CHUNK,
    THRESHOLD,
    VOXEL_SIZE,
    Mesh,
    closed_volume,
    extract_mesh,
    grid_axes,
    grid_mesh,
)
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

DensityFn = Callable[[torch.Tensor], torch.Tensor]  # (P,3) float32 world points → (P,) density, on the grid's device


def _query(density_fn: DensityFn, inside_fn: DensityFn, points: torch.Tensor, chunk: int) -> tuple[torch.Tensor, int]:
    """Density at (P,3) points, OUTSIDE where ``inside_fn`` is False; returns (values, points evaluated)."""
    values = torch.full((len(points),), OUTSIDE, dtype=torch.float32, device=points.device)
    inside = torch.nonzero(inside_fn(points)).squeeze(1)
    for start in range(0, len(inside), chunk):
        rows = inside[start:start + chunk]
        values[rows] = density_fn(points[rows]).reshape(-1).float()
    return values, len(inside)


def _grid_points(origin: torch.Tensor, spacing: float, index: torch.Tensor) -> torch.Tensor:
    """(P,3) integer grid indices → (P,3) float32 world points (computed in float64, as ``mesh.grid_axes``)."""
    return (origin + index.double() * spacing).float()


def density_levels(
    density_fn: DensityFn,
    inside_fn: DensityFn,
    bounds: np.ndarray,
    *,
    voxel_size: float = VOXEL_SIZE,
    threshold: float = THRESHOLD,
    levels: int | None = None,
    chunk: int = QUERY_CHUNK,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, np.ndarray, int]:
    """Values on the ``voxel_size`` grid over ``bounds`` (the grid of ``mesh.grid_axes``), exact near the iso-level.

    Returns (volume (X,Y,Z) float32 on ``device``, origin (3,), number of density evaluations). The grids and their
    bookkeeping stay on ``device``: a GPU reads back only the sizes of the point sets it queries. ``levels``
    defaults to ``levels_for(voxel_size)``."""
    levels = levels_for(voxel_size) if levels is None else levels
    if levels < 1:
        raise ValueError(f"levels must be >= 1; got {levels}")
    axes = grid_axes(bounds, voxel_size)
    counts = [len(a) for a in axes]
    origin = np.array([a[0] for a in axes], np.float64)
    at = device_values(origin.tolist(), dtype=torch.float64, device=device)
    factor = 2 ** (levels - 1)
    shape = tuple((c - 1 + factor - 1) // factor + 1 for c in counts)  # coarse points covering the fine grid
    index = torch.stack(torch.meshgrid(*[torch.arange(c, device=device) for c in shape], indexing="ij"), -1)
    values, evaluated = _query(density_fn, inside_fn, _grid_points(at, voxel_size * factor, index.reshape(-1, 3)),
                               chunk)
    volume = values.reshape(shape)
    exact = torch.ones(shape, dtype=torch.bool, device=device)  # value = the density itself (or outside)
    for level in range(1, levels):
        spacing = voxel_size * factor / 2**level
        shape = tuple(2 * (s - 1) + 1 for s in volume.shape)
        finer = F.interpolate(volume[None, None], size=shape, mode="trilinear", align_corners=True)[0, 0]
        finer_exact = torch.zeros(shape, dtype=torch.bool, device=device)
        finer_exact[::2, ::2, ::2] = exact  # the coarser grid's points keep their values (trilinear at the nodes)
        last = level == levels - 1
        if last:  # the corners of the cells where the interpolated grid crosses the iso-level, then the surface
            band = cell_corners(straddling_cells(finer, threshold)) & ~finer_exact  # is followed from there
        else:
            band = _active_points(volume, threshold) & ~finer_exact
        flat = torch.nonzero(band.view(-1)).squeeze(1)

        def query(flat: torch.Tensor, grid: torch.Tensor = finer, known: torch.Tensor = finer_exact,
                  spacing: float = spacing) -> int:
            """Query the grid points at these flat indices and write their values in."""
            values, n = _query(density_fn, inside_fn, _grid_points(at, spacing, _unravel(flat, grid.shape)), chunk)
            grid.view(-1)[flat] = values
            known.view(-1).index_fill_(0, flat, True)
            return n

        if len(flat):
            evaluated += query(flat)
            if last:
                evaluated += _follow_surface(query, finer, finer_exact, threshold, band)
        volume, exact = finer, finer_exact
    return volume[:counts[0], :counts[1], :counts[2]].contiguous(), origin, evaluated


def _unravel(flat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(P,) flat indices of a C-ordered (X,Y,Z) grid → (P,3) grid indices."""
    return torch.stack((flat // (shape[1] * shape[2]), flat // shape[2] % shape[1], flat % shape[2]), 1)


def _follow_surface(query: Callable[[torch.Tensor], int], volume: torch.Tensor, exact: torch.Tensor,
                    threshold: float, queried: torch.Tensor) -> int:
    """Query the missing corners of every cell that straddles ``threshold`` and has a just-queried point as a corner,
    again for the cells around those, until no straddling cell next to a queried point lacks a corner: the surface
    is followed where the true values move it away from where the interpolated grid put it.
    ``query(flat indices (P,)) -> evaluated`` writes the values into ``volume`` and marks them in ``exact``;
    ``queried`` (bool, the grid's shape) marks the band just queried.

    The first step (the whole band) runs on the dense grids; the steps after it touch a few thousand points at most
    and run on their lists."""
    cells = straddling_cells(volume, threshold) & any_corner(queried)
    changed = torch.nonzero((cell_corners(cells) & ~exact).view(-1)).squeeze(1)
    shape, cell_shape = tuple(volume.shape), tuple(s - 1 for s in volume.shape)
    # a cell's flat index → its 8 corners' flat indices, by adding these offsets to the flat index of its first corner
    corners = cell_corner_offsets(volume.device)
    strides = device_values([shape[1] * shape[2], shape[2], 1], dtype=torch.long, device=volume.device)
    offsets = corners @ strides
    last_cell = device_values([s - 1 for s in cell_shape], dtype=torch.long, device=volume.device)
    values, known = volume.view(-1), exact.view(-1)
    evaluated = 0
    while len(changed):
        evaluated += query(changed)
        # the cells these are corners of; clamped, one beyond the grid is another cell of the same point
        cells = (_unravel(changed, shape)[:, None, :] - corners).reshape(-1, 3).clamp_(min=0)
        cells = torch.minimum(cells, last_cell)
        first = torch.unique((cells * strides).sum(1))  # their first corners
        points = first[:, None] + offsets  # (C,8) flat corner indices
        above = values[points] > threshold
        straddle = above.any(1) & ~above.all(1)
        changed = torch.unique(points[straddle[:, None] & ~known[points]])
    return evaluated


def _active_points(volume: torch.Tensor, threshold: float) -> torch.Tensor:
    """bool mask on the next finer grid: corners of the cells that straddle ``threshold`` and of their face
    neighbours (a feature thinner than a cell that no corner sees is caught there, one level down)."""
    cells = dilated(straddling_cells(volume, threshold), block=False)
    finer = torch.zeros(tuple(2 * (s - 1) + 1 for s in volume.shape), dtype=torch.bool, device=volume.device)
    finer[1::2, 1::2, 1::2] = cells  # cell centres on the finer grid, then their 27 neighbours = the cell's points
    return dilated(finer, block=True)


def surface_marching_cubes(volume: torch.Tensor, threshold: float, origin: np.ndarray,
                           voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """``mesh.marching_cubes`` of a (X,Y,Z) tensor on the tensor's device, scanning only the cells that straddle the
    iso-level (``marching_cubes.closed_marching_cubes``): the same vertices as the dense grid's PyMCubes, a closed
    mesh, and only the mesh comes back to the host."""
    verts, faces = closed_marching_cubes(closed_volume(volume, threshold), threshold)
    return grid_mesh(verts, faces, tuple(volume.shape), origin, voxel_size)


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

    def surface(density: DensityFn, posed: SparseInput) -> Mesh:
        def inside(points: torch.Tensor) -> torch.Tensor:
            return occupancy.contains(posed.world_to_smpl(points))

        volume, origin, evaluated = density_levels(density, inside, posed.world_bounds.cpu().numpy(),
                                                   voxel_size=voxel_size, threshold=threshold, levels=levels,
                                                   chunk=chunk, device=device)
        verts, faces = surface_marching_cubes(volume, threshold, origin, voxel_size)
        return Mesh(vertices=verts, faces=faces, network_points=evaluated)

    return extract_mesh(network, sparse_input, latent_index, voxel_size=voxel_size, threshold=threshold,
                        colors=colors, chunk=chunk, encode=encode or encode_tables, surface=surface)
