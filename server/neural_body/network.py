"""Neural Body's network (lib/networks/latent_xyzc.py of the original), checkpoint-compatible.

``NeuralBodyNetwork(num_vertices=6890, num_train_frames=1, *, batchnorm="batch_stats")``

State dict (the original's latent_xyzc.py; 120 entries for SMPL): ``c.weight`` (V,16) structured latent codes,
``latent.weight`` (F,128) per-frame appearance codes, ``xyzc_net.*`` SparseConvNet (spconv 2 KRSC weights),
Conv1d(k=1) heads ``fc_0..2``, ``alpha_fc``, ``feature_fc``, ``latent_fc``, ``view_fc``, ``rgb_fc``.

Methods (batch size 1):

- ``encode_sparse_voxels(sparse_input, rulebook=None) -> list[Tensor]``: the four dense feature volumes of one posed
  body; ``encode_sparse_levels`` the same levels sparse. A ``Rulebook`` kept per body reuses its neighbour pairs.
- ``calculate_density_color(wpts (N,3), viewdir (N,3), volumes, sparse_input, latent_index) -> raw (N,4)``:
  raw = [rgb logits (3), raw density (1)]; sigmoid / ReLU are applied by the renderer (``raw2outputs``).
- ``calculate_density(wpts (N,3), volumes, sparse_input) -> raw alpha (N,1)`` (pre-ReLU; used for meshing).
- ``interpolate_features(wpts, volumes, sparse_input) -> (N,352)``.

``wpts`` are world points in metres, ``viewdir`` normalised world ray directions. ``batchnorm`` picks the eval-mode
BatchNorm statistics ("batch_stats" as the original's run.py, or "running"); see ``batchnorm_mode``.

Module helpers: ``expected_state_dict_shapes(num_vertices, num_train_frames) -> dict[str, tuple[int, ...]]``,
``state_dict_problems(state_dict, expected) -> list[str]``, ``sizes_from_state_dict(state_dict) -> (V, F)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import spconv.pytorch as spconv
import torch
import torch.nn.functional as F
from torch import nn

from server.body.skeleton import SMPL_VERTEX_COUNT
from server.neural_body.batchnorm_mode import set_batchnorm_mode
from server.neural_body.embedder import VIEW_FREQS, XYZ_FREQS, encoded_dim, positional_encoding
from server.neural_body.feature_tables import FeatureTables
from server.neural_body.sparse_conv_net import VOLUME_CHANNELS, Rulebook, SparseConvNet
from server.neural_body.sparse_input import SparseInput

CODE_DIM = 16  # structured latent code per vertex
LATENT_DIM = 128  # per-frame appearance code
XYZ_DIM = encoded_dim(3, XYZ_FREQS)  # 63
VIEW_DIM = encoded_dim(3, VIEW_FREQS)  # 27


def _pointwise(layer: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A Conv1d(k=1) applied to (N, C_in) rows → (N, C_out) (the same affine map, without the [B,C,N] layout)."""
    return F.linear(x, layer.weight[..., 0], layer.bias)


