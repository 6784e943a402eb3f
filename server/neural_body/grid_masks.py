"""Boolean masks over regular 3D grids, as shifted whole-array operations on the masks' device (no host round trip,
no read-back): the cells around points, the points around cells, the cells an iso-level crosses, dilations.

A grid of (X,Y,Z) points has (X-1,Y-1,Z-1) cells; cell (i,j,k) has the 8 corners (i..i+1, j..j+1, k..k+1).
"""

from __future__ import annotations

import functools

import torch

# corner c of a cell lies +1 along axis k where bit k of c is set (c = x + 2y + 4z)
CELL_CORNERS = [[c & 1, c >> 1 & 1, c >> 2 & 1] for c in range(8)]


@functools.cache
def cell_corner_offsets(device: torch.device, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``CELL_CORNERS`` (8,3) on ``device``, copied there once per device and dtype."""
    return torch.tensor(CELL_CORNERS, dtype=dtype, device=device)


def any_corner(points: torch.Tensor) -> torch.Tensor:
    """(X,Y,Z) bool on points → (X-1,Y-1,Z-1) bool on cells: some corner of the cell is set."""
    for axis in range(3):
        n = points.shape[axis] - 1
        points = points.narrow(axis, 0, n) | points.narrow(axis, 1, n)
    return points


def cell_corners(cells: torch.Tensor) -> torch.Tensor:
    """(X-1,Y-1,Z-1) bool on cells → (X,Y,Z) bool on points: the corners of the set cells."""
    for axis in range(3):
        shape = list(cells.shape)
        shape[axis] += 1
        out = torch.zeros(shape, dtype=torch.bool, device=cells.device)
        n = cells.shape[axis]
        out.narrow(axis, 0, n).logical_or_(cells)
        out.narrow(axis, 1, n).logical_or_(cells)
        cells = out
    return cells


def straddling(above: torch.Tensor) -> torch.Tensor:
    """(X-1,Y-1,Z-1) bool: the cells with corners both set and unset in ``above`` (X,Y,Z)."""
    return any_corner(above) & any_corner(~above)


def straddling_cells(volume: torch.Tensor, threshold: float) -> torch.Tensor:
    """(X-1,Y-1,Z-1) bool: the cells of ``volume`` whose corners lie on both sides of ``threshold``."""
    return straddling(volume > threshold)


def dilated(mask: torch.Tensor, *, block: bool, steps: int = 1) -> torch.Tensor:
    """``mask`` grown by ``steps`` samples: each step to the 26 neighbours (``block``, scipy's binary dilation with a
    3×3×3 structure) or to the 6 face neighbours."""
    out = mask
    for _ in range(steps):
        grown = out.clone()
        for axis in range(3):
            source = grown.clone() if block else out  # a block grows axis after axis; a cross from the step's start
            n = mask.shape[axis] - 1
            grown.narrow(axis, 1, n).logical_or_(source.narrow(axis, 0, n))
            grown.narrow(axis, 0, n).logical_or_(source.narrow(axis, 1, n))
        out = grown
    return out
