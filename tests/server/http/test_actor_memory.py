"""Memory pressure: loaded actors are unloaded least-recently-used first (--max-loaded, free GPU memory); meshes
share the per-pose feature cache with renders (the out-of-memory retry: tests/server/inference/test_model_queue.py)."""

from __future__ import annotations

import io
import shutil
import time

import numpy as np
import pytest

from tests.server.live_server import ACTOR_ID, body, camera, make_actor, running_server

OTHER_ID = "tiny2"


@pytest.fixture(scope="module")
def actors(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("two-actors")
    make_actor(root)
    shutil.copytree(root / ACTOR_ID, root / OTHER_ID)
    return root


@pytest.fixture(scope="module")
def one_loaded(actors, tmp_path_factory: pytest.TempPathFactory):
    """A server that keeps at most one actor loaded (its own, so the cache counters only move for these tests)."""
    root = tmp_path_factory.mktemp("one-loaded")
    with running_server(actors, root / "jobs", root / "config", root / "server.log", "--max-loaded", "1") as srv:
        yield srv


def _npz(content: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(content)) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.slow
def test_max_loaded_one_unloads_the_first_actor(one_loaded):
    with one_loaded.client() as c:
        health = c.get("/v1/health").json()
        assert health["loaded_actors"] == [] and health["memory"]["max_loaded"] == 1
        assert c.get(f"/v1/actors/{ACTOR_ID}/skeleton").status_code == 200
        r = c.post(f"/v1/actors/{ACTOR_ID}/render", json={"body": body(0), "camera": camera(16, 12)})
        assert r.status_code == 200, r.text
        health = c.get("/v1/health").json()
        assert health["loaded_actors"] == [ACTOR_ID] and health["feature_cache"]["entries"] == 1
        evictions = health["memory"]["evictions"]

        assert c.get(f"/v1/actors/{OTHER_ID}/skeleton").status_code == 200  # loading the second unloads the first
        health = c.get("/v1/health").json()
        assert health["loaded_actors"] == [OTHER_ID]
        assert health["memory"]["evictions"] == evictions + 1
        assert health["feature_cache"]["entries"] == 0  # the first actor's cached volumes went with it
        listed = {a["id"]: a["loaded"] for a in c.get("/v1/actors").json()["actors"]}
        assert listed == {ACTOR_ID: False, OTHER_ID: True}

        assert c.get(f"/v1/actors/{ACTOR_ID}/motion").status_code == 200  # and back: it reloads on use
        health = c.get("/v1/health").json()
        assert health["loaded_actors"] == [ACTOR_ID] and health["memory"]["evictions"] == evictions + 2


@pytest.mark.slow
def test_mesh_reuses_the_pose_features_of_renders(one_loaded):
    """Same pose => one encode shared by renders, meshes and job meshes; cached meshes equal uncached ones."""
    mesh_req = {"body": body(0), "voxel_size": 0.05}
    with one_loaded.client() as c:
        def cache() -> dict:
            return c.get("/v1/health").json()["feature_cache"]

        def delta(before: dict) -> tuple[int, int]:
            now = cache()
            return now["misses"] - before["misses"], now["hits"] - before["hits"]

        c.post(f"/v1/actors/{ACTOR_ID}/unload")
        start = cache()
        assert c.post(f"/v1/actors/{ACTOR_ID}/render", json={"body": body(0), "camera": camera(16, 12)}).status_code \
            == 200
        after_render = cache()
        assert delta(start) == (1, 0)
        from_render = c.post(f"/v1/actors/{ACTOR_ID}/mesh", json=mesh_req)  # the render's volumes
        assert from_render.status_code == 200, from_render.text
        assert delta(after_render) == (0, 1)

        c.post(f"/v1/actors/{ACTOR_ID}/unload")  # drops the cached volumes
        before = cache()
        fresh = c.post(f"/v1/actors/{ACTOR_ID}/mesh", json=mesh_req)  # encodes
        again = c.post(f"/v1/actors/{ACTOR_ID}/mesh", json=mesh_req)  # cached
        assert delta(before) == (1, 1)

        before = cache()
        job = c.post("/v1/jobs", json={"actor": ACTOR_ID, "outputs": ["mesh"], "voxel_size": 0.05,
                                       "frames": [{"frame": 0, "body": body(0)}]}).json()
        deadline = time.monotonic() + 120
        while (status := c.get(f"/v1/jobs/{job['id']}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status["state"] == "done", status
        assert delta(before) == (0, 1)  # the job's mesh used the cached volumes too
        from_job = _npz(c.get(f"/v1/jobs/{job['id']}/frames/0").content)

    meshes = [_npz(r.content) for r in (from_render, fresh, again)] + [from_job]
    assert len(meshes[0]["faces"]) > 0
    for other in meshes[1:]:
        assert other.keys() == meshes[0].keys() == {"vertices", "faces", "colors"}
        for name in ("vertices", "faces", "colors"):
            assert np.array_equal(other[name], meshes[0][name]), name


def test_registry_unloads_least_recently_used(actors, tmp_path):
    import torch

    from server.inference.actor_registry import ActorRegistry

    root = tmp_path / "actors"
    for name in ("a", "b", "c"):
        shutil.copytree(actors / ACTOR_ID, root / name)
    registry = ActorRegistry(root, max_loaded=2)
    for name in ("a", "b", "a", "c"):  # b is the least recently used when c loads
        registry.get(name)
    assert registry.memory_status()["lru_order"] == ["a", "c"] and registry.evictions == 1
    assert registry.loaded_ids() == ["a", "c"]
    registry.feature_cache.get_or_encode("k", "a", lambda: [torch.zeros(4)])
    assert registry.free_memory(keep="c") == ["a"]  # what an out-of-memory error does
    assert registry.loaded_ids() == ["c"] and len(registry.feature_cache) == 0 and registry.evictions == 2
    with pytest.raises(ValueError, match="max_loaded"):
        ActorRegistry(root, max_loaded=-1)


def test_registry_keeps_free_gpu_memory_above_the_margin(actors, tmp_path, monkeypatch):
    """The CUDA rule on its own (free memory faked as a function of how many actors are loaded)."""
    import torch

    import server.inference.actor_registry as actor_registry

    root = tmp_path / "actors"
    for name in ("a", "b", "c"):
        shutil.copytree(actors / ACTOR_ID, root / name)
    registry = actor_registry.ActorRegistry(root, min_free_gpu_bytes=1000)
    for name in ("a", "b", "c"):
        registry.get(name)
    registry.feature_cache.get_or_encode("k", "c", lambda: [torch.zeros(4)])
    free = {3: 300, 2: 700, 1: 1050, 0: 1400}  # bytes free with n actors loaded
    monkeypatch.setattr(actor_registry, "_free_gpu_bytes", lambda: free[len(registry._loaded)])
    monkeypatch.setattr(registry, "device", "cuda")
    registry._make_room("d", 100)  # needs 1000 + 100 free: two unloads leave 1050, so the third goes too
    assert registry.loaded_ids() == [] and registry.evictions == 3
    assert len(registry.feature_cache) == 0
