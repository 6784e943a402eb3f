# SPDX-License-Identifier: GPL-3.0-or-later
"""When the live viewport preview asks the server for a frame: a pure state machine (no bpy, no threads, no clock).

One scheduler per viewport and actor. The caller feeds it what the picture depends on as a hashable ``key`` (pose,
root, frame, view, region size...) with :meth:`PreviewScheduler.observe`, and calls :meth:`tick` with the time;
``tick`` returns the request to send, if any. Rules:

- **debounce:** nothing is asked until the key has stayed the same for ``debounce_s`` (the view is still);
- **one in flight:** no new request while one is out;
- **newest wins:** while a request is out the key may change many times; only the newest key is asked next;
- **stale answers dropped:** an answer for a request that is not the one in flight, or for a key that is no longer
  current, is refused (:meth:`answer` returns False) and nothing is shown for it;
- **progressive resolution:** for a still key the steps of ``scales`` are asked in turn (quarter first, then full),
  each only when the key is unchanged; a key change starts again at the first step;
- **fps cap:** two requests are at least ``1 / max_fps`` seconds apart (start to start);
- **errors once:** a failure stops the scheduler; :meth:`fail` returns the message the first time only, so the UI
  shows it once, not on every redraw, and nothing more is asked until :meth:`reset`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

__all__ = ["PreviewRequest", "PreviewScheduler", "scale_label"]

DEFAULT_SCALES = (0.25, 1.0)
_TIME_EPS = 1e-9  # times are floats: 10.2 − 10.0 < 0.2


@dataclass(frozen=True)
class PreviewRequest:
    """One frame to ask for: ``id`` (unique per scheduler), the ``key`` it shows, its resolution step and scale."""

    id: int
    key: Hashable
    step: int
    scale: float
    sent_at: float


def scale_label(scale: float) -> str:
    """"1/4", "1/2", "full" or "0.3×" for the status line."""
    if scale >= 0.999:
        return "full"
    inverse = 1.0 / scale
    if abs(inverse - round(inverse)) < 1e-6:
        return f"1/{round(inverse)}"
    return f"{scale:.2g}×"


class PreviewScheduler:
    """The request policy of one viewport's preview (see the module docstring). Times are seconds, any origin."""

    def __init__(self, debounce_s: float = 0.15, max_fps: float = 4.0, scales: Sequence[float] = DEFAULT_SCALES):
        if debounce_s < 0:
            raise ValueError(f"debounce_s must be >= 0, got {debounce_s}")
        if not scales or any(not 0 < s <= 1 for s in scales):
            raise ValueError(f"scales must be fractions in (0, 1], got {list(scales)}")
        self.debounce_s = float(debounce_s)
        self.max_fps = float(max_fps)
        self.scales = tuple(float(s) for s in scales)
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new file, the preview turned on again, reconnected)."""
        self.key: Hashable | None = None
        self.changed_at = 0.0
        self.in_flight: PreviewRequest | None = None
        self.last_sent_at: float | None = None
        self.shown_key: Hashable | None = None
        self.shown_step = -1
        self.last_duration_s: float | None = None
        self.error: str | None = None
        self._error_reported = False
        self._next_id = 1
        self.dropped = 0

    def observe(self, key: Hashable, now: float) -> bool:
        """The picture now depends on ``key``; True when that is a change (the debounce restarts)."""
        if key == self.key:
            return False
        self.key, self.changed_at = key, float(now)
        return True

    def next_step(self) -> int | None:
        """The resolution step the current key needs next, or None when it is shown at full resolution."""
        if self.key is None:
            return None
        step = self.shown_step + 1 if self.shown_key == self.key else 0
        return step if step < len(self.scales) else None

    def tick(self, now: float) -> PreviewRequest | None:
        """The request to send now, or None (error, one in flight, debouncing, fps cap, or nothing left to ask)."""
        if self.error is not None or self.in_flight is not None:
            return None
        step = self.next_step()
        if step is None or now - self.changed_at < self.debounce_s - _TIME_EPS:
            return None
        if self._capped(now):
            return None
        request = PreviewRequest(self._next_id, self.key, step, self.scales[step], float(now))
        self._next_id += 1
        self.in_flight, self.last_sent_at = request, float(now)
        return request

    def _capped(self, now: float) -> bool:
        if self.max_fps <= 0 or self.last_sent_at is None:
            return False
        return now - self.last_sent_at < 1.0 / self.max_fps - _TIME_EPS

    def answer(self, request_id: int, now: float, duration_s: float | None = None) -> bool:
        """A frame came back for ``request_id``: True if it is to be shown (it answers the request in flight and its
        key is still current), False if it is stale and must be dropped. ``duration_s`` (the round trip as the
        caller measured it) replaces ``now − sent_at`` in the status line when the caller's clocks differ."""
        request = self.in_flight
        if request is None or request.id != request_id:
            self.dropped += 1
            return False
        self.in_flight = None
        self.last_duration_s = float(now) - request.sent_at if duration_s is None else float(duration_s)
        if request.key != self.key:
            self.dropped += 1
            return False
        self.shown_key, self.shown_step = request.key, request.step
        return True

    def fail(self, request_id: int, message: str) -> str | None:
        """A request failed: the scheduler stops; returns ``message`` the first time (to show), None afterwards."""
        if self.in_flight is not None and self.in_flight.id == request_id:
            self.in_flight = None
        if self.error is None:
            self.error = str(message)
        if self._error_reported:
            return None
        self._error_reported = True
        return self.error

    @property
    def busy(self) -> bool:
        return self.in_flight is not None

    def status_text(self) -> str:
        """"preview: 0.4 s/frame, 1/4 res" (or "preview: waiting", "preview: error: ...")."""
        if self.error is not None:
            return f"preview: error: {self.error}"
        if self.last_duration_s is None or self.shown_step < 0:
            return "preview: waiting for the first frame" if self.in_flight else "preview: on"
        return f"preview: {self.last_duration_s:.1f} s/frame, {scale_label(self.scales[self.shown_step])} res"
