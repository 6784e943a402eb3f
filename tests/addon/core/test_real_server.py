"""The client and the job runner against a real `python -m server serve` over a tiny random actor (CPU)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from neural_human_addon.core import job_runner
from neural_human_addon.core.job_runner import FrameSaved, JobFailed, JobFinished, JobRunner
from neural_human_addon.core.server_client import ServerClient, ServerError, decode_npz
from tests.server.live_server import ACTOR_ID, body, camera, running_server

pytestmark = pytest.mark.slow  # the server fixture alone takes 15-30 s on a busy CPU

W, H = 32, 24


def frames(count: int) -> list[dict]:
    return [{"frame": 100 + i, "body": body(i % 2), "camera": camera(W, H)} for i in range(count)]


def collect(runner: JobRunner, until, timeout: float = 120.0) -> list:
    """Drain the runner's messages (as the Blender timer would) until ``until(messages)`` or the runner finished."""
    out: list = []
    deadline = time.monotonic() + timeout
    while not until(out):
        if runner.finished.is_set() and runner.messages.empty():
            break
        assert time.monotonic() < deadline, f"no end after {timeout} s: {out}"
        if job_runner.drain(runner.messages, out.append, max_items=1) == 0:  # one at a time: stop right at `until`
            time.sleep(0.02)
    return out


def ended(out: list) -> bool:
    return bool(out) and isinstance(out[-1], (JobFinished, JobFailed))


def test_read_endpoints(real_server):
    client = ServerClient(real_server.url, token=real_server.token)
    health = client.health()
    assert health["api_version"] == "v1" and health["device"]["type"] == "cpu"
    actors = client.actors()
    assert [a["id"] for a in actors] == [ACTOR_ID] and actors[0]["frames"] == 2
    sk = client.skeleton(ACTOR_ID)
    assert sk["joints"].shape == (24, 3) and sk["joints"].dtype == np.float64 and sk["shapes"].shape == (10,)
    assert sk["parents"][0] == -1 and len(sk["names"]) == 24 and sk["up_axis"] in ("y", "z")
    motion = client.motion(ACTOR_ID)
    assert motion["fps"] == 25.0 and motion["poses"].shape == (2, 72) and motion["Th"].shape == (2, 3)
    assert np.allclose(motion["poses"][1], body(1)["poses"], atol=1e-6)


def test_errors_from_the_real_server(real_server):
    assert ServerClient(real_server.url).health()["status"] == "ok"  # health needs no token
    err = pytest.raises(ServerError, ServerClient(real_server.url).actors).value
    assert err.kind == "auth" and err.status == 401 and "(missing)" in err.message
    err = pytest.raises(ServerError, ServerClient(real_server.url, token="nope").actors).value
    assert err.kind == "auth" and "(wrong)" in err.message
    client = ServerClient(real_server.url, token=real_server.token)
    err = pytest.raises(ServerError, client.skeleton, "nobody").value
    assert err.kind == "not_found" and err.code == "unknown_actor" and "nobody" in err.message
    err = pytest.raises(ServerError, client.skeleton, "..").value
    assert err.kind in ("bad_input", "not_found") and err.status in (400, 404)
    err = pytest.raises(ServerError, client.render, ACTOR_ID, body(0), {**camera(W, H), "width": 0}).value
    assert err.kind == "bad_input" and err.field == "camera.width" and "camera.width" in err.message
    err = pytest.raises(ServerError, client.job, "0" * 32).value
    assert err.kind == "not_found" and err.code == "unknown_job"


