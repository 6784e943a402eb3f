"""The feature volumes of a posed body as lookup tables: what the fast path interpolates instead of dense volumes.

Neural Body densifies its four sparse-conv levels into (1, C, D, H, W) volumes and samples them with
``grid_sample`` (trilinear, zero padding, align_corners). The volumes are zero except at the levels' active sites,
so the same values come from a table of the active sites' features plus a zero row, and an index grid that maps
each cell to its row (the zero row where the cell is inactive or outside). Building that costs a few MB instead of
the dense volumes' ~150 MB, and interpolating is one ``embedding_bag`` per level (8 weighted rows per point).

- ``FeatureTables.from_levels(levels)`` from ``NeuralBodyNetwork.encode_sparse_levels``.
- ``FeatureTables.features_at(grid (N,3)) -> (N,352)``: the values of ``network.features_at`` (grid_sample
  coordinates in [-1,1], x,y,z order) up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import spconv.pytorch as spconv
import torch
import torch.nn.functional as F

# corner c of a cell takes +1 on axis k (x, y, z) when bit k of c is set
_CORNERS = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)])


@dataclass(frozen=True, eq=False)
class FeatureLevel:
    index: torch.Tensor  # (D+2, H+2, W+2) int64: row of each cell (padded by one cell of zero rows)
    table: torch.Tensor  # (n+1, C) features of the active sites, then a zero row
    shape: tuple[int, int, int]  # (D, H, W) of the level
    strides: torch.Tensor  # (3,) int64: flat-index steps of x, y, z in ``index``
    corners: torch.Tensor  # (8,) int64: flat-index offsets of a cell's 8 corners from its lower corner
    top: torch.Tensor  # (3,) float32: the last cell index along x, y, z (W-1, H-1, D-1)

    def features_at(self, grid: torch.Tensor) -> torch.Tensor:
        """Trilinear features at grid_sample coordinates (N,3) in [-1,1] (x,y,z) → (N,C)."""
        top = self.top
        p = (grid + 1.0) * (0.5 * top)  # voxel coordinates (x,y,z), as grid_sample with align_corners
        p = torch.minimum(p.clamp_min_(-1.0), top + 1.0)  # beyond one cell: zeros anyway
        base = torch.floor(p)
        frac = p - base
        # the 8 corners' rows: the lower corner's flat index (+1: the index grid's padding) plus fixed offsets
        # (integer products as sums: CUDA has no integer matrix product)
        lower = ((base.long() + 1) * self.strides).sum(1)
        flat = (lower[:, None] + self.corners).clamp_(0, self.index.numel() - 1)
        rows = self.index.view(-1).index_select(0, flat.view(-1)).view(-1, 8)
        # trilinear weights as the outer product of the per-axis ones, in corner order (bit 0 = x, 2 = z)
        w = frac.new_empty((frac.shape[0], 2, 3))  # weight of the lower / upper corner per axis
        torch.sub(1.0, frac, out=w[:, 0])
        w[:, 1] = frac
        weights = (w[:, :, None, None, 2] * w[:, None, :, None, 1] * w[:, None, None, :, 0]).reshape(-1, 8)
        return F.embedding_bag(rows, self.table, per_sample_weights=weights.to(self.table.dtype), mode="sum")


@dataclass(frozen=True, eq=False)
class FeatureTables:
    levels: list[FeatureLevel]

    @staticmethod
    def from_levels(levels: list[spconv.SparseConvTensor]) -> FeatureTables:
        out = []
        for level in levels:
            depth, height, width = (int(s) for s in level.spatial_shape)
            features = level.features
            n = features.shape[0]
            index = torch.full((depth + 2, height + 2, width + 2), n, dtype=torch.long, device=features.device)
            sites = level.indices.long()  # (n,4) batch, d, h, w
            index[sites[:, 1] + 1, sites[:, 2] + 1, sites[:, 3] + 1] = torch.arange(n, device=features.device)
            table = torch.cat([features, features.new_zeros((1, features.shape[1]))])
            strides = torch.tensor([1, width + 2, (height + 2) * (width + 2)], device=features.device)
            corners = (_CORNERS.to(features.device) * strides).sum(1)
            top = torch.tensor([width - 1, height - 1, depth - 1], dtype=torch.float32, device=features.device)
            out.append(FeatureLevel(index=index, table=table, shape=(depth, height, width), strides=strides,
                                    corners=corners, top=top))
        return FeatureTables(out)

    @property
    def nbytes(self) -> int:
        return sum(int(lv.index.numel() * lv.index.element_size() + lv.table.numel() * lv.table.element_size())
                   for lv in self.levels)

    def features_at(self, grid: torch.Tensor) -> torch.Tensor:
        return torch.cat([level.features_at(grid) for level in self.levels], dim=1)
