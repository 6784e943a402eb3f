"""Measure the fast path against the reference path, side by side in one run, and print the figures as JSON.

On the bundled demo actor (or --actor), per device (CPU always, CUDA when available):

- frame: one WxW image (256 on CPU, 512 on CUDA) of a new pose each frame (the sparse-conv encode counted, no
  cache), the body filling ~80% of the image height; median seconds per frame of each path, the ratio, and their
  agreement on the same frames (PSNR over premultiplied RGB, max alpha difference); on CUDA also per precision of
  the fast path's point network (tf32, bf16, fp16) against the fp32 reference, the CPU's march (segments of 8) and
  segments of 16 and 32 against the GPU's (one pass), and the fast path without the density refinement of its
  occupancy (whether it pays on a GPU); "launches": the tensor operations, host read-backs and host-made tensors of
  one fast frame with each device's march schedule (counted the same on any device; what bounds a GPU frame);
- views: one pose from new cameras (orbit, live preview), each path with its per-pose cache, same figures;
- mesh: a 5 mm mesh of one pose, coarse to fine inside the occupancy (measured, with its network points and its
  counted operations, read-backs and host-made tensors) vs the dense grid (measured on a coarser grid and
  extrapolated by grid points; --full-reference measures it);
- train: iterations per second of the occupancy sampler (with its emptiness term) vs the original box sampler
  (1024 rays each, the trainer's loss, their steps alternating, each from the actor's weights);
- http: a 256² fast render through a real uvicorn on 127.0.0.1 vs the same render in-process (interleaved), and the
  overhead per request read from the server's Server-Timing header (round trip minus the server's render);
- farm: frames/s of a job (8 new poses at 128², fast path) on a private local Ray cluster with 1 and with 2 workers
  of 1 CPU each (the actor loaded beforehand), and the scaling ratio; skipped with a note without the optional ray
  package; --no-farm leaves it out, --farm-only measures only it.

--profile DIR runs one more fast frame (a new pose) and one 5 mm mesh under the torch profiler and writes, per
device, DEVICE_frame_ops.txt / DEVICE_mesh_ops.txt (operations by time) and DEVICE_frame_trace.json.gz /
DEVICE_mesh_trace.json.gz (gzipped Chrome traces) into DIR; the JSON gets their wall time, the GPU's busy time (the
union of its kernels' intervals: a frame much longer than that is bound by its host side), kernel count and
synchronising runtime calls ("profile"). The profiler slows many small operations down: compare the busy time with
the wall time of the same profiled run, and the unprofiled figures with each other.

--compile adds the fast path with its point network through torch.compile (FastRenderer.compile), against the same
reference frames (on CUDA per precision: fp32, tf32, bf16), with the seconds its compilation took (a warm-up frame
before the timed ones).

--margins 0.03,0.05,... adds the speed and agreement of the fast path per occupancy margin (how the default was
chosen), against the same reference frames as the frame figure (as the CUDA precisions are); --dilations "2,1;1,1"
does the same per set of refinement dilations (cells kept around a positive density probe, per level). --quick: 128²
frames, two poses, one repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from neural_human_addon.core.atomic_files import write_bytes_atomic
from neural_human_addon.core.camera import look_at_extrinsics

BENCH_TOKEN = "bench-token-0123456789"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the JSON to this file (after each figure: a run cut short keeps what it "
                             "measured, with \"complete\": false)")
    parser.add_argument("--quick", action="store_true", help="128² frames, two poses, one repeat")
    parser.add_argument("--actor", type=Path, default=None, help="benchmark this actor (default: the demo actor)")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="devices to measure (default: cpu, and cuda when available)")
    parser.add_argument("--renderer", choices=("both", "fast", "reference"), default="both",
                        help="paths to measure (default both, side by side; ratios need both)")
    parser.add_argument("--margins", type=parse_margins, default=[],
                        help="comma-separated occupancy margins (metres) to sweep on the fast path, e.g. 0.03,0.05")
    parser.add_argument("--dilations", type=parse_dilations, default=[],
                        help="semicolon-separated sets of refinement dilations (cells per level) to sweep on the fast "
                             "path, e.g. '2,1;1,1'")
    parser.add_argument("--compile", action="store_true",
                        help="also measure the fast path with its point network through torch.compile (the "
                             "compilation timed apart)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="also profile one fast frame and one 5 mm mesh per device (torch profiler): operation "
                             "tables and Chrome traces into DIR, the GPU's busy time in the JSON")
    parser.add_argument("--full-reference", action="store_true",
                        help="measure the reference 5 mm mesh instead of extrapolating it (minutes on a CPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    farm = parser.add_mutually_exclusive_group()
    farm.add_argument("--no-farm", action="store_true", help="leave out the Ray farm figures")
    farm.add_argument("--farm-only", action="store_true", help="measure only the Ray farm figures")
    parser.add_argument("--farm-workers", default="1,2",
                        help="comma-separated Ray worker counts to measure (default 1,2; 1 CPU each)")
    parser.add_argument("--farm-frames", type=int, default=8, help="frames of the farm's job (default 8)")


# ---------------------------------------------------------------------------------------------------- scene


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _poses(actor: Any, count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """``count`` different captured poses of the actor: (vertices, Rh, Th, appearance code)."""
    from server.body.model import resolve_body_model

    model = resolve_body_model(actor.manifest.body_model)
    m = actor.motion
    picks = np.linspace(0, m.num_frames - 1, count).round().astype(int) if m.num_frames else [0] * count
    out = []
    for i in picks:
        body = ({"poses": m.poses[i], "shapes": m.shapes[i], "Rh": m.Rh[i], "Th": m.Th[i]} if m.num_frames else
                {"poses": np.zeros(72), "shapes": np.zeros(10), "Rh": np.zeros(3), "Th": np.zeros(3)})
        verts = model.pose(body).vertices[0].cpu().numpy()
        out.append((verts, np.asarray(body["Rh"], np.float32), np.asarray(body["Th"], np.float32),
                    min(int(i), actor.network.num_train_frames - 1)))
    return out


def framing_camera(verts: np.ndarray, size: int, azimuth: float = 0.6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A camera 3 m from the body (world z up) whose image the body fills to ~80% of the height."""
    centre = (verts.min(0) + verts.max(0)) / 2
    eye = centre + 3.0 * np.array([math.cos(azimuth), math.sin(azimuth), 0.15])
    R, T = look_at_extrinsics(eye, centre)
    focal = 0.8 * size * float(np.linalg.norm(eye - centre)) / float(np.ptp(verts[:, 2]))
    K = np.array([[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1.0]])
    return K, R, T


