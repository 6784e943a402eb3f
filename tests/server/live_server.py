"""A real uvicorn server (`python -m server serve`) on a free 127.0.0.1 port over a tiny random actor: helpers shared
by the HTTP tests and the add-on core tests (a plain module; the fixtures live in the conftest files).

The server runs on the interpreter ``NEURAL_HUMAN_SERVER_PYTHON`` names (default: this one). The Blender-only venvs
of ``make test-blender`` (bpy, numpy, pytest; no torch) point it at the main ``.venv``, so the server, and the
torch work the tests need done (the tiny actor), run there."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from neural_human_addon.core.camera import look_at_extrinsics

REPO = Path(__file__).resolve().parents[2]
ACTOR_ID = "tiny"
UPRIGHT = [np.pi / 2, 0.0, 0.0]  # demo body is y-up; this Rh stands it z-up like ZJU-MoCap captures


def body(frame: int = 0) -> dict[str, list[float]]:
    poses = np.zeros(72)
    poses[3 * 16 + 2] = -0.3 * frame  # left shoulder
    return {"poses": poses.tolist(), "shapes": [0.0] * 10, "Rh": UPRIGHT, "Th": [0.0, 0.0, 1.0]}


def camera(width: int = 32, height: int = 24) -> dict:
    """Looking at the standing body from 3 m away along +y (world z up), OpenCV convention."""
    center = np.array([0.0, -3.0, 0.8])
    target = np.array([0.0, 0.0, 0.8])
    R, T = look_at_extrinsics(center, target)
    f = 22.0
    K = [[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]]
    return {"K": K, "R": R.tolist(), "T": T.tolist(), "width": width, "height": height}


def server_python() -> str:
    """The interpreter that runs the server: ``NEURAL_HUMAN_SERVER_PYTHON``, else the one running the tests when it
    has torch, else the main ``.venv``'s."""
    if os.environ.get("NEURAL_HUMAN_SERVER_PYTHON"):
        return os.environ["NEURAL_HUMAN_SERVER_PYTHON"]
    main = REPO / ".venv" / "bin" / "python"
    return str(main) if not has_torch() and main.exists() else sys.executable


def has_torch() -> bool:
    """Whether torch is importable here (not in the Blender-only venvs)."""
    return importlib.util.find_spec("torch") is not None


def make_actor_anywhere(root: Path) -> None:
    """:func:`make_actor` here when torch is, else in the server's interpreter."""
    if has_torch():
        make_actor(root)
        return
    script = "import sys; from pathlib import Path; from tests.server.live_server import make_actor; " \
             "make_actor(Path(sys.argv[1]))"
    subprocess.run([server_python(), "-c", script, str(root)], cwd=REPO, check=True, timeout=600,
                   env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})


def make_actor(root: Path) -> None:
    import torch

    from server.body.model import load_body_model
    from server.neural_body.actor import ActorManifest, Motion, save_actor
    from server.neural_body.network import NeuralBodyNetwork

    model = load_body_model(None)
    frames = [body(0), body(1)]
    poses = np.stack([np.asarray(b["poses"], np.float32) for b in frames])
    torch.manual_seed(0)
    network = NeuralBodyNetwork(model.num_vertices, 2).eval()
    calibrate_density(network, model.pose(frames[0]).vertices[0].numpy(), frames[0])
    motion = Motion(poses, np.zeros((2, 10), np.float32), np.tile(np.float32(UPRIGHT), (2, 1)),
                    np.tile(np.float32([0, 0, 1]), (2, 1)), fps=25.0)
    manifest = ActorManifest(name="Tiny test actor", body_model="demo", vertex_count=model.num_vertices,
                             frames_trained=2)
    save_actor(root / ACTOR_ID, network.eval(), manifest, motion, np.zeros(10, np.float32))


def calibrate_density(network, vertices: np.ndarray, b: dict) -> None:
    """Rescale the random density head so the density is ~0 far from the body and ~20 at its vertices: renders
    then have a clear silhouette and marching cubes (threshold 5) finds a surface."""
    import torch

    from server.neural_body.sparse_input import prepare_sparse_input

    sparse = prepare_sparse_input(vertices, np.float32(b["Rh"]), np.float32(b["Th"]))
    with torch.no_grad():
        volumes = network.encode_sparse_voxels(sparse)
        far_away = sparse.world_bounds[1:] + 100.0  # outside the grid: zero features
        baseline = float(network.calculate_density(far_away, volumes, sparse)[0, 0])
        at_body = float(network.calculate_density(torch.from_numpy(vertices), volumes, sparse)[:, 0].mean())
        scale = 20.0 / (at_body - baseline)
        network.alpha_fc.weight.mul_(scale)
        network.alpha_fc.bias.mul_(scale).sub_(scale * baseline + 1e-3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    token: str
    config_dir: Path
    actors: Path
    jobs: Path
    process: subprocess.Popen | None = None

    def client(self, token: str | None = "default") -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {self.token if token == 'default' else token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120.0)


@contextmanager
def running_server(actors: Path | None, jobs: Path, config: Path, log_path: Path, *extra: str) -> Iterator[Server]:
    """`python -m server serve` as a subprocess on a free port, stopped (SIGTERM, then SIGKILL) on exit;
    ``actors`` None starts it without --actors (the bundled actors folder)."""
    port = free_port()
    env = {**os.environ, "XDG_CONFIG_HOME": str(config), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = open(log_path, "a+")  # noqa: SIM115 (closed below)
    actors_args = [] if actors is None else ["--actors", str(actors)]
    command = [server_python(), "-m", "server", "serve", *actors_args, "--port", str(port), "--device", "cpu",
               "--jobs-dir", str(jobs), *extra]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        # torch imports slowly on a busy 2-core machine; with --ray the server first waits (up to 300 s) for its
        # Ray workers to import torch and load the actor
        wait = 420 if "--ray" in extra else 180
        deadline = time.monotonic() + wait
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read()}")
            try:
                if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer /v1/health within {wait} s")
            time.sleep(0.2)
        token_file = config / "neural-human" / "token"
        from server.inference.limits import BUNDLED_ACTORS_DIR

        yield Server(url, token_file.read_text().strip(), config, actors or BUNDLED_ACTORS_DIR, jobs, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
