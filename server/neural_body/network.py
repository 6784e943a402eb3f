"""Neural Body's network (lib/networks/latent_xyzc.py of the original), checkpoint-compatible.

``NeuralBodyNetwork(num_vertices=6890, num_train_frames=1, *, batchnorm="batch_stats")``

State dict (the original's latent_xyzc.py; 120 entries for SMPL): ``c.weight`` (V,16) structured latent codes,
``latent.weight`` (F,128) per-frame appearance codes, ``xyzc_net.*`` SparseConvNet (spconv 2 KRSC weights),
Conv1d(k=1) heads ``fc_0..2``, ``alpha_fc``, ``feature_fc``, ``latent_fc``, ``view_fc``, ``rgb_fc``.

Methods (batch size 1):

- ``encode_sparse_voxels(sparse_input) -> list[Tensor]``: the four dense feature volumes of one posed body.
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
from typing import Any

import spconv.pytorch as spconv
import torch
import torch.nn.functional as F
from torch import nn

from server.body.skeleton import SMPL_VERTEX_COUNT
from server.neural_body.batchnorm_mode import set_batchnorm_mode
from server.neural_body.embedder import VIEW_FREQS, XYZ_FREQS, encoded_dim, positional_encoding
from server.neural_body.feature_tables import FeatureTables
from server.neural_body.sparse_conv_net import VOLUME_CHANNELS, SparseConvNet
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
        self.actvn = nn.ReLU()
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

    def encode_sparse_voxels(self, sparse_input: SparseInput) -> list[torch.Tensor]:
        """Run the SparseConvNet on the posed body → [net1, net2, net3, net4], each (1, C, d, h, w)."""
        return self.xyzc_net(self._code_tensor(sparse_input))

    def encode_sparse_levels(self, sparse_input: SparseInput) -> list[spconv.SparseConvTensor]:
        """The same four levels as sparse tensors (only their active sites; the dense volumes are zero elsewhere)."""
        return self.xyzc_net.sparse_levels(self._code_tensor(sparse_input))

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
        net = F.relu(_pointwise(self.fc_1, net), inplace=True)
        return F.relu(_pointwise(self.fc_2, net), inplace=True)

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
                   latent_index: int | torch.Tensor) -> torch.Tensor:
        """RGB logits from trunk outputs (N,256), world points (N,3) and normalised view directions (N,3) → (N,3).
        ``feature_fc`` and ``latent_fc`` run as one layer (``feature_latent_layer``)."""
        weight, bias = self.feature_latent_layer(latent_index)
        features = F.linear(net, weight, bias)
        view = positional_encoding(viewdir, VIEW_FREQS)
        xyz = positional_encoding(wpts, XYZ_FREQS)
        net = self.actvn(_pointwise(self.view_fc, torch.cat([features, view, xyz], dim=1)))
        return _pointwise(self.rgb_fc, net)

    def feature_latent_layer(self, latent_index: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) with ``W·net + b == latent_fc(cat[feature_fc(net), latent code])`` for one appearance code.

        There is no activation between the two layers and a batch shares its code, so they are one 256→256 affine
        map: the same function (gradients included) at 40 % of the two layers' arithmetic per point, for one
        256×256×256 product per call."""
        w_feature, b_feature = self.feature_fc.weight[..., 0], self.feature_fc.bias  # (256,256), (256,)
        w_latent, b_latent = self.latent_fc.weight[..., 0], self.latent_fc.bias  # (256,384), (256,)
        width = w_feature.shape[0]
        index = torch.as_tensor(latent_index, dtype=torch.long, device=w_feature.device).reshape(())
        code = self.latent(index)  # (128,)
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


def smpl_grid_coords(pts_smpl: torch.Tensor, sparse_input: SparseInput) -> torch.Tensor:
    """(N,3) SMPL-frame points → (N,3) grid_sample coordinates (x,y,z order) in [-1,1] over the full-res grid."""
    dhw = pts_smpl[:, [2, 1, 0]]
    min_dhw = sparse_input.bounds[0, [2, 1, 0]]
    dhw = (dhw - min_dhw) / sparse_input.voxel_size
    out_sh = torch.tensor(sparse_input.out_sh, dtype=dhw.dtype, device=dhw.device)
    dhw = dhw / out_sh * 2 - 1  # full-resolution out_sh for every level (original's behaviour)
    return dhw[:, [2, 1, 0]]


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
