"""A stdlib HTTP server on 127.0.0.1:0 answering canned statuses and bodies, for the client's pure logic."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Canned:
    status: int = 200
    body: bytes = b"{}"
    content_type: str | None = "application/json"
    delay: float = 0.0  # seconds before the answer starts

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Canned:
        return cls(status, json.dumps(value).encode())

    @classmethod
    def error(cls, status: int, code: str, message: str, field: str | None = None) -> Canned:
        return cls.json({"error": {"code": code, "message": message, "field": field}}, status)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Route = Canned | Callable[[Seen], Canned]


@dataclass
class CannedServer:
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def on(self, method: str, path: str, answer: Route) -> None:
        self.routes[(method, path)] = answer

    def paths(self, method: str | None = None) -> list[str]:
        return [s.path for s in self.seen if method is None or s.method == method]


def _handler(state: CannedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                        self.rfile.read(length))
            state.seen.append(seen)
            route = state.routes.get((self.command, self.path))
            if route is None:
                canned = Canned.error(404, "not_found", f"no route {self.path}")
            else:
                canned = route(seen) if callable(route) else route
            if canned.delay:
                time.sleep(canned.delay)
            try:
                self.send_response(canned.status)
                if canned.content_type:
                    self.send_header("Content-Type", canned.content_type)
                self.send_header("Content-Length", str(len(canned.body)))
                self.end_headers()
                self.wfile.write(canned.body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                pass

        do_GET = do_POST = do_DELETE = _answer

    return Handler


def start_canned_server() -> tuple[CannedServer, Callable[[], None]]:
    """A running server and its stop function."""
    state = CannedServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)

    return state, stop
