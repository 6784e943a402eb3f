"""The Ray farm (issue 16): a job's frames on a pool of Ray workers.

On a real local Ray cluster (2 CPUs, 2 workers of 1 CPU, the demo actor): every frame equals the in-process render,
each written once; a worker killed mid-job loses no frame; a cancel through the HTTP API of a real server that joins
the cluster by its address stops the workers between frames and keeps the finished frames. The dispatcher's
bookkeeping (chunks, retries up to the cap, workers that do not come back, cancel) runs against a fake pool."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from neural_human_addon.core.camera import PinholeCamera
from neural_human_addon.core.wire import frame_file_name
from server.commands.bench import framing_camera
from server.inference import farm as farm_module
from server.inference.actor_registry import ActorRegistry
from server.inference.farm import (
    Farm,
    FarmUnavailable,
    FrameWorker,
    WorkerConfig,
    WorkerLost,
    plan_workers,
    split_chunks,
    start_farm,
)
from server.inference.jobs import FRAME_LOG, FrameSpec, JobManager, JobSpec, compute_frame
from server.inference.limits import BUNDLED_ACTORS_DIR
from server.inference.model_queue import ModelQueue
from server.neural_body.render_settings import DEFAULT_SETTINGS
from tests.server.live_server import running_server

ray = pytest.importorskip("ray")

SIZE = 64
OPEN_FARMS: list[Farm] = []


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster() -> Any:
    """A local Ray cluster of 2 CPUs in this process (no token file, its files in a temp folder); its address."""
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "disabled")  # a private loopback cluster; no ~/.ray/auth_token
    temp = tempfile.mkdtemp(prefix="nh-ray-")  # short: Ray's unix sockets live under it
    try:
        context = ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level=logging.WARNING)
        yield context.address_info["gcs_address"]
    finally:
        _close_farms()
        ray.shutdown()
        patch.undo()
        shutil.rmtree(temp, ignore_errors=True)


def _close_farms() -> None:
    while OPEN_FARMS:
        OPEN_FARMS.pop().close()


@pytest.fixture(scope="module")
def farm(cluster: str) -> Farm:
    """2 workers of 1 CPU (torch threads 1) on the cluster, the demo actor's folder."""
    f = start_farm(cluster, WorkerConfig(str(BUNDLED_ACTORS_DIR)), workers=2, cpus_per_worker=1)
    OPEN_FARMS.append(f)
    return f


class Demo:
    """Frames of the demo actor (captured poses, cameras around it) and their in-process renders."""

    def __init__(self) -> None:
        self.registry = ActorRegistry(BUNDLED_ACTORS_DIR, "cpu")
        self.loaded = self.registry.get("demo")

    def body(self, i: int) -> dict[str, list[float]]:
        m = self.loaded.actor.motion
        k = (7 * i) % m.num_frames
        return {"poses": m.poses[k].tolist(), "shapes": m.shapes[k].tolist(), "Rh": m.Rh[k].tolist(),
                "Th": m.Th[k].tolist()}

    def camera(self, i: int, size: int = SIZE) -> PinholeCamera:
        verts = self.loaded.body_model.pose(self.body(i)).vertices[0].cpu().numpy()
        K, R, T = framing_camera(verts, size, azimuth=0.4 + 0.5 * i)
        return PinholeCamera(K=K, R=R, T=T, width=size, height=size)

    def job(self, count: int, size: int = SIZE) -> JobSpec:
        frames = [FrameSpec(100 + i, self.body(i), self.camera(i, size)) for i in range(count)]
        return JobSpec("demo", ["rgba", "depth"], frames, 0.05)

    def reference(self, req: JobSpec, f: FrameSpec) -> dict[str, np.ndarray]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the workers
        try:
            return compute_frame(self.registry, DEFAULT_SETTINGS, req, f)
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo() -> Demo:
    return Demo()


