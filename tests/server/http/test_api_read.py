"""Health, listing, skeleton, motion, auth and actor-id checks against the real server."""

from __future__ import annotations

import stat

import httpx
import numpy as np
import pytest

from tests.server.live_server import ACTOR_ID


def test_health_needs_no_token(server):
    r = httpx.get(server.url + "/v1/health")
    assert r.status_code == 200
    data = r.json()
    assert data["api_version"] == "v1"
    assert data["server_version"]
    assert data["device"]["type"] == "cpu"
    assert isinstance(data["loaded_actors"], list)


def test_token_file_generated_private(server):
    path = server.config_dir / "neural-human" / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(server.token) >= 32


@pytest.mark.parametrize("token", [None, "wrong-token-wrong-token"])
@pytest.mark.parametrize("method,path", [("GET", "/v1/actors"), ("GET", f"/v1/actors/{ACTOR_ID}/skeleton"),
                                         ("POST", f"/v1/actors/{ACTOR_ID}/render"),
                                         ("POST", f"/v1/actors/{ACTOR_ID}/unload")])
def test_auth_required(server, token, method, path):
    with server.client(token) as c:
        r = c.request(method, path, json={})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.json()["error"]["field"] == "Authorization"


def test_actor_listing(server):
    with server.client() as c:
        r = c.get("/v1/actors")
    assert r.status_code == 200
    actors = r.json()["actors"]
    assert [a["id"] for a in actors] == [ACTOR_ID]  # the folder without a manifest is not listed
    a = actors[0]
    assert a["name"] == "Tiny test actor" and a["frames"] == 2 and a["body_model"] == "demo" and a["up_axis"] == "z"
    assert "bounds" in a


def test_skeleton(server):
    from server.body.model import SMPL_JOINT_NAMES, SMPL_PARENTS, load_body_model

    with server.client() as c:
        r = c.get(f"/v1/actors/{ACTOR_ID}/skeleton")
    assert r.status_code == 200
    data = r.json()
    assert data["names"] == list(SMPL_JOINT_NAMES) and data["parents"] == list(SMPL_PARENTS)
    joints = np.asarray(data["joints"])
    assert joints.shape == (24, 3)
    expected = load_body_model(None).rest_joints(np.zeros(10, np.float32)).numpy()
    np.testing.assert_allclose(joints, expected, atol=1e-5)


def test_motion_round_trips(server):
    from tests.server.live_server import body

    with server.client() as c:
        r = c.get(f"/v1/actors/{ACTOR_ID}/motion")
    assert r.status_code == 200
    data = r.json()
    assert data["fps"] == 25.0 and len(data["frames"]) == 2
    for i, frame in enumerate(data["frames"]):
        for key, value in body(i).items():
            np.testing.assert_allclose(frame[key], value, atol=1e-6)


@pytest.mark.parametrize("path", ["/v1/actors/nobody/skeleton", "/v1/actors/not-an-actor/motion"])
def test_unknown_actor_404(server, path):
    with server.client() as c:
        r = c.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_actor"


@pytest.mark.parametrize("raw_id,status", [("%2E%2E", 400), (".hidden", 400), ("a..b", 400), ("~root", 400),
                                           ("%2Fetc%2Fpasswd", 404), ("..%2F..%2Fetc", 404), ("..", 404)])
def test_escaping_actor_ids_rejected(server, raw_id, status):
    # Encoded slashes decode to extra path segments, so no route matches (404); '..' and odd names reach the
    # registry, which refuses them (400) before touching the file system.
    with server.client() as c:
        r = c.get(httpx.URL(server.url + "/v1/actors/" + raw_id + "/skeleton"))
        assert r.status_code == status
        assert r.json()["error"]["code"] == ("invalid_actor_id" if status == 400 else "not_found")
        r = c.post(httpx.URL(server.url + "/v1/actors/" + raw_id + "/unload"))
        assert r.status_code == status


@pytest.mark.parametrize("actor_id", ["..", "/etc", "/", "a/../../b", ".", "", "x" * 200])
def test_registry_refuses_escaping_ids(tmp_path, actor_id):
    from server.errors import InvalidActorId
    from server.http.errors import status_of
    from server.inference.actor_registry import ActorRegistry

    with pytest.raises(InvalidActorId) as info:
        ActorRegistry(tmp_path).folder(actor_id)
    assert status_of(info.value) == 400 and info.value.field == "id"


def test_unknown_route_is_json_404(server):
    with server.client() as c:
        r = c.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
