"""The request guard, an ASGI middleware in front of every route, run before a request body is read:

1. the Host header must name this machine (``localhost``, 127.0.0.0/8, ``::1``) unless the server was started with
   ``--allow-remote``: a web page cannot reach the loopback server through DNS rebinding (400 ``invalid_host``);
2. every path but ``GET /v1/health`` needs the bearer token (401 ``unauthorized``), so an unauthenticated client
   cannot make the server read, let alone parse, a body;
3. a body larger than ``MAX_BODY_BYTES`` answers 413 ``request_too_large``: at once from its Content-Length, or
   as soon as a chunked body passes the limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from neural_human_addon.core.server_client import is_loopback_host
from server.http.auth import token_matches
from server.http.errors import error_response
from server.inference.limits import MAX_BODY_BYTES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OPEN_PATHS = frozenset({"/v1/health"})
TOKEN_HINT = "the token is printed by `serve` and stored in ~/.config/neural-human/token"


def host_name(header: str) -> str:
    """The host name of a Host header (``[::1]:8765`` -> ``::1``, ``localhost:8765`` -> ``localhost``)."""
    header = header.strip()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class RequestGuard:
    """See the module docstring; ``token`` and ``allow_remote`` come from ``serve``."""

    def __init__(self, app: Callable[..., Awaitable[None]], token: str, allow_remote: bool = False,
                 max_body_bytes: int = MAX_BODY_BYTES):
        self.app, self.token, self.allow_remote, self.max_body_bytes = app, token, allow_remote, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._refusal(scope)
        if problem is not None:
            status, code, message, field = problem
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
            if status == 413:
                headers["Connection"] = "close"
            await error_response(status, code, message, field, headers or None)(scope, receive, send)
            return
        await self.app(scope, self._capped(receive), send)

    def _refusal(self, scope: Scope) -> tuple[int, str, str, str | None] | None:
        headers = _headers(scope)
        host = host_name(headers.get("host", ""))
        if not self.allow_remote and not is_loopback_host(host):
            return (400, "invalid_host", f"Host {host!r} is not this machine; the server answers loopback names "
                    "(localhost, 127.0.0.1, ::1) unless started with --allow-remote", "Host")
        if scope.get("path") not in OPEN_PATHS:
            header = headers.get("authorization")
            if not token_matches(header, self.token):
                message = ("wrong bearer token; use the one printed by `serve` / stored in its config dir" if header
                           else f"missing bearer token: send 'Authorization: Bearer <token>' ({TOKEN_HINT})")
                return 401, "unauthorized", message, "Authorization"
        length = headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_body_bytes):
            return (413, "request_too_large", f"the request body has {length} bytes; the limit is "
                    f"{self.max_body_bytes} (split a long job into several)", None)
        return None

    def _capped(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body_bytes

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI re-raises an HTTPException met while reading the body; the handler answers it
                    raise HTTPException(413, f"the request body passed the limit of {limit} bytes (split a long "
                                             "job into several)")
            return message

        return capped
