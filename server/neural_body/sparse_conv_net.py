"""Neural Body's SparseConvNet on spconv 2.x (module names and indices of the original, weights in KRSC layout).

``SparseConvNet()(x: spconv.SparseConvTensor) -> list[Tensor]`` returns the four dense feature volumes
``[net1 (B,32,D/2,H/2,W/2), net2 (B,64,D/4,...), net3 (B,128,D/8,...), net4 (B,128,D/16,...)]``; spatial order is
(d,h,w) = (z,y,x) of the SMPL frame. The full-resolution conv0 output is not returned (the original's latent_xyzc.py).

Every block is a ``SparseSequential`` with the conv / BatchNorm1d(eps=1e-3, momentum=0.01) / ReLU slots at the
original indices, so state-dict keys read ``conv0.0.weight``, ``conv0.1.running_mean``, ``down0.0.weight``, ...
Sparse conv weights are ``[out, kD, kH, kW, in]`` (spconv 2 KRSC); spconv 1.x checkpoints hold ``[kD, kH, kW, in,
out]`` and are converted by ``server.neural_body.checkpoint_import``.

The conv algorithm follows the device of the input: ``ConvAlgo.Native`` on CPU (the only one spconv's CPU path
has), spconv's default implicit GEMM (``MaskImplicitGemm``) on CUDA. ``conv_algo_for(device)`` names the choice.
Vertices that share a voxel are paired as the native algorithm pairs them on every device (see "shared voxels"
below): the two algorithms differ there, and the encode must not depend on the device.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import spconv.pytorch as spconv
import torch
from spconv.core import ConvAlgo
from torch import nn

from server.neural_body.batchnorm_mode import FrameBatchNorm1d

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
VOLUME_CHANNELS = (32, 64, 128, 128)  # net1..net4, concatenated → 352 = fc_0 input


def conv_algo_for(device: torch.device | str) -> ConvAlgo:
    """spconv algorithm for a device: Native on CPU, implicit GEMM on CUDA."""
    return ConvAlgo.MaskImplicitGemm if torch.device(device).type == "cuda" else ConvAlgo.Native


def _bn(channels: int) -> FrameBatchNorm1d:
    return FrameBatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _subm_block(in_ch: int, out_ch: int, key: str, convs: int) -> spconv.SparseSequential:
    """``convs`` × (SubMConv3d k3 · BN · ReLU), sharing one indice_key: double_conv (2) / triple_conv (3)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            spconv.SubMConv3d(in_ch if i == 0 else out_ch, out_ch, 3, bias=False, indice_key=key, algo=ConvAlgo.Native),
            _bn(out_ch),
            nn.ReLU(),
        ]
    return spconv.SparseSequential(*layers)


def _stride_block(in_ch: int, out_ch: int, key: str) -> spconv.SparseSequential:
    """SparseConv3d k3 s2 p1 · BN · ReLU (halves each spatial dimension of an even-sized grid)."""
    return spconv.SparseSequential(
        spconv.SparseConv3d(in_ch, out_ch, 3, 2, padding=1, bias=False, indice_key=key, algo=ConvAlgo.Native),
        _bn(out_ch),
        nn.ReLU(),
    )