def test_render_mesh_and_unload(real_server):
    client = ServerClient(real_server.url, token=real_server.token)
    cam = camera(W, H)
    out = client.render(ACTOR_ID, body(0), {k: np.asarray(v) if k in "KRT" else v for k, v in cam.items()})
    assert out["rgba"].shape == (H, W, 4) and out["rgba"].dtype == np.float32 and out["depth"].shape == (H, W)
    alpha = out["rgba"][..., 3]
    assert alpha.max() > 0.5 and alpha.min() < 0.05  # a silhouette, not an empty or full frame
    assert np.all(out["depth"][alpha == 0] == 0) and out["depth"].max() > 1.0
    only = client.render(ACTOR_ID, body(0), cam, outputs=["depth"])
    assert set(only) == {"depth"} and np.allclose(only["depth"], out["depth"], atol=1e-4)
    mesh = client.mesh(ACTOR_ID, body(0), voxel_size=0.06)
    assert mesh["vertices"].shape[1] == 3 and mesh["vertices"].dtype == np.float32 and len(mesh["vertices"]) > 10
    assert mesh["faces"].dtype == np.int32 and mesh["faces"].max() < len(mesh["vertices"])
    assert mesh["colors"].shape == mesh["vertices"].shape and mesh["colors"].dtype == np.uint8
    assert set(client.mesh(ACTOR_ID, body(0), voxel_size=0.06, colors=False)) == {"vertices", "faces"}
    assert client.unload(ACTOR_ID)["unloaded"] is True
    assert ACTOR_ID not in client.health()["loaded_actors"]


def test_runner_saves_every_frame(real_server, tmp_path: Path):
    client = ServerClient(real_server.url, token=real_server.token)
    runner = JobRunner(client, ACTOR_ID, frames(3), ["rgba", "depth"], tmp_path / "job", poll_interval=0.05)
    runner.start()
    out = collect(runner, ended)
    assert runner.finished.wait(5)
    assert out[0] == job_runner.JobStarted(runner.job_id, 3)
    saved = [m for m in out if isinstance(m, FrameSaved)]
    assert [m.frame for m in saved] == [100, 101, 102] and not any(m.reused for m in saved)
    assert out[-1] == JobFinished(runner.job_id, "done", {}, None)
    progress = [m for m in out if isinstance(m, job_runner.JobProgress)]
    assert progress[-1].done == progress[-1].total == 3 and progress[-1].state == "done"
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == [f"frame_{n:06d}.npz" for n in (100, 101, 102)]
    for m in saved:
        data = Path(m.path).read_bytes()
        assert data == client.job_frame_bytes(runner.job_id, m.frame)
        on_disk, served = decode_npz(data), client.job_frame(runner.job_id, m.frame)
        assert set(on_disk) == {"rgba", "depth"} and on_disk["rgba"].shape == (H, W, 4)
        assert all(np.array_equal(on_disk[k], served[k]) for k in served)


def test_runner_cancel_keeps_finished_frames(real_server, tmp_path: Path):
    client = ServerClient(real_server.url, token=real_server.token)
    runner = JobRunner(client, ACTOR_ID, frames(6), ["rgba"], tmp_path, poll_interval=0.05)
    runner.start()
    out = collect(runner, lambda o: ended(o) or any(isinstance(m, FrameSaved) for m in o))
    assert isinstance(out[-1], FrameSaved), out
    runner.cancel()
    out += collect(runner, ended)
    assert runner.finished.wait(5)
    last = out[-1]
    assert isinstance(last, JobFinished) and last.state == "cancelled" and last.errors == {}
    status = client.job(runner.job_id)
    assert status["state"] == "cancelled" and 1 <= status["done"] < 6
    saved = sorted(m.frame for m in out if isinstance(m, FrameSaved))
    assert saved == status["frames_done"]  # every frame the server finished is on disk, none other
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"frame_{n:06d}.npz" for n in saved]


def test_runner_reports_a_killed_server(actors_dir, tmp_path: Path):
    with running_server(actors_dir, tmp_path / "jobs", tmp_path / "config", tmp_path / "server.log") as srv:
        runner = JobRunner(ServerClient(srv.url, token=srv.token), ACTOR_ID, frames(6), ["rgba"], tmp_path / "out",
                           poll_interval=0.05)
        runner.start()
        out = collect(runner, lambda o: ended(o) or any(isinstance(m, FrameSaved) for m in o))
        assert isinstance(out[-1], FrameSaved), out
        srv.process.kill()
        srv.process.wait(10)
        killed = time.monotonic()
        out += collect(runner, ended, timeout=30)
        assert runner.finished.wait(5)
        elapsed = time.monotonic() - killed
    last = out[-1]
    assert isinstance(last, JobFailed) and last.job_id == runner.job_id and last.error.kind == "unreachable"
    assert "No Neural Human server" in last.error.message
    assert elapsed < 15, f"JobFailed only {elapsed:.1f} s after the kill"  # retries with backoff (~4 s), no hang
    assert (tmp_path / "out" / "frame_000100.npz").is_file()
