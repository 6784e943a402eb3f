"""Bounded bodies (issue 14, items 1 and 2): shape/pose/translation ranges and the posed extent answered with 422
naming the field before any allocation; values that overflow float32 never reach the renderer; the worst body the
validation admits renders with a bounded peak RSS of the server process."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

from server.body.params import MAX_ANGLE, MAX_SHAPE, MAX_TRANSLATION
from tests.server.live_server import ACTOR_ID, body, camera, make_actor, running_server

# the shapes (all at ±MAX_SHAPE) that give the demo body model its largest box, arms out
WORST_SHAPES = [5.0, -5.0, -5.0, 5.0, -5.0, 5.0, 5.0, 5.0, -5.0, 5.0]
PEAK_RSS_BOUND_MB = 800  # server VmHWM after the worst admitted body (tiny actor, CPU); measured 480 MB (419 normal)


def _with(**fields) -> dict:
    return {**body(1), **fields}


BAD = [
    (_with(shapes=[50.0] + [0.0] * 9), "body.shapes"),
    (_with(shapes=[100.0] + [0.0] * 9), "body.shapes"),
    (_with(shapes=[1e6] * 10), "body.shapes"),
    (_with(shapes=[1e300] * 10), "body.shapes"),
    (_with(Th=[1e300, 0.0, 0.0]), "body.Th"),
    (_with(Th=[0.0, 0.0, MAX_TRANSLATION * 2]), "body.Th"),
    (_with(Rh=[1e20, 0.0, 0.0]), "body.Rh"),
    (_with(poses=[1e20] + [0.0] * 71), "body.poses"),
    (_with(poses=[0.0] * 5 + [MAX_ANGLE + 0.1] + [0.0] * 66), "body.poses"),
    ({"global_orient": [0.0, 0.0, 0.0], "body_pose": [1e20] * 69, "transl": [0, 0, 0]}, "body.body_pose"),
    ({"global_orient": [0.0, 0.0, 0.0], "body_pose": [0.0] * 69, "transl": [1e300, 0, 0]}, "body.transl"),
    ({"global_orient": [0.0, 0.0, 0.0], "body_pose": [0.0] * 69, "trans": [1e300, 0, 0]}, "body.trans"),
    ({"global_orient": [1e300, 0.0, 0.0], "body_pose": [0.0] * 69, "betas": [0.0] * 10}, "body.global_orient"),
    ({"global_orient": [0.0, 0.0, 0.0], "body_pose": [0.0] * 69, "betas": [-6.0] * 10}, "body.betas"),
]


@pytest.mark.parametrize("path", ["render", "mesh"])
def test_out_of_range_bodies_answer_422_naming_the_field(server, path):
    with server.client() as c:
        for b, field in BAD:
            payload = {"body": b, "camera": camera(16, 12)} if path == "render" else {"body": b, "voxel_size": 0.1}
            r = c.post(f"/v1/actors/{ACTOR_ID}/{path}", json=payload)
            assert r.status_code == 422, (b, r.status_code, r.text)
            err = r.json()["error"]
            assert err["field"] == field and err["code"] == "invalid_body", (field, err)
            assert err["message"].startswith(field), err


def test_job_frames_with_out_of_range_bodies_fail_with_the_reason(server):
    with server.client() as c:
        frames = [{"frame": 0, "body": _with(shapes=[1e300] * 10), "camera": camera(8, 6)}]
        r = c.post("/v1/jobs", json={"actor": ACTOR_ID, "outputs": ["rgba"], "frames": frames})
        assert r.status_code == 200, r.text
        job = r.json()["id"]
        for _ in range(600):
            status = c.get(f"/v1/jobs/{job}").json()
            if status["state"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        assert status["state"] == "failed" and status["errors"]["0"].startswith("body.shapes"), status


def test_edges_of_the_ranges_are_accepted(server):
    with server.client() as c:
        b = _with(shapes=[MAX_SHAPE] * 10, Rh=[MAX_ANGLE, 0.0, 0.0], Th=[0.0, 0.0, 3.0])
        r = c.post(f"/v1/actors/{ACTOR_ID}/render", json={"body": b, "camera": camera(8, 6)})
        assert r.status_code == 200, r.text


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory):
    """A server of its own, so its peak RSS only reflects these requests."""
    root = tmp_path_factory.mktemp("bounds")
    (root / "actors").mkdir()
    make_actor(root / "actors")
    with running_server(root / "actors", root / "jobs", root / "config", root / "server.log") as srv:
        yield srv


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc")
def test_worst_admitted_body_renders_within_the_memory_bound(own_server):
    """The largest box the ranges admit (shapes at ±5, arms out) at 16×16 and as a coarse mesh: peak RSS of the
    server process (VmHWM) stays under PEAK_RSS_BOUND_MB; before the ranges, shapes[0]=50 peaked at 8.2 GB."""
    pid = own_server.process.pid
    with own_server.client() as c:
        r = c.post(f"/v1/actors/{ACTOR_ID}/render", json={"body": body(0), "camera": camera(16, 16)})
        assert r.status_code == 200, r.text
        normal = _vm_hwm_mb(pid)
        worst = _with(shapes=WORST_SHAPES, poses=[0.0] * 72)
        r = c.post(f"/v1/actors/{ACTOR_ID}/render", json={"body": worst, "camera": camera(16, 16)})
        assert r.status_code == 200, r.text
        with np.load(io.BytesIO(r.content)) as data:
            assert data["rgba"].shape == (16, 16, 4)
        r = c.post(f"/v1/actors/{ACTOR_ID}/mesh", json={"body": worst, "voxel_size": 0.05})
        assert r.status_code == 200, r.text
        peak = _vm_hwm_mb(pid)
    print(f"server VmHWM: {normal:.0f} MB after a normal render, {peak:.0f} MB after the worst admitted body")
    assert peak < PEAK_RSS_BOUND_MB, (normal, peak)