def agreement(ref: Any, fast: Any) -> dict[str, float]:
    """PSNR over premultiplied RGB and max alpha difference of two ``ImageRender`` (the compositing outputs)."""
    pa = ref.straight_rgb * ref.opacity[..., None]
    pb = fast.straight_rgb * fast.opacity[..., None]
    mse = float(np.mean((pa - pb) ** 2))
    return {"psnr_premultiplied_db": round(-10 * math.log10(mse), 2) if mse > 0 else math.inf,
            "max_alpha_difference": round(float(np.abs(ref.opacity - fast.opacity).max()), 5)}


# ---------------------------------------------------------------------------------------------------- figures


def side_by_side(result: dict[str, Any], times: dict[str, list[float]],
                 renders: dict[str, list[Any]]) -> dict[str, Any]:
    """``result`` with each path's median seconds and, when both paths ran, their ratio and worst agreement."""
    for name, seconds in times.items():
        result[f"{name}_seconds"] = round(float(np.median(seconds)), 3)
    if len(times) == 2:
        result["reference_over_fast"] = round(result["reference_seconds"] / result["fast_seconds"], 1)
        pairs = [agreement(r, f) for r, f in zip(renders["reference"], renders["fast"], strict=True)]
        result["agreement"] = {"min_psnr_premultiplied_db": min(p["psnr_premultiplied_db"] for p in pairs),
                               "max_alpha_difference": max(p["max_alpha_difference"] for p in pairs)}
    return result


