"""FastAPI dependencies: the inference service and the jobs from the app's state, and the bearer-token check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.http.auth import token_matches
from server.http.errors import Unauthorized
from server.inference.jobs import JobManager
from server.inference.service import InferenceService

TOKEN_HINT = "the token is printed by `serve` and stored in ~/.config/neural-human/token"


def get_service(request: Request) -> InferenceService:
    return request.app.state.service


def get_jobs(request: Request) -> JobManager:
    return request.app.state.service.jobs


def require_token(request: Request) -> None:
    """Every route but health: ``Authorization: Bearer <token>`` with the server's token. ``guard.RequestGuard``
    checks it first, before the body is read; this dependency keeps the routers safe on their own."""
    header = request.headers.get("authorization")
    if not token_matches(header, request.app.state.token):
        if not header:
            raise Unauthorized(f"missing bearer token: send 'Authorization: Bearer <token>' ({TOKEN_HINT})",
                               "Authorization")
        raise Unauthorized("wrong bearer token; use the one printed by `serve` / stored in its config dir",
                           "Authorization")


Service = Annotated[InferenceService, Depends(get_service)]
Jobs = Annotated[JobManager, Depends(get_jobs)]
