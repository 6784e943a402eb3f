"""The demo body (server.body, tests only) as ground truth for the add-on's Blender tests: its rest joints and the
body posed by wire parameters, as numpy.

The body model runs on torch. Where torch is importable (the main venv) it runs in-process; in the Blender-only venvs
of ``make test-blender`` (bpy, numpy, pytest; never torch) one worker process on the server's interpreter
(``NEURAL_HUMAN_SERVER_PYTHON``, see tests/server/live_server.py) answers instead, so the same tests run on every
Blender version."""

from __future__ import annotations

import atexit
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from tests.server.live_server import REPO, has_torch, server_python

# Reads "<in.npz> <out.npz>" lines; "op" in the input picks rest (rest joints, the template's lowest y) or pose.
_WORKER = r"""
import sys
import numpy as np
import torch
from server.body.model import load_body_model

body = load_body_model().double()
for line in sys.stdin:
    src, dst = line.split()
    np.savez(dst, **answer(body, dict(np.load(src))))
    print("done", flush=True)
"""

_ANSWER = r"""
def answer(body, request):
    import numpy as np
    import torch

    if str(request["op"]) == "rest":
        return {"joints": body.rest_joints().numpy().astype(np.float64),
                "sole": np.float64(body.v_template[:, 1].min().item())}
    t = [torch.as_tensor(request[k], dtype=torch.float64) for k in ("poses", "shapes", "Rh", "Th")]
    with torch.no_grad():
        out = body(*t)
    return {"joints": out.joints.numpy(), "vertices": out.vertices.numpy()}
"""


class _Worker:
    """The server interpreter holding the demo body, asked through npz files."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([server_python(), "-c", _ANSWER + _WORKER], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        atexit.register(self.close)

    def ask(self, **request: np.ndarray | str) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
            np.savez(src, **request)
            self.proc.stdin.write(f"{src} {dst}\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            while line and line.strip() != "done":  # anything else the body model printed
                line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the demo-body worker ({server_python()}) stopped (exit {self.proc.poll()})")
            return dict(np.load(dst))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@lru_cache(maxsize=1)
def _in_process():
    from server.body.model import load_body_model

    namespace: dict = {}
    exec(_ANSWER, namespace)  # the same answer() the worker runs
    return load_body_model().double(), namespace["answer"]


@lru_cache(maxsize=1)
def _worker() -> _Worker:
    return _Worker()


def _ask(**request: np.ndarray | str) -> dict[str, np.ndarray]:
    if has_torch():
        body, answer = _in_process()
        return answer(body, request)
    return _worker().ask(**request)


@lru_cache(maxsize=1)
def rest() -> tuple[np.ndarray, float]:
    """(rest joints (24, 3) Y-up, the lowest y of the template: the soles)."""
    out = _ask(op="rest")
    return np.asarray(out["joints"], np.float64), float(out["sole"])


def pose(poses, rh, th, shapes=None) -> tuple[np.ndarray, np.ndarray]:
    """(joints (F, 24, 3), vertices (F, V, 3)) of the demo body posed by (F, 72) poses, (F, 3) Rh and Th and
    ``shapes`` (10,) (default zero), float64, actor world."""
    out = _ask(op="pose", poses=np.asarray(poses, np.float64), Rh=np.asarray(rh, np.float64),
               Th=np.asarray(th, np.float64), shapes=np.zeros(10) if shapes is None else np.asarray(shapes, np.float64))
    return np.asarray(out["joints"]), np.asarray(out["vertices"])
