"""Jobs against the real server: frames computed in order, written to the job folder, cancel keeps finished ones."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from neural_human_addon.core.wire import frame_file_name
from tests.server.live_server import ACTOR_ID, body, camera, running_server


def _wait(c, job_id: str, states=("done", "failed", "cancelled"), timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = c.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in states:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


@pytest.mark.slow
def test_job_render_and_mesh_frames(server):
    frames = [{"frame": 10, "body": body(0), "camera": camera(16, 12)},
              {"frame": 11, "body": {**body(1), "poses": [0.0] * 5}, "camera": camera(16, 12)},  # bad body
              {"frame": 12, "body": body(1), "camera": camera(16, 12)}]
    with server.client() as c:
        r = c.post("/v1/jobs", json={"actor": ACTOR_ID, "outputs": ["rgba", "depth", "mesh"], "frames": frames,
                                     "voxel_size": 0.06})
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
        status = _wait(c, job_id)
        assert status["state"] == "done" and status["done"] == 3 and status["total"] == 3
        assert set(status["errors"]) == {"11"} and "body.poses" in status["errors"]["11"]
        assert status["frames_done"] == [10, 12]
        for n in (10, 12):
            r = c.get(f"/v1/jobs/{job_id}/frames/{n}")
            assert r.status_code == 200
            with np.load(io.BytesIO(r.content)) as data:
                assert data["rgba"].shape == (12, 16, 4) and data["depth"].shape == (12, 16)
                assert data["vertices"].shape[1] == 3 and data["faces"].dtype == np.int32
            assert (server.jobs / job_id / frame_file_name(n)).read_bytes() == r.content  # the add-on's name too
        assert not [p for p in (server.jobs / job_id).iterdir() if p.name.startswith(".")]  # no temp files left
        r = c.get(f"/v1/jobs/{job_id}/frames/11")
        assert r.status_code == 404 and r.json()["error"]["code"] == "frame_failed"
        assert c.get(f"/v1/jobs/{job_id}/frames/99").json()["error"]["code"] == "unknown_frame"


def _new_pose(i: int) -> dict:
    b = body(0)
    b["poses"][5] = 0.01 * i  # a pose of its own: no frame is a cache hit, each takes its full time
    return b


def test_job_cancel_keeps_finished_frames(server):
    frames = [{"frame": i, "body": _new_pose(i), "camera": camera(48, 36)} for i in range(30)]
    with server.client() as c:
        job_id = c.post("/v1/jobs", json={"actor": ACTOR_ID, "outputs": ["rgba"], "frames": frames}).json()["id"]
        _wait(c, job_id, states=("running",))
        deadline = time.monotonic() + 60
        while c.get(f"/v1/jobs/{job_id}").json()["done"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = c.delete(f"/v1/jobs/{job_id}")
        assert r.status_code == 200
        status = _wait(c, job_id)
        assert status["state"] == "cancelled" and 1 <= status["done"] < 30
        for n in status["frames_done"]:
            assert c.get(f"/v1/jobs/{job_id}/frames/{n}").status_code == 200


def test_job_validation(server):
    ok = {"frame": 0, "body": body(0), "camera": camera()}
    cases = [
        ({"actor": "nobody", "outputs": ["rgba"], "frames": [ok]}, 404, "id"),
        ({"actor": "..", "outputs": ["rgba"], "frames": [ok]}, 400, "id"),
        ({"actor": ACTOR_ID, "outputs": ["rgba"], "frames": []}, 422, "frames"),
        ({"actor": ACTOR_ID, "outputs": ["normals"], "frames": [ok]}, 422, "outputs.0"),
        ({"actor": ACTOR_ID, "outputs": ["rgba"], "frames": [{"frame": 0, "body": body(0)}]}, 422, "frames.0.camera"),
        ({"actor": ACTOR_ID, "outputs": ["rgba"], "frames": [ok, ok]}, 422, "frames.1.frame"),
        ({"actor": ACTOR_ID, "outputs": ["rgba"], "frames": [{**ok, "camera": {**camera(), "width": -1}}]}, 422,
         "frames.0.camera.width"),
    ]
    with server.client() as c:
        for req, status, field in cases:
            r = c.post("/v1/jobs", json=req)
            assert r.status_code == status, (req, r.text)
            assert r.json()["error"]["field"] == field, r.text
        assert c.get("/v1/jobs/" + "0" * 32).status_code == 404
        assert c.get("/v1/jobs/..").status_code == 404
        assert c.delete("/v1/jobs/nope").status_code == 404


def test_job_limits_answer_429_and_ended_jobs_drop_from_the_queue(server, tmp_path):
    """--max-queued-jobs 1: a second job while one runs is 429 queue_full; --keep-jobs 1 with the first job just
    ended (recent, never removed): 429 too_many_jobs."""
    frames = [{"frame": i, "body": body(i % 2), "camera": camera(8, 6)} for i in range(40)]
    with running_server(server.actors, tmp_path / "jobs", tmp_path / "cfg", tmp_path / "s.log",
                        "--max-queued-jobs", "1", "--keep-jobs", "1") as srv, srv.client() as c:
        first = c.post("/v1/jobs", json={"actor": ACTOR_ID, "outputs": ["rgba"], "frames": frames})
        assert first.status_code == 200, first.text
        r = c.post("/v1/jobs", json={"actor": ACTOR_ID, "outputs": ["rgba"], "frames": frames[:1]})
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full", r.text
        assert c.delete(f"/v1/jobs/{first.json()['id']}").status_code == 200
        _wait(c, first.json()["id"])
        r = c.post("/v1/jobs", json={"actor": ACTOR_ID, "outputs": ["rgba"], "frames": frames[:1]})
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_jobs", r.text
