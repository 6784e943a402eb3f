"""The feature volumes of a posed body as lookup tables: what the fast path interpolates instead of dense volumes.

Neural Body densifies its four sparse-conv levels into (1, C, D, H, W) volumes and samples them with
``grid_sample`` (trilinear, zero padding, align_corners). The volumes are zero except at the levels' active sites,
so the same values come from a table of the active sites' features plus a zero row, and an index grid that maps
each cell to its row (the zero row where the cell is inactive or outside). Building that costs a few MB instead of
the dense volumes' ~150 MB, and interpolating is one ``embedding_bag`` per level (8 weighted rows per point).

- ``FeatureTables.from_levels(levels)`` from ``NeuralBodyNetwork.encode_sparse_levels``.
- ``FeatureTables.features_at(grid (N,3)) -> (N,352)``: the values of ``network.features_at`` (grid_sample
  coordinates in [-1,1], x,y,z order) up to float rounding.
- ``FeatureTables.first_layer(fc_0)(grid (N,3)) -> (N,256)``: ``fc_0`` applied to those features, with the coarse
  levels folded into their tables (``FirstLayer``): the same values, a quarter of the arithmetic.

The corner rows and trilinear weights of every level come from one set of tensor operations over all levels at once
(the levels' index grids are concatenated), not one set per level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import spconv.pytorch as spconv
import torch
import torch.nn.functional as F
from torch import nn

from server.neural_body.device_values import device_values
from server.neural_body.grid_masks import cell_corner_offsets

# fc_0 is folded into the tables of the levels from this one on (levels 3 and 4: 256 of fc_0's 352 input channels,
# ~3,000 sites for a body at 5 mm, so their 256-wide folded rows stay in cache). Measured on this CPU (2,048 points
# of the demo actor): fc_0 with its lookups ~1.5× faster folded so; folding level 2 as well was within the noise of
# that, and all four levels read 256-wide rows from a ~27 MB table at every corner.
FOLD_FROM_LEVEL = 2


@dataclass(frozen=True, eq=False)
class FeatureLevel:
    table: torch.Tensor  # (n+1, C) features of the active sites, then a zero row
    shape: tuple[int, int, int]  # (D, H, W) of the level


@dataclass(frozen=True, eq=False)
class FeatureTables:
    levels: list[FeatureLevel]
    index: torch.Tensor  # int32: every level's index grid, flattened and concatenated (a cell's row in its table)
    starts: torch.Tensor  # (L,) int32: flat index of each level's cell (-1,-1,-1) (its grid's start + padding)
    strides: torch.Tensor  # (L,3) int32: flat-index steps of x, y, z in each level's grid
    corners: torch.Tensor  # (L,8) int32: flat-index offsets of a cell's 8 corners from its lower corner
    half_top: torch.Tensor  # (L,3) float32: half the last cell index along x, y, z ((W-1)/2, (H-1)/2, (D-1)/2)
    low: torch.Tensor  # (L,3) float32: -1, the lowest voxel coordinate kept (one cell below the grid)
    high: torch.Tensor  # (L,3) float32: the highest one (one cell above the grid's last: W, H, D)
    _first_layers: dict[tuple[int, int, int, int], FirstLayer] = field(default_factory=dict, repr=False)

    @staticmethod
    def from_levels(levels: list[spconv.SparseConvTensor]) -> FeatureTables:
        out, grids, strides, tops = [], [], [], []
        for level in levels:
            depth, height, width = (int(s) for s in level.spatial_shape)
            features = level.features
            n = features.shape[0]
            # one cell of padding below and two above each axis: every corner of a clamped coordinate is inside
            index = torch.full((depth + 3, height + 3, width + 3), n, dtype=torch.int32, device=features.device)
            sites = level.indices.long()  # (n,4) batch, d, h, w
            index[sites[:, 1] + 1, sites[:, 2] + 1, sites[:, 3] + 1] = torch.arange(n, dtype=torch.int32,
                                                                                 device=features.device)
            grids.append(index.view(-1))
            strides.append([1, width + 3, (height + 3) * (width + 3)])
            tops.append([width - 1, height - 1, depth - 1])
            out.append(FeatureLevel(table=torch.cat([features, features.new_zeros((1, features.shape[1]))]),
                                    shape=(depth, height, width)))
        device = levels[0].features.device
        sizes = device_values([0] + [g.numel() for g in grids[:-1]], dtype=torch.int32, device=device)
        stride_t = device_values(strides, dtype=torch.int32, device=device)
        top = device_values(tops, dtype=torch.float32, device=device)
        # the (+1, +1, +1) of the padding is folded into each level's start
        starts = torch.cumsum(sizes, 0, dtype=torch.int32) + stride_t.sum(1, dtype=torch.int32)
        # the cell's corners along (x, y, z) = a level's strides: its 8 row offsets
        corners = (cell_corner_offsets(device, torch.int32)[None] * stride_t[:, None]).sum(2, dtype=torch.int32)
        return FeatureTables(out, index=torch.cat(grids), starts=starts, strides=stride_t, corners=corners,
                             half_top=0.5 * top, low=torch.full_like(top, -1.0), high=top + 1.0)

    @property
    def nbytes(self) -> int:
        tables = sum(int(lv.table.numel() * lv.table.element_size()) for lv in self.levels)
        return tables + int(self.index.numel() * self.index.element_size())

    def corner_rows(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows (N,L,8) of every level's table at the 8 corners of the cell holding each grid_sample coordinate
        (N,3) in [-1,1] (x,y,z), and their trilinear weights (N,L,8)."""
        # voxel coordinates (N,L,3), as grid_sample with align_corners; beyond one cell outside: zeros anyway
        p = torch.clamp((grid[:, None, :] + 1.0) * self.half_top, self.low, self.high)
        base = torch.floor(p)
        frac = p.sub_(base)
        lower = (base.int() * self.strides).sum(2, dtype=torch.int32) + self.starts  # (N,L) lower corners' cells
        rows = self.index.index_select(0, (lower[..., None] + self.corners).view(-1)).view(-1, len(self.levels), 8)
        # trilinear weights as the outer product of the per-axis ones, in corner order (bit 0 = x, 2 = z)
        w = torch.stack([1.0 - frac, frac], dim=-1)  # (N,L,3 axes,2 ends)
        weights = (w[..., 2, :, None, None] * w[..., 1, None, :, None] * w[..., 0, None, None, :]).flatten(2)
        return rows, weights

    def features_at(self, grid: torch.Tensor) -> torch.Tensor:
        """Trilinear features of every level at grid_sample coordinates (N,3) → (N, ΣC)."""
        rows, weights = self.corner_rows(grid)
        return _level_features(self.levels, rows, weights)

    def first_layer(self, layer: nn.Conv1d, fold_from: int = FOLD_FROM_LEVEL) -> FirstLayer:
        """``layer`` (fc_0, a pointwise Conv1d over the concatenated levels) folded into these tables from level
        ``fold_from`` on; kept until the layer's weights change (in training the tables live for one step)."""
        key = (id(layer), layer.weight._version, layer.bias._version, fold_from)
        hit = self._first_layers.get(key)
        # a fold made without autograd has no graph: under autograd it is made again (one made with it serves both)
        if hit is None or (torch.is_grad_enabled() and not hit.folded.requires_grad and _needs_grad(self, layer)):
            self._first_layers.clear()
            hit = FirstLayer.fold(self, layer.weight[..., 0], layer.bias, fold_from)
            self._first_layers[key] = hit
        return hit


