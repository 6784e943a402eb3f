"""Evaluation on the tiny blob dataset: JSON with every key and finite values, comparison images, metric rules."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from PIL import Image

from server.commands import evaluate as evaluate_command
from server.data.zju_reader import ZjuMocapDataset
from server.neural_body import evaluate, metrics
from server.neural_body.actor import ActorManifest, Motion, save_actor
from tests.cli_args import command_args
from tests.server.neural_body.nb_fixtures import random_network
from tests.server.neural_body.test_train_sampling import write_blob_dataset


@pytest.fixture(scope="module")
def blob_actor(tmp_path_factory):
    """The blob dataset (1 training frame, 2 unseen poses, 24 px) and an untrained actor of its size."""
    root = write_blob_dataset(tmp_path_factory.mktemp("blob") / "data", num_frames=3, size=24)
    dataset = ZjuMocapDataset(root)
    network = random_network(dataset.vertices(0).shape[0], dataset.num_train_frames)
    manifest = ActorManifest(name="blob", body_model="demo", vertex_count=network.num_vertices,
                             frames_trained=network.num_train_frames)
    actor = save_actor(root.parent / "actor", network, manifest, Motion.empty(), np.zeros(10, np.float32))
    return root, actor


def _args(*argv: str) -> argparse.Namespace:
    return command_args("evaluate", *argv)


def _finite_numbers(node) -> list[float]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _finite_numbers(v)]
    if isinstance(node, list):
        return [x for v in node for x in _finite_numbers(v)]
    return [node] if isinstance(node, float) else []


@pytest.mark.slow
def test_evaluate_writes_json_with_all_keys_and_comparison_images(blob_actor, tmp_path, capsys):
    root, actor = blob_actor
    out = tmp_path / "eval" / "metrics.json"
    code = evaluate_command.run(_args(str(actor), "--data", str(root), "--json", str(out), "--frame-interval", "2",
                              "--device", "cpu", "--no-progress", "--mesh-voxel-size", "0.02",
                              "--mesh-threshold", "0", "--mesh-points", "5000"))
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert set(result) >= {"novel_view", "novel_pose", "mesh", "protocol", "timing"}
    for split, frames in (("novel_view", [0]), ("novel_pose", [1])):  # interval 2 of [0] and of [1, 2]
        block = result[split]
        assert block["frames"] == frames and block["images"] == 2  # 2 test views
        for key in ("psnr", "ssim", "psnr_whole"):
            assert isinstance(block[key], float) and math.isfinite(block[key])
        assert [(r["frame"], r["view"]) for r in block["per_image"]] == [(frames[0], 1), (frames[0], 3)]
        assert all(r["latent_index"] == 0 for r in block["per_image"])  # the last (only) trained code
    assert 0.0 <= result["mesh"]["iou"] <= 1.0 and result["mesh"]["chamfer_l1"] > 0
    assert result["protocol"]["frame_interval"] == 2 and result["protocol"]["test_views"] == [1, 3]
    assert all(math.isfinite(x) for x in _finite_numbers(result))
    images = sorted(p.name for p in (out.parent / "comparison").iterdir())
    assert images == ["novel_pose_frame0001_view0001.png", "novel_pose_frame0001_view0003.png",
                      "novel_view_frame0000_view0001.png", "novel_view_frame0000_view0003.png"]
    with Image.open(out.parent / "comparison" / images[0]) as im:
        assert im.size == (48, 24)  # prediction | ground truth


def test_image_metrics_follow_the_protocol():
    rng = np.random.default_rng(0)
    gt = rng.random((32, 32, 3))
    pred = gt.copy()
    box = np.zeros((32, 32), bool)
    box[8:24, 4:28] = True
    pred[~box] = 0.0  # the renderer leaves pixels outside the box black
    pred[box] += 0.05  # error 0.05 inside the box → 26.02 dB there
    m = evaluate.image_metrics(pred, gt, box)
    assert m["psnr"] == pytest.approx(-10 * math.log10(0.0025))
    assert m["psnr_whole"] < m["psnr"]  # whole image also counts the black pixels outside the box
    gt_box = np.where(box[..., None], gt, 0.0)
    assert m["ssim"] == pytest.approx(metrics.ssim(pred[8:24, 4:28], gt_box[8:24, 4:28]))


def test_evaluate_refuses_a_mismatched_actor(blob_actor, tmp_path, capsys):
    root, _ = blob_actor
    network = random_network(50, 1)
    manifest = ActorManifest(name="other", body_model="demo", vertex_count=50, frames_trained=1)
    other = save_actor(tmp_path / "other", network, manifest, Motion.empty(), np.zeros(10, np.float32))
    code = evaluate_command.run(_args(str(other), "--data", str(root), "--json", str(tmp_path / "m.json"),
                                      "--device", "cpu", "--no-progress"))
    assert code == 1 and "vertices" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


@pytest.mark.slow
def test_evaluate_reports_the_fast_path_beside_the_reference(blob_actor, tmp_path, capsys):
    """--renderer both: the protocol's figures from the reference path, the fast path's beside them with their
    agreement per image (a random network has density everywhere, so only the report's shape is checked here; the
    agreement itself is asserted on trained weights in test_fast_path.py)."""
    root, actor = blob_actor
    out = tmp_path / "both" / "metrics.json"
    code = evaluate_command.run(_args(str(actor), "--data", str(root), "--json", str(out), "--frame-interval", "2",
                                      "--device", "cpu", "--no-progress", "--no-mesh", "--renderer", "both"))
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["protocol"]["renderer"] == "reference"
    beside = result["beside"]
    assert beside["renderer"] == "fast" and beside["render_seconds_per_image"] > 0
    for split in ("novel_view", "novel_pose"):
        assert math.isfinite(beside[split]["psnr"])
    assert 0.0 <= beside["agreement"]["max_alpha_difference"] <= 1.0
    assert "fast_path" in capsys.readouterr().out
