"""The job runner's logic against a canned server: retries, frames already on disk, failures, drain()."""

from __future__ import annotations

import io
import queue
import threading
from pathlib import Path

import numpy as np
import pytest

from neural_human_addon.core.job_runner import (
    FrameSaved,
    JobFailed,
    JobFinished,
    JobProgress,
    JobRunner,
    JobStarted,
    drain,
)
from neural_human_addon.core.server_client import ServerClient
from tests.addon.core.canned_server import Canned, Seen

JOB = "f" * 32


def frame_npz(n: int) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, rgba=np.full((2, 3, 4), n, np.float32))
    return buf.getvalue()


def run_to_end(runner: JobRunner, timeout: float = 20.0) -> list:
    runner.start()
    assert runner.finished.wait(timeout), "the runner did not finish"
    runner.join(5)
    out: list = []
    drain(runner.messages, out.append, max_items=10_000)
    assert isinstance(out[-1], (JobFinished, JobFailed))
    assert not [m for m in out[:-1] if isinstance(m, (JobFinished, JobFailed))]  # exactly one last message
    return out


def scripted_job(canned, states: list[dict]) -> None:
    """POST /v1/jobs creates JOB; each GET of the job answers the next of ``states`` (the last one repeats)."""
    canned.on("POST", "/v1/jobs", Canned.json({"id": JOB, "state": "queued", "done": 0, "total": 3}))
    calls = iter(states)
    last: list[dict] = []

    def status(_: Seen) -> Canned:
        item = next(calls, None)
        if item is not None:
            last[:] = [item]
        item = last[0]
        return item if isinstance(item, Canned) else Canned.json({"id": JOB, "errors": {}, "message": None, **item})

    canned.on("GET", f"/v1/jobs/{JOB}", status)
    for n in (1, 2, 3):
        canned.on("GET", f"/v1/jobs/{JOB}/frames/{n}", Canned(200, frame_npz(n), "application/x-npz"))


def test_runner_retries_transient_errors_and_reuses_frames_on_disk(canned, tmp_path: Path):
    busy = Canned.error(503, "busy", "queue busy")
    scripted_job(canned, [
        {"state": "running", "done": 1, "total": 3, "eta_s": 2.0, "frames_done": [1]},
        busy, busy,  # retried
        {"state": "running", "done": 1, "total": 3, "eta_s": 1.5, "frames_done": [1]},  # no news: no progress message
        {"state": "done", "done": 3, "total": 3, "eta_s": None, "frames_done": [1, 2, 3],
         "errors": {}},
    ])
    (tmp_path / "frame_000002.npz").write_bytes(b"from an earlier run")
    runner = JobRunner(ServerClient(canned.url), "x", [{"frame": n, "body": {}} for n in (1, 2, 3)], ["rgba"],
                       tmp_path, poll_interval=0.01, retry_delay=0.01)
    out = run_to_end(runner)
    assert out[0] == JobStarted(JOB, 3) and runner.job_id == JOB
    assert [m for m in out if isinstance(m, JobProgress)] == [JobProgress(JOB, 1, 3, 2.0, "running"),
                                                              JobProgress(JOB, 3, 3, None, "done")]
    saved = [m for m in out if isinstance(m, FrameSaved)]
    assert [(m.frame, m.reused) for m in saved] == [(1, False), (2, True), (3, False)]
    assert out[-1] == JobFinished(JOB, "done", {}, None)
    assert (tmp_path / "frame_000002.npz").read_bytes() == b"from an earlier run"  # not fetched again
    for n in (1, 3):
        assert Path(saved[n - 1].path).read_bytes() == frame_npz(n)
    assert f"/v1/jobs/{JOB}/frames/2" not in canned.paths()
    assert canned.paths().count(f"/v1/jobs/{JOB}/frames/1") == 1  # each frame fetched once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame_000001.npz", "frame_000002.npz",
                                                          "frame_000003.npz"]  # no temp files left


