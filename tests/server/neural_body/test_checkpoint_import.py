"""Import of checkpoints of the original implementation (spconv 1.x layout, as released)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import spconv.pytorch as spconv
import torch
import torch.nn.functional as F
from spconv.core import ConvAlgo

from server.commands import cli
from server.neural_body.actor import load_actor
from server.neural_body.checkpoint_import import CheckpointError, convert_state_dict
from server.neural_body.network import NeuralBodyNetwork
from server.neural_body.volume_renderer import render_image
from tests.server.data.zju_fixtures import write_dataset
from tests.server.neural_body.nb_fixtures import ellipsoid_body, look_at, pinhole, random_network

COMMAND = "import-checkpoint"


@pytest.fixture
def cli_main(monkeypatch):
    """server.cli.main with only this command registered (so other commands' modules do not affect this test)."""
    monkeypatch.setattr(cli, "COMMANDS", {COMMAND: cli.COMMANDS[COMMAND]})
    return cli.main


def to_original_layout(network: NeuralBodyNetwork) -> dict[str, torch.Tensor]:
    """State dict as the original (spconv 1.2.1) saves it: sparse-conv weights [k,k,k,in,out]."""
    state = {}
    for key, value in network.state_dict().items():
        if key.startswith("xyzc_net.") and value.ndim == 5:
            value = value.permute(1, 2, 3, 4, 0).contiguous()  # [out,k,k,k,in] → [k,k,k,in,out]
        state[key] = value.clone()
    return state


def original_checkpoint(network: NeuralBodyNetwork) -> dict:
    """The full dict of the original's save_model: net, optim, scheduler, recorder, epoch."""
    optimizer = torch.optim.Adam([{"params": [p]} for p in network.parameters()], lr=5e-4)
    return {
        "net": to_original_layout(network),
        "optim": optimizer.state_dict(),
        "scheduler": {"base_lrs": [5e-4] * len(optimizer.param_groups), "last_epoch": 399, "gamma": 0.1,
                      "decay_epochs": 1000, "_step_count": 400},
        "recorder": {"step": 200000},
        "epoch": 399,
    }


def test_permutation_matches_a_dense_cross_correlation() -> None:
    torch.manual_seed(0)
    cin, cout, size = 3, 4, 6
    w_rsck = torch.randn(3, 3, 3, cin, cout)  # spconv 1.x layout
    coords = torch.tensor([[1, 1, 1], [1, 1, 2], [2, 1, 1], [3, 4, 2], [2, 2, 2], [4, 4, 4], [1, 2, 1]])
    feats = torch.randn(len(coords), cin)
    conv = spconv.SubMConv3d(cin, cout, 3, bias=False, indice_key="t", algo=ConvAlgo.Native)
    conv.load_state_dict(convert_state_dict_weight(w_rsck))
    indices = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords.int()], 1)
    sparse_out = conv(spconv.SparseConvTensor(feats, indices, [size] * 3, 1)).dense()[0]

    dense_in = torch.zeros(1, cin, size, size, size)
    dense_in[0, :, coords[:, 0], coords[:, 1], coords[:, 2]] = feats.t()
    dense_w = w_rsck.permute(4, 3, 0, 1, 2)  # [out,in,kD,kH,kW]: w[kd,kh,kw,i,o] multiplies input at out + k − 1
    dense_out = F.conv3d(dense_in, dense_w, padding=1)[0]
    at = (slice(None), coords[:, 0], coords[:, 1], coords[:, 2])
    torch.testing.assert_close(sparse_out[at], dense_out[at], rtol=1e-5, atol=1e-5)


def convert_state_dict_weight(w_rsck: torch.Tensor) -> dict[str, torch.Tensor]:
    """The importer's permutation applied to one conv weight (through convert_state_dict's own rule)."""
    return {"weight": w_rsck.permute(4, 0, 1, 2, 3).contiguous()}


def test_importer_permutes_every_sparse_conv_weight() -> None:
    network = random_network(64, 2, seed=3)
    converted, layout = convert_state_dict(to_original_layout(network))
    assert layout == "spconv1 [k,k,k,in,out]"
    for key, value in network.state_dict().items():
        assert torch.equal(converted[key], value), key
    again, layout2 = convert_state_dict(network.state_dict())  # already spconv-2 layout: kept
    assert layout2 == "spconv2 [out,k,k,k,in]" and all(torch.equal(again[k], v) for k, v in converted.items())


