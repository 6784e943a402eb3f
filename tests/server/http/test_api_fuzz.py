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


# --- generated from /openapi.json: extreme numbers, long strings, deep nesting (issue 14) ---------------------------

EXTREME_FLOATS = [1e20, -1e20, 1e300, -1e300, 5e-324, -5e-324, 1e-310, 2.5e-308, 3.4e38, 3.5e38, -3.5e38]
EXTREME_INTS = [2**31, -(2**31) - 1, 2**63, -(2**63), 10**30, -1, 0]
LONG_STRINGS = ["a" * 100_000, "é" * 20_000, "\x00" * 1000, "../" * 3000]
FUZZ_RSS_BOUND_MB = 2048  # VmHWM of the shared test server after all fuzz cases (measured: see the report)


def deep(depth: int) -> object:
    value: object = 0.0
    for _ in range(depth):
        value = [value]
    return value


extremes = st.one_of(st.sampled_from(EXTREME_FLOATS), st.sampled_from(EXTREME_INTS), st.sampled_from(LONG_STRINGS),
                     st.sampled_from([deep(50), deep(400), {"a": deep(200)}]))


@st.composite
def extreme_vector(draw, valid: list[float]):
    """``valid`` with one to all of its values replaced by an extreme number (finite: ±1e20, ±1e300, subnormals)."""
    out = list(valid)
    for i in draw(st.lists(st.integers(0, len(out) - 1), min_size=1, max_size=len(out))):
        out[i] = draw(st.sampled_from(EXTREME_FLOATS))
    return out


def extreme_body() -> st.SearchStrategy:
    b = body(1)
    return st.one_of(*(st.builds(lambda k=k, v=v: {**b, k: v}) for k, v in ()),
                     *(extreme_vector(b[k]).map(lambda v, k=k: {**b, k: v}) for k in ("poses", "shapes", "Rh", "Th")),
                     st.just({**b, "shapes": [5.0, -5.0] * 5}), st.just({**b, "shapes": [5.001] * 10}))


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


# properties whose valid values would make a CPU render or mesh slow: small valid values or extremes only
OVERRIDES = {
    "width": st.one_of(st.sampled_from([8, 16]), st.sampled_from(EXTREME_INTS + EXTREME_FLOATS)),
    "height": st.one_of(st.sampled_from([6, 12]), st.sampled_from(EXTREME_INTS + EXTREME_FLOATS)),
    "voxel_size": st.one_of(st.sampled_from([0.06, 0.1]), st.sampled_from(EXTREME_FLOATS + [0.0019, 0.2001])),
    "actor": st.one_of(st.just(ACTOR_ID), st.sampled_from(LONG_STRINGS)),
}


def from_schema(spec: dict, schema: dict, name: str = "", depth: int = 0) -> st.SearchStrategy:
    """Values for an OpenAPI schema: mostly valid shapes with extreme leaves, sometimes an extreme value anywhere."""
    schema = _resolve(spec, schema)
    if name in OVERRIDES:
        return OVERRIDES[name]
    if name == "body":
        return st.one_of(extreme_body(), body_strategy(), extremes)
    if name == "camera":
        c = camera(16, 12)
        return st.one_of(st.just(c), extreme_vector(c["T"]).map(lambda t: {**c, "T": t}),
                         st.just({**c, "K": [[1e300, 0, 8], [0, 1e300, 6], [0, 0, 1]]}),
                         st.just({**c, "K": [[5e-324, 0, 8], [0, 5e-324, 6], [0, 0, 1]]}), extremes)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of(*(from_schema(spec, s, name, depth + 1) for s in schema[key]))
    valid = _valid_from_schema(spec, schema, depth)
    return st.one_of(valid, valid, valid, extremes)


def _valid_from_schema(spec: dict, schema: dict, depth: int) -> st.SearchStrategy:
    kind = schema.get("type")
    if "enum" in schema or "const" in schema:
        return st.sampled_from(schema.get("enum") or [schema["const"]])
    if kind == "object" and depth < 6:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(spec, v, k, depth + 1) for k, v in props.items() if k in required},
            optional={k: from_schema(spec, v, k, depth + 1) for k, v in props.items() if k not in required})
    if kind == "array" and depth < 6:
        items = schema.get("items", {})
        return st.lists(from_schema(spec, items, "", depth + 1), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 3), 3))
    if kind == "integer":
        return st.integers(schema.get("minimum", -5), min(schema.get("maximum", 5), 5))
    if kind == "number":
        return st.floats(schema.get("minimum", -2), schema.get("maximum", 2))
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return st.text(max_size=8)
    return junk


