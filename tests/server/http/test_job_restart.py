"""Jobs outlive the server process: a second server on the same --jobs-dir serves the frames of the first one's
jobs; a job cut off by the restart becomes "failed" with a message and keeps its finished frames. Also many
clients submitting jobs at once."""

from __future__ import annotations

import io
import json
import signal
import threading
import time

import numpy as np
import pytest

from tests.server.live_server import ACTOR_ID, body, camera, running_server


def _wait(c, job_id: str, until, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = c.get(f"/v1/jobs/{job_id}").json()
        if until(status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def _frames(n: int) -> list[dict]:
    return [{"frame": i, "body": body(i % 2), "camera": camera(16, 12)} for i in range(n)]


@pytest.mark.slow
def test_second_server_serves_jobs_of_the_first(server, tmp_path):
    jobs = tmp_path / "jobs"
    with running_server(server.actors, jobs, tmp_path / "cfg", tmp_path / "a.log") as first, first.client() as c:
        done_id = c.post("/v1/jobs", json={"actor": ACTOR_ID, "outputs": ["rgba", "depth"],
                                           "frames": _frames(2)}).json()["id"]
        done = _wait(c, done_id, lambda s: s["state"] == "done")
        served = {n: c.get(f"/v1/jobs/{done_id}/frames/{n}").content for n in (0, 1)}
        record = json.loads((jobs / done_id / "job.json").read_text())
        assert record["state"] == "done" and record["done"] == 2 and record["frames"] == [0, 1]

        cut_id = c.post("/v1/jobs", json={"actor": ACTOR_ID, "outputs": ["rgba"], "frames": _frames(60)}).json()["id"]
        _wait(c, cut_id, lambda s: s["done"] >= 1)
        first.process.send_signal(signal.SIGKILL)  # dies mid-job, no chance to clean up
        first.process.wait(10)

    with running_server(server.actors, jobs, tmp_path / "cfg", tmp_path / "b.log") as second, second.client() as c:
        again = c.get(f"/v1/jobs/{done_id}").json()
        assert {k: again[k] for k in ("state", "done", "total", "frames_done", "errors")} == \
            {k: done[k] for k in ("state", "done", "total", "frames_done", "errors")}
        for n, content in served.items():
            r = c.get(f"/v1/jobs/{done_id}/frames/{n}")
            assert r.status_code == 200 and r.content == content
        with np.load(io.BytesIO(served[0])) as data:
            assert data["rgba"].shape == (12, 16, 4) and data["depth"].shape == (12, 16)

        cut = c.get(f"/v1/jobs/{cut_id}").json()
        assert cut["state"] == "failed" and "server stopped" in cut["message"], cut
        assert cut["total"] == 60 and 1 <= len(cut["frames_done"]) < 60
        for n in cut["frames_done"]:
            assert c.get(f"/v1/jobs/{cut_id}/frames/{n}").status_code == 200
        missing = next(n for n in range(60) if n not in cut["frames_done"])
        assert c.get(f"/v1/jobs/{cut_id}/frames/{missing}").json()["error"]["code"] == "frame_not_computed"
        assert json.loads((jobs / cut_id / "job.json").read_text())["state"] == "failed"
        assert c.get(f"/v1/jobs/{'f' * 32}").status_code == 404


def test_concurrent_clients_all_finish(server):
    results: dict[int, object] = {}

    def client(i: int) -> None:
        try:
            with server.client() as c:
                r = c.post("/v1/jobs", json={"actor": ACTOR_ID, "outputs": ["rgba"], "frames": _frames(2)})
                assert r.status_code == 200, r.text
                job_id = r.json()["id"]
                status = _wait(c, job_id, lambda s: s["state"] in ("done", "failed", "cancelled"))
                assert status["state"] == "done" and status["frames_done"] == [0, 1] and not status["errors"]
                results[i] = [c.get(f"/v1/jobs/{job_id}/frames/{n}").content for n in (0, 1)]
        except BaseException as err:  # reported by the main thread
            results[i] = err

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert len(results) == 4
    for value in results.values():
        if isinstance(value, BaseException):
            raise value
    frames = list(results.values())
    with server.client() as c:  # every client got the same pixels as a direct render of those poses
        for n in (0, 1):
            r = c.post(f"/v1/actors/{ACTOR_ID}/render", json={"body": body(n), "camera": camera(16, 12),
                                                              "outputs": ["rgba"]})
            with np.load(io.BytesIO(r.content)) as direct:
                for got in frames:
                    with np.load(io.BytesIO(got[n])) as data:
                        assert np.array_equal(data["rgba"], direct["rgba"])
