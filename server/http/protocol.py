"""uvicorn's h11 protocol with a header timeout: a connection that has not sent a complete request head within
``HEADER_TIMEOUT_S`` of connecting (or of its last answer) is closed, so clients that never finish their headers
cannot hold connections forever (uvicorn's keep-alive timeout alone is cancelled by any byte). ``serve`` also caps
connections and tasks (``LIMIT_CONCURRENCY``: uvicorn answers 503 beyond) and the size of an incomplete request
head (``MAX_HEAD_BYTES``)."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
TIMEOUT_KEEP_ALIVE_S = 5
LIMIT_CONCURRENCY = 64
MAX_HEAD_BYTES = 64 * 1024


class HeaderTimeoutH11Protocol(H11Protocol):
    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _head_timeout(self) -> None:
        waiting_for_head = self.cycle is None or self.cycle.response_complete
        if waiting_for_head and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)


def uvicorn_options() -> dict[str, object]:
    """The keyword arguments ``serve`` passes to ``uvicorn.run`` for the limits above."""
    return {"http": HeaderTimeoutH11Protocol, "timeout_keep_alive": TIMEOUT_KEEP_ALIVE_S,
            "limit_concurrency": LIMIT_CONCURRENCY, "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