def test_runner_reports_failed_job_with_frame_errors(canned, tmp_path: Path):
    scripted_job(canned, [{"state": "failed", "done": 3, "total": 3, "frames_done": [],
                           "errors": {"1": "body.poses: bad", "2": "x", "3": "y"}, "message": None}])
    out = run_to_end(JobRunner(ServerClient(canned.url), "x", [{}] * 3, ["rgba"], tmp_path, poll_interval=0.01))
    assert out[-1] == JobFinished(JOB, "failed", {1: "body.poses: bad", 2: "x", 3: "y"}, None)


def test_runner_gives_up_after_retries(canned, tmp_path: Path):
    scripted_job(canned, [Canned(200, b"", delay=1.0)])
    client = ServerClient(canned.url, timeout=0.1)
    out = run_to_end(JobRunner(client, "x", [{}], ["rgba"], tmp_path, retries=2, retry_delay=0.01))
    assert isinstance(out[-1], JobFailed) and out[-1].job_id == JOB and out[-1].error.kind == "timeout"
    assert canned.paths("GET").count(f"/v1/jobs/{JOB}") == 3


@pytest.mark.parametrize("answer, kind", [
    (Canned.error(401, "unauthorized", "wrong bearer token", "Authorization"), "auth"),
    (Canned.error(422, "invalid_request", "frames.0.camera: render outputs need a camera", "frames.0.camera"),
     "bad_input"),
    (Canned.error(503, "busy", "queue busy"), "busy"),  # submitting is never retried (it could run twice)
])
def test_runner_fails_when_the_job_cannot_be_created(canned, tmp_path: Path, answer, kind):
    canned.on("POST", "/v1/jobs", answer)
    runner = JobRunner(ServerClient(canned.url, token="t"), "x", [{}], ["rgba"], tmp_path)
    out = run_to_end(runner)
    assert len(out) == 1 and out[0].job_id is None and out[0].error.kind == kind
    assert canned.paths() == ["/v1/jobs"]


def test_runner_cancelled_before_start_sends_nothing(canned, tmp_path: Path):
    runner = JobRunner(ServerClient(canned.url), "x", [{}], ["rgba"], tmp_path)
    runner.cancel()
    out = run_to_end(runner)
    assert out == [JobFailed(None, out[0].error)] and out[0].error.kind == "cancelled" and canned.seen == []


def test_runner_reports_an_unwritable_folder(canned, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = run_to_end(JobRunner(ServerClient(canned.url), "x", [{}], ["rgba"], blocker / "out"))
    assert out[0].error.kind == "io" and str(blocker / "out") in out[0].error.message and canned.seen == []


def test_runner_never_raises_on_a_broken_status(canned, tmp_path: Path):
    scripted_job(canned, [{"state": "running", "frames_done": ["not a number"]}])
    out = run_to_end(JobRunner(ServerClient(canned.url), "x", [{}], ["rgba"], tmp_path, poll_interval=0.01))
    assert isinstance(out[-1], JobFailed) and out[-1].error.kind == "protocol" and "ValueError" in str(out[-1].error)


def test_drain_respects_max_items_and_order():
    q: queue.Queue = queue.Queue()
    for i in range(40):
        q.put(i)
    got: list[int] = []
    assert [drain(q, got.append) for _ in range(4)] == [16, 16, 8, 0]
    assert got == list(range(40))
    assert drain(q, got.append, max_items=0) == 0


def test_drain_does_not_block_and_lets_handler_errors_through():
    q: queue.Queue = queue.Queue()
    done = threading.Event()
    threading.Thread(target=lambda: (drain(q, print), done.set()), daemon=True).start()
    assert done.wait(2)
    q.put("a")
    q.put("b")

    def bad(message: str) -> None:
        raise RuntimeError(message)

    with pytest.raises(RuntimeError, match="a"):
        drain(q, bad)
    assert drain(q, lambda m: None) == 1  # the failing message was taken, the next one is still there