class NeuralBodyNetwork(nn.Module):
    """Structured latent codes + SparseConvNet + NeRF-style MLP of Neural Body."""

    def __init__(self, num_vertices: int = SMPL_VERTEX_COUNT, num_train_frames: int = 1, *,
                 batchnorm: str = "batch_stats") -> None:
        super().__init__()
        if num_vertices < 2 or num_train_frames < 1:
            raise ValueError(f"need num_vertices >= 2 and num_train_frames >= 1; got {num_vertices}, "
                             f"{num_train_frames}")
        self.c = nn.Embedding(num_vertices, CODE_DIM)
        self.xyzc_net = SparseConvNet()
        self.latent = nn.Embedding(num_train_frames, LATENT_DIM)
        self.fc_0 = nn.Conv1d(sum(VOLUME_CHANNELS), 256, 1)
        self.fc_1 = nn.Conv1d(256, 256, 1)
        self.fc_2 = nn.Conv1d(256, 256, 1)
        self.alpha_fc = nn.Conv1d(256, 1, 1)
        self.feature_fc = nn.Conv1d(256, 256, 1)
        self.latent_fc = nn.Conv1d(256 + LATENT_DIM, 256, 1)
        self.view_fc = nn.Conv1d(256 + VIEW_DIM + XYZ_DIM, 128, 1)
        self.rgb_fc = nn.Conv1d(128, 3, 1)
        set_batchnorm_mode(self, batchnorm)

    @property
    def num_vertices(self) -> int:
        return int(self.c.num_embeddings)

    @property
    def num_train_frames(self) -> int:
        return int(self.latent.num_embeddings)

    # ------------------------------------------------------------------ sparse conv

    def encode_sparse_voxels(self, sparse_input: SparseInput, rulebook: Rulebook | None = None) -> list[torch.Tensor]:
        """Run the SparseConvNet on the posed body → [net1, net2, net3, net4], each (1, C, d, h, w). ``rulebook``
        (one per voxelised body) keeps the neighbour pairs for the next encode of the same body."""
        return [level.dense() for level in self.encode_sparse_levels(sparse_input, rulebook)]

    def encode_sparse_levels(self, sparse_input: SparseInput,
                             rulebook: Rulebook | None = None) -> list[spconv.SparseConvTensor]:
        """The same four levels as sparse tensors (only their active sites; the dense volumes are zero elsewhere)."""
        return self.xyzc_net.sparse_levels(self._code_tensor(sparse_input), rulebook)

    def _code_tensor(self, sparse_input: SparseInput) -> spconv.SparseConvTensor:
        if sparse_input.num_vertices != self.num_vertices:
            raise ValueError(f"the body has {sparse_input.num_vertices} vertices but the network holds codes for "
                             f"{self.num_vertices}; use the body model the actor was trained with")
        features = self.c.weight  # all V codes in vertex order (duplicate voxels included)
        return spconv.SparseConvTensor(features, sparse_input.indices().to(features.device),
                                       list(sparse_input.out_sh), 1)

    # ------------------------------------------------------------------ point queries

    def grid_coords(self, wpts: torch.Tensor, sparse_input: SparseInput) -> torch.Tensor:
        """(N,3) world points → (N,3) grid_sample coordinates (x,y,z order) in [-1,1] over the full-res grid."""
        return smpl_grid_coords(sparse_input.world_to_smpl(wpts), sparse_input)

    def interpolate_features(self, wpts: torch.Tensor, volumes: list[torch.Tensor] | FeatureTables,
                             sparse_input: SparseInput) -> torch.Tensor:
        """Trilinear features of net1..net4 at world points: (N,3) → (N,352). ``volumes`` are the dense volumes of
        ``encode_sparse_voxels`` or the same levels as ``FeatureTables`` (the fast path's; the same values)."""
        grid = self.grid_coords(wpts, sparse_input)
        if isinstance(volumes, FeatureTables):
            return volumes.features_at(grid)
        return features_at(grid, volumes)

    def trunk(self, features: torch.Tensor) -> torch.Tensor:
        """fc_0..fc_2 with ReLU: (N,352) interpolated features → (N,256)."""
        return self.trunk_after_first(_pointwise(self.fc_0, features))

    def trunk_after_first(self, first: torch.Tensor) -> torch.Tensor:
        """The trunk from fc_0's output (N,256) on. The ReLUs work in place (no linear layer needs its own output
        for its gradient), which saves a pass of allocation per layer."""
        net = F.relu(first, inplace=True)
        net = linear_relu(net, self.fc_1.weight[..., 0], self.fc_1.bias)
        return linear_relu(net, self.fc_2.weight[..., 0], self.fc_2.bias)

    def trunk_at(self, grid: torch.Tensor, volumes: list[torch.Tensor] | FeatureTables) -> torch.Tensor:
        """The trunk at grid_sample coordinates (N,3) → (N,256); with ``FeatureTables`` fc_0 comes folded into the
        coarse levels' tables (``FeatureTables.first_layer``: the same values, less arithmetic)."""
        if isinstance(volumes, FeatureTables):
            return self.trunk_after_first(volumes.first_layer(self.fc_0)(grid))
        return self.trunk(features_at(grid, volumes))

    def density_head(self, net: torch.Tensor) -> torch.Tensor:
        """Raw (pre-ReLU) density from trunk outputs: (N,256) → (N,1)."""
        return _pointwise(self.alpha_fc, net)

    def color_head(self, net: torch.Tensor, wpts: torch.Tensor, viewdir: torch.Tensor,
                   latent_index: int | torch.Tensor, layer: ColourLayer | None = None) -> torch.Tensor:
        """RGB logits from trunk outputs (N,256), world points (N,3) and normalised view directions (N,3) → (N,3).
        ``feature_fc``, ``latent_fc`` and ``view_fc`` run as one layer (``colour_layer``; pass it as ``layer`` when
        calling batch after batch with one appearance code)."""
        w_net, w_encoded, bias = layer if layer is not None else self.colour_layer(latent_index)
        encoded = torch.cat([positional_encoding(viewdir, VIEW_FREQS), positional_encoding(wpts, XYZ_FREQS)], dim=1)
        # in place: neither product needs its output for its gradient (under autocast the first one's dtype rules)
        net = torch.addmm(bias, net, w_net.t())
        net = net.addmm_(encoded.to(net.dtype), w_encoded.t().to(net.dtype))
        return _pointwise(self.rgb_fc, F.relu(net, inplace=True))

    def colour_layer(self, latent_index: int | torch.Tensor) -> ColourLayer:
        """(W_net, W_encoded, b) with ``W_net·net + W_encoded·[view PE, xyz PE] + b`` equal to ``view_fc`` of
        ``[latent_fc([feature_fc(net), latent code]), view PE, xyz PE]`` for one appearance code.

        There is no activation between the three layers and a batch shares its code, so they are one affine map of
        the trunk output and the encodings: the same function (gradients included) at 40 % of the arithmetic per
        point (256·128 + 90·128 multiplications instead of 256·256 + 346·128), for two small products per call."""
        weight, bias = self.feature_latent_layer(latent_index)  # (256,256), (256,)
        w_view = self.view_fc.weight[..., 0]  # (128, 256 + 27 + 63)
        w_features = w_view[:, :weight.shape[0]]
        return ColourLayer(w_features @ weight, w_view[:, weight.shape[0]:],
                           torch.addmv(self.view_fc.bias, w_features, bias))

    def feature_latent_layer(self, latent_index: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) with ``W·net + b == latent_fc(cat[feature_fc(net), latent code])`` for one appearance code (no
        activation between the two layers, one code per batch: one 256→256 affine map)."""
        w_feature, b_feature = self.feature_fc.weight[..., 0], self.feature_fc.bias  # (256,256), (256,)
        w_latent, b_latent = self.latent_fc.weight[..., 0], self.latent_fc.bias  # (256,384), (256,)
        width = w_feature.shape[0]
        if isinstance(latent_index, torch.Tensor):
            code = self.latent(latent_index.to(device=w_feature.device, dtype=torch.long).reshape(()))  # (128,)
        else:  # a row of the table: no index tensor copied to the device
            code = self.latent.weight[int(latent_index)]
        w_net = w_latent[:, :width]
        return w_net @ w_feature, torch.addmv(torch.addmv(b_latent, w_net, b_feature), w_latent[:, width:], code)

    def calculate_density(self, wpts: torch.Tensor, volumes: list[torch.Tensor] | FeatureTables,
                          sparse_input: SparseInput) -> torch.Tensor:
        """Raw (pre-ReLU) density at world points: (N,3) → (N,1)."""
        return self.density_head(self.trunk_at(self.grid_coords(wpts, sparse_input), volumes))

    def calculate_density_color(self, wpts: torch.Tensor, viewdir: torch.Tensor,
                                volumes: list[torch.Tensor] | FeatureTables,
                                sparse_input: SparseInput, latent_index: int | torch.Tensor) -> torch.Tensor:
        """Raw [rgb logits, density] at world points: wpts (N,3), viewdir (N,3) normalised → (N,4)."""
        net = self.trunk_at(self.grid_coords(wpts, sparse_input), volumes)
        alpha = self.density_head(net)
        rgb = self.color_head(net, wpts, viewdir, latent_index)
        return torch.cat([rgb, alpha], dim=1)


class ColourLayer(NamedTuple):
    """The colour head's first layer for one appearance code (``NeuralBodyNetwork.colour_layer``)."""

    w_net: torch.Tensor  # (128, 256) applied to the trunk output
    w_encoded: torch.Tensor  # (128, 27 + 63) applied to [view direction PE, world xyz PE]
    bias: torch.Tensor  # (128,)