def frame_runs(network: Any, poses: list[Any], size: int, renderers: list[str], margin: float | None = None,
               precision: str = "fp32", dilations: tuple[int, ...] | None = None, segment: int | None = None,
               compile: bool = False, refine: bool = True) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Seconds and renders per path of one WxW frame per pose (a new pose each frame, encode included); the paths
    take turns on each pose, so a slow spell of the machine hits both. ``dilations``, ``segment`` and ``refine``
    (False: no refinement of the occupancy by density) set the fast path's ``FastRenderer`` fields."""
    from server.neural_body.render_settings import RenderSettings
    from server.neural_body.volume_renderer import render_image

    device = network.c.weight.device
    times: dict[str, list[float]] = {name: [] for name in renderers}
    renders: dict[str, list[Any]] = {name: [] for name in renderers}
    for verts, rh, th, latent in poses:
        K, R, T = framing_camera(verts, size)
        for name in renderers:
            settings = RenderSettings(name, margin if margin is not None else RenderSettings().margin, precision,
                                      compile)
            renderer = settings.image_renderer()
            if dilations is not None and name == "fast":
                renderer = dataclasses.replace(renderer, refine_dilations=dilations)
            if segment is not None and name == "fast":
                renderer = dataclasses.replace(renderer, segment=segment)
            if not refine and name == "fast":
                renderer = dataclasses.replace(renderer, refine=False)
            start = time.perf_counter()
            out = render_image(network, verts, rh, th, latent, K, R, T, size, size, renderer=renderer)
            _sync(device)
            times[name].append(time.perf_counter() - start)
            renders[name].append(out)
    return times, renders


def frame_launches(network: Any, pose: Any, size: int) -> dict[str, Any]:
    """Tensor operations, host read-backs and host-made tensors of one fast frame (a new pose, encode included),
    counted by ``launch_count`` with the device's march schedule, and with the other device's for comparison (the
    counts are the same on every device: what bounds a GPU frame, measured on any machine)."""
    import torch

    from server.neural_body.config import march_segment, point_chunk, ray_chunk
    from server.neural_body.fast_renderer import FastRenderer
    from server.neural_body.launch_count import count_launches
    from server.neural_body.volume_renderer import render_image

    verts, rh, th, latent = pose
    K, R, T = framing_camera(verts, size)
    out: dict[str, Any] = {}
    for name in ("cpu", "cuda"):
        renderer = FastRenderer(segment=march_segment(name), chunk_points=point_chunk(name),
                                chunk_rays=ray_chunk(name))
        with torch.no_grad():
            _, count = count_launches(lambda r=renderer: render_image(network, verts, rh, th, latent, K, R, T, size,
                                                                      size, renderer=r))
        out[f"{name}_schedule"] = {**count.as_dict(), "density_points": renderer.last_stats["density_points"]}
    return out


def bench_profile(network: Any, pose: Any, size: int, folder: Path, voxel_size: float = 0.005) -> dict[str, Any]:
    """One fast WxW frame of a new pose (encode included) and one mesh of it under the torch profiler: figures
    (``profiling.Profile.figures``) and the files written into ``folder`` (tables and Chrome traces)."""
    import torch

    from server.neural_body.mesh_coarse_to_fine import extract_mesh_coarse_to_fine
    from server.neural_body.profiling import profile_work
    from server.neural_body.render_settings import RenderSettings
    from server.neural_body.sparse_input import prepare_sparse_input
    from server.neural_body.volume_renderer import render_image

    device = network.c.weight.device
    verts, rh, th, latent = pose
    K, R, T = framing_camera(verts, size)
    renderer = RenderSettings("fast").image_renderer()
    work = {
        "frame": lambda: render_image(network, verts, rh, th, latent, K, R, T, size, size, renderer=renderer),
        "mesh": lambda: extract_mesh_coarse_to_fine(network, prepare_sparse_input(verts, rh, th, device=device),
                                                    latent, voxel_size=voxel_size, colors=True),
    }
    out: dict[str, Any] = {"size": size, "mesh_voxel_size": voxel_size, "files": []}
    with torch.no_grad():
        for name, fn in work.items():
            _, prof = profile_work(fn, device)
            out[name] = prof.figures()
            out["files"] += [str(p) for p in prof.write(folder, f"{device.type}_{name}")]
    return out


def bench_views(network: Any, pose: Any, size: int, renderers: list[str], views: int = 4) -> dict[str, Any]:
    """Seconds per frame of one pose seen from ``views`` new cameras (an orbit, the live preview, several cameras of
    one frame): each path with its per-pose cache (encode, occupancy and its refinement once, excluded)."""
    from server.neural_body.feature_cache import FeatureCache
    from server.neural_body.render_settings import RenderSettings
    from server.neural_body.volume_renderer import render_image

    device = network.c.weight.device
    verts, rh, th, latent = pose
    times: dict[str, list[float]] = {name: [] for name in renderers}
    renders: dict[str, list[Any]] = {name: [] for name in renderers}
    for name in renderers:
        renderer = RenderSettings(name).image_renderer(FeatureCache(1 << 31), "bench")
        for i in range(views + 1):  # the first view fills the cache
            K, R, T = framing_camera(verts, size, azimuth=0.6 + 2.0 * math.pi * i / (views + 1))
            start = time.perf_counter()
            out = render_image(network, verts, rh, th, latent, K, R, T, size, size, renderer=renderer)
            _sync(device)
            if i:
                times[name].append(time.perf_counter() - start)
                renders[name].append(out)
    return side_by_side({"size": size, "views": views}, times, renders)


