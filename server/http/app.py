"""The FastAPI app of API v1: state (the inference service, the token), error handlers and the routers.
``create_app(actors_root, token, device)`` builds it (``serve``, ``bench`` and the tests use it)."""

from __future__ import annotations

from fastapi import FastAPI

from server import __version__
from server.http.errors import install_error_handlers
from server.http.guard import RequestGuard
from server.http.routers import actors, health, jobs
from server.inference.jobs import FrameExecutor
from server.inference.limits import DEFAULT_CACHE_MB, DEFAULT_MIN_FREE_GPU_MB, JobPolicy
from server.inference.service import InferenceService, default_jobs_dir
from server.neural_body.render_settings import RenderSettings


def create_app(actors_root: str, token: str, device: str = "cpu", jobs_dir: str | None = None,
               cache_bytes: int = DEFAULT_CACHE_MB * 2**20, *, max_loaded: int = 0,
               min_free_gpu_bytes: int = DEFAULT_MIN_FREE_GPU_MB * 2**20,
               settings: RenderSettings | None = None, allow_remote: bool = False,
               policy: JobPolicy | None = None, executor: FrameExecutor | None = None) -> FastAPI:
    """The app over the actor folders under ``actors_root``; jobs live under ``jobs_dir`` (``default_jobs_dir()``
    when None) and the jobs found there from earlier runs are served again; per-pose feature volumes are cached up
    to ``cache_bytes``; at most ``max_loaded`` actors stay loaded (0: no limit) and, on CUDA, loading keeps
    ``min_free_gpu_bytes`` free (least-recently-used actors are unloaded to make room); ``settings`` picks the fast
    (default) or the reference renderer; ``policy`` sets the jobs' retention and limits; ``executor`` computes the
    jobs' frames (None: in this process; ``server.inference.farm.Farm``: on Ray workers; the API is the same). Every
    request passes ``RequestGuard`` first (Host, token, body size; before the body is read); /openapi.json needs the
    token and there are no /docs pages (they load scripts from a CDN)."""
    app = FastAPI(title="Neural Human inference server", version=__version__,
                  description="HTTP API v1 (see docs/API.md)", docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(RequestGuard, token=token, allow_remote=allow_remote)
    service = InferenceService.create(actors_root, device, jobs_dir or default_jobs_dir(), cache_bytes,
                                      max_loaded=max_loaded, min_free_gpu_bytes=min_free_gpu_bytes,
                                      settings=settings or RenderSettings(), policy=policy, executor=executor)
    app.state.service, app.state.token = service, token
    app.state.registry, app.state.queue, app.state.jobs = service.registry, service.queue, service.jobs
    for router in (health.router, actors.router, jobs.router):
        app.include_router(router)
    return app
