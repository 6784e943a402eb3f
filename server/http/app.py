"""The FastAPI app of API v1: validates requests, runs model work through the one inference queue, serialises
results as npz / PNG / PLY. ``create_app(actors_root, token, device)`` builds it (tests and ``serve`` use it)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from server import __version__
from server.http.auth import token_matches
from server.http.errors import ApiError, install_error_handlers, install_fallback_handler
from server.http.schemas import JobRequest, MeshRequest, RenderRequest
from server.inference.actor_registry import DEFAULT_MIN_FREE_GPU_MB, ActorRegistry
from server.inference.frames import mesh_frame, npz_bytes, render_frame
from server.inference.jobs import JobManager
from server.inference.model_queue import InferenceQueue

T = TypeVar("T")

API_VERSION = "v1"
NPZ_TYPE = "application/x-npz"
DEFAULT_CACHE_MB = 512


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA device is usable, else 'cpu'; 'cuda' without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu; got {device!r}")
    return device


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"type": "cuda" if device.startswith("cuda") else "cpu", "name": None,
                            "free_memory_bytes": None, "total_memory_bytes": None}
    if info["type"] == "cuda":
        free, total = torch.cuda.mem_get_info()
        info.update(name=torch.cuda.get_device_name(), free_memory_bytes=int(free), total_memory_bytes=int(total))
    return info


def png_bytes(rgba: np.ndarray) -> bytes:
    from PIL import Image

    pixels = np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _wants(request: Request, media_type: str) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == media_type for part in accept.split(","))


def default_jobs_dir() -> Path:
    """$XDG_CACHE_HOME/neural-human/jobs (default ~/.cache/neural-human/jobs): jobs outlive the server process."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "neural-human" / "jobs"