def bench_mesh(network: Any, pose: Any, renderers: list[str], *, full_reference: bool, quick: bool,
               voxel_size: float = 0.005) -> dict[str, Any]:
    """A mesh of one pose (5 mm): coarse to fine (measured) vs the dense grid (measured coarser and extrapolated)."""
    import torch

    from server.neural_body.config import point_chunk
    from server.neural_body.launch_count import count_launches
    from server.neural_body.mesh import extract_mesh, grid_axes
    from server.neural_body.mesh_coarse_to_fine import extract_mesh_coarse_to_fine
    from server.neural_body.sparse_input import prepare_sparse_input

    device = network.c.weight.device
    verts, rh, th, latent = pose
    sparse = prepare_sparse_input(verts, rh, th, device=device)
    out: dict[str, Any] = {"voxel_size": voxel_size}
    if "fast" in renderers:
        start = time.perf_counter()
        mesh = extract_mesh_coarse_to_fine(network, sparse, latent, voxel_size=voxel_size, colors=True)
        _sync(device)
        out["fast_seconds"] = round(time.perf_counter() - start, 2)
        out["fast_vertices"] = int(len(mesh.vertices))
        out["fast_network_points"] = int(mesh.network_points or 0)
        # what bounds it on a GPU, counted on any device with a GPU's batches of points: operations, host
        # read-backs, host-made tensors
        _, count = count_launches(lambda: extract_mesh_coarse_to_fine(
            network, sparse, latent, voxel_size=voxel_size, colors=True, chunk=point_chunk("cuda")))
        out["fast_launches_gpu_batches"] = count.as_dict()
    if "reference" in renderers:
        voxel = voxel_size if full_reference else max(voxel_size, 0.04 if quick else 0.02)
        with torch.no_grad():  # the encode is timed apart: it does not scale with the grid
            volumes = network.encode_sparse_voxels(sparse)
            encode_s = _timed(lambda: network.encode_sparse_voxels(sparse), 1, device)
        start = time.perf_counter()
        extract_mesh(network, sparse, latent, voxel_size=voxel, colors=False, encode=lambda s: volumes)
        _sync(device)
        grid_s = time.perf_counter() - start
        box = sparse.world_bounds.cpu().numpy()
        points = [int(np.prod([len(a) for a in grid_axes(box, v)])) for v in (voxel, voxel_size)]
        out["reference_seconds"] = round(encode_s + grid_s * points[1] / points[0], 1)
        out["reference_note"] = ("measured (colours excluded)" if full_reference else
                                 f"encode + the grid measured at {voxel} m ({points[0]} points) and scaled by grid "
                                 f"points to {voxel_size} m ({points[1]} points); colours excluded")
        out["reference_grid_points"] = points[1]
        if "fast_seconds" in out:
            out["reference_over_fast"] = round(out["reference_seconds"] / out["fast_seconds"], 1)
    return out


