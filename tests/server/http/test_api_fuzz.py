"""Property-based fuzz of every POST endpoint that takes a body, driven by the server's own /openapi.json: wrong
types, wrong shapes, NaN/Infinity (as bare JSON tokens and as strings), huge numbers, missing and extra fields,
negative sizes. The server must never answer 5xx, and every error must be {"error": {code, message, field}}."""

from __future__ import annotations

import copy
import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.server.live_server import ACTOR_ID, body, camera

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
MISSING = object()

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.text(max_size=4),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "inf", "1e999", "0x10"]),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324]),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
numbers = st.one_of(st.floats(-2, 2), st.sampled_from([math.nan, math.inf, 1e308, "NaN", "1.0", None]))


def vector(valid: list[float]) -> st.SearchStrategy:
    n = len(valid)
    bad = st.one_of(st.lists(st.floats(-1, 1), max_size=n + 2).filter(lambda v: len(v) != n),
                    st.lists(numbers, min_size=n, max_size=n), junk)
    return st.one_of(st.just(valid), st.just(valid), bad)


def field(valid: st.SearchStrategy, bad: st.SearchStrategy, *, optional: bool = True) -> st.SearchStrategy:
    """Mostly valid values (so deeper fields get exercised), sometimes a bad one, sometimes missing."""
    choices = [valid, valid, valid, bad] + ([st.just(MISSING)] if optional else [])
    return st.one_of(*choices)


@st.composite
def obj(draw, fields: dict[str, st.SearchStrategy]):
    if draw(st.integers(0, 19)) == 0:
        return draw(junk)  # not an object at all
    out = {k: v for k, s in fields.items() if (v := draw(s)) is not MISSING}
    if draw(st.integers(0, 4)) == 0:
        out[draw(st.text(min_size=1, max_size=6))] = draw(junk)  # an extra field
    return out


def body_strategy() -> st.SearchStrategy:
    b = body(1)
    smpl = obj({"poses": field(vector(b["poses"]), junk), "shapes": field(vector(b["shapes"]), junk),
                "Rh": field(vector(b["Rh"]), junk), "Th": field(vector(b["Th"]), junk)})
    amass = obj({"global_orient": field(vector(b["Rh"]), junk), "body_pose": field(vector(b["poses"][3:]), junk),
                 "transl": field(vector(b["Th"]), junk), "shapes": field(vector(b["shapes"]), junk)})
    return st.one_of(smpl, smpl, amass)


def matrix(valid: list[list[float]]) -> st.SearchStrategy:
    bad = st.one_of(st.lists(vector(valid[0]), max_size=4), st.lists(st.lists(numbers, max_size=4), max_size=4),
                    st.just([[1e308] * 3] * 3), st.just([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]]), junk)
    return st.one_of(st.just(valid), st.just(valid), bad)


def camera_strategy() -> st.SearchStrategy:
    c = camera(16, 12)
    sizes = st.sampled_from([-1, 0, 5000, 10**12, 1e308, 16.5, "16", None, True])
    return obj({"K": field(matrix(c["K"]), junk), "R": field(matrix(c["R"]), junk),
                "T": field(st.one_of(vector(c["T"]), st.just([1e308, 0.0, 0.0])), junk),
                "width": field(st.sampled_from([16, 8]), sizes), "height": field(st.sampled_from([12, 6]), sizes)})


outputs = st.one_of(st.lists(st.sampled_from(["rgba", "depth", "normals", ""]), max_size=3), junk)
appearance = st.one_of(st.sampled_from([0, 1, 2, -1, 10**30, 1.5, "0"]), junk)
# valid mesh voxel sizes stay coarse (the 5 mm default would take long on a CPU): "missing" is never drawn
voxel = field(st.sampled_from([0.06, 0.1]), st.one_of(st.sampled_from([-1, 0, 0.001, 0.3, "0.06"]), junk),
              optional=False)
actor_ids = st.sampled_from([ACTOR_ID, ACTOR_ID, ACTOR_ID, "nobody", "..", "a" * 300, ".hidden", "%2e%2e"])

render_bodies = obj({"body": field(body_strategy(), junk), "camera": field(camera_strategy(), junk),
                     "outputs": field(outputs, junk), "appearance_frame": field(appearance, junk)})
mesh_bodies = obj({"body": field(body_strategy(), junk), "voxel_size": voxel,
                   "colors": field(st.booleans(), junk), "appearance_frame": field(appearance, junk)})
job_frames = st.lists(obj({"frame": field(st.integers(-1, 5), junk), "body": field(body_strategy(), junk),
                           "camera": field(camera_strategy(), junk)}), max_size=3)
job_bodies = obj({"actor": field(actor_ids, junk), "outputs": field(st.lists(
                  st.sampled_from(["rgba", "depth", "mesh", "normals"]), max_size=4), junk),
                  "frames": field(job_frames, junk), "voxel_size": voxel, "colors": field(st.booleans(), junk),
                  "appearance_frame": field(appearance, junk)})

def _paths(x, prefix: tuple = ()):
    yield prefix
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


