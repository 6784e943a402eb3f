"""Actors: list them, their skeleton and captured motion, render a frame, extract a mesh, unload one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from server.data.image_ops import png_bytes
from server.errors import InvalidInput
from server.http.dependencies import Service, require_token
from server.http.schemas import ActorList, ErrorAnswer, MeshRequest, Motion, RenderRequest, Skeleton, Unloaded
from server.inference.frames import npz_bytes
from server.neural_body.mesh import ply_bytes

NPZ_TYPE = "application/x-npz"

router = APIRouter(prefix="/v1/actors", tags=["actors"], dependencies=[Depends(require_token)],
                   responses={401: {"model": ErrorAnswer}, 404: {"model": ErrorAnswer}})


def _wants(request: Request, media_type: str) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == media_type for part in accept.split(","))


@asynccontextmanager
async def _client_watch(request: Request) -> AsyncIterator[Callable[[], bool]]:
    """Yields ``abandoned()``: true once the client has disconnected (checked every 0.25 s while the work waits), so
    the model queue drops work nobody will read."""
    gone = threading.Event()

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)
        gone.set()

    task = asyncio.create_task(watch())
    try:
        yield gone.is_set
    finally:
        task.cancel()


@router.get("", response_model=ActorList)
def list_actors(service: Service) -> dict[str, Any]:
    return {"actors": service.registry.list()}


@router.get("/{actor_id}/skeleton", response_model=Skeleton)
def read_skeleton(actor_id: str, service: Service) -> dict[str, Any]:
    return service.skeleton(actor_id)


@router.get("/{actor_id}/motion", response_model=Motion)
def read_motion(actor_id: str, service: Service) -> dict[str, Any]:
    return service.motion(actor_id)


@router.post("/{actor_id}/render", response_class=Response,
             responses={200: {"content": {NPZ_TYPE: {}, "image/png": {}}}, 422: {"model": ErrorAnswer},
                        503: {"model": ErrorAnswer}})
async def render_frame(actor_id: str, req: RenderRequest, request: Request, service: Service) -> Response:
    """npz with ``rgba`` float32 (H,W,4) and/or ``depth`` float32 (H,W); ``Accept: image/png``: the RGBA as PNG."""
    png = _wants(request, "image/png")
    if png and "rgba" not in req.outputs:
        raise InvalidInput("outputs: a PNG answer needs 'rgba' in outputs", "outputs")
    start = time.perf_counter()
    async with _client_watch(request) as abandoned:
        arrays = await run_in_threadpool(service.render, actor_id, req.body, req.camera.to_pinhole(),
                                         list(req.outputs), req.appearance_frame, abandoned)
    rendered = time.perf_counter()
    if png:
        content, media_type = await run_in_threadpool(png_bytes, arrays["rgba"]), "image/png"
    else:
        content, media_type = await run_in_threadpool(npz_bytes, arrays), NPZ_TYPE
    # Server-Timing (a standard header): what the server spent, so a client can tell its transport from the render
    timing = f"render;dur={1000 * (rendered - start):.1f}, encode;dur={1000 * (time.perf_counter() - rendered):.1f}"
    return Response(content, media_type=media_type, headers={"Server-Timing": timing})


@router.post("/{actor_id}/mesh", response_class=Response,
             responses={200: {"content": {NPZ_TYPE: {}, "application/ply": {}}}, 422: {"model": ErrorAnswer},
                        503: {"model": ErrorAnswer}})
async def extract_mesh(actor_id: str, req: MeshRequest, request: Request, service: Service) -> Response:
    """npz with ``vertices`` float32 (N,3), ``faces`` int32 (M,3), ``colors`` uint8 (N,3); ``Accept:
    application/ply``: a binary PLY."""
    async with _client_watch(request) as abandoned:
        result = await run_in_threadpool(service.mesh, actor_id, req.body, req.voxel_size, req.colors,
                                         req.appearance_frame, abandoned)
    if _wants(request, "application/ply"):
        return Response(await run_in_threadpool(ply_bytes, result), media_type="application/ply")
    return Response(await run_in_threadpool(lambda: npz_bytes(result.to_wire())), media_type=NPZ_TYPE)


@router.post("/{actor_id}/unload", response_model=Unloaded)
def unload_actor(actor_id: str, service: Service) -> dict[str, Any]:
    return service.unload(actor_id)
