"""Render, mesh and unload against the real server, plus validation errors naming the field."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.server.live_server import ACTOR_ID, body, camera

RENDER = f"/v1/actors/{ACTOR_ID}/render"
MESH = f"/v1/actors/{ACTOR_ID}/mesh"


def _npz(content: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(content), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def test_render_npz(server):
    with server.client() as c:
        r = c.post(RENDER, json={"body": body(0), "camera": camera(), "outputs": ["rgba", "depth"]})
    assert r.status_code == 200, r.text
    out = _npz(r.content)
    rgba, depth = out["rgba"], out["depth"]
    assert rgba.dtype == np.float32 and rgba.shape == (24, 32, 4)
    assert depth.dtype == np.float32 and depth.shape == (24, 32)
    alpha = rgba[..., 3]
    assert np.all((alpha >= 0) & (alpha <= 1)) and np.all((rgba[..., :3] >= 0) & (rgba[..., :3] <= 1))
    assert np.all(depth[alpha == 0] == 0)
    assert (alpha == 0).any() and (alpha > 0.5).any()  # background around the body, the body covered
    assert np.all(np.isfinite(depth)) and depth.max() > 0
    # the body's box is 3 m ± 0.9 m in front of the camera; depth = Σ w·z never exceeds the far plane
    assert depth.max() < 4.5
    # Server-Timing: what the server spent rendering and encoding, within the request's own round trip
    timing = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
    assert set(timing) == {"render", "encode"}
    assert 0 < float(timing["render"]) and 0 <= float(timing["encode"])
    assert float(timing["render"]) + float(timing["encode"]) <= 1000 * r.elapsed.total_seconds()


def test_render_amass_body_matches_easymocap(server):
    from server.body.model import load_body_model
    from server.body.params import axis_angle_to_matrix

    b = body(1)
    j0 = load_body_model(None).pelvis_rest(np.zeros((1, 10), np.float32))[0].astype(np.float64)
    rot = axis_angle_to_matrix(np.asarray([b["Rh"]]))[0]
    transl = np.asarray(b["Th"]) - j0 + rot @ j0  # Th = transl + J0 − R·J0
    amass = {"global_orient": b["Rh"], "body_pose": b["poses"][3:], "transl": transl.tolist(), "betas": b["shapes"]}
    with server.client() as c:
        a = _npz(c.post(RENDER, json={"body": b, "camera": camera(), "outputs": ["rgba"]}).content)
        r = c.post(RENDER, json={"body": amass, "camera": camera(), "outputs": ["rgba"]})
    assert r.status_code == 200, r.text
    m = _npz(r.content)
    assert set(m) == {"rgba"}
    np.testing.assert_allclose(m["rgba"], a["rgba"], atol=2e-3)


def test_render_png(server):
    from PIL import Image

    with server.client() as c:
        r = c.post(RENDER, json={"body": body(0), "camera": camera(20, 16), "appearance_frame": 0},
                   headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.mode == "RGBA" and img.size == (20, 16)
    alpha = np.asarray(img)[..., 3]
    assert alpha.min() == 0 and alpha.max() > 128


def test_mesh_npz_and_ply(server):
    from server.body.model import load_body_model
    from server.neural_body.mesh import read_ply

    verts = load_body_model(None).pose(body(0)).vertices[0].numpy()
    voxel, pad = 0.04, np.array([0.0, 0.0, 0.05])  # ZJU box padding: 0.05 m on the vertical axis
    # the grid starts at the padded box's min and ends at the first sample at or beyond its max
    lo, hi = verts.min(0) - pad - 1e-5, verts.max(0) + pad + voxel + 1e-5
    req = {"body": body(0), "voxel_size": voxel}
    with server.client() as c:
        r = c.post(MESH, json=req)
        assert r.status_code == 200, r.text
        mesh = _npz(r.content)
        p = c.post(MESH, json={**req, "colors": False}, headers={"Accept": "application/ply"})
    v, f, col = mesh["vertices"], mesh["faces"], mesh["colors"]
    assert v.dtype == np.float32 and v.ndim == 2 and v.shape[1] == 3 and len(v) > 0
    assert f.dtype == np.int32 and f.shape[1] == 3 and f.min() >= 0 and f.max() < len(v)
    assert col.dtype == np.uint8 and col.shape == v.shape
    assert np.all(v >= lo) and np.all(v <= hi)
    assert p.status_code == 200 and p.headers["content-type"] == "application/ply"
    path = server.config_dir / "mesh.ply"
    path.write_bytes(p.content)
    ply = read_ply(path)
    np.testing.assert_allclose(ply.vertices, v, atol=1e-6)
    assert ply.colors is None


def test_unload_then_reload(server):
    with server.client() as c:
        assert c.get(f"/v1/actors/{ACTOR_ID}/skeleton").status_code == 200  # loads
        assert ACTOR_ID in c.get("/v1/health").json()["loaded_actors"]
        r = c.post(f"/v1/actors/{ACTOR_ID}/unload")
        assert r.status_code == 200 and r.json()["unloaded"] is True
        assert ACTOR_ID not in c.get("/v1/health").json()["loaded_actors"]
        assert c.post(f"/v1/actors/{ACTOR_ID}/unload").json()["unloaded"] is False
        assert c.get(f"/v1/actors/{ACTOR_ID}/motion").status_code == 200  # loads again on use
        assert c.post("/v1/actors/nobody/unload").status_code == 404


def _bad(change):
    req = {"body": body(0), "camera": camera(), "outputs": ["rgba"]}
    change(req)
    return req


BAD_RENDERS = [
    (lambda r: r["camera"].update(K=[[1, 0], [0, 1]]), "camera.K"),
    (lambda r: r["camera"]["K"][0].__setitem__(0, -10.0), "camera.K"),
    (lambda r: r["camera"].update(R=[[2, 0, 0], [0, 1, 0], [0, 0, 1]]), "camera.R"),
    (lambda r: r["camera"].update(T=[0, 0]), "camera.T"),
    (lambda r: r["camera"].update(width=0), "camera.width"),
    (lambda r: r["camera"].update(height=5000), "camera.height"),
    (lambda r: r["camera"].update(width=4096, height=4096), "camera"),
    (lambda r: r["camera"].update(width="32"), "camera.width"),
    (lambda r: r["camera"].pop("R"), "camera.R"),
    (lambda r: r.update(outputs=["normals"]), "outputs.0"),
    (lambda r: r.update(outputs=[]), "outputs"),
    (lambda r: r.update(appearance_frame=7), "appearance_frame"),
    (lambda r: r.update(appearance_frame=-1), "appearance_frame"),
    (lambda r: r["body"].update(poses=[0.0] * 71), "body.poses"),
    (lambda r: r["body"].update(Th=["a", 0, 0]), "body.Th"),
    (lambda r: r["body"].pop("Rh"), "body.Rh"),
    (lambda r: r["body"].update(poses=[[0.0] * 72] * 2), "body"),
    (lambda r: r["body"].update(transl=[0, 0, 0]), "body.transl"),
    (lambda r: r.pop("body"), "body"),
]


@pytest.mark.parametrize("change,field", BAD_RENDERS)
def test_bad_render_requests(server, change, field):
    with server.client() as c:
        r = c.post(RENDER, json=_bad(change))
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert err["field"] == field, err
    assert err["message"] and err["code"]


def test_non_finite_and_malformed_json(server):
    with server.client() as c:
        text = '{"body": {"poses": [0], "Rh": [0,0,0], "Th": [0,0,0]}, "camera": {"K": [[NaN,0,1],[0,1,1],[0,0,1]],' \
               ' "R": [[1,0,0],[0,1,0],[0,0,1]], "T": [0,0,0], "width": 4, "height": 4}}'
        r = c.post(RENDER, content=text, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["field"].startswith("camera.K"), r.text
        r = c.post(RENDER, content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        import json

        text = json.dumps({"body": {"poses": [0.0] * 72, "Rh": [0, 0, 0], "Th": [0, 0, 0]}, "camera": camera()})
        r = c.post(RENDER, content=text.replace('"Th": [0, 0, 0]', '"Th": [0, 0, 1e400]'),
                   headers={"Content-Type": "application/json"})  # 1e400 parses as infinity
        assert r.status_code == 422 and r.json()["error"]["field"] == "body.Th", r.text


@pytest.mark.parametrize("req,field", [
    ({"voxel_size": 0.0001}, "voxel_size"),
    ({"voxel_size": -1}, "voxel_size"),
    ({"voxel_size": "big"}, "voxel_size"),
    ({"colors": "maybe"}, "colors"),
    ({"body": {"poses": [0.0] * 72}}, "body.Th"),
])
def test_bad_mesh_requests(server, req, field):
    with server.client() as c:
        r = c.post(MESH, json={"body": body(0), **req})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["field"] == field


def test_mesh_grid_limit(server):
    # a body scaled up by a huge translation spread is not possible; a huge grid comes from a fine voxel over a box:
    # 0.002 m over a ~1.7 m x 1.6 m x 0.4 m box is ~ 70 M points, over the limit
    with server.client() as c:
        r = c.post(MESH, json={"body": body(0), "voxel_size": 0.002})
    assert r.status_code == 422 and r.json()["error"]["field"] == "voxel_size", r.text
