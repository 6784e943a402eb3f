"""The demo body build: reproducible from the MakeHuman assets, and the committed file is what it builds."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from server.body import demo_body_build
from server.body.skeleton import DEMO_BODY_PATH
from server.commands import build_demo_body

SOURCE = build_demo_body.default_source()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    build_demo_body.add_arguments(parser)
    return parser.parse_args(argv)


def test_missing_source_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build_demo_body.run(parse(["--source", str(tmp_path), "--out", str(tmp_path / "x.npz")])) == 2
    assert "base.obj" in capsys.readouterr().out and not (tmp_path / "x.npz").exists()


def test_rotation_between() -> None:
    a, b = np.array([1.0, -1.0, 0.2]), np.array([0.0, 0.0, 1.0])
    r = demo_body_build.rotation_between(a, b)
    assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1)
    assert np.allclose(r @ (a / np.linalg.norm(a)), b)


@pytest.mark.slow
@pytest.mark.skipif(not SOURCE.is_dir(), reason=f"MakeHuman assets not at {SOURCE} (see shared/data/README.md)")
def test_build_reproduces_committed_asset(tmp_path: Path) -> None:
    out = tmp_path / "demo_body.npz"
    assert build_demo_body.run(parse(["--out", str(out)])) == 0
    with np.load(out) as built, np.load(DEMO_BODY_PATH) as committed:
        assert sorted(built.files) == sorted(committed.files)
        for key in built.files:
            if key.startswith("J_regressor"):
                continue  # compared through the joints it gives (NNLS may pick other vertices on another BLAS)
            if built[key].dtype.kind == "f":
                assert np.allclose(built[key], committed[key], rtol=0, atol=1e-5), key
            else:
                assert np.array_equal(built[key], committed[key]), key
        joints = [
            csr_matrix((z["J_regressor_data"], z["J_regressor_indices"], z["J_regressor_indptr"]), shape=(24, 13380))
            @ (z["v_template"] + z["shapedirs"] @ np.linspace(-2, 2, 10)) for z in (built, committed)
        ]
        assert np.allclose(joints[0], joints[1], atol=1e-4)
    assert out.stat().st_size < 5e6