def bench_train(network: Any, pose: Any, renderers: list[str], repeats: int) -> dict[str, Any]:
    """Training iterations per second on the rays of one 256² view of ``pose`` (random targets): the occupancy
    sampler (with its emptiness term at the default weight) vs the original box sampler, 1024 rays each (the
    trainer's loss, forward + backward + Adam), their steps alternating; median of ``repeats`` steps each."""
    import torch

    from server.neural_body.config import N_RAYS, TrainConfig
    from server.neural_body.occupancy import body_occupancy
    from server.neural_body.rays import get_rays, near_far
    from server.neural_body.sparse_conv_net import Rulebook
    from server.neural_body.sparse_input import prepare_sparse_input
    from server.neural_body.train import make_optimizer, render_loss_module

    recipe = TrainConfig()  # the trainer's defaults

    device = network.c.weight.device
    verts, rh, th, latent = pose
    sparse = prepare_sparse_input(verts, rh, th, device=device)
    K, R, T = framing_camera(verts, 256)
    o, d = get_rays(256, 256, K, R, T, device=device)
    near, far, mask = near_far(sparse.world_bounds, o, d)
    rays = [r[mask] for r in (o, d, near, far)]
    generator = torch.Generator().manual_seed(0)
    state = {k: v.clone() for k, v in network.state_dict().items()}
    network.train()
    optimizer = make_optimizer(network)
    steps: dict[str, Any] = {}
    count = N_RAYS
    for name in renderers:
        pick = torch.randint(0, len(rays[0]), (count,), generator=generator).to(device)
        sel = [r[pick] for r in rays]
        target = torch.rand(count, 3, generator=generator).to(device)
        occupancy = body_occupancy(sparse) if name == "fast" else None
        rulebook = Rulebook()  # as the trainer keeps per frame, for either sampler

        # the trainer's loss: the colour, and for the occupancy sampler its emptiness term, at the defaults
        loss_module = render_loss_module(network, recipe.n_samples,
                                         outside_share=recipe.outside_share if occupancy else 0.0,
                                         outside_loss=recipe.outside_loss if occupancy else 0.0)

        def step(sel: list[Any] = sel, target: Any = target, occupancy: Any = occupancy,
                 rulebook: Rulebook = rulebook, loss_module: Any = loss_module) -> None:
            loss, _ = loss_module(sparse, *sel, latent, target, occupancy=occupancy, rulebook=rulebook)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        steps["occupancy" if name == "fast" else "box"] = step
    # Each step from the trained weights: the march's work depends on the density, which the random targets would
    # otherwise change from step to step.
    medians = _alternating_medians(steps, repeats, device, before=lambda: network.load_state_dict(state))
    out: dict[str, Any] = {}
    for key, seconds in medians.items():
        out[key] = {"rays_per_iteration": count, "seconds_per_iteration": round(seconds, 2),
                    "iterations_per_second": round(1 / seconds, 3), "rays_per_second": round(count / seconds, 1)}
    network.load_state_dict(state)
    network.eval()
    if len(out) == 2:
        out["occupancy_over_box_iterations"] = round(out["occupancy"]["iterations_per_second"]
                                                     / out["box"]["iterations_per_second"], 2)
        out["occupancy_over_box_rays"] = round(out["occupancy"]["rays_per_second"] / out["box"]["rays_per_second"], 2)
    return out


def _alternating_medians(fns: dict[str, Any], repeats: int, device: Any, before: Any) -> dict[str, float]:
    """Median seconds of ``repeats`` calls of each of ``fns``, the calls alternating (a slow spell of the machine
    hits every one), after one warm-up round; ``before()`` runs untimed ahead of every call."""
    times: dict[str, list[float]] = {key: [] for key in fns}
    for round_ in range(repeats + 1):
        for key, fn in fns.items():
            before()
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if round_:
                times[key].append(time.perf_counter() - start)
    return {key: float(np.median(values)) for key, values in times.items()}


def _timed(fn: Any, repeats: int, device: Any) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    return _alternating_medians({"fn": fn}, repeats, device, before=lambda: None)["fn"]


