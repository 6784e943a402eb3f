"""JSON errors of the API: ``{"error": {"code", "message", "field"}}`` with a 4xx status for bad input.

fastapi is imported inside the functions: ``ApiError`` is raised by modules (the actor registry) whose constants
the CLI reads while building ``--help``, which must stay fast."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error answered to the client as JSON; ``field`` is the dotted request field at fault (or None)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message, "field": field}},
                        headers=headers)


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """pydantic's location ('body', 'camera', 'K', 0) -> 'camera.K.0' (drops where it came from: body/path/query)."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "path", "query"):
        parts = parts[1:]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return error_response(err.status, err.code, err.message, err.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = err.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field_of(first.get("loc", ()))
        message = str(first.get("msg", "invalid request"))
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON"
            field = None
        elif first.get("type") == "missing":
            message = f"{field} is required"
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if field is not None and not message.startswith(field):
            message = f"{field}: {message}"
        return error_response(422, "invalid_request", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(err.status_code, code, str(err.detail))


def install_fallback_handler(app: FastAPI) -> None:
    """Anything unexpected: a JSON 500 (the traceback goes to the server log, not to the client)."""
    import logging


    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        logging.getLogger("server.http").exception("unexpected error")
        return error_response(500, "internal_error", f"{type(err).__name__}: {err}")
