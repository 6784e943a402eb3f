"""Under load (issue 14, item 7): renders whose clients gave up wait for the model queue, yet health and job status
answer at once, and work whose client left is dropped when its turn comes instead of being computed."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.server.live_server import ACTOR_ID, body, camera, make_actor, running_server


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("load")
    (root / "actors").mkdir()
    make_actor(root / "actors")
    with running_server(root / "actors", root / "jobs", root / "config", root / "server.log") as srv:
        yield srv


@pytest.mark.slow
def test_health_and_job_status_answer_promptly_while_abandoned_renders_wait(own_server):
    srv = own_server
    with srv.client() as c:
        job = c.post("/v1/jobs", json={"actor": ACTOR_ID, "outputs": ["rgba"],
                                       "frames": [{"frame": 0, "body": body(0), "camera": camera(8, 6)}]}).json()

    # A render that takes far longer than the clients wait (the body filling a 192x144 image: ~1.5-3 s on a CPU;
    # a small one now takes less than the wait, and the queue would be empty before it is looked at).
    big = camera(192, 144)
    big["K"][0][0] = big["K"][1][1] = 132.0

    def abandon(i: int) -> None:
        b = body(0)
        b["poses"][5] = 0.01 * i  # a new pose each: no cache hits
        try:
            httpx.post(f"{srv.url}/v1/actors/{ACTOR_ID}/render", json={"body": b, "camera": big},
                       headers={"Authorization": f"Bearer {srv.token}"}, timeout=0.2)
        except httpx.TimeoutException:
            pass

    threads = [threading.Thread(target=abandon, args=(i,)) for i in range(45)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with srv.client() as c:
        waiting = c.get("/v1/health").json()["queue_waiting"]
        assert waiting > 0  # the abandoned renders are still queued
        for path in ("/v1/health", f"/v1/jobs/{job['id']}"):
            start = time.monotonic()
            assert c.get(path).status_code == 200
            assert time.monotonic() - start < 1.0, path
        deadline = time.monotonic() + 300
        while (health := c.get("/v1/health").json())["queue_waiting"] > 0:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert health["queue_dropped"] >= waiting - 1, health  # dropped, not computed