@st.composite
def mutated(draw, base: dict):
    """``base`` (a valid request) with 0-2 random edits anywhere in it: a wrong value, a removed field or list
    element, an extra field or element, a value wrapped in a list. voxel_size is never removed (see above)."""
    payload = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.sampled_from(list(_paths(payload))[1:]))
        parent = payload
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        kind = draw(st.sampled_from(["junk", "junk", "delete", "extra", "wrap"]))
        if kind == "junk":
            parent[key] = draw(st.one_of(junk, st.sampled_from([-1, 0, -0.5, 1e308, "NaN", math.nan])))
        elif kind == "delete" and key != "voxel_size":
            del parent[key]
        elif kind == "extra":
            if isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=6))] = draw(junk)
            else:
                parent.append(draw(st.one_of(junk, st.floats(-1, 1))))
        elif kind == "wrap":
            parent[key] = [parent[key]]
    return payload


VALID_RENDER = {"body": body(1), "camera": camera(16, 12), "outputs": ["rgba", "depth"], "appearance_frame": 1}
VALID_MESH = {"body": body(1), "voxel_size": 0.1, "colors": True, "appearance_frame": 0}
VALID_JOB = {"actor": ACTOR_ID, "outputs": ["rgba", "mesh"], "voxel_size": 0.1,
             "frames": [{"frame": 0, "body": body(0), "camera": camera(8, 6)}]}
AMASS = {"global_orient": body(1)["Rh"], "body_pose": body(1)["poses"][3:], "transl": body(1)["Th"],
         "shapes": [0.0] * 10}
render_bodies = st.one_of(mutated(VALID_RENDER), mutated({**VALID_RENDER, "body": AMASS}), render_bodies)
mesh_bodies = st.one_of(mutated(VALID_MESH), mutated({**VALID_MESH, "body": AMASS}), mesh_bodies)
job_bodies = st.one_of(mutated(VALID_JOB), mutated(VALID_JOB), job_bodies)

COVERED = {"/v1/actors/{actor_id}/render", "/v1/actors/{actor_id}/mesh", "/v1/jobs"}


def _post(c, path: str, payload) -> object:
    # allow_nan: NaN / Infinity go out as bare tokens (not JSON, but what a careless client sends)
    return c.post(path, content=json.dumps(payload, allow_nan=True), headers={"Content-Type": "application/json"})


def _check_answer(r, payload, *, report: bool = True) -> None:
    assert r.status_code < 500, (payload, r.status_code, r.text)
    if report:
        event(f"status {r.status_code}")  # --hypothesis-show-statistics shows how many got through validation
    if r.status_code == 200:
        return
    assert r.headers["content-type"].startswith("application/json"), r.headers
    data = r.json()
    assert list(data) == ["error"] and set(data["error"]) == {"code", "message", "field"}, data
    err = data["error"]
    assert isinstance(err["code"], str) and err["code"] and isinstance(err["message"], str) and err["message"]
    assert err["field"] is None or isinstance(err["field"], str)


def test_openapi_post_paths_are_all_fuzzed(server):
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    posts = {p: ops["post"] for p, ops in spec["paths"].items() if "post" in ops}
    with_body = {p for p, op in posts.items() if "requestBody" in op}
    assert with_body == COVERED, with_body
    assert set(posts) - with_body == {"/v1/actors/{actor_id}/unload"}  # takes no body: nothing to fuzz


@FUZZ
@given(actor=actor_ids, payload=render_bodies)
def test_fuzz_render(server, actor, payload):
    with server.client() as c:
        r = _post(c, f"/v1/actors/{actor}/render", payload)
    _check_answer(r, payload)
    if r.status_code == 200:
        with np.load(io.BytesIO(r.content)) as data:
            cam = payload["camera"]
            for name in data.files:
                assert data[name].shape[:2] == (cam["height"], cam["width"]) and np.isfinite(data[name]).all()


@pytest.mark.slow
@FUZZ
@given(payload=mesh_bodies)
def test_fuzz_mesh(server, payload):
    with server.client() as c:
        r = _post(c, f"/v1/actors/{ACTOR_ID}/mesh", payload)
    _check_answer(r, payload)
    if r.status_code == 200:
        with np.load(io.BytesIO(r.content)) as data:
            assert data["vertices"].ndim == 2 and data["faces"].dtype == np.int32


@FUZZ
@given(payload=job_bodies)
def test_fuzz_jobs(server, payload):
    with server.client() as c:
        r = _post(c, "/v1/jobs", payload)
        _check_answer(r, payload)
        if r.status_code == 200:
            assert c.delete(f"/v1/jobs/{r.json()['id']}").status_code == 200  # keep the worker free


def test_not_json_and_wrong_content(server):
    with server.client() as c:
        for path in sorted(COVERED):
            for content in (b"{", b"\xff\xfe", b"", b"[]", b"null", b'"x"', b"1e999999"):
                r = c.post(path.replace("{actor_id}", ACTOR_ID), content=content,
                           headers={"Content-Type": "application/json"})
                _check_answer(r, content, report=False)
                assert r.status_code == 422, (path, content, r.text)