def _needs_grad(tables: FeatureTables, layer: nn.Conv1d) -> bool:
    return layer.weight.requires_grad or any(level.table.requires_grad for level in tables.levels)


@dataclass(frozen=True, eq=False)
class FirstLayer:
    """``W·features_at(grid) + b`` with the levels from ``fold_from`` on folded: trilinear interpolation is linear, so
    ``W_l·Σ w_i f_i = Σ w_i (W_l f_i)`` — those levels' rows are multiplied by their block of W once per pose, and a
    point gathers the folded rows (one weighted bag over the folded levels' corners) instead of multiplying its
    interpolated features by W."""

    tables: FeatureTables
    fold_from: int
    folded: torch.Tensor  # (Σ n_l+1, out) the folded levels' rows times their block of W, level after level
    offsets: torch.Tensor  # (L - fold_from, 1) row offset of each folded level in ``folded``
    weight: torch.Tensor  # (out, C of the levels before fold_from): the part of W applied per point
    bias: torch.Tensor

    @staticmethod
    def fold(tables: FeatureTables, weight: torch.Tensor, bias: torch.Tensor, fold_from: int) -> FirstLayer:
        widths = [lv.table.shape[1] for lv in tables.levels]
        if weight.shape[1] != sum(widths):
            raise ValueError(f"the layer takes {weight.shape[1]} channels; the levels have {sum(widths)}")
        edges = [sum(widths[:i]) for i in range(len(widths) + 1)]
        blocks = [tables.levels[i].table @ weight[:, edges[i]:edges[i + 1]].t()
                  for i in range(fold_from, len(widths))]
        sizes = device_values([0] + [b.shape[0] for b in blocks[:-1]], dtype=torch.int32, device=weight.device)
        offsets = torch.cumsum(sizes, 0, dtype=torch.int32)[:, None]
        # A level's 8 trilinear weights sum to 1 at every point (zero rows and clamped corners included), so the
        # bias shared out over the folded levels' rows comes out whole in each point's bag: no pass to add it.
        folded = torch.cat(blocks) + bias / len(blocks) if blocks else weight.new_zeros((1, weight.shape[0]))
        return FirstLayer(tables, fold_from, folded, offsets, weight[:, :edges[fold_from]].contiguous(), bias)

    def __call__(self, grid: torch.Tensor) -> torch.Tensor:
        rows, weights = self.tables.corner_rows(grid)
        k = self.fold_from
        if k == len(self.tables.levels):  # nothing folded
            return F.linear(_level_features(self.tables.levels, rows, weights), self.weight, self.bias)
        out = weighted_bag((rows[:, k:] + self.offsets).flatten(1), self.folded,
                           weights[:, k:].flatten(1).to(self.folded.dtype))
        if k == 0:
            return out
        raw = _level_features(self.tables.levels[:k], rows, weights)
        # in place: the bag's gradient does not need its output (under autocast the bag's dtype rules)
        return out.addmm_(raw.to(out.dtype), self.weight.t().to(out.dtype))


