"""The actor folder: round trip, atomic replacement and clear errors for damaged or mismatched folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from server.neural_body.actor import (
    ACTOR_FORMAT,
    ActorError,
    ActorManifest,
    Motion,
    load_actor,
    read_manifest,
    save_actor,
)
from server.neural_body.batchnorm_mode import batchnorm_mode
from tests.server.neural_body.nb_fixtures import random_network


def make_motion(frames: int, seed: int = 0) -> Motion:
    rng = np.random.default_rng(seed)
    poses = rng.normal(0, 0.2, (frames, 72)).astype(np.float32)
    poses[:, :3] = 0
    return Motion(poses=poses, shapes=np.repeat(rng.normal(size=(1, 10)), frames, 0).astype(np.float32),
                  Rh=rng.normal(0, 0.3, (frames, 3)).astype(np.float32),
                  Th=rng.normal(0, 1, (frames, 3)).astype(np.float32), fps=25.0)


@pytest.fixture(scope="module")
def network():
    return random_network(60, 3, seed=9)


def save(path, network, **changes):
    manifest = ActorManifest(name="Test", body_model="demo", vertex_count=60, frames_trained=3,
                             bounds=[[-0.5, -0.4, 0.0], [0.5, 0.4, 1.8]], batchnorm="running",
                             training_data={"iterations": 10}, metrics={"psnr": 30.1})
    for key, value in changes.items():
        setattr(manifest, key, value)
    motion = make_motion(3)
    return save_actor(path, network, manifest, motion, motion.shapes[0]), motion


def test_round_trip(tmp_path, network) -> None:
    path, motion = save(tmp_path / "actor", network)
    data = json.loads((path / "actor.json").read_text())
    assert data["format"] == ACTOR_FORMAT and data["up_axis"] == "z" and data["metrics"] == {"psnr": 30.1}
    actor = load_actor(path)
    assert actor.manifest == read_manifest(path)
    assert actor.manifest.vertex_count == 60 and actor.manifest.frames_trained == 3
    assert not actor.network.training and batchnorm_mode(actor.network) == "running"  # the manifest's mode
    loaded = actor.network.state_dict()
    for key, value in network.state_dict().items():
        assert torch.equal(loaded[key], value), key
    for name in ("poses", "shapes", "Rh", "Th"):
        np.testing.assert_array_equal(getattr(actor.motion, name), getattr(motion, name))
    assert actor.motion.fps == 25.0
    np.testing.assert_array_equal(actor.shapes, motion.shapes[0])


def test_float16_weights_halve_the_file_and_load_as_float32(tmp_path, network) -> None:
    full, _ = save(tmp_path / "full", network)
    motion = make_motion(3)
    manifest = read_manifest(full)
    half = save_actor(tmp_path / "half", network, manifest, motion, motion.shapes[0], weights="float16")
    assert (half / "model.pt").stat().st_size < 0.6 * (full / "model.pt").stat().st_size
    loaded = load_actor(half).network.state_dict()
    for key, value in network.state_dict().items():
        assert loaded[key].dtype == value.dtype, key  # float32 again (and the int counters untouched)
        if value.is_floating_point():
            torch.testing.assert_close(loaded[key], value.half().float(), rtol=0, atol=0)
        else:
            assert torch.equal(loaded[key], value)
    with pytest.raises(ActorError, match="float16"):
        save_actor(tmp_path / "bad", network, manifest, motion, motion.shapes[0], weights="int8")


def test_saving_again_replaces_the_actor_and_leaves_no_temporaries(tmp_path, network) -> None:
    save(tmp_path / "actor", network)
    save(tmp_path / "actor", network, name="Renamed", batchnorm="batch_stats")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["actor"]
    actor = load_actor(tmp_path / "actor")
    assert actor.manifest.name == "Renamed" and batchnorm_mode(actor.network) == "batch_stats"


def test_save_rejects_a_manifest_that_does_not_match_the_network(tmp_path, network) -> None:
    with pytest.raises(ActorError, match="manifest says 61 vertices / 3 frames but the network has 60 / 3"):
        save(tmp_path / "actor", network, vertex_count=61)
    with pytest.raises(ActorError, match="body_model must be 'demo' or 'smpl:"):
        save(tmp_path / "actor", network, body_model="makehuman")
    assert not (tmp_path / "actor").exists() and list(tmp_path.iterdir()) == []


def test_damaged_actors_give_clear_errors(tmp_path, network) -> None:
    path, _ = save(tmp_path / "actor", network)
    manifest_text = (path / "actor.json").read_text()

    with pytest.raises(ActorError, match="no such actor folder"):
        load_actor(tmp_path / "nowhere")

    (path / "motion.npz").rename(tmp_path / "motion.npz")
    with pytest.raises(ActorError, match="missing motion.npz"):
        load_actor(path)
    (tmp_path / "motion.npz").rename(path / "motion.npz")

    (path / "actor.json").write_text("{not json")
    with pytest.raises(ActorError, match="actor.json: not valid JSON"):
        load_actor(path)

    data = json.loads(manifest_text)
    (path / "actor.json").write_text(json.dumps({**data, "format": "something-else/2"}))
    with pytest.raises(ActorError, match="format is 'something-else/2'"):
        load_actor(path)

    (path / "actor.json").write_text(json.dumps({**data, "frames_trained": 4}))
    with pytest.raises(ActorError, match=r"does not match actor.json .*latent.weight: expected shape \[4, 128\]"):
        load_actor(path)

    (path / "actor.json").write_text(json.dumps({**data, "vertex_count": "60"}))
    with pytest.raises(ActorError, match="'vertex_count' must be an integer"):
        load_actor(path)
    (path / "actor.json").write_text(manifest_text)

    (path / "model.pt").write_bytes((path / "model.pt").read_bytes()[:1000])
    with pytest.raises(ActorError, match="model.pt: unreadable"):
        load_actor(path)

    save(tmp_path / "actor", network)
    np.savez(path / "motion.npz", poses=np.zeros((3, 72)), shapes=np.zeros((3, 10)), Rh=np.zeros((2, 3)),
             Th=np.zeros((3, 3)), fps=25.0)
    with pytest.raises(ActorError, match=r"Rh must have shape \[N, 3\] with N = 3"):
        load_actor(path)

    save(tmp_path / "actor", network)
    np.save(path / "shapes.npy", np.zeros(16))
    with pytest.raises(ActorError, match="shapes"):
        load_actor(path)
