"""Occupancy of a posed body: the cells of a grid in the body's SMPL frame that lie within a margin of the body.

The fast renderer, the coarse-to-fine mesher and the occupancy training sampler treat every point outside it as
empty space (density 0), which is what lets them skip most of the network evaluations of the reference path.

- ``body_occupancy(sparse_input, margin=DEFAULT_MARGIN, cell_size=None) -> Occupancy``: from the voxelised body
  (the voxels its vertices fall in, as the sparse-conv input holds them): every cell whose points may lie within
  ``margin`` metres of a vertex, plus the body's interior (holes of that shell filled), so that a see-through actor
  keeps its inner density.
- ``Occupancy.contains(pts_smpl (...,3)) -> bool (...)``: nearest-cell lookup; points outside the grid are empty.
- ``refine_level(occupancy, density, dilation) -> Occupancy``: the cells of ``occupancy`` near positive density
  (``density``: (N,3) SMPL-frame points → raw density (N,)), probed at the cell centres, one level finer each call
  (``DEFAULT_DILATIONS`` per level, coarse to fine). The network's density is a ReLU: about 70 % of the samples
  inside the body occupancy of the demo actor are exactly 0 (the shell outside the actor); this per-pose probe lets
  the fast renderer skip most of them, in the spirit of nerfacc's occupancy grid but fixed for a trained network and
  one pose. ``Occupancy.level`` counts the levels applied, ``Occupancy.next_level_probes`` is what the next one
  costs, so callers decide level by level (``FastRenderer.refined_occupancy``).

The margin must cover where a trained network puts density around the body (loose clothes, hair, its own blur):
``DEFAULT_MARGIN`` was chosen by measuring the agreement of the fast path with the reference (see
``docs/fast_path.md``). Cells are in (d,h,w) = SMPL-frame (z,y,x) order, like the feature volumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch
from scipy import ndimage

from server.neural_body.config import DEFAULT_MARGIN
from server.neural_body.device_values import device_values
from server.neural_body.grid_masks import dilated
from server.neural_body.sparse_input import SparseInput

MIN_CELL = 0.005
MAX_CELL = 0.02
# Cells kept around each positive probe (Chebyshev distance in cells), per level: the body occupancy's cells (2 cm at
# the default margin), then their halves. Measured on the demo actor (docs/fast_path.md, 28 pose/view pairs at 256²:
# captured and new poses, each against the unrefined occupancy): 1 cell at each level dropped no sample with density
# (largest opacity lost < 5e-5) and left 37 % fewer samples to march than 2 cells at 2 cm; 0 cells lost whole rays.
DEFAULT_DILATIONS = (1, 1)


@dataclass(frozen=True, eq=False)
class Occupancy:
    """Boolean cells over a box of the SMPL frame; ``grid[d, h, w]`` covers
    ``origin + (w, h, d)·cell_size + [0, cell_size)³`` (xyz)."""

    grid: torch.Tensor  # (D,H,W) bool
    origin: torch.Tensor  # (3,) float32, xyz of the grid's lower corner (SMPL frame, metres)
    cell_size: float
    margin: float
    anchor: torch.Tensor  # (3,) float32, the SMPL-frame box minimum of the voxelised body it was built from
    probes: int = 0  # density queries made to refine it (0: the body occupancy itself)
    level: int = 0  # refinement levels applied (0: the body occupancy itself)

    @property
    def nbytes(self) -> int:
        return int(self.grid.numel())

    @property
    def next_level_probes(self) -> int:
        """Density queries the next refinement level makes: one per cell, then one per half of every cell."""
        return int(self.grid.sum()) * (8 if self.level else 1)

    @property
    def fraction(self) -> float:
        """Share of the grid's cells that are occupied."""
        return float(self.grid.float().mean())

    def to(self, device: torch.device | str) -> Occupancy:
        return replace(self, grid=self.grid.to(device), origin=self.origin.to(device), anchor=self.anchor.to(device))

    def anchored_at(self, sparse_input: SparseInput) -> Occupancy:
        """This occupancy placed at ``sparse_input``'s SMPL-frame box (the cells are defined relative to the voxel
        grid, so a body with the same voxels but a shifted box, e.g. one that only moved, shares them)."""
        lo = sparse_input.bounds[0].to(self.anchor.device)
        if torch.equal(lo, self.anchor):
            return self
        return replace(self, origin=self.origin + (lo - self.anchor), anchor=lo)

    def subdivided(self) -> Occupancy:
        """The same cells, each split into 2×2×2 cells of half the size."""
        grid = self.grid.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2)
        return replace(self, grid=grid, cell_size=self.cell_size / 2.0)

    def cell_centres(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The occupied cells: (N,3) (d,h,w) indices and (N,3) SMPL-frame centres (x,y,z)."""
        cells = torch.nonzero(self.grid)
        centres = self.origin + (cells.flip(1).to(self.origin.dtype) + 0.5) * self.cell_size
        return cells, centres

    def contains(self, pts_smpl: torch.Tensor) -> torch.Tensor:
        """(...,3) SMPL-frame points → (...) bool: inside an occupied cell."""
        flat, strides, top = self._padded
        # the cell (xyz) in the grid padded by one empty cell on every side; points beyond it clamp into the padding
        cell = torch.minimum(torch.floor((pts_smpl - self.origin) / self.cell_size).add_(1.0).clamp_min_(0.0), top)
        return flat.take((cell * strides).sum(-1).long())

    @cached_property
    def _padded(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The grid padded by one empty cell on every side, flattened; its x, y, z strides and last cell (float)."""
        flat = torch.nn.functional.pad(self.grid, (1, 1, 1, 1, 1, 1)).reshape(-1)
        depth, height, width = (s + 2 for s in self.grid.shape)
        strides = device_values([1.0, width, width * height], dtype=torch.float32, device=self.grid.device)
        top = device_values([width - 1.0, height - 1.0, depth - 1.0], dtype=torch.float32, device=self.grid.device)
        return flat, strides, top


def default_cell_size(margin: float) -> float:
    """Half the margin, within [5 mm, 2 cm]: fine enough not to waste much of the margin, coarse enough to be cheap."""
    return float(min(MAX_CELL, max(MIN_CELL, margin / 2.0)))


def body_occupancy(sparse_input: SparseInput, margin: float = DEFAULT_MARGIN,
                   cell_size: float | None = None) -> Occupancy:
    """Cells within ``margin`` of the voxelised body (and its interior), in the SMPL frame of ``sparse_input``."""
    if not margin >= 0.0 or not math.isfinite(margin):
        raise ValueError(f"the occupancy margin must be a finite number of metres >= 0; got {margin}")
    cell = default_cell_size(margin) if cell_size is None else float(cell_size)
    if not cell > 0.0:
        raise ValueError(f"the occupancy cell size must be > 0; got {cell}")
    coords = sparse_input.coords.detach().cpu().numpy().astype(np.float64)  # (V,3) d,h,w voxel indices
    lo = sparse_input.bounds[0].detach().cpu().numpy().astype(np.float64)
    # Vertex positions as the voxelisation saw them (within half a voxel of the true ones).
    points = lo + coords[:, ::-1] * sparse_input.voxel_size  # (V,3) xyz
    slack = margin + 0.5 * sparse_input.voxel_size * math.sqrt(3.0)
    # A cell is kept when any point of it may lie within `slack` of a vertex: the distance between cell centres
    # then is at most slack + one cell diagonal (the vertex and the query point each sit anywhere in their cells).
    reach = slack + cell * math.sqrt(3.0)
    pad = int(math.ceil(reach / cell)) + 1
    origin = points.min(axis=0) - pad * cell
    shape_xyz = np.ceil((points.max(axis=0) - origin) / cell).astype(int) + pad + 1
    idx = np.floor((points - origin) / cell).astype(int)
    seeds = np.zeros(shape_xyz[::-1], dtype=bool)  # (D,H,W)
    seeds[idx[:, 2], idx[:, 1], idx[:, 0]] = True
    distance = ndimage.distance_transform_edt(~seeds) * cell  # centre-to-centre, metres
    shell = distance <= reach
    grid = ndimage.binary_fill_holes(shell)
    device = sparse_input.device
    return Occupancy(grid=torch.from_numpy(grid).to(device),
                     origin=torch.tensor(origin, dtype=torch.float32, device=device), cell_size=cell,
                     margin=float(margin), anchor=sparse_input.bounds[0].detach().to(device=device,
                                                                                      dtype=torch.float32))


def refine_level(occupancy: Occupancy, density: Callable[[torch.Tensor], torch.Tensor], dilation: int) -> Occupancy:
    """The cells of ``occupancy`` near positive density, one level finer (``Occupancy.level`` + 1).

    ``density`` maps (N,3) SMPL-frame points to the network's raw density (N,) (positive = not empty). The first
    level probes the centre of every cell and keeps the cells within ``dilation`` cells (Chebyshev) of a positive one;
    each further level halves the cells of what was kept, probes their centres and keeps those within ``dilation`` of
    a positive one. A sample the result drops is one the renderer treats as empty, so the dilations must cover how far
    density reaches beyond the positive centres (see ``DEFAULT_DILATIONS``)."""
    if dilation < 0:
        raise ValueError(f"the dilation must be a cell count >= 0; got {dilation}")
    if occupancy.level:
        occupancy = occupancy.subdivided()
    cells, centres = occupancy.cell_centres()
    positive = torch.zeros_like(occupancy.grid)
    if cells.shape[0]:  # written as values, not selected by a mask: nothing to read back
        positive[cells[:, 0], cells[:, 1], cells[:, 2]] = density(centres) > 0
    # on the grid's device: a GPU reads nothing back and copies nothing over for the level's decision
    grid = dilated(positive, block=True, steps=dilation) & occupancy.grid
    return replace(occupancy, grid=grid, probes=occupancy.probes + int(cells.shape[0]), level=occupancy.level + 1)