@pytest.fixture(scope="module")
def openapi(server) -> dict:
    with server.client() as c:
        return c.get("/openapi.json").json()


@pytest.mark.parametrize("path", sorted(COVERED))
def test_fuzz_from_openapi_with_extreme_values(server, openapi, path):
    op = openapi["paths"][path]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    url = path.replace("{actor_id}", ACTOR_ID)

    @settings(max_examples=8 if "mesh" in path else 25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(payload=from_schema(openapi, schema))
    def run(payload):
        with server.client() as c:
            r = _post(c, url, payload)
            _check_answer(r, payload, report=False)
            if r.status_code == 200 and path == "/v1/jobs":
                assert c.delete(f"/v1/jobs/{r.json()['id']}").status_code == 200

    run()


def test_deep_nesting_and_huge_numbers_as_raw_json(server):
    """Bodies json.dumps cannot make: nesting deeper than any parser's recursion, numbers past float64."""
    raw = [b"[" * 100_000 + b"]" * 100_000, b'{"body": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
           b'{"body": {"poses": [1' + b"0" * 400 + b"]}}", b'{"camera": {"width": 1' + b"0" * 5000 + b"}}"]
    with server.client() as c:
        for path in sorted(COVERED):
            for content in raw:
                r = c.post(path.replace("{actor_id}", ACTOR_ID), content=content,
                           headers={"Content-Type": "application/json"})
                _check_answer(r, content[:80], report=False)


def _check_model(spec: dict, schema: dict, value: object, where: str) -> None:
    """The answer against its OpenAPI response model: required fields present, JSON types as declared."""
    schema = _resolve(spec, schema)
    if "anyOf" in schema:
        errors = []
        for s in schema["anyOf"]:
            try:
                _check_model(spec, s, value, where)
                return
            except AssertionError as err:
                errors.append(str(err))
        raise AssertionError(f"{where}: matches none of {errors}")
    types = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
             "boolean": bool, "null": type(None)}
    kind = schema.get("type")
    if kind is not None:
        assert isinstance(value, types[kind]), f"{where}: {value!r:.80} is not {kind}"
    if kind == "object":
        for k in schema.get("required", []):
            assert k in value, f"{where}: missing {k}"
        for k, s in schema.get("properties", {}).items():
            if k in value:
                _check_model(spec, s, value[k], f"{where}.{k}")
    if kind == "array":
        for i, item in enumerate(value[:50]):
            _check_model(spec, schema.get("items", {}), item, f"{where}.{i}")


def test_answers_match_the_openapi_response_models(server, openapi):
    with server.client() as c:
        job = c.post("/v1/jobs", json=VALID_JOB).json()["id"]
        gets = {"/v1/health": "/v1/health", "/v1/actors": "/v1/actors",
                "/v1/actors/{actor_id}/skeleton": f"/v1/actors/{ACTOR_ID}/skeleton",
                "/v1/actors/{actor_id}/motion": f"/v1/actors/{ACTOR_ID}/motion", "/v1/jobs/{job_id}": f"/v1/jobs/{job}"}
        for template, url in gets.items():
            r = c.get(url)
            assert r.status_code == 200, r.text
            schema = openapi["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            _check_model(openapi, schema, r.json(), template)
        r = c.get("/v1/jobs/" + "0" * 32)
        schema = openapi["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["404"]["content"]["application/json"]
        _check_model(openapi, schema["schema"], r.json(), "404")
        c.delete(f"/v1/jobs/{job}")


def test_zz_server_peak_memory_after_fuzzing(server):
    """Runs last in this module: the shared server's VmHWM stays under FUZZ_RSS_BOUND_MB after every case above."""
    status = open(f"/proc/{server.process.pid}/status").read()
    peak_mb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    print(f"server VmHWM after fuzzing: {peak_mb:.0f} MB")
    assert peak_mb < FUZZ_RSS_BOUND_MB
