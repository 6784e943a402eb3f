"""Network layout (state dict of the original's latent_xyzc.py) and point-query semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from server.neural_body.embedder import positional_encoding
from server.neural_body.network import NeuralBodyNetwork, sizes_from_state_dict, state_dict_problems
from server.neural_body.sparse_input import prepare_sparse_input
from tests.server.neural_body.nb_fixtures import ellipsoid_body, random_network


def original_layout(num_vertices: int, num_frames: int) -> dict[str, tuple[int, ...]]:
    """§1.5 written out: key → shape, with the sparse-conv weights in spconv-2 KRSC order [out,k,k,k,in]."""
    shapes: dict[str, tuple[int, ...]] = {"c.weight": (num_vertices, 16)}

    def bn(prefix: str, ch: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (ch,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    blocks = [("conv0", 16, 16, 2), ("down0", 16, 32, 0), ("conv1", 32, 32, 2), ("down1", 32, 64, 0),
              ("conv2", 64, 64, 3), ("down2", 64, 128, 0), ("conv3", 128, 128, 3), ("down3", 128, 128, 0),
              ("conv4", 128, 128, 3)]
    for name, cin, cout, convs in blocks:
        for i in range(max(convs, 1)):
            shapes[f"xyzc_net.{name}.{3 * i}.weight"] = (cout, 3, 3, 3, cin if i == 0 else cout)
            bn(f"xyzc_net.{name}.{3 * i + 1}", cout)
    shapes["latent.weight"] = (num_frames, 128)
    for name, cin, cout in [("fc_0", 352, 256), ("fc_1", 256, 256), ("fc_2", 256, 256), ("alpha_fc", 256, 1),
                            ("feature_fc", 256, 256), ("latent_fc", 384, 256), ("view_fc", 346, 128),
                            ("rgb_fc", 128, 3)]:
        shapes[f"{name}.weight"] = (cout, cin, 1)
        shapes[f"{name}.bias"] = (cout,)
    return shapes


def test_state_dict_matches_the_original_for_smpl() -> None:
    network = NeuralBodyNetwork(6890, 300)
    state = network.state_dict()
    expected = original_layout(6890, 300)
    assert len(state) == 120
    assert state_dict_problems(state, expected) == []
    assert sizes_from_state_dict(state) == (6890, 300)
    trainable = sum(p.numel() for name, p in network.named_parameters() if name != "latent.weight")
    assert abs(trainable - 4.33e6) < 0.01e6
    bn = network.xyzc_net.conv0[1]
    assert (bn.eps, bn.momentum) == (1e-3, 0.01)
    assert all(conv.bias is None for conv in network.xyzc_net.sparse_convs())


def test_state_dict_problems_lists_keys_and_shapes() -> None:
    expected = original_layout(50, 2)
    state = {k: torch.zeros(s) for k, s in expected.items() if k != "fc_0.bias"}
    state["extra.weight"] = torch.zeros(1)
    state["rgb_fc.weight"] = torch.zeros(4, 128, 1)
    problems = "\n".join(state_dict_problems(state, expected))
    assert "missing keys (1): fc_0.bias" in problems
    assert "unexpected keys (1): extra.weight" in problems
    assert "rgb_fc.weight: expected shape [3, 128, 1], got [4, 128, 1]" in problems


def _manual_trilinear(volume: np.ndarray, index: np.ndarray) -> np.ndarray:
    """volume (C,D,H,W), continuous index (d,h,w) inside → (C,) (zero outside), written independently of torch."""
    base = np.floor(index).astype(int)
    frac = index - base
    out = np.zeros(volume.shape[0])
    for corner in np.ndindex(2, 2, 2):
        idx = base + np.array(corner)
        weight = np.prod(np.where(np.array(corner) == 1, frac, 1 - frac))
        if np.all(idx >= 0) and np.all(idx < np.array(volume.shape[1:])):
            out += weight * volume[(slice(None), *idx)]
    return out


def test_feature_interpolation_uses_full_resolution_out_sh_for_every_level() -> None:
    torch.manual_seed(1)
    verts = ellipsoid_body(200)
    Rh, Th = np.array([0.2, -0.4, 1.1]), np.array([0.3, -0.1, 0.05])
    sparse = prepare_sparse_input(verts, Rh, Th)
    network = NeuralBodyNetwork(200, 1)
    out_sh = np.array(sparse.out_sh)
    volumes = [torch.randn(1, c, *(out_sh // 2 ** (k + 1))) for k, c in enumerate((32, 64, 128, 128))]
    wpts = torch.from_numpy(verts[:5]) + 0.003
    feats = network.interpolate_features(wpts, volumes, sparse).numpy()
    assert feats.shape == (5, 352)

    R = sparse.R.numpy().astype(np.float64)
    smpl = (wpts.numpy().astype(np.float64) - sparse.Th.numpy()) @ R
    dhw = (smpl[:, ::-1] - sparse.bounds.numpy()[0, ::-1]) / 0.005
    for p in range(5):
        expected = []
        for vol in volumes:
            size = np.array(vol.shape[2:])
            # align_corners=True with the grid normalised by the full-res out_sh: index = dhw / out_sh · (size − 1)
            expected.append(_manual_trilinear(vol[0].numpy(), dhw[p] / out_sh * (size - 1)))
        np.testing.assert_allclose(feats[p], np.concatenate(expected), rtol=1e-4, atol=1e-4)


def test_density_color_heads() -> None:
    verts = ellipsoid_body(150)
    network = random_network(150, 4)
    sparse = prepare_sparse_input(verts, np.zeros(3), np.zeros(3))
    with torch.no_grad():
        volumes = network.encode_sparse_voxels(sparse)
        assert [tuple(v.shape[1:2]) for v in volumes] == [(32,), (64,), (128,), (128,)]
        levels = [tuple(s // 2**k for s in sparse.out_sh) for k in (1, 2, 3, 4)]
        assert [tuple(v.shape[2:]) for v in volumes] == levels
        wpts = torch.from_numpy(verts[:20])
        viewdir = F.normalize(torch.randn(20, 3), dim=1)
        raw = network.calculate_density_color(wpts, viewdir, volumes, sparse, 2)
        density = network.calculate_density(wpts, volumes, sparse)
        other_frame = network.calculate_density_color(wpts, viewdir, volumes, sparse, 3)
    assert raw.shape == (20, 4) and density.shape == (20, 1)
    torch.testing.assert_close(raw[:, 3:], density)  # raw density: no activation in the network
    torch.testing.assert_close(other_frame[:, 3], raw[:, 3])  # the frame code only changes colour
    assert not torch.allclose(other_frame[:, :3], raw[:, :3])

    # the colour head by hand: view_fc input = [latent_fc(256), view PE(27), world-xyz PE(63)]
    with torch.no_grad():
        net = network.interpolate_features(wpts, volumes, sparse)
        for layer in (network.fc_0, network.fc_1, network.fc_2):
            net = torch.relu(F.conv1d(net.t()[None], layer.weight, layer.bias)[0].t())
        feature = F.conv1d(net.t()[None], network.feature_fc.weight, network.feature_fc.bias)[0].t()
        latent = network.latent.weight[2].expand(20, 128)
        feature = F.conv1d(torch.cat([feature, latent], 1).t()[None], network.latent_fc.weight,
                           network.latent_fc.bias)[0].t()
        x = torch.cat([feature, positional_encoding(viewdir, 4), positional_encoding(wpts, 10)], 1)
        x = torch.relu(F.conv1d(x.t()[None], network.view_fc.weight, network.view_fc.bias)[0].t())
        rgb = F.conv1d(x.t()[None], network.rgb_fc.weight, network.rgb_fc.bias)[0].t()
    torch.testing.assert_close(raw[:, :3], rgb, rtol=1e-5, atol=1e-5)


def test_encode_rejects_a_body_with_another_vertex_count() -> None:
    network = NeuralBodyNetwork(100, 1)
    sparse = prepare_sparse_input(ellipsoid_body(120), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="120 vertices but the network holds codes for 100"):
        network.encode_sparse_voxels(sparse)


def test_duplicate_voxels_are_passed_to_spconv() -> None:
    verts = ellipsoid_body(80, seed=4)
    verts[40:60] = verts[:20]  # 20 vertices share voxels with others
    network = random_network(80, 1, seed=4)
    sparse = prepare_sparse_input(verts, np.zeros(3), np.zeros(3))
    assert len({tuple(c) for c in sparse.coords.tolist()}) <= 60 and sparse.coords.shape[0] == 80
    with torch.no_grad():
        volumes = network.encode_sparse_voxels(sparse)
    assert all(bool(torch.isfinite(v).all()) for v in volumes)
    assert all(float(v.abs().sum()) > 0 for v in volumes)


def test_shared_voxels_are_paired_as_spconvs_native_algorithm_does() -> None:
    """The first block's rows that share voxels, computed on the unique voxels (what every device runs), equal
    spconv's native (CPU) submanifold conv of the rows themselves: the pairing every actor was trained with."""
    import spconv.pytorch as spconv
    from spconv.core import ConvAlgo

    from server.neural_body.sparse_conv_net import _shared_voxels, _subm_rows

    generator = torch.Generator().manual_seed(7)
    voxels = torch.randint(0, 6, (300, 3), generator=generator)  # ~170 voxels for 300 rows
    indices = torch.cat([torch.zeros(300, 1, dtype=torch.long), voxels], 1).int()
    rows = torch.randn(300, 4, generator=generator)
    conv = spconv.SubMConv3d(4, 5, 3, bias=False, indice_key="k", algo=ConvAlgo.Native)
    x = spconv.SparseConvTensor(rows, indices, [6, 6, 6], 1)
    shared = _shared_voxels(x)
    assert shared is not None and len(shared.first) < 200
    with torch.no_grad():
        torch.testing.assert_close(_subm_rows(conv, rows, shared)[0], conv(x).features, rtol=1e-5, atol=1e-5)
    unique = spconv.SparseConvTensor(rows[:5], torch.tensor([[0, i, 0, 0] for i in range(5)]).int(), [6, 6, 6], 1)
    assert _shared_voxels(unique) is None