def create_app(actors_root: str, token: str, device: str = "cpu", jobs_dir: str | None = None,
               cache_bytes: int = DEFAULT_CACHE_MB * 2**20, *, max_loaded: int = 0,
               min_free_gpu_bytes: int = DEFAULT_MIN_FREE_GPU_MB * 2**20) -> FastAPI:
    """The app over the actor folders under ``actors_root``; jobs live under ``jobs_dir`` (``default_jobs_dir()``
    when None) and the jobs found there from earlier runs are served again; per-pose feature volumes are cached up
    to ``cache_bytes``; at most ``max_loaded`` actors stay loaded (0: no limit) and, on CUDA, loading keeps
    ``min_free_gpu_bytes`` free (least-recently-used actors are unloaded to make room)."""
    app = FastAPI(title="Neural Human inference server", version=__version__,
                  description="HTTP API v1 (see docs/API.md)")
    install_error_handlers(app)
    install_fallback_handler(app)
    registry = ActorRegistry(actors_root, device, cache_bytes, max_loaded=max_loaded,
                             min_free_gpu_bytes=min_free_gpu_bytes)
    queue = InferenceQueue()
    app.state.registry = registry
    cache = registry.feature_cache
    app.state.queue = queue
    jobs = JobManager(jobs_dir or default_jobs_dir(), registry, queue)
    app.state.jobs = jobs

    def require_token(request: Request) -> None:
        if not token_matches(request.headers.get("authorization"), token):
            missing = not request.headers.get("authorization")
            raise ApiError(401, "unauthorized", "missing bearer token: send 'Authorization: Bearer <token>' (the "
                           "token is printed by `serve` and stored in ~/.config/neural-human/token)" if missing else
                           "wrong bearer token; use the one printed by `serve` / stored in its config dir",
                           "Authorization")

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "api_version": API_VERSION, "server_version": __version__,
                "device": device_info(device), "loaded_actors": registry.loaded_ids(), "queue_waiting": queue.waiting,
                "feature_cache": {"entries": len(cache), "bytes": cache.bytes_used, "budget_bytes": cache.budget_bytes,
                                  "hits": cache.hits, "misses": cache.misses},
                "memory": {**registry.memory_status(), "oom_retries": queue.oom_retries}}

    def model_work(actor_id: str, fn: Callable[[], T]) -> T:
        """``fn`` through the queue; on out-of-memory every other actor is unloaded and fn runs once more."""
        return queue.run(fn, relieve=lambda: registry.free_memory(keep=actor_id))

    api = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

    @api.get("/actors")
    def actors() -> dict[str, Any]:
        return {"actors": registry.list()}

    @api.get("/actors/{actor_id}/skeleton")
    def skeleton(actor_id: str) -> dict[str, Any]:
        from server.body.model import SMPL_JOINT_NAMES, SMPL_PARENTS

        loaded = model_work(actor_id, lambda: registry.get(actor_id))
        joints = loaded.body_model.rest_joints(np.asarray(loaded.actor.shapes, np.float32)).cpu().numpy()
        return {"names": list(SMPL_JOINT_NAMES), "parents": list(SMPL_PARENTS),
                "joints": joints.astype(float).tolist(), "shapes": loaded.actor.shapes.astype(float).tolist(),
                "up_axis": loaded.actor.manifest.up_axis}

    @api.get("/actors/{actor_id}/motion")
    def motion(actor_id: str) -> dict[str, Any]:
        m = model_work(actor_id, lambda: registry.get(actor_id)).actor.motion
        frames = [{"poses": m.poses[i].astype(float).tolist(), "shapes": m.shapes[i].astype(float).tolist(),
                   "Rh": m.Rh[i].astype(float).tolist(), "Th": m.Th[i].astype(float).tolist()}
                  for i in range(m.num_frames)]
        return {"fps": float(m.fps), "frames": frames}

    @api.post("/actors/{actor_id}/render")
    def render(actor_id: str, req: RenderRequest, request: Request) -> Response:
        png = _wants(request, "image/png")
        if png and "rgba" not in req.outputs:
            raise ApiError(422, "invalid_request", "outputs: a PNG answer needs 'rgba' in outputs", "outputs")

        arrays = model_work(actor_id, lambda: render_frame(registry.get(actor_id), req.body, req.camera, req.outputs,
                                                req.appearance_frame, registry.feature_cache))
        if png:
            return Response(png_bytes(arrays["rgba"]), media_type="image/png")
        return Response(npz_bytes(arrays), media_type=NPZ_TYPE)

    @api.post("/actors/{actor_id}/mesh")
    def mesh(actor_id: str, req: MeshRequest, request: Request) -> Response:
        result = model_work(actor_id, lambda: mesh_frame(registry.get(actor_id), req.body, req.voxel_size, req.colors,
                                                         req.appearance_frame, registry.feature_cache))
        if _wants(request, "application/ply"):
            from server.neural_body.mesh import ply_bytes

            return Response(ply_bytes(result), media_type="application/ply")
        return Response(npz_bytes(result.to_wire()), media_type=NPZ_TYPE)

    @api.post("/actors/{actor_id}/unload")
    def unload(actor_id: str) -> dict[str, Any]:
        was = queue.run(lambda: registry.unload(actor_id))
        return {"id": actor_id, "unloaded": was, "loaded_actors": registry.loaded_ids()}

    @api.post("/jobs")
    def submit_job(req: JobRequest) -> dict[str, Any]:
        job = jobs.submit(req)
        return {"id": job.id, **job.status()}

    @api.get("/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        return jobs.get(job_id).status()

    @api.get("/jobs/{job_id}/frames/{n}")
    def job_frame(job_id: str, n: int) -> Response:
        return Response(jobs.frame_path(job_id, n).read_bytes(), media_type=NPZ_TYPE)

    @api.delete("/jobs/{job_id}")
    def cancel_job(job_id: str) -> dict[str, Any]:
        return jobs.cancel(job_id).status()

    app.include_router(api)
    return app
