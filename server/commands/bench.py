"""Measure the speed of the Neural Body reference path and print it as JSON.

Figures per device (CPU always, CUDA when available): sparse-conv encode time per pose, rendering throughput
(rays/s with 64 samples per ray) and the time of a 256×256 frame (measured on a subset of its rays, extrapolated to
all rays that hit the body box), the round trip of a render through the HTTP API vs the same render in-process
and a render of a cached pose vs an uncached one, both as ratios (64×64 and 256×256; --quick: only 64×64 on CPU,
only 256×256 on CUDA), mesh extraction (measured
on a coarse grid, extrapolated to the 5 mm grid by the number of grid points) and training iterations per second
(1024 rays, forward + backward + Adam step).

The body is the actor's (``--actor``: its first captured frame, or the demo body's rest pose) or, by default, a
randomly initialised network on the demo body's vertex count in its rest pose. Every figure says whether it was
measured or extrapolated, and from what.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from neural_human_addon.core.atomic_files import write_bytes_atomic
from neural_human_addon.core.camera import look_at_extrinsics


def _timed(fn: Any, repeats: int, sync: Any) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _demo_body() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(vertices, Rh, Th, description) of the demo body at rest, or an SMPL-sized ellipsoid if it is missing."""
    try:
        from server.body.model import load_body_model

        model = load_body_model()
        body = {"poses": np.zeros(72), "shapes": np.zeros(10), "Rh": np.zeros(3), "Th": np.zeros(3)}
        verts = model.pose(body).vertices[0].cpu().numpy()
        return verts, np.zeros(3), np.zeros(3), f"demo body rest pose ({len(verts)} vertices)"
    except (FileNotFoundError, ImportError) as err:
        rng = np.random.default_rng(0)
        d = rng.normal(size=(6890, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        verts = (d * [0.25, 0.15, 0.85]).astype(np.float32)
        return verts, np.zeros(3), np.zeros(3), f"6890-vertex ellipsoid (demo body unavailable: {err})"


def _camera_facing(world_bounds: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A camera 3 m in front of the box centre (looking along +y, world z up), framing the body."""
    center = world_bounds.mean(axis=0)
    extent = float(np.max(world_bounds[1] - world_bounds[0]))
    eye = center + np.array([0.0, -3.0, 0.0])
    R, T = look_at_extrinsics(eye, center)
    focal = 0.9 * size * 3.0 / extent
    K = np.array([[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1.0]])
    return K, R, T


def bench_device(device: Any, network: Any, body: tuple[np.ndarray, np.ndarray, np.ndarray], *,
                 quick: bool) -> dict[str, Any]:
    import torch

    from server.neural_body.rays import get_rays, near_far
    from server.neural_body.sparse_input import prepare_sparse_input

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    network = network.to(device)
    verts, Rh, Th = body
    sparse_input = prepare_sparse_input(verts, Rh, Th, device=device)
    out: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    repeats = 1 if quick else 2
    size = 256
    K, R, T = _camera_facing(sparse_input.world_bounds.cpu().numpy(), size)
    ray_o, ray_d = get_rays(size, size, K, R, T, device=device)
    near, far, mask = near_far(sparse_input.world_bounds, ray_o, ray_d)
    box_rays = (ray_o[mask], ray_d[mask], near[mask], far[mask])  # the rays of a 256x256 frame that hit the box

    network.eval()
    with torch.no_grad():
        encode_s = _timed(lambda: network.encode_sparse_voxels(sparse_input), repeats, sync)
        out["encode_ms"] = round(1000 * encode_s, 1)
        out["render"] = _bench_render(network, sparse_input, box_rays, encode_s, device, quick, repeats, sync)
        out["mesh"] = _bench_mesh(network, sparse_input, encode_s, quick, sync)
    out["train"] = _bench_train(network, sparse_input, box_rays, device, repeats, sync)
    return out


def _bench_render(network: Any, sparse_input: Any, box_rays: tuple[Any, ...], encode_s: float, device: Any,
                  quick: bool, repeats: int, sync: Any) -> dict[str, Any]:
    """Rays per second with 64 samples (measured on up to 2048 / 65536 box rays), extrapolated to a 256² frame."""
    from server.neural_body.volume_renderer import render_rays

    volumes = network.encode_sparse_voxels(sparse_input)
    n_box = len(box_rays[0])
    n_rays = min(n_box, (512 if quick else 2048) if device.type == "cpu" else 65536)
    sel = tuple(r[:n_rays] for r in box_rays)
    render_s = _timed(lambda: render_rays(network, volumes, sparse_input, *sel, 0), repeats, sync)
    rays_per_s = n_rays / render_s
    return {
        "rays_per_second": round(rays_per_s, 1), "samples_per_ray": 64, "measured_rays": n_rays,
        "frame_256_box_rays": n_box,
        "frame_256_ms": round(1000 * (encode_s + n_box / rays_per_s), 1),
        "frame_256_note": "encode + box rays / measured rays_per_second"
                          + (" (extrapolated)" if n_rays < n_box else " (all rays measured)"),
    }


def _bench_mesh(network: Any, sparse_input: Any, encode_s: float, quick: bool, sync: Any) -> dict[str, Any]:
    """Marching cubes on a coarse grid, extrapolated to the 5 mm grid by the number of grid points."""
    from server.neural_body.mesh import extract_mesh, grid_axes

    world_bounds = sparse_input.world_bounds.cpu().numpy()
    coarse = 0.04 if quick else 0.02
    mesh_s = _timed(lambda: extract_mesh(network, sparse_input, 0, voxel_size=coarse, threshold=5.0,
                                         colors=False), 1, sync)
    points_coarse = int(np.prod([len(a) for a in grid_axes(world_bounds, coarse)]))
    points_fine = int(np.prod([len(a) for a in grid_axes(world_bounds, 0.005)]))
    return {"measured_voxel_size": coarse, "measured_grid_points": points_coarse,
            "measured_seconds": round(mesh_s, 2), "grid_points_5mm": points_fine,
            "seconds_5mm": round(encode_s + (mesh_s - encode_s) * points_fine / points_coarse, 1),
            "note_5mm": "extrapolated by grid points from the measured run (colours excluded)"}


def _bench_train(network: Any, sparse_input: Any, box_rays: tuple[Any, ...], device: Any, repeats: int,
                 sync: Any) -> dict[str, Any]:
    """Training iterations per second: 1024 rays, forward + backward + Adam step (as the original's recipe)."""
    import torch

    from server.neural_body.train import make_optimizer
    from server.neural_body.volume_renderer import render_rays

    network.train()
    optimizer = make_optimizer(network)
    n_train = min(1024, len(box_rays[0]))
    train_sel = [r[:n_train] for r in box_rays]
    target = torch.rand(n_train, 3, device=device)

    def step() -> None:
        vols = network.encode_sparse_voxels(sparse_input)
        res = render_rays(network, vols, sparse_input, *train_sel, 0, perturb=True)
        loss = torch.mean((res.rgb_map - target) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(network.parameters(), 40.0)
        optimizer.step()

    train_s = _timed(step, repeats, sync)
    network.eval()
    return {"iterations_per_second": round(1.0 / train_s, 3), "rays_per_iteration": n_train,
            "seconds_per_iteration": round(train_s, 2), "hours_for_200k_iterations": round(200_000 * train_s / 3600, 1)}


def http_sizes(device_type: str, quick: bool) -> tuple[int, ...]:
    """Square image sizes of the HTTP / cache figures: 64 and 256; --quick on CPU only 64, on CUDA only 256."""
    if quick:
        return (64,) if device_type == "cpu" else (256,)
    return (64, 256)


def bench_http(device: Any, network: Any, body: tuple[np.ndarray, np.ndarray, np.ndarray], *,
               quick: bool) -> dict[str, Any]:
    """Round trip of one render through the HTTP API (a real uvicorn on 127.0.0.1, cache off) vs the same request
    rendered in-process, and a render whose pose is in the feature cache vs one that encodes it, per image size
    (``http_sizes``); the top-level ratios are those of the largest size."""
    import torch

    from server.http.app import create_app
    from server.neural_body.actor import ActorManifest, Motion, save_actor
    from server.neural_body.sparse_input import prepare_sparse_input

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    verts, Rh, Th = body
    sizes = http_sizes(device.type, quick)
    repeats = 1 if quick else 3
    world_bounds = prepare_sparse_input(verts, Rh, Th).world_bounds.numpy()
    wire_body = {"poses": [0.0] * 72, "shapes": [0.0] * 10, "Rh": np.asarray(Rh, float).tolist(),
                 "Th": np.asarray(Th, float).tolist()}

    def wire_camera(size: int) -> dict[str, Any]:
        K, R, T = _camera_facing(world_bounds, size)
        return {"K": K.tolist(), "R": R.tolist(), "T": T.tolist(), "width": size, "height": size}

    with tempfile.TemporaryDirectory(prefix="neural-human-bench-") as tmp:
        root = Path(tmp)
        manifest = ActorManifest(name="bench", body_model="demo", vertex_count=network.num_vertices,
                                 frames_trained=network.num_train_frames)
        motion = Motion(np.zeros((1, 72), np.float32), np.zeros((1, 10), np.float32),
                        np.float32(Rh).reshape(1, 3), np.float32(Th).reshape(1, 3))
        save_actor(root / "actors" / "bench", network.cpu(), manifest, motion, np.zeros(10, np.float32))
        network.to(device)
        app = create_app(str(root / "actors"), BENCH_TOKEN, device.type, str(root / "jobs"), cache_bytes=0)
        requests = {size: {"body": wire_body, "camera": wire_camera(size), "outputs": ["rgba", "depth"]}
                    for size in sizes}
        http_s = _http_times(app, requests, repeats, sync)
        direct_s, cached_s = _in_process_times(app.state.registry.get("bench"), requests, repeats, sync)
    per_size = {}
    for size in sizes:
        per_size[f"{size}x{size}"] = {
            "http_ms": round(1000 * http_s[size], 1), "in_process_ms": round(1000 * direct_s[size], 1),
            "http_over_in_process": round(http_s[size] / direct_s[size], 3),
            "cached_pose_ms": round(1000 * cached_s[size], 1), "uncached_pose_ms": round(1000 * direct_s[size], 1),
            "cached_over_uncached": round(cached_s[size] / direct_s[size], 3)}
    largest = f"{sizes[-1]}x{sizes[-1]}"
    return {"repeats": repeats, "sizes": per_size, "ratio_size": largest,
            "http_over_in_process": per_size[largest]["http_over_in_process"],
            "cached_over_uncached": per_size[largest]["cached_over_uncached"],
            "note": "render (rgba + depth npz) of one pose per size; http = a real uvicorn with the cache off, "
                    "in-process = the server's render_frame without HTTP (in a worker thread, as the server); "
                    "cached = the pose's feature volumes already in the cache (camera-only work); top-level ratios "
                    "are those at ratio_size"}


BENCH_TOKEN = "bench-token-0123456789"


def _http_times(app: Any, requests: dict[int, dict[str, Any]], repeats: int, sync: Any) -> dict[int, float]:
    """Seconds per render request (and parsing its npz) through a real uvicorn serving ``app`` on 127.0.0.1."""
    import socket
    import threading

    import httpx
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    times: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the benchmark's HTTP server did not start")
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600,
                          headers={"Authorization": f"Bearer {BENCH_TOKEN}"}) as client:
            for size, request in requests.items():

                def over_http(request: dict[str, Any] = request) -> None:
                    r = client.post("/v1/actors/bench/render", json=request)
                    if r.status_code != 200:
                        raise RuntimeError(f"benchmark render failed: {r.status_code} {r.text}")
                    np.load(io.BytesIO(r.content))["rgba"]  # the client's side of the work: parse the npz

                times[size] = _timed(over_http, repeats, sync)
    finally:
        server.should_exit = True
        thread.join(10)
    return times


def _in_process_times(loaded: Any, requests: dict[int, dict[str, Any]], repeats: int,
                      sync: Any) -> tuple[dict[int, float], dict[int, float]]:
    """Seconds per render of the same requests without HTTP: (uncached, with the pose's features cached)."""
    from concurrent.futures import ThreadPoolExecutor

    from server.http.schemas import Camera
    from server.inference.frames import render_frame
    from server.neural_body.feature_cache import FeatureCache

    direct_s: dict[int, float] = {}
    cached_s: dict[int, float] = {}
    # In-process renders run in a worker thread, as the server's handlers do, so that only the HTTP layer
    # differs (on a busy CPU the main thread measured several times slower than pool threads).
    with ThreadPoolExecutor(1) as worker:
        for size, request in requests.items():
            camera = Camera(**request["camera"]).to_pinhole()

            def in_process(cache: FeatureCache | None = None, camera: Any = camera,
                           body: Any = request["body"]) -> None:
                worker.submit(render_frame, loaded, body, camera, ["rgba", "depth"], None, cache).result()

            direct_s[size] = _timed(in_process, repeats, sync)
            cache = FeatureCache(512 * 2**20)
            cached_s[size] = _timed(lambda c=cache: in_process(c), repeats, sync)  # the warm-up call fills it
    return direct_s, cached_s


def run_bench(*, actor_dir: Path | None = None, quick: bool = False, devices: list[str] | None = None) -> dict:
    import torch

    from server.neural_body.network import NeuralBodyNetwork

    start = time.perf_counter()
    if actor_dir is not None:
        from server.neural_body.actor import load_actor

        actor = load_actor(actor_dir)
        network = actor.network
        verts, Rh, Th, what = _demo_body()
        if actor.manifest.body_model != "demo" or len(verts) != network.num_vertices:
            raise ValueError(f"{actor_dir}: benchmarking needs the demo body's vertex count ({len(verts)}); the actor "
                             f"has {network.num_vertices}")
        source = f"actor {actor_dir} on the {what}"
    else:
        verts, Rh, Th, what = _demo_body()
        torch.manual_seed(0)
        network = NeuralBodyNetwork(len(verts), 1)
        source = f"randomly initialised network on the {what}"
    chosen = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    result: dict[str, Any] = {
        "source": source, "quick": quick,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads":
                    torch.get_num_threads(), "cpu_count": os.cpu_count(), "processor": platform.processor()},
        "devices": {},
    }
    for name in chosen:
        result["devices"][name] = bench_device(torch.device(name), network, (verts, Rh, Th), quick=quick)
        if what.startswith("demo body"):  # the HTTP figures need an actor on the demo body model
            result["devices"][name]["http"] = bench_http(torch.device(name), network, (verts, Rh, Th), quick=quick)
    result["total_seconds"] = round(time.perf_counter() - start, 1)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON to this file")
    parser.add_argument("--quick", action="store_true", help="fewer rays and repeats, coarser mesh grid")
    parser.add_argument("--actor", type=Path, default=None, help="benchmark this actor (demo body) instead")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="devices to measure (default: cpu, and cuda when available)")


def run(args: argparse.Namespace) -> int:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    devices = None if args.device == "all" else [args.device]
    try:
        result = run_bench(actor_dir=args.actor, quick=args.quick, devices=devices)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(args.json, (text + "\n").encode(), mode=0o644)
    return 0