def _wait(jm: JobManager, job_id: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while jm.get(job_id).state in ("queued", "running"):
        assert time.monotonic() < deadline, jm.get(job_id).status()
        time.sleep(0.05)


def _logged(folder: Path) -> list[int]:
    return [json.loads(line)["frame"] for line in (folder / FRAME_LOG).read_text().splitlines()]


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


# ---------------------------------------------------------------------------------------------------- on Ray


@pytest.mark.slow
def test_farm_frames_equal_the_in_process_render(farm, demo, tmp_path):
    req = demo.job(6)
    jm = JobManager(tmp_path, demo.registry, ModelQueue(), executor=farm)
    job = jm.submit(req)
    _wait(jm, job.id)
    assert job.state == "done" and not job.errors, job.status()
    assert sorted(_logged(job.folder)) == [f.frame for f in req.frames]  # each frame logged once
    assert all(n > 0 for n in farm.computed), farm.computed  # both workers took frames
    for f in req.frames:
        want = demo.reference(req, f)
        with np.load(job.folder / frame_file_name(f.frame)) as got:
            assert set(got.files) == {"rgba", "depth"}
            for key, peak in (("rgba", 1.0), ("depth", float(want["depth"].max()))):
                assert got[key].shape == want[key].shape
                assert np.array_equal(got[key], want[key]) or _psnr(got[key], want[key], peak) >= 60, (f.frame, key)


@pytest.mark.slow
def test_a_worker_killed_mid_job_loses_no_frame(farm, demo, tmp_path):
    pids = [ray.get(h.info.remote())["pid"] for h in farm.pool.handles]
    lost = farm.lost
    jm = JobManager(tmp_path, demo.registry, ModelQueue(), executor=farm)
    job = jm.submit(demo.job(6))
    deadline = time.monotonic() + 120
    while job.done < 1:
        assert time.monotonic() < deadline and job.state in ("queued", "running"), job.status()
        time.sleep(0.02)
    os.kill(pids[0], signal.SIGKILL)
    _wait(jm, job.id)
    assert farm.lost > lost  # the kill hit the job
    assert job.state == "done" and not job.errors and job.finished == set(job.frames), job.status()
    assert sorted(_logged(job.folder)) == sorted(job.frames)  # every frame written once
    assert not [p for p in job.folder.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.slow
def test_cancel_through_the_http_api_stops_the_workers_between_frames(cluster, demo, tmp_path):
    _close_farms()  # the server's own 2 workers need the cluster's CPUs
    frames = [{"frame": i, "body": demo.body(i), "camera": demo.camera(i, 48).to_wire()} for i in range(40)]
    with running_server(None, tmp_path / "jobs", tmp_path / "cfg", tmp_path / "server.log",
                        "--ray", cluster, "--ray-workers", "2") as srv, srv.client() as c:
        job_id = c.post("/v1/jobs", json={"actor": "demo", "outputs": ["rgba"], "frames": frames}).json()["id"]
        deadline = time.monotonic() + 120
        while c.get(f"/v1/jobs/{job_id}").json()["done"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert c.delete(f"/v1/jobs/{job_id}").status_code == 200
        while (status := c.get(f"/v1/jobs/{job_id}").json())["state"] == "running":
            assert time.monotonic() < deadline + 60
            time.sleep(0.05)
        assert status["state"] == "cancelled" and 2 <= status["done"] < 40, status
        time.sleep(2)  # nothing more comes after the cancel
        folder = srv.jobs / job_id
        assert sorted(_logged(folder)) == status["frames_done"]
        assert sorted(int(p.stem.rsplit("_", 1)[-1]) for p in folder.glob("*.npz")) == status["frames_done"]
        for n in status["frames_done"]:
            assert c.get(f"/v1/jobs/{job_id}/frames/{n}").status_code == 200


# ---------------------------------------------------------------------------------------------------- fake pool


class Call:
    def __init__(self, worker: int, frame: FrameSpec | None = None):
        self.worker, self.frame = worker, frame


class FakePool:
    """Workers that answer at once, oldest call first: frames in ``killers`` kill their worker, frames in ``bad``
    fail as a bad body does; workers in ``gone`` never come back after a loss; the first ``restarting`` pings answer
    that the worker is still restarting."""

    def __init__(self, size: int, killers: tuple[int, ...] = (), bad: tuple[int, ...] = (),
                 gone: tuple[int, ...] = (), restarting: int = 0):
        self.size, self.killers, self.bad, self.gone = size, set(killers), set(bad), set(gone)
        self.restarting = restarting
        self.submitted: list[tuple[int, int]] = []  # (worker, frame)
        self.pings = 0

    def submit(self, worker: int, req: JobSpec, f: FrameSpec) -> Call:
        assert not req.frames  # a call carries the job's settings and one frame
        self.submitted.append((worker, f.frame))
        return Call(worker, f)

    def ping(self, worker: int) -> Call:
        self.pings += 1
        return Call(worker)

    def wait(self, calls: list[Call], timeout: float) -> list[Call]:
        return calls[:1]

    def result(self, call: Call) -> Any:
        if call.frame is None:
            if call.worker in self.gone:
                raise WorkerLost("node gone")
            if self.restarting:
                self.restarting -= 1
                raise WorkerLost("restarting", temporary=True)
            return {"pid": call.worker}
        if call.frame.frame in self.killers:
            raise WorkerLost("killed")
        if call.frame.frame in self.bad:
            return None, "body.poses: bad"
        return {"n": np.array([call.frame.frame])}, None


def _fake_job(count: int) -> JobSpec:
    return JobSpec("demo", ["mesh"], [FrameSpec(i, {}) for i in range(count)], 0.05)


def test_split_chunks_keeps_consecutive_frames_together():
    frames = [FrameSpec(i, {}) for i in range(6)]
    assert [[f.frame for f in c] for c in split_chunks(frames, 2)] == [[0, 1], [2, 3], [4, 5]]
    assert [len(c) for c in split_chunks([FrameSpec(i, {}) for i in range(1000)], 2)] == [16] * 62 + [8]
    assert [len(c) for c in split_chunks(frames, 8)] == [1] * 6


def test_a_frame_that_keeps_killing_workers_is_reported_and_the_rest_go_on():
    pool = FakePool(2, killers=(3,), bad=(5,))
    farm = Farm(pool, max_attempts=3)
    outcomes = list(farm.frames(_fake_job(8), lambda: False))
    assert sorted(o.frame for o in outcomes) == list(range(8))  # every frame comes out once
    errors = {o.frame: o.error for o in outcomes if o.error}
    assert set(errors) == {3, 5} and "3 Ray workers were lost" in errors[3] and errors[5] == "body.poses: bad"
    assert [n for _, n in pool.submitted].count(3) == 3  # the cap
    assert [n for _, n in pool.submitted].count(5) == 1  # a frame's own error is not retried
    assert all(o.arrays["n"][0] == o.frame for o in outcomes if o.error is None)
    assert farm.lost == 3 and not farm.gone  # the lost workers came back, or are coming back (a pending ping)
    assert sorted([*farm.idle, *farm.reviving.values()]) == [0, 1]


def test_a_lost_workers_chunk_goes_to_another_worker():
    pool = FakePool(2, killers=(0,), gone=(0,))
    outcomes = list(Farm(pool, max_attempts=2).frames(_fake_job(6), lambda: False))
    assert sorted(o.frame for o in outcomes) == list(range(6))
    by_frame = {n: w for w, n in pool.submitted if n != 0}
    assert set(by_frame.values()) == {1} and by_frame[1] == 1  # the rest of worker 0's chunk went to worker 1
    assert [o.error for o in outcomes if o.frame == 0][0].startswith("2 Ray workers were lost")


def test_frames_left_when_no_worker_comes_back_are_reported():
    pool = FakePool(1, killers=(2,), gone=(0,))
    farm = Farm(pool, max_attempts=3)
    outcomes = list(farm.frames(_fake_job(5), lambda: False))
    assert [o.frame for o in outcomes if o.error is None] == [0, 1]
    errors = {o.frame: o.error for o in outcomes if o.error}
    assert set(errors) == {2, 3, 4} and all("no Ray worker is left" in e for e in errors.values())
    assert farm.gone == {0} and not farm.idle


def test_a_worker_still_restarting_is_asked_again():
    pool = FakePool(1, killers=(2,), restarting=2)
    farm = Farm(pool, max_attempts=2)
    outcomes = list(farm.frames(_fake_job(4), lambda: False))
    assert sorted(o.frame for o in outcomes) == [0, 1, 2, 3]
    assert [o.frame for o in outcomes if o.error] == [2] and not farm.gone
    assert pool.pings == 2 + 2  # two losses; the first answered "restarting" twice before the worker was back


def test_cancel_starts_no_new_frame_and_keeps_those_in_flight():
    pool = FakePool(2)
    seen: list[int] = []
    farm = Farm(pool)
    for outcome in farm.frames(_fake_job(10), lambda: len(seen) >= 3):
        seen.append(outcome.frame)
    assert 3 <= len(seen) <= 4 and len(pool.submitted) == len(seen)  # what was in flight came out, nothing more
    assert sorted(farm.idle) == [0, 1]


def test_workers_planned_from_the_cluster():
    assert plan_workers({"CPU": 8.0}, None, 2.0, None) == farm_module.FarmSize(4, 2.0, 0.0)
    assert plan_workers({"CPU": 32.0, "GPU": 4.0}, None, 4.0, None) == farm_module.FarmSize(4, 4.0, 1.0)
    assert plan_workers({"CPU": 32.0, "GPU": 4.0}, None, 1.0, 0.5).workers == 8
    assert plan_workers({"CPU": 2.0}, 3, 1.0, None).workers == 3  # asked for: Ray queues what does not fit
    with pytest.raises(FarmUnavailable, match="no room for one worker"):
        plan_workers({"CPU": 1.0}, None, 2.0, None)


def test_a_worker_without_the_actors_folder_says_so(tmp_path):
    with pytest.raises(FarmUnavailable, match="same path"):
        FrameWorker(WorkerConfig(str(tmp_path / "not-here")))


def test_without_ray_the_farm_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(farm_module, "ray", None)
    with pytest.raises(FarmUnavailable, match="pip install ray==2.60.0"):
        start_farm("auto", WorkerConfig("/nowhere"))
    assert not farm_module.available()


def test_a_broken_executor_fails_the_job_and_the_manager_goes_on(tmp_path):
    class Broken:
        def frames(self, req, cancelled):
            raise RuntimeError("cluster gone")

    class Registry:
        def folder(self, actor):
            return tmp_path

    jm = JobManager(tmp_path / "jobs", Registry(), ModelQueue(), executor=Broken())
    job = jm.submit(_fake_job(2))
    _wait(jm, job.id, 30)
    assert job.state == "failed" and "cluster gone" in job.message