def linear_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """relu(x·Wᵀ + b) for (N, C_in) rows. On a CPU without autograd or autocast it is one oneDNN call with the bias
    and the ReLU fused into the product (measured: ~8 % of a frame's time went to copying the bias into every
    output row before the product, and to the separate ReLU pass); elsewhere ``linear`` then an in-place ReLU."""
    if (_FUSED_LINEAR_RELU and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad))):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu", [], "")
    return F.relu(F.linear(x, weight, bias), inplace=True)


# oneDNN's fused linear (what torch.compile's CPU backend emits) is present in CPU builds with MKL-DNN
_FUSED_LINEAR_RELU = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def smpl_grid_coords(pts_smpl: torch.Tensor, sparse_input: SparseInput) -> torch.Tensor:
    """(N,3) SMPL-frame points → (N,3) grid_sample coordinates (x,y,z order) in [-1,1] over the full-res grid."""
    # per axis in xyz order, the original's arithmetic in (d,h,w) order: the same values, no reordering copies
    xyz = (pts_smpl - sparse_input.bounds[0]) / sparse_input.voxel_size
    extent = sparse_input.grid_extent  # full-resolution out_sh for every level (original's behaviour)
    return xyz / extent.to(xyz.dtype) * 2 - 1


def features_at(grid: torch.Tensor, volumes: list[torch.Tensor]) -> torch.Tensor:
    """Trilinear features of net1..net4 at grid_sample coordinates (N,3) → (N,352)."""
    grid = grid.view(1, 1, 1, -1, 3)
    feats = [F.grid_sample(v, grid.to(v.dtype), padding_mode="zeros", align_corners=True) for v in volumes]
    return torch.cat(feats, dim=1).reshape(sum(VOLUME_CHANNELS), -1).t()


