"""The HTTP client's pure logic against a canned stdlib server: URL checks, error mapping, decoding, limits."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from neural_human_addon.core.server_client import (
    API_VERSION,
    DEFAULT_URL,
    ServerClient,
    ServerError,
    check_server_url,
    is_loopback_host,
)
from tests.addon.core.canned_server import Canned

TOKEN = "s3cret-token-value"


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npz(**arrays: np.ndarray) -> Canned:
    return Canned(200, npz_bytes(**arrays), "application/x-npz")


def failure(call) -> ServerError:
    with pytest.raises(ServerError) as info:
        call()
    err = info.value
    assert str(err) == err.message and "\n" not in err.message and TOKEN not in err.message
    return err


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("LOCALHOST.", True), ("::1", True),
    ("[::1]", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("192.168.1.2", False), ("::", False),
    ("example.com", False), ("localhost.example.com", False), ("127.0.0.1.nip.io", False), ("", False),
])
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("url, base", [
    (DEFAULT_URL, DEFAULT_URL),
    ("http://127.0.0.1:8765/", DEFAULT_URL),
    ("  localhost:8765 ", "http://localhost:8765"),
    ("HTTP://LocalHost:9000/v1/", "http://localhost:9000"),
    ("http://[::1]:8765", "http://[::1]:8765"),
    ("https://127.0.0.1/nh/", "https://127.0.0.1/nh"),
])
def test_check_server_url_normalises(url, base):
    assert check_server_url(url) == base


@pytest.mark.parametrize("url, kind, words", [
    ("", "bad_url", "empty"),
    ("ftp://127.0.0.1:21", "bad_url", "'ftp'"),
    ("http://", "bad_url", "no host"),
    ("http://127.0.0.1:99999", "bad_url", "not valid"),
    ("http://user:pw@127.0.0.1:8765", "bad_url", "password"),
    ("http://127.0.0.1:8765/?x=1", "bad_url", "query"),
    ("http://192.168.1.20:8765", "remote_not_allowed", "192.168.1.20"),
    ("gpu-box.local:8765", "remote_not_allowed", "Allow Online Access"),
])
def test_check_server_url_refuses(url, kind, words):
    err = failure(lambda: check_server_url(url))
    assert err.kind == kind and words in err.message


def test_remote_url_only_when_allowed():
    assert check_server_url("https://gpu-box.example.com:8443/", allow_remote=True) == "https://gpu-box.example.com:8443"
    assert failure(lambda: ServerClient("http://10.0.0.5:8765")).kind == "remote_not_allowed"
    assert ServerClient("http://10.0.0.5:8765", allow_remote=True).url == "http://10.0.0.5:8765"


def test_server_error_kinds_are_checked():
    with pytest.raises(ValueError, match="unknown ServerError kind"):
        ServerError("oops", "message")
    err = ServerError("bad_input", "camera.K: bad", field="camera.K", status=422, code="invalid_request")
    assert (str(err), err.field, err.status, err.code, err.transient) == ("camera.K: bad", "camera.K", 422,
                                                                          "invalid_request", False)
    assert ServerError("busy", "x").transient and ServerError("timeout", "x").transient


def test_health_sends_token_and_checks_api_version(canned):
    canned.on("GET", "/v1/health", Canned.json({"status": "ok", "api_version": API_VERSION}))
    assert ServerClient(canned.url, token=TOKEN).health()["status"] == "ok"
    assert ServerClient(canned.url).health()["api_version"] == "v1"
    assert canned.seen[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert "authorization" not in canned.seen[1].headers
    assert TOKEN not in repr(ServerClient(canned.url, token=TOKEN))

    canned.on("GET", "/v1/health", Canned.json({"status": "ok", "api_version": "v2"}))
    err = failure(ServerClient(canned.url).health)
    assert err.kind == "api_version" and "'v2'" in err.message and "must match" in err.message

    canned.on("GET", "/v1/health", Canned.error(404, "not_found", "Not Found"))
    assert failure(ServerClient(canned.url).health).kind == "api_version"


def test_url_prefix_is_kept(canned):
    canned.on("GET", "/nh/v1/health", Canned.json({"api_version": "v1"}))
    assert ServerClient(canned.url + "/nh/").health() == {"api_version": "v1"}


@pytest.mark.parametrize("answer, kind, words, field", [
    (Canned.error(401, "unauthorized", "wrong bearer token", "Authorization"), "auth",
     "~/.config/neural-human/token", "Authorization"),
    (Canned.error(404, "unknown_actor", "no actor 'bob' in /srv/actors", "id"), "not_found", "no actor 'bob'", "id"),
    (Canned.error(422, "invalid_request", "camera.width: must be at least 1", "camera.width"), "bad_input",
     "camera.width: must be at least 1", "camera.width"),
    (Canned.error(422, "invalid_body", "must have 72 numbers", "body.poses"), "bad_input",
     "body.poses: must have 72 numbers", "body.poses"),
    (Canned.error(400, "invalid_actor_id", "actor id '..' is not allowed", "id"), "bad_input", "'..'", "id"),
    (Canned.error(503, "out_of_memory", "CUDA out of memory"), "out_of_memory", "lower the resolution", None),
    (Canned.error(503, "busy", "the queue stayed busy for 60 s"), "busy", "retry", None),
    (Canned.error(500, "actor_broken", "weights.pt is damaged"), "server", "weights.pt is damaged", None),
    (Canned(502, b"<html>Bad Gateway</html>", "text/html"), "protocol", "HTTP 502", None),
    (Canned(200, b"not json at all"), "protocol", "not valid JSON", None),
    (Canned(200, b"[1, 2]"), "protocol", "not a JSON object", None),
    (Canned(200, b'{"actors": [1]}'), "protocol", "no list of actors", None),
    (Canned(200, b'{"actors": []}', "text/plain"), "protocol", "content type 'text/plain'", None),
])
def test_error_mapping(canned, answer, kind, words, field):
    canned.on("GET", "/v1/actors", answer)
    err = failure(ServerClient(canned.url, token=TOKEN).actors)
    assert err.kind == kind and words in err.message and err.field == field
    if answer.status >= 400:
        assert err.status == answer.status
    if answer.content_type == "application/json" and answer.status >= 400:
        assert err.code == json.loads(answer.body)["error"]["code"]


def test_auth_message_says_missing_or_wrong(canned):
    canned.on("GET", "/v1/actors", Canned.error(401, "unauthorized", "missing bearer token", "Authorization"))
    assert "(missing)" in failure(ServerClient(canned.url).actors).message
    err = failure(ServerClient(canned.url, token=TOKEN).actors)
    assert "(wrong)" in err.message and "preferences" in err.message


def test_token_with_control_characters_is_refused():
    err = failure(lambda: ServerClient(DEFAULT_URL, token="abc\r\nX-Evil: 1"))
    assert err.kind == "auth" and "abc" not in err.message


def test_slow_answer_times_out(canned):
    canned.on("GET", "/v1/actors", Canned(200, b'{"actors": []}', delay=1.5))
    start = time.monotonic()
    err = failure(ServerClient(canned.url, timeout=0.3).actors)
    assert err.kind == "timeout" and "0.3 s" in err.message and err.transient
    assert time.monotonic() - start < 1.4


def test_closed_port_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    err = failure(ServerClient(f"http://127.0.0.1:{port}").health)
    assert err.kind == "unreachable" and err.transient
    assert err.message.startswith(f"No Neural Human server at http://127.0.0.1:{port} (connection refused). Start "
                                  "it with `python -m server serve`")


def test_connect_timeout_is_separate():
    """A listener that never accepts, its backlog full: the next connect hangs until connect_timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        start = time.monotonic()
        for _ in range(8):  # the kernel queues a few connections beyond the backlog; fill them all
            s = socket.socket()
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
            except TimeoutError:
                s.close()
                break
            fillers.append(s)
        else:
            pytest.fail("the kernel accepted 8 connections on a backlog of 0; cannot provoke a connect timeout")
        start = time.monotonic()
        err = failure(ServerClient(f"http://127.0.0.1:{port}", timeout=30, connect_timeout=0.3).health)
        assert err.kind == "timeout" and "accept a connection within 0.3 s" in err.message
        assert time.monotonic() - start < 5
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_answer_size_limit(canned):
    canned.on("GET", "/v1/actors", Canned.json({"actors": [{"id": "x" * 500}]}))
    err = failure(ServerClient(canned.url, max_response_bytes=100).actors)
    assert err.kind == "protocol" and "larger than" in err.message
    assert ServerClient(canned.url, max_response_bytes=1000).actors() == [{"id": "x" * 500}]