def test_import_checkpoint_renders_exactly_like_the_native_network(tmp_path, cli_main, capsys) -> None:
    network = random_network(220, 5, seed=7)
    ckpt = tmp_path / "latest.pth"
    torch.save(original_checkpoint(network), ckpt)
    out = tmp_path / "actors" / "imported"
    assert cli_main([COMMAND, str(ckpt), "--out", str(out), "--body-model", "demo", "--name", "Imported"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weight_layout"] == "spconv1 [k,k,k,in,out]" and report["frames_trained"] == 5

    actor = load_actor(out)
    assert actor.manifest.name == "Imported" and actor.manifest.body_model == "demo"
    assert (actor.manifest.vertex_count, actor.manifest.frames_trained) == (220, 5)
    assert actor.manifest.batchnorm == "batch_stats"
    assert actor.manifest.training_data["epoch"] == 399 and actor.manifest.training_data["iterations"] == 200000
    assert actor.motion.num_frames == 0

    verts = ellipsoid_body(220, seed=7)
    R, T = look_at([-1.8, 1.9, 1.5], [0.1, -0.2, 1.0])
    args = (verts, np.array([0.1, 0.0, -0.3]), np.array([0.0, 0.05, 0.0]), 3, pinhole(18, 22, 40.0), R, T, 18, 22)
    native = render_image(network, *args)
    imported = render_image(actor.network, *args)
    assert native.mask_at_box.sum() > 0 and native.alpha.max() > 0.5
    for name in ("rgb", "alpha", "depth", "mask_at_box"):
        np.testing.assert_array_equal(getattr(imported, name), getattr(native, name))


def test_checkpoint_with_extra_objects_loads_with_a_note(tmp_path, cli_main, capsys) -> None:
    network = random_network(40, 1, seed=1)
    checkpoint = original_checkpoint(network)
    checkpoint["scheduler"]["gamma"] = np.float64(0.1)  # a numpy scalar: refused by weights_only=True
    ckpt = tmp_path / "numpy.pth"
    torch.save(checkpoint, ckpt)
    assert cli_main([COMMAND, str(ckpt), "--out", str(tmp_path / "a"), "--body-model", "demo"]) == 0
    assert "weights_only=False" in capsys.readouterr().err
    loaded = load_actor(tmp_path / "a").network.state_dict()
    for key, value in network.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_mismatched_checkpoint_lists_keys(tmp_path, cli_main, capsys) -> None:
    state = to_original_layout(random_network(40, 2, seed=2))
    del state["xyzc_net.conv2.4.running_var"]
    state["xyzc_net.conv5.0.weight"] = torch.zeros(3, 3, 3, 128, 128)
    state["view_fc.weight"] = torch.zeros(128, 340, 1)
    ckpt = tmp_path / "bad.pth"
    torch.save({"net": state, "epoch": 10}, ckpt)
    assert cli_main([COMMAND, str(ckpt), "--out", str(tmp_path / "bad"), "--body-model", "demo"]) == 1
    err = capsys.readouterr().err
    assert "missing keys (1): xyzc_net.conv2.4.running_var" in err
    assert "unexpected keys (1): xyzc_net.conv5.0.weight" in err
    assert "view_fc.weight: expected shape [128, 346, 1], got [128, 340, 1]" in err
    assert not (tmp_path / "bad").exists()

    with pytest.raises(CheckpointError, match="not a Neural Body checkpoint"):
        convert_state_dict({"weight": torch.zeros(3)})
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert cli_main([COMMAND, str(tmp_path / "junk.pth"), "--out", str(tmp_path / "j"), "--body-model", "demo"]) == 1
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    # 6890 is SMPL's count; any other count needs --body-model
    torch.save({"net": to_original_layout(random_network(40, 1))}, tmp_path / "v40.pth")
    assert cli_main([COMMAND, str(tmp_path / "v40.pth"), "--out", str(tmp_path / "v")]) == 1
    assert "pass --body-model" in capsys.readouterr().err


def test_import_with_the_training_motion(tmp_path, cli_main) -> None:
    fake = write_dataset(tmp_path / "data", "synthetic", num_frames=3, num_views=4, size=(16, 12))
    network = random_network(40, 2, seed=3)  # the fixture dataset trains on frames 0, 1 and has 40 vertices
    torch.save(original_checkpoint(network), tmp_path / "latest.pth")
    out = tmp_path / "actor"
    assert cli_main([COMMAND, str(tmp_path / "latest.pth"), "--out", str(out), "--body-model", "demo",
                     "--motion", str(fake.root)]) == 0
    actor = load_actor(out)
    assert actor.motion.num_frames == 2 and actor.motion.fps == 24
    for i in range(2):
        np.testing.assert_allclose(actor.motion.poses[i], fake.params[i]["poses"][0], rtol=1e-6)
        np.testing.assert_allclose(actor.motion.Th[i], fake.params[i]["Th"][0], rtol=1e-6)
    np.testing.assert_allclose(actor.shapes, fake.params[0]["shapes"][0], rtol=1e-6)
    verts = np.concatenate([fake.vertices[0], fake.vertices[1]])
    lo, hi = verts.min(0) - [0, 0, 0.05], verts.max(0) + [0, 0, 0.05]
    np.testing.assert_allclose(actor.manifest.bounds, [lo, hi], atol=1e-5)
    assert actor.manifest.training_data["dataset"]["num_train_frames"] == 2

    wrong = random_network(40, 3, seed=3)  # three frames: the dataset trains on two
    torch.save(original_checkpoint(wrong), tmp_path / "three.pth")
    with pytest.raises(CheckpointError, match="trained on 3"):
        from server.neural_body.checkpoint_import import import_checkpoint

        import_checkpoint(tmp_path / "three.pth", tmp_path / "x", body_model="demo", motion_dir=fake.root)