def test_encoding_a_body_with_shared_voxels_equals_the_native_layers() -> None:
    """The whole SparseConvNet with shared voxels: the same four levels as spconv's native layers applied to the
    rows directly (so a GPU, whose implicit GEMM pairs duplicates otherwise, encodes what the CPU does)."""
    verts = ellipsoid_body(200, seed=5)
    verts[100:160] = verts[:60] + 0.001  # 60 vertices share voxels with others
    network = random_network(200, 1, seed=5)
    sparse = prepare_sparse_input(verts, np.zeros(3), np.zeros(3))
    net = network.xyzc_net
    with torch.no_grad():
        levels = network.encode_sparse_levels(sparse)
        x = net.down0(net.conv0(network._code_tensor(sparse)))  # spconv's own handling of the duplicates (CPU)
        expected = [net.conv1(x)]
        for down, conv in ((net.down1, net.conv2), (net.down2, net.conv3), (net.down3, net.conv4)):
            expected.append(conv(down(expected[-1])))
    for got, want in zip(levels, expected, strict=True):
        torch.testing.assert_close(got.dense(), want.dense(), rtol=1e-4, atol=1e-4)


def test_a_kept_rulebook_encodes_exactly_as_a_fresh_one_and_rebuilds_for_other_sites() -> None:
    """The per-frame rulebook of training: reused pairs give bit-identical levels and gradients; a rulebook kept for
    one body and handed another rebuilds its pairs rather than pairing the wrong neighbours."""
    from server.neural_body.sparse_conv_net import Rulebook

    verts = ellipsoid_body(300, seed=8)
    verts[200:260] = verts[:60] + 0.001  # shared voxels: the first block's own path keeps its pairs too
    network = random_network(300, 1, seed=8)
    network.train()
    sparse = prepare_sparse_input(verts, np.zeros(3), np.zeros(3))
    moved = prepare_sparse_input(verts * 1.1, np.zeros(3), np.zeros(3))

    def encode(body, rulebook=None):
        network.zero_grad(set_to_none=True)
        levels = network.encode_sparse_levels(body, rulebook)
        sum((level.features * (i + 1)).square().mean() for i, level in enumerate(levels)).backward()
        return [level.features.detach() for level in levels], network.c.weight.grad.clone()

    book = Rulebook()
    fresh, fresh_grad = encode(sparse)
    first, _ = encode(sparse, book)
    assert set(book.pairs) == {"subm0", "subm1", "subm2", "subm3", "subm4"} and book.nbytes > 0
    kept_pairs = dict(book.pairs)
    again, again_grad = encode(sparse, book)
    assert all(book.pairs[key] is kept_pairs[key] for key in kept_pairs)  # reused, not rebuilt
    for got, want in zip(again, fresh, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(again_grad, fresh_grad)
    other, _ = encode(moved, book)
    expected, _ = encode(moved)
    assert book.pairs["subm0"] is not kept_pairs["subm0"]
    for got, want in zip(other, expected, strict=True):
        assert torch.equal(got, want)