def test_render_sends_numpy_as_json_and_decodes_npz(canned):
    rgba = np.random.default_rng(0).random((6, 8, 4)).astype(np.float32)
    depth = np.full((6, 8), 2.5, np.float32)
    canned.on("POST", "/v1/actors/a%20b%2F..%2F/render", npz(rgba=rgba, depth=depth))
    body = {"poses": np.zeros(72), "shapes": np.zeros(10, np.float32), "Rh": np.array([1.5, 0, 0]),
            "Th": [np.float64(0), 0, 1]}
    camera = {"K": np.eye(3) * 4, "R": np.eye(3), "T": np.zeros(3), "width": np.int64(8), "height": 6}
    out = ServerClient(canned.url, token=TOKEN).render("a b/../", body, camera, appearance_frame=np.int32(1))
    assert out["rgba"].dtype == np.float32 and np.array_equal(out["rgba"], rgba)
    assert np.array_equal(out["depth"], depth)
    sent = canned.seen[0]
    assert sent.headers["content-type"] == "application/json"
    request = json.loads(sent.body)
    assert request["outputs"] == ["rgba", "depth"] and request["appearance_frame"] == 1
    assert request["body"]["poses"] == [0.0] * 72 and request["camera"]["width"] == 8
    assert request["camera"]["K"] == (np.eye(3) * 4).tolist()


