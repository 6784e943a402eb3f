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

    def sparse_levels(self, x: spconv.SparseConvTensor) -> list[spconv.SparseConvTensor]:
        """The four feature levels as sparse tensors (active sites only): what ``forward`` densifies."""
        algo = conv_algo_for(x.features.device)
        if any(conv.algo != algo for conv in self.sparse_convs()):
            self.set_algo(algo)
        shared = _shared_voxels(x)
        if shared is None:
            net = self.down0(self.conv0(x))
        else:  # vertices that share a voxel: the native algorithm's sums, on any device (see _subm_rows)
            rows = x.features
            for layer in self.conv0:
                rows = _subm_rows(layer, rows, shared) if isinstance(layer, spconv.SubMConv3d) else layer(rows)
            net = self.down0(shared.voxels.replace_feature(shared.sums(rows)))
        net1 = self.conv1(net)
        net = self.down1(net1)
        net2 = self.conv2(net)
        net = self.down2(net2)
        net3 = self.conv3(net)
        net = self.down3(net3)
        net4 = self.conv4(net)
        return [net1, net2, net3, net4]


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
    is_first = x.features.new_zeros((len(inverse), 1))
    is_first[first] = 1.0
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


def _subm_rows(conv: spconv.SubMConv3d, rows: torch.Tensor, shared: SharedVoxels) -> torch.Tensor:
    """A submanifold conv (bias-free, odd kernel) of rows that share voxels, as the native algorithm pairs them."""
    weight = conv.weight  # (out, kD, kH, kW, in), KRSC
    taps = weight.shape[1] * weight.shape[2] * weight.shape[3]
    order = torch.arange(taps, device=weight.device).reshape(1, *weight.shape[1:4], 1)
    centre = taps // 2
    before = torch.func.functional_call(conv, {"weight": weight * (order < centre)},
                                        (shared.voxels.replace_feature(shared.sums(rows)),)).features
    after = torch.func.functional_call(conv, {"weight": weight * (order > centre)},
                                       (shared.voxels.replace_feature(rows[shared.first]),)).features
    k = weight.shape[1] // 2
    own = rows @ weight[:, k, k, k, :].T
    return own + after[shared.inverse] + before[shared.inverse] * shared.is_first