# ---------------------------------------------------------------------- state-dict checks

def expected_state_dict_shapes(num_vertices: int, num_train_frames: int) -> dict[str, tuple[int, ...]]:
    """Key → shape of this project's state dict (spconv-2 layout) for the given sizes."""
    network = NeuralBodyNetwork(num_vertices, num_train_frames)
    return {key: tuple(value.shape) for key, value in network.state_dict().items()}


def sizes_from_state_dict(state_dict: Mapping[str, Any]) -> tuple[int, int]:
    """(num_vertices, num_train_frames) from ``c.weight`` and ``latent.weight``."""
    for key, width in (("c.weight", CODE_DIM), ("latent.weight", LATENT_DIM)):
        value = state_dict.get(key)
        if not isinstance(value, torch.Tensor) or value.ndim != 2 or value.shape[1] != width:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"state dict entry {key!r} must be a [rows, {width}] tensor; got {got}")
    return int(state_dict["c.weight"].shape[0]), int(state_dict["latent.weight"].shape[0])


def state_dict_problems(state_dict: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Human-readable list of missing keys, unexpected keys and shape mismatches (empty when it matches)."""
    problems: list[str] = []
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    for key, shape in expected.items():
        value = state_dict.get(key)
        if value is None:
            continue
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        if got != shape:
            problems.append(f"{key}: expected shape {list(shape)}, got "
                            f"{list(got) if got is not None else type(value).__name__}")
    return problems