def bench_http(actor_dir: Path, device: Any, pose: Any, size: int, repeats: int) -> dict[str, Any]:
    """A fast render (rgba + depth npz, cache off) through a real uvicorn on 127.0.0.1 vs the same in-process,
    interleaved (a slow spell of the machine hits both). The overhead is also read per request from the server's
    Server-Timing header: the round trip minus the server's render time, free of the renders' own variation."""
    from concurrent.futures import ThreadPoolExecutor

    from server.http.app import create_app
    from server.http.schemas import Camera
    from server.inference.frames import render_frame

    verts, rh, th, _ = pose
    K, R, T = framing_camera(verts, size)
    actor_id = actor_dir.name
    with tempfile.TemporaryDirectory(prefix="neural-human-bench-") as tmp:
        app = create_app(str(actor_dir.parent), BENCH_TOKEN, device.type, tmp, cache_bytes=0)
        body = {"poses": [0.0] * 72, "shapes": [0.0] * 10, "Rh": rh.tolist(), "Th": th.tolist()}
        loaded = app.state.registry.get(actor_id)
        m = loaded.actor.motion
        if m.num_frames:
            body = {"poses": m.poses[0].tolist(), "shapes": m.shapes[0].tolist(), "Rh": m.Rh[0].tolist(),
                    "Th": m.Th[0].tolist()}
        request = {"body": body, "camera": {"K": K.tolist(), "R": R.tolist(), "T": T.tolist(), "width": size,
                                            "height": size}, "outputs": ["rgba", "depth"]}
        camera = Camera(**request["camera"]).to_pinhole()
        with _served(app) as client, ThreadPoolExecutor(1) as worker:  # in-process: a worker thread, as handlers

            def over_http() -> tuple[float, float]:
                start = time.perf_counter()
                r = client.post(f"/v1/actors/{actor_id}/render", json=request)
                if r.status_code != 200:
                    raise RuntimeError(f"benchmark render failed: {r.status_code} {r.text}")
                np.load(io.BytesIO(r.content))["rgba"]  # the client's side of the work: parse the npz
                total = time.perf_counter() - start
                timing = dict(part.strip().split(";dur=") for part in r.headers["server-timing"].split(","))
                return total, total - float(timing["render"]) / 1000.0

            def in_process() -> float:
                start = time.perf_counter()
                worker.submit(render_frame, loaded, body, camera, ["rgba", "depth"], None).result()
                _sync(device)
                return time.perf_counter() - start

            over_http(), in_process()  # warm-up
            runs = [(over_http(), in_process()) for _ in range(repeats)]
    http_s = float(np.median([h[0] for h, _ in runs]))
    direct_s = float(np.median([d for _, d in runs]))
    overhead_s = float(np.median([h[1] for h, _ in runs]))
    return {"size": size, "http_ms": round(1000 * http_s, 1), "in_process_ms": round(1000 * direct_s, 1),
            "http_over_in_process": round(http_s / direct_s, 3), "overhead_ms": round(1000 * overhead_s, 1),
            "overhead_share": round(overhead_s / direct_s, 4), "repeats": repeats}


@contextlib.contextmanager
def _served(app: Any) -> Any:
    """An httpx client of ``app`` served by uvicorn on a free port of 127.0.0.1 (stopped on exit)."""
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
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the benchmark's HTTP server did not start")
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600,
                          headers={"Authorization": f"Bearer {BENCH_TOKEN}"}) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


# ---------------------------------------------------------------------------------------------------- farm


def _farm_job(registry: Any, actor_id: str, count: int, size: int, offset: int) -> Any:
    """A render job of ``count`` captured poses (from the ``offset``-th on), each framed by its own camera."""
    from neural_human_addon.core.camera import PinholeCamera
    from server.inference.jobs import FrameSpec, JobSpec

    loaded = registry.get(actor_id)
    m = loaded.actor.motion
    frames = []
    for i in range(count):
        k = (offset + 5 * i) % max(1, m.num_frames)
        body = ({"poses": m.poses[k].tolist(), "shapes": m.shapes[k].tolist(), "Rh": m.Rh[k].tolist(),
                 "Th": m.Th[k].tolist()} if m.num_frames else
                {"poses": [0.0] * 72, "shapes": [0.0] * 10, "Rh": [0.0] * 3, "Th": [0.0] * 3})
        verts = loaded.body_model.pose(body).vertices[0].cpu().numpy()
        K, R, T = framing_camera(verts, size, azimuth=0.6 + 0.3 * i)
        frames.append(FrameSpec(i, body, PinholeCamera(K=K, R=R, T=T, width=size, height=size)))
    return JobSpec(actor_id, ["rgba", "depth"], frames, 0.05)


def bench_farm(actor_dir: Path, workers: list[int], count: int, size: int) -> dict[str, Any]:
    """Frames/s of one job on a private local Ray cluster per worker count (1 CPU, 1 torch thread each); each pool
    first renders one frame per worker (actor loading, first-call costs) outside the timing."""
    from server.inference import farm
    from server.inference.actor_registry import ActorRegistry

    if not farm.available():
        return {"skipped": farm.RAY_MISSING}
    try:
        return _farm_figures(farm, ActorRegistry(actor_dir.parent, "cpu", cache_bytes=0), actor_dir, workers, count,
                             size)
    except farm.FarmUnavailable as err:
        return {"skipped": f"the local Ray cluster did not start: {err}"}


