"""Training on the tiny blob dataset: the loss falls, the actor loads, resume continues, checkpoints are atomic."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
import torch

from server.commands import train as train_command
from server.data.zju_reader import ZjuMocapDataset
from server.neural_body import train
from server.neural_body.actor import load_actor
from server.neural_body.train import TrainConfig, Trainer
from tests.cli_args import command_args
from tests.server.neural_body.test_train_sampling import write_blob_dataset


@pytest.fixture(scope="module")
def blob_root(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("blob") / "data", num_frames=4, size=32)


def _train_args(*argv: str) -> argparse.Namespace:
    return command_args("train", *argv)


@pytest.mark.slow
def test_a_few_iterations_decrease_the_loss(blob_root, tmp_path):
    torch.manual_seed(0)
    dataset = ZjuMocapDataset(blob_root)
    config = TrainConfig(iters=16, rays=256, n_samples=8, progress=False, seed=3)
    trainer = Trainer(dataset, torch.device("cpu"), config, checkpoint_dir=tmp_path / "ckpt")
    result = trainer.run()
    losses = np.array(result.losses)
    assert len(losses) == 16 and np.all(np.isfinite(losses))
    assert losses[-4:].mean() < 0.9 * losses[:4].mean()
    assert trainer.network.training  # BatchNorm in training mode throughout
    log = [json.loads(line) for line in (tmp_path / "ckpt" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 16 and "psnr" in log[-1]


def test_cli_trains_writes_a_loadable_actor_and_resumes(blob_root, tmp_path, capsys):
    out = tmp_path / "actor"
    common = ["--rays", "64", "--samples", "4", "--device", "cpu", "--no-progress", "--epoch-iters", "2",
              "--lr-decay-iters", "4"]
    assert train_command.run(_train_args(str(blob_root), "--out", str(out), "--iters", "2", "--save-every", "1",
                                 *common)) == 0
    checkpoint = tmp_path / "actor.train" / "latest.pt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["recorder"]["step"] == 2 and state["epoch"] == 1
    assert state["scheduler"]["last_epoch"] == 1

    actor = load_actor(out)
    dataset = ZjuMocapDataset(blob_root)
    assert actor.manifest.frames_trained == dataset.num_train_frames == 2
    assert actor.manifest.vertex_count == dataset.vertices(0).shape[0]
    assert actor.manifest.body_model == "demo" and actor.manifest.up_axis == "z"
    assert actor.manifest.training_data["training"]["iterations"] == 2
    assert actor.motion.num_frames == 2
    np.testing.assert_allclose(actor.motion.Th[1], dataset.params(1).Th)
    box = np.array(actor.manifest.bounds)
    assert np.all(box[0] <= dataset.vertices(0).min(0)) and np.all(box[1] >= dataset.vertices(0).max(0))
    for key, value in actor.network.state_dict().items():
        torch.testing.assert_close(value, state["net"][key])

    capsys.readouterr()
    assert train_command.run(_train_args(str(blob_root), "--out", str(out), "--iters", "3", "--resume", *common)) == 0
    assert "resumed at step 2" in capsys.readouterr().out
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert state["recorder"]["step"] == 3
    adam_steps = {float(s["step"]) for s in state["optim"]["state"].values()}
    assert adam_steps == {3.0}  # the optimizer state continued too
    assert state["optim"]["param_groups"][0]["lr"] == pytest.approx(train.learning_rate(3, epoch_iters=2,
                                                                                        decay_iters=4))
    assert load_actor(out).manifest.training_data["training"]["iterations"] == 3


def test_max_minutes_stops_at_the_time_limit_and_writes_everything(blob_root, tmp_path):
    """--max-minutes: training stops once its time is spent (far before --iters), with the checkpoint, the actor and
    a last learning-curve record (held-out PSNR) at the step it stopped."""
    out = tmp_path / "actor"
    argv = [str(blob_root), "--out", str(out), "--iters", "100000", "--rays", "64", "--samples", "4", "--device",
            "cpu", "--no-progress", "--log-every", "1000", "--eval-every", "1000", "--max-minutes", "0.002"]
    assert train_command.run(_train_args(*argv)) == 0
    log = [json.loads(line) for line in (tmp_path / "actor.train" / "log.jsonl").read_text().splitlines()]
    stopped = log[-1]["step"]
    assert 1 <= stopped < 1000 and log[-1]["seconds"] >= 0.12 and np.isfinite(log[-1]["held_out_psnr"])
    state = torch.load(tmp_path / "actor.train" / "latest.pt", map_location="cpu", weights_only=False)
    assert state["recorder"]["step"] == stopped and state["recorder"]["train_seconds"] >= 0.12
    assert load_actor(out).manifest.training_data["training"]["iterations"] == stopped


def test_checkpoint_is_written_atomically(blob_root, tmp_path, monkeypatch):
    dataset = ZjuMocapDataset(blob_root)
    trainer = Trainer(dataset, torch.device("cpu"), TrainConfig(iters=1, progress=False),
                      checkpoint_dir=tmp_path / "ckpt")
    path = trainer.save_checkpoint()
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # the temp file is complete ...
        raise OSError("disk full")  # ... but the process fails before the rename

    monkeypatch.setattr(torch, "save", failing_save)
    trainer.step = 7
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["latest.pt"]


def test_resume_errors(blob_root, tmp_path, capsys):
    code = train_command.run(_train_args(str(blob_root), "--out", str(tmp_path / "a"), "--iters", "1", "--resume",
                                 "--device", "cpu", "--no-progress"))
    assert code == 1 and "no checkpoint" in capsys.readouterr().err
    (tmp_path / "a.train").mkdir()
    (tmp_path / "a.train" / "latest.pt").write_bytes(b"not a checkpoint")
    code = train_command.run(_train_args(str(blob_root), "--out", str(tmp_path / "a"), "--iters", "1", "--resume",
                                 "--device", "cpu", "--no-progress"))
    assert code == 1 and "unreadable checkpoint" in capsys.readouterr().err


def test_bad_arguments_are_refused(blob_root, tmp_path, capsys):
    assert train_command.run(_train_args(str(blob_root), "--out", str(tmp_path / "a"), "--rays", "0")) == 2
    assert "--rays must be >= 1" in capsys.readouterr().err
    assert train_command.run(_train_args(str(blob_root), "--out", str(tmp_path / "a"), "--max-minutes", "-1")) == 2
    assert "--max-minutes must be >= 0" in capsys.readouterr().err
    assert train_command.run(_train_args(str(tmp_path / "missing"), "--out", str(tmp_path / "a"), "--device", "cpu",
                                 "--no-progress")) == 1
    assert "no such directory" in capsys.readouterr().err


def test_mask_loss_adds_the_opacity_error_to_the_colour_loss(blob_root):
    """--mask-loss (not in the original): loss = colour MSE + w·MSE(box-volume opacity, body mask); the colour MSE is
    what the step reports (and PSNR is computed from)."""
    from server.neural_body.ray_sampling import sample_rays
    from server.neural_body.train import render_loss_module
    from server.neural_body.volume_renderer import render_rays

    dataset = ZjuMocapDataset(blob_root)
    trainer = Trainer(dataset, torch.device("cpu"), TrainConfig(iters=0, rays=128, n_samples=8, progress=False))
    view = int(trainer.data.views[0])
    image, mask = trainer.data.image_and_mask(0, view)
    sparse = trainer.data.sparse_input(0)
    cam = dataset.cameras[view]
    batch = sample_rays(image, mask, trainer.data.rays(view), cam.K, cam.R, cam.T, sparse.world_bounds.cpu().numpy(),
                        128, np.random.default_rng(1))
    target = torch.from_numpy((mask[batch.pixels[:, 0], batch.pixels[:, 1]] == 1).astype(np.float32))
    assert 0 < float(target.mean()) < 1  # body and background rays both present
    args = (sparse, batch.ray_o, batch.ray_d, batch.near, batch.far, 0, batch.rgb, target)
    results = {}
    for weight in (0.0, 0.7):
        torch.manual_seed(5)
        results[weight] = render_loss_module(trainer.network, 8, weight)(*args)
    torch.manual_seed(5)
    out = render_rays(trainer.network, trainer.network.encode_sparse_voxels(sparse), sparse, batch.ray_o,
                      batch.ray_d, batch.near, batch.far, 0, n_samples=8, perturb=True)
    opacity_error = torch.mean((out.opacity_map - target) ** 2)
    (plain, colour0), (masked, colour) = results[0.0], results[0.7]
    torch.testing.assert_close(plain, colour0)
    torch.testing.assert_close(colour, colour0)
    torch.testing.assert_close(masked, colour + 0.7 * opacity_error)
    assert float(opacity_error.detach()) > 0