class SparseConvNet(nn.Module):
    """Sparse 3D CNN over the posed body's structured latent codes (channels 16-32-64-128-128)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = _subm_block(16, 16, "subm0", 2)
        self.down0 = _stride_block(16, 32, "down0")
        self.conv1 = _subm_block(32, 32, "subm1", 2)
        self.down1 = _stride_block(32, 64, "down1")
        self.conv2 = _subm_block(64, 64, "subm2", 3)
        self.down2 = _stride_block(64, 128, "down2")
        self.conv3 = _subm_block(128, 128, "subm3", 3)
        self.down3 = _stride_block(128, 128, "down3")
        self.conv4 = _subm_block(128, 128, "subm4", 3)

    def sparse_convs(self) -> list[Any]:
        return [m for m in self.modules() if isinstance(m, spconv.conv.SparseConvolution)]

    def set_algo(self, algo: ConvAlgo) -> None:
        """Use ``algo`` in every sparse conv (layers sharing an indice_key must agree, so all change together)."""
        for conv in self.sparse_convs():
            conv.algo = algo

    def forward(self, x: spconv.SparseConvTensor) -> list[torch.Tensor]:
        return [level.dense() for level in self.sparse_levels(x)]

    def sparse_levels(self, x: spconv.SparseConvTensor,
                      rulebook: Rulebook | None = None) -> list[spconv.SparseConvTensor]:
        """The four feature levels as sparse tensors (active sites only): what ``forward`` densifies. ``rulebook``
        keeps the submanifold blocks' neighbour pairs for the next encode of the same voxels (a training frame's)."""
        algo = conv_algo_for(x.features.device)
        if any(conv.algo != algo for conv in self.sparse_convs()):
            self.set_algo(algo)
        book = rulebook if rulebook is not None else Rulebook()
        shared = book.shared_voxels(x)
        if shared is None:
            net = book.run(self.conv0, x, "subm0")
        else:  # vertices that share a voxel: the native algorithm's sums, on any device (see _subm_rows)
            rows, voxels = x.features, book.attach(shared.voxels, "subm0")
            for layer in self.conv0:
                if isinstance(layer, spconv.SubMConv3d):
                    rows, voxels = _subm_rows(layer, rows, shared, voxels)
                else:
                    rows = layer(rows)
            book.keep(voxels, "subm0")
            net = voxels.replace_feature(shared.sums(rows))
        net1 = book.run(self.conv1, self.down0(net), "subm1")
        net2 = book.run(self.conv2, self.down1(net1), "subm2")
        net3 = book.run(self.conv3, self.down2(net2), "subm3")
        net4 = book.run(self.conv4, self.down3(net3), "subm4")
        return [net1, net2, net3, net4]


class Rulebook:
    """The submanifold blocks' neighbour pairs (spconv's per-``indice_key`` data) and the shared-voxel layout of one
    voxelised body, kept between encodes of the same voxels: building them is ~15 % of an encode's forward pass, and
    a training frame is encoded again every few dozen steps. Strided convs make their own pairs each time (spconv
    reuses only submanifold ones); a kept pair set is used only where its input sites equal the block's, so a
    strided conv that ordered its output differently costs a rebuild, never a wrong neighbour."""

    def __init__(self) -> None:
        self.pairs: dict[str, Any] = {}
        self._shared: tuple[torch.Tensor, SharedVoxels | None] | None = None

    @property
    def nbytes(self) -> int:
        fields = [v for data in self.pairs.values() for v in vars(data).values()]
        tensors = [t for v in fields for t in (v if isinstance(v, list) else [v]) if isinstance(t, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def shared_voxels(self, x: spconv.SparseConvTensor) -> SharedVoxels | None:
        if self._shared is None or not _same_sites(self._shared[0], x.indices):
            self._shared = (x.indices, _shared_voxels(x))
        return self._shared[1]

    def attach(self, x: spconv.SparseConvTensor, key: str) -> spconv.SparseConvTensor:
        """``x`` with the kept pairs of ``key`` when they were built for its sites."""
        data = self.pairs.get(key)
        if data is None or key in x.indice_dict or not _same_sites(data.indices, x.indices):
            return x
        out = x.shadow_copy()
        out.indice_dict = {**x.indice_dict, key: data}
        return out

    def keep(self, out: spconv.SparseConvTensor, key: str) -> None:
        data = out.indice_dict.get(key)
        if data is not None:
            self.pairs[key] = data

    def run(self, block: spconv.SparseSequential, x: spconv.SparseConvTensor, key: str) -> spconv.SparseConvTensor:
        """A submanifold block over ``x`` with the kept pairs of its ``key``; keeps the pairs it used."""
        out = block(self.attach(x, key))
        self.keep(out, key)
        return out


def _same_sites(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.device == b.device and bool(torch.equal(a, b)))


# ---------------------------------------------------------------------------------------------------- shared voxels
# The input holds one row per vertex, and at 5 mm several vertices share a voxel (about 30 % of the demo body's).
# spconv's algorithms disagree on such duplicates: the CUDA implicit GEMM reads one row per voxel (which one is not
# defined), so the same actor rendered differently on a GPU and from one encode to the next, while the native (CPU)
# algorithm, which every actor here was trained with, pairs them deterministically (measured tap by tap): the centre
# tap reads the row itself; a tap after the centre (kernel offset index > centre) reads the first row (lowest index)
# of the neighbouring voxel; a tap before the centre adds every row of the neighbouring voxel, into the first row of
# a voxel only (its other rows get nothing from it). The first block reproduces exactly that on every device, with
# two submanifold convs over the unique voxels (the sums, the first rows) and half kernels; the strided conv after it
# sums a voxel's rows, as the native one does.


def _shared_voxels(x: spconv.SparseConvTensor) -> SharedVoxels | None:
    """How the rows of ``x`` share voxels, or None when every row has its own."""
    # one integer key per voxel (a 1-D unique is far faster than unique over rows, which compares row by row)
    sizes = [x.batch_size, *(int(s) for s in x.spatial_shape)]
    key = x.indices[:, 0].long()
    for axis in range(1, 4):
        key = key * sizes[axis] + x.indices[:, axis].long()
    keys, inverse = torch.unique(key, return_inverse=True)
    if len(keys) == len(x.indices):
        return None
    unique = torch.empty((len(keys), 4), dtype=x.indices.dtype, device=keys.device)
    for axis in range(3, 0, -1):
        unique[:, axis] = keys % sizes[axis]
        keys = keys // sizes[axis]
    unique[:, 0] = keys
    rows = torch.arange(len(inverse), device=inverse.device)
    first = torch.full((len(unique),), len(inverse), dtype=rows.dtype, device=rows.device)
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")
    is_first = x.features.new_zeros((len(inverse), 1)).index_fill_(0, first, 1.0)
    empty = x.features.new_zeros((len(unique), x.features.shape[1]))
    return SharedVoxels(spconv.SparseConvTensor(empty, unique, x.spatial_shape, x.batch_size), inverse, first,
                        is_first)


@dataclass(frozen=True)
class SharedVoxels:
    voxels: spconv.SparseConvTensor  # the unique voxels (features to be replaced)
    inverse: torch.Tensor  # (N,) each row's voxel
    first: torch.Tensor  # (U,) each voxel's first row
    is_first: torch.Tensor  # (N,1) 1.0 for the first row of its voxel, else 0.0

    def sums(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.new_zeros((len(self.first), rows.shape[1])).index_add_(0, self.inverse, rows)


def _subm_rows(conv: spconv.SubMConv3d, rows: torch.Tensor, shared: SharedVoxels,
               voxels: spconv.SparseConvTensor | None = None) -> tuple[torch.Tensor, spconv.SparseConvTensor]:
    """A submanifold conv (bias-free, odd kernel) of rows that share voxels, as the native algorithm pairs them;
    returns the rows and the unique voxels' tensor that ran it (``voxels``, default ``shared.voxels``, whose
    neighbour pairs it reuses and carries). The taps before the centre read the voxel sums and add into a voxel's
    first row only; the taps after it read the first rows and add into every row: one conv runs both, block-diagonal
    over [sums | first rows] → [before | after] (one pass over the pairs instead of two; the first block is narrow,
    so the pass, not the arithmetic, is its cost)."""
    weight = conv.weight  # (out, kD, kH, kW, in), KRSC
    taps = weight.shape[1] * weight.shape[2] * weight.shape[3]
    order = torch.arange(taps, device=weight.device).reshape(1, *weight.shape[1:4], 1)
    centre = taps // 2
    zeros = torch.zeros_like(weight)
    blocks = torch.cat([torch.cat([weight * (order < centre), zeros], dim=4),
                        torch.cat([zeros, weight * (order > centre)], dim=4)], dim=0)
    sides = torch.cat([shared.sums(rows), rows[shared.first]], dim=1)
    voxels = (voxels if voxels is not None else shared.voxels).replace_feature(sides)
    out = torch.func.functional_call(_block_twin(conv), {"weight": blocks}, (voxels,))
    before, after = out.features[shared.inverse].chunk(2, dim=1)
    k = weight.shape[1] // 2
    own = rows @ weight[:, k, k, k, :].T
    return own + after + before * shared.is_first, out


_BLOCK_TWINS = threading.local()  # per thread: functional_call swaps a module's weights while it runs


def _block_twin(conv: spconv.SubMConv3d) -> spconv.SubMConv3d:
    """A weightless copy of ``conv`` (same key, kernel, algorithm) twice as wide on both channel axes, to be run by
    ``functional_call`` with the block-diagonal half kernels."""
    twins = _BLOCK_TWINS.__dict__.setdefault("twins", {})
    key = (conv.in_channels, conv.out_channels, tuple(conv.kernel_size), conv.indice_key, conv.algo)
    twin = twins.get(key)
    if twin is None:
        with torch.device("meta"):  # no weights of its own: functional_call supplies them
            twin = spconv.SubMConv3d(2 * conv.in_channels, 2 * conv.out_channels, conv.kernel_size, bias=False,
                                     indice_key=conv.indice_key, algo=conv.algo)
        twins[key] = twin
    return twin
