"""GET /v1/health: server and API version, device, loaded actors, queue and memory figures (no token needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server import __version__
from server.http.dependencies import Service
from server.http.schemas import Health

API_VERSION = "v1"

router = APIRouter(prefix=f"/{API_VERSION}", tags=["health"])


@router.get("/health", response_model=Health)
async def read_health(service: Service) -> dict[str, Any]:
    """On the event loop, not in the thread pool: it answers at once while renders wait for the model queue."""
    return {"status": "ok", "api_version": API_VERSION, "server_version": __version__, **service.status()}
