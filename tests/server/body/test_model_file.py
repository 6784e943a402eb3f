"""SMPL .pkl files (plain and chumpy-pickled) load through the same BodyModel; written here, never real SMPL."""

from __future__ import annotations

import functools
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.sparse import csc_matrix

from server.body.model import DEMO_BODY_PATH, BodyModel, load_body_model
from server.body.model_file import ModelArrays, read_model_file


@functools.cache
def demo_arrays() -> tuple[ModelArrays, np.ndarray]:
    demo = read_model_file(DEMO_BODY_PATH)
    posedirs = np.random.default_rng(0).normal(0, 1e-3, (demo.v_template.shape[0], 3, 207)).astype(np.float32)
    return demo, posedirs


@functools.cache
def demo_model() -> BodyModel:
    return load_body_model()


def smpl_dict(wrap=lambda a: a) -> dict[str, object]:
    """The demo body's arrays in SMPL's .pkl layout (posedirs (V,3,207), sparse J_regressor, uint32 root)."""
    demo, posedirs = demo_arrays()
    kintree = np.stack([demo.parents, np.arange(24)]).astype(np.int64)
    kintree[0, 0] = 4294967295
    return {
        "v_template": wrap(demo.v_template), "shapedirs": wrap(demo.shapedirs), "posedirs": wrap(posedirs),
        "J_regressor": csc_matrix(demo.J_regressor), "weights": wrap(demo.weights), "kintree_table": kintree,
        "f": demo.faces.astype(np.uint32), "bs_type": "lrotmin", "bs_style": "lbs",
    }


@pytest.fixture()
def fake_chumpy(monkeypatch: pytest.MonkeyPatch) -> type:
    """A stand-in 'chumpy.ch.Ch' that pickles like chumpy: an object whose state holds the array as 'x'."""
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x: np.ndarray):
            self.x = x
            self._dirty_vars: set[str] = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    mod.Ch, pkg.ch = Ch, mod
    monkeypatch.setitem(sys.modules, "chumpy", pkg)
    monkeypatch.setitem(sys.modules, "chumpy.ch", mod)
    return Ch


def check_against_demo(path: Path) -> None:
    demo, smpl = demo_model(), load_body_model(path)
    assert smpl.name == path.stem and smpl.face_uvs is None
    g = torch.Generator().manual_seed(3)
    poses = 0.3 * torch.randn(2, 72, generator=g)
    shapes = torch.randn(2, 10, generator=g)
    rh, th = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    a, b = demo(poses, shapes, rh, th), smpl(poses, shapes, rh, th)
    assert torch.allclose(a.joints, b.joints, atol=1e-5)  # pose blend shapes move vertices, not joints
    offsets = (b.vertices - a.vertices).norm(dim=-1)
    assert 1e-4 < offsets.mean() < 0.05  # the pose blend shapes are applied
    zero = smpl(torch.zeros(1, 72), torch.zeros(1, 10), torch.zeros(1, 3), torch.zeros(1, 3))
    assert torch.allclose(zero.vertices[0], demo.v_template, atol=1e-6)  # no pose blend shape at rest


def test_plain_pickle(tmp_path: Path) -> None:
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(smpl_dict(), protocol=2))
    check_against_demo(path)


def test_chumpy_pickle_loads_without_chumpy(tmp_path: Path, fake_chumpy: type) -> None:
    path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    data = smpl_dict(wrap=fake_chumpy)
    payload = pickle.dumps(data, protocol=2)
    assert b"chumpy.ch" in payload
    path.write_bytes(payload)
    del sys.modules["chumpy.ch"], sys.modules["chumpy"]  # loading must not need (fake) chumpy
    check_against_demo(path)


def test_npz_in_smpl_layout(tmp_path: Path) -> None:
    path = tmp_path / "smpl_as_npz.npz"
    d = smpl_dict()
    d["J_regressor"] = d["J_regressor"].toarray()
    np.savez(path, **{k: v for k, v in d.items() if not isinstance(v, str)})
    check_against_demo(path)


def test_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_body_model(tmp_path / "missing.pkl")
    bad = tmp_path / "bad.pkl"
    d = smpl_dict()
    del d["weights"]
    bad.write_bytes(pickle.dumps(d))
    with pytest.raises(ValueError, match="missing weights"):
        load_body_model(bad)
    other = tmp_path / "model.obj"
    other.write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match="unsupported"):
        load_body_model(other)
    tree = tmp_path / "tree.pkl"
    d = smpl_dict()
    d["kintree_table"] = d["kintree_table"][:, ::-1].copy()
    tree.write_bytes(pickle.dumps(d))
    with pytest.raises(ValueError, match="kinematic tree"):
        load_body_model(tree)