def test_render_checks_what_came_back(canned):
    canned.on("POST", "/v1/actors/x/render", npz(rgba=np.zeros((2, 2, 4), np.float32)))
    err = failure(lambda: ServerClient(canned.url).render("x", {}, {}, outputs=["rgba", "depth"]))
    assert err.kind == "protocol" and "lacks depth" in err.message
    canned.on("POST", "/v1/actors/x/render", Canned(200, b"PK\x03\x04 broken", "application/x-npz"))
    assert "not a readable .npz" in failure(lambda: ServerClient(canned.url).render("x", {}, {})).message
    canned.on("POST", "/v1/actors/x/render", Canned(200, npz_bytes(rgba=np.zeros(1)), "application/json"))
    assert failure(lambda: ServerClient(canned.url).render("x", {}, {}, ["rgba"])).kind == "protocol"


def test_npz_with_pickles_is_refused(canned):
    canned.on("GET", "/v1/jobs/j/frames/3", npz(obj=np.array([{"a": 1}], dtype=object)))
    err = failure(lambda: ServerClient(canned.url).job_frame("j", 3))
    assert err.kind == "protocol"


def test_nan_is_refused_before_sending(canned):
    err = failure(lambda: ServerClient(canned.url).render("x", {"poses": [float("nan")] * 72}, {}))
    assert err.kind == "bad_input" and "NaN" in err.message and canned.seen == []


def test_skeleton_and_motion_decoding(canned):
    joints = np.arange(72, dtype=float).reshape(24, 3) / 10
    canned.on("GET", "/v1/actors/a/skeleton", Canned.json({
        "names": [f"j{i}" for i in range(24)], "parents": [-1] + list(range(23)), "joints": joints.tolist(),
        "shapes": [0.5] * 10, "up_axis": "y"}))
    sk = ServerClient(canned.url).skeleton("a")
    assert sk["joints"].dtype == np.float64 and np.array_equal(sk["joints"], joints)
    assert sk["parents"][:3] == [-1, 0, 1] and sk["names"][5] == "j5" and sk["up_axis"] == "y"
    assert sk["shapes"].shape == (10,)
    frame = {"poses": [0.1] * 72, "shapes": [0.0] * 10, "Rh": [1, 2, 3], "Th": [4, 5, 6]}
    canned.on("GET", "/v1/actors/a/motion", Canned.json({"fps": 30, "frames": [frame, frame]}))
    m = ServerClient(canned.url).motion("a")
    assert m["fps"] == 30.0 and m["poses"].shape == (2, 72) and m["shapes"].shape == (2, 10)
    assert np.array_equal(m["Th"], [[4, 5, 6], [4, 5, 6]]) and m["frames"][1] == frame
    canned.on("GET", "/v1/actors/a/motion", Canned.json({"fps": 30, "frames": [{**frame, "Rh": [1, 2]}]}))
    assert failure(lambda: ServerClient(canned.url).motion("a")).kind == "protocol"
    canned.on("GET", "/v1/actors/a/skeleton", Canned.json({"names": [], "parents": [], "joints": [[1, 2]],
                                                            "shapes": [0] * 10}))
    assert failure(lambda: ServerClient(canned.url).skeleton("a")).kind == "protocol"


def test_job_calls(canned):
    canned.on("POST", "/v1/jobs", Canned.json({"id": "abc", "state": "queued", "done": 0, "total": 1}))
    canned.on("GET", "/v1/jobs/abc", Canned.json({"id": "abc", "state": "running", "frames_done": []}))
    canned.on("DELETE", "/v1/jobs/abc", Canned.json({"id": "abc", "state": "cancelled"}))
    client = ServerClient(canned.url)
    frames = [{"frame": 3, "body": {"poses": np.zeros(72)}}]
    assert client.create_job("x", frames, ["mesh"], voxel_size=0.05, colors=False)["id"] == "abc"
    assert json.loads(canned.seen[0].body) == {"actor": "x", "outputs": ["mesh"], "voxel_size": 0.05,
                                               "colors": False, "frames": [{"frame": 3,
                                                                            "body": {"poses": [0.0] * 72}}]}
    assert client.job("abc")["state"] == "running"
    assert client.cancel_job("abc")["state"] == "cancelled"
    assert canned.paths() == ["/v1/jobs", "/v1/jobs/abc", "/v1/jobs/abc"]
    canned.on("POST", "/v1/jobs", Canned.json({"state": "queued"}))
    assert "no job id" in failure(lambda: client.create_job("x", frames, ["mesh"])).message


def test_core_modules_import_only_stdlib_and_numpy():
    """They run inside Blender's Python: no bpy (threads), no torch/httpx/requests, nothing from the server."""
    code = ("import sys; import neural_human_addon.core.server_client, neural_human_addon.core.job_runner; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('bpy', 'torch', 'httpx', 'requests', 'server', 'urllib3', 'fastapi')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
