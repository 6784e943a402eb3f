"""JSON errors of the API: ``{"error": {"code", "message", "field"}}``. The one place where the server's errors
(``server.errors``) become HTTP statuses; request validation errors and unknown routes get the same shape."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.errors import (
    ActorBroken,
    BodyModelMissing,
    Busy,
    ClientGone,
    DiskFull,
    FrameNotAvailable,
    InvalidActorId,
    InvalidInput,
    NeuralHumanError,
    OutOfMemory,
    TooManyJobs,
    UnknownActor,
    UnknownJob,
)

log = logging.getLogger("server.http")


class Unauthorized(NeuralHumanError):
    """A missing or wrong bearer token (the only error that is the HTTP shell's own)."""

    code = "unauthorized"


# Most specific first: the first class an error is an instance of gives its status.
STATUS: tuple[tuple[type[NeuralHumanError], int], ...] = (
    (Unauthorized, 401),
    (InvalidActorId, 400),
    (InvalidInput, 422),
    (UnknownActor, 404),
    (UnknownJob, 404),
    (FrameNotAvailable, 404),
    (TooManyJobs, 429),
    (OutOfMemory, 503),
    (Busy, 503),
    (ClientGone, 499),  # nobody reads it: the client has left
    (DiskFull, 507),
    (ActorBroken, 500),
    (BodyModelMissing, 500),
    (NeuralHumanError, 500),
)


def status_of(err: NeuralHumanError) -> int:
    return next(status for cls, status in STATUS if isinstance(err, cls))


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message, "field": field}},
                        headers=headers)


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """pydantic's location ('body', 'camera', 'K', 0) -> 'camera.K.0' (drops where it came from: body/path/query)."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "path", "query"):
        parts = parts[1:]
    return ".".join(parts) or None


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    """(message, field) of the first validation error, worded like the server's own errors."""
    errors = err.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _field_of(first.get("loc", ()))
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "json_invalid":
        message = "the request body is not valid JSON"
        field = None
    elif first.get("type") == "missing":
        message = f"{field} is required" if field else "request body is required"
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if field is not None and not message.startswith(field):
        message = f"{field}: {message}"
    return message, field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NeuralHumanError)
    async def _own_error(_: Request, err: NeuralHumanError) -> JSONResponse:
        status = status_of(err)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error_response(status, err.code, err.message, err.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(err)
        return error_response(422, "invalid_request", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(err.status_code,
                                                                                            "http_error")
        return error_response(err.status_code, code, str(err.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        """Anything unexpected: a JSON 500 (the traceback goes to the server log, not to the client)."""
        log.exception("unexpected error")
        return error_response(500, "internal_error", f"{type(err).__name__}: {err}")