def _farm_figures(farm: Any, registry: Any, actor_dir: Path, workers: list[int], count: int,
                  size: int) -> dict[str, Any]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private loopback cluster: no token file
    warm = _farm_job(registry, actor_dir.name, max(workers), size, offset=1)
    job = _farm_job(registry, actor_dir.name, count, size, offset=2)
    out: dict[str, Any] = {"size": size, "frames": count, "cpus_per_worker": 1}
    farm.connect("local", max(max(workers), os.cpu_count() or 1))
    try:
        for n in workers:
            pool = farm.start_farm("local", farm.WorkerConfig(str(actor_dir.parent)), workers=n, cpus_per_worker=1,
                                   gpus_per_worker=0)
            try:
                list(pool.frames(replace_frames(warm, n), lambda: False))
                start = time.perf_counter()
                outcomes = list(pool.frames(job, lambda: False))
                seconds = time.perf_counter() - start
            finally:
                pool.close()
            errors = [o.error for o in outcomes if o.error]
            if errors:
                raise ValueError(f"the farm's benchmark frames failed: {errors[0]}")
            out[f"workers_{n}"] = {"seconds": round(seconds, 2), "frames_per_second": round(count / seconds, 3)}
    finally:
        farm.disconnect()
    if len(workers) > 1:
        first, last = out[f"workers_{workers[0]}"], out[f"workers_{workers[-1]}"]
        out["scaling"] = round(last["frames_per_second"] / first["frames_per_second"], 2)
    return out


def replace_frames(req: Any, count: int) -> Any:
    """``req`` with its first ``count`` frames."""
    from dataclasses import replace

    return replace(req, frames=req.frames[:count])


# ---------------------------------------------------------------------------------------------------- run


class Figures(dict):
    """A device's figures as they are measured: each one added calls ``saved()`` (``run`` writes --json then, so a
    run cut short keeps what it measured)."""

    def __init__(self, saved: Callable[[], None]) -> None:
        super().__init__()
        self._saved = saved

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._saved()