def _level_features(levels: list[FeatureLevel], rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The trilinear features of ``levels`` (the first of ``rows``/``weights``' levels) concatenated: (N, ΣC)."""
    return torch.cat([weighted_bag(rows[:, i], level.table, weights[:, i].to(level.table.dtype))
                      for i, level in enumerate(levels)], dim=1)


def weighted_bag(rows: torch.Tensor, table: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_k weights[n,k] · table[rows[n,k]]`` → (N, C): ``embedding_bag``'s weighted sum. Where only the table
    needs a gradient on a CPU (training), its gradient is one sparse (rows × N) product instead of embedding_bag's
    sort-based backward: ~40 % less time for the ~50 bags of a training step (measured on this CPU)."""
    if (table.requires_grad and not weights.requires_grad and torch.is_grad_enabled() and table.device.type == "cpu"
            and table.dtype == torch.float32 and weights.dtype == torch.float32):
        return _SparseGradientBag.apply(rows, table, weights)
    return F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")


class _SparseGradientBag(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, table: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows, weights)
        ctx.num_rows = table.shape[0]
        return F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        rows, weights = ctx.saved_tensors
        points, corners = rows.shape
        bags = torch.arange(points, device=rows.device).repeat_interleave(corners)
        # (the rows index the table by construction: the invariant check would only cost time)
        scatter = torch.sparse_coo_tensor(torch.stack([rows.reshape(-1).long(), bags]), weights.reshape(-1),
                                          (ctx.num_rows, points), check_invariants=False)
        return None, torch.sparse.mm(scatter, grad.contiguous()), None