def bench_device(actor_dir: Path, device_name: str, args: argparse.Namespace,
                 out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every figure of one device into ``out`` (a new dict by default), which it returns."""
    import torch

    from server.neural_body.actor import load_actor
    device = torch.device(device_name)
    actor = load_actor(actor_dir, device)
    network = actor.network
    renderers = ["fast", "reference"] if args.renderer == "both" else [args.renderer]
    size = (128 if args.quick else 256) if device.type == "cpu" else 512
    poses = _poses(actor, 2 if device.type == "cpu" else 8)  # GPU frames are short: more of them for the median
    out = {} if out is None else out
    out["device"] = str(device)
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    repeats = 1 if args.quick else 3
    with torch.no_grad():
        render_image_warm_up(network, poses[0], renderers)
    times, renders = frame_runs(network, poses, size, renderers)
    out["frame"] = side_by_side({"size": size, "poses": len(poses)}, times, renders)

    def fast_variant(**setting: Any) -> dict[str, Any]:
        """The fast path with another setting, against the reference frames measured above (when measured)."""
        t, r = frame_runs(network, poses, size, ["fast"], **setting)
        if "reference" in times:
            t, r = {**t, "reference": times["reference"]}, {**r, "reference": renders["reference"]}
        return side_by_side({"size": size, "poses": len(poses), **setting}, t, r)

    if "fast" in renderers:
        out["frame"]["launches"] = frame_launches(network, poses[0], size)
    if device.type == "cuda" and "fast" in renderers:
        for key, figure in gpu_frame_variants(fast_variant).items():
            out[key] = figure  # one by one: Figures saves on each item set (dict.update would bypass it)
    out["views"] = bench_views(network, poses[0], size, renderers, 2 if args.quick else 4)
    if args.compile and "fast" in renderers:  # per precision on CUDA (each compiled under its own autocast)
        out["frame_compiled"] = compiled_frame_variants(
            network, poses[0], fast_variant, ("fp32", "tf32", "bf16") if device.type == "cuda" else ("fp32",))
    if args.margins and "fast" in renderers:
        out["margins"] = {f"{m:g}": fast_variant(margin=m) for m in args.margins}
    if args.dilations and "fast" in renderers:
        out["dilations"] = {",".join(map(str, d)): fast_variant(dilations=d) for d in args.dilations}
    out["mesh"] = bench_mesh(network, poses[0], renderers, full_reference=args.full_reference, quick=args.quick)
    out["train"] = bench_train(network, poses[-1], renderers, 1 if args.quick else 5)
    if args.profile is not None and "fast" in renderers:
        out["profile"] = bench_profile(network, poses[-1], size, args.profile)
    if "fast" in renderers:
        out["http"] = bench_http(actor_dir, device, poses[0], 256, repeats)
    return out


def gpu_frame_variants(fast_variant: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The fast path's settings a GPU run compares (``fast_variant(**setting)`` measures one against the reference
    frames): each precision of the point network; the CPU's march (segments of 8: fewer density queries, more
    launches and read-backs) and segments of 16 and 32 against the GPU's one pass; the occupancy without its density
    refinement (whether the probes and level decisions pay beside a one-pass march)."""
    from server.neural_body.config import CPU_MARCH_SEGMENT, PRECISIONS

    return {"frame_precisions": {p: fast_variant(precision=p) for p in PRECISIONS if p != "fp32"},
            "frame_segmented": {str(k): fast_variant(segment=k) for k in (CPU_MARCH_SEGMENT, 16, 32)},
            "frame_unrefined": fast_variant(refine=False)}


def compiled_frame_variants(network: Any, pose: Any, fast_variant: Callable[..., dict[str, Any]],
                            precisions: tuple[str, ...]) -> dict[str, Any]:
    """The fast path with its point network compiled, per precision: the compilation timed apart (a warm-up frame
    under that precision's autocast), then ``fast_variant``'s frames."""
    import torch

    out = {}
    for precision in precisions:
        start = time.perf_counter()
        with torch.no_grad():
            render_image_warm_up(network, pose, ["fast"], compile=True, precision=precision)
        _sync(network.c.weight.device)
        seconds = time.perf_counter() - start
        out[precision] = {**fast_variant(compile=True, precision=precision), "compile_seconds": round(seconds, 1)}
    return out


def parse_margins(text: str) -> list[float]:
    """'0.03,0.05' → [0.03, 0.05]; argparse reports a bad margin before anything is measured."""
    margins = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            margin = float(part)
        except ValueError:
            margin = math.nan
        if not 0.0 <= margin <= 1.0:
            raise argparse.ArgumentTypeError(f"{part!r} is not a margin in metres within 0..1 (e.g. 0.05)")
        margins.append(margin)
    return margins


def parse_dilations(text: str) -> list[tuple[int, ...]]:
    """'2,1;1,1' → [(2, 1), (1, 1)]; argparse reports a bad set before anything is measured."""
    sets = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        try:
            cells = tuple(int(c) for c in part.split(","))
        except ValueError:
            cells = ()
        if not cells or min(cells) < 0:
            raise argparse.ArgumentTypeError(f"{part!r} is not a comma-separated list of cell counts >= 0 (e.g. '2,1')")
        sets.append(cells)
    return sets


def render_image_warm_up(network: Any, pose: Any, renderers: list[str], compile: bool = False,
                         precision: str = "fp32") -> None:
    """One small render per path so that one-time costs (allocator, kernels, a compilation) do not land on the first
    figure."""
    from server.neural_body.render_settings import RenderSettings
    from server.neural_body.volume_renderer import render_image

    verts, rh, th, latent = pose
    K, R, T = framing_camera(verts, 32)
    for name in renderers:
        render_image(network, verts, rh, th, latent, K, R, T, 32, 32,
                     renderer=RenderSettings(name, precision=precision, compile=compile).image_renderer())


def run(args: argparse.Namespace) -> int:
    import torch

    from server.errors import NeuralHumanError
    from server.inference.limits import BUNDLED_ACTORS_DIR

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    actor_dir = (args.actor or Path(BUNDLED_ACTORS_DIR) / "demo").resolve()
    devices = (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]) if args.device == "all" else [args.device]
    start = time.perf_counter()
    result: dict[str, Any] = {
        "actor": str(actor_dir), "quick": args.quick,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "processor": platform.processor() or platform.machine()},
        "devices": {}, "complete": False}

    def save() -> None:
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(args.json, (json.dumps(result, indent=2) + "\n").encode(), mode=0o644)

    try:
        farm_workers = sorted({int(n) for n in args.farm_workers.split(",") if n.strip()})
    except ValueError:
        farm_workers = []
    if not farm_workers or farm_workers[0] < 1 or args.farm_frames < 1:
        print("error: --farm-workers must list worker counts >= 1 and --farm-frames be >= 1", file=sys.stderr)
        return 2
    try:
        for name in [] if args.farm_only else devices:
            result["devices"][name] = Figures(save)
            bench_device(actor_dir, name, args, result["devices"][name])
        if not args.no_farm:
            result["farm"] = bench_farm(actor_dir, farm_workers, args.farm_frames, 64 if args.quick else 128)
    except (NeuralHumanError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    result["total_seconds"] = round(time.perf_counter() - start, 1)
    result["complete"] = True
    print(json.dumps(result, indent=2))
    save()
    return 0
