# SPDX-License-Identifier: GPL-3.0-or-later
"""Background work of the add-on and the main-thread step that applies its results.

Network calls run in worker threads (`JobRunner` for server jobs, `BackgroundCall` for short requests); they never
touch bpy. Their messages are applied on Blender's main thread by `drain_all()`, which a persistent timer calls every
0.1 s. Timers do not fire in background Blender, so tests (and `make demo`) call `drain_all()` / `wait_idle()`
directly. On file load every job is cancelled: its finished frames stay on disk, nothing keeps datablocks of the old
file.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import bpy
from bpy.app.handlers import persistent

from ..core.job_runner import FrameSaved, JobFailed, JobFinished, JobProgress, JobRunner, JobStarted, drain

TICK_ACTIVE_S = 0.1
TICK_IDLE_S = 0.5


class JobHandler(Protocol):
    """What a job does with its results in the scene (main thread only)."""

    title: str

    def frame_saved(self, frame: int, path: str) -> None: ...

    def finished(self, state: str, errors: dict[int, str], message: str | None) -> str: ...


@dataclass
class ActiveJob:
    runner: JobRunner
    handler: JobHandler
    total: int
    done: int = 0
    eta_s: float | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass
class BackgroundCall:
    """A short server request (health, actor list...) run off the main thread; callbacks run on the main thread."""

    name: str
    function: Callable[[], Any]
    on_done: Callable[[Any], None]
    on_error: Callable[[Exception], None]
    results: queue.Queue = field(default_factory=queue.Queue)

    def start(self) -> BackgroundCall:
        def work() -> None:
            try:
                self.results.put(("done", self.function()))
            except Exception as err:  # noqa: BLE001 (every failure is reported to the main thread)
                self.results.put(("error", err))

        threading.Thread(target=work, name=f"neural-human {self.name}", daemon=True).start()
        return self


JOBS: list[ActiveJob] = []
CALLS: list[BackgroundCall] = []


def status() -> Any | None:
    wm = getattr(bpy.context, "window_manager", None)
    return getattr(wm, "neural_human", None) if wm is not None else None


def report_error(text: str) -> None:
    """A failure found off the operator (in a worker's result): panel status line, console, and a popup."""
    st = status()
    if st is not None:
        st.last_error = text
    print(f"Neural Human: {text}")
    wm = getattr(bpy.context, "window_manager", None)
    if not bpy.app.background and wm is not None and wm.windows:
        def draw(menu, _context):
            menu.layout.label(text=text)

        wm.popup_menu(draw, title="Neural Human", icon="ERROR")


def start_job(runner: JobRunner, handler: JobHandler, total: int) -> ActiveJob:
    job = ActiveJob(runner, handler, total)
    JOBS.append(job)
    runner.start()
    _update_status()
    ensure_timer()
    return job


def start_call(call: BackgroundCall) -> BackgroundCall:
    CALLS.append(call.start())
    ensure_timer()
    return call


def cancel_all() -> int:
    for job in JOBS:
        job.runner.cancel()
    return len(JOBS)


def is_busy() -> bool:
    return bool(JOBS or CALLS)


def _handle(job: ActiveJob, msg: Any) -> None:
    if isinstance(msg, JobStarted):
        job.total = msg.total
    elif isinstance(msg, JobProgress):
        job.done, job.total, job.eta_s = msg.done, msg.total, msg.eta_s
    elif isinstance(msg, FrameSaved):
        try:
            job.handler.frame_saved(msg.frame, msg.path)
        except Exception as err:  # noqa: BLE001 (a frame that cannot be applied must not stop the job)
            report_error(f"{job.handler.title}: frame {msg.frame} saved to {msg.path} but not loaded: {err}")
    elif isinstance(msg, JobFinished):
        JOBS.remove(job)
        try:
            summary = job.handler.finished(msg.state, dict(msg.errors), msg.message)
        except Exception as err:  # noqa: BLE001
            summary = f"{job.handler.title}: results not applied: {err}"
            report_error(summary)
        st = status()
        if st is not None:
            st.job_text = summary
    elif isinstance(msg, JobFailed):
        JOBS.remove(job)
        text = f"{job.handler.title} failed: {msg.error}"
        try:
            job.handler.finished("failed", {}, str(msg.error))
        except Exception as err:  # noqa: BLE001
            text += f" (and the finished frames were not applied: {err})"
        report_error(text)
        st = status()
        if st is not None:
            st.job_text = text


def drain_all(max_items: int = 16) -> int:
    """Apply at most `max_items` messages per job and per call; returns how many were applied."""
    handled = 0
    for job in list(JOBS):
        handled += drain(job.runner.messages, lambda m, j=job: _handle(j, m) if j in JOBS else None, max_items)
    for call in list(CALLS):
        try:
            kind, value = call.results.get_nowait()
        except queue.Empty:
            continue
        CALLS.remove(call)
        handled += 1
        try:
            (call.on_done if kind == "done" else call.on_error)(value)
        except Exception as err:  # noqa: BLE001
            report_error(f"{call.name}: {err}")
    if handled:
        _update_status()
        _redraw()
    return handled


def wait_idle(timeout_s: float, poll_s: float = 0.05) -> bool:
    """Drain until no job or call is left (for background Blender, where timers do not run). False on timeout."""
    deadline = time.monotonic() + timeout_s
    while is_busy():
        if time.monotonic() > deadline:
            return False
        if not drain_all():
            time.sleep(poll_s)
    return True


def _update_status() -> None:
    st = status()
    if st is None:
        return
    st.busy = bool(JOBS)
    if not JOBS:
        st.job_progress = 0.0
        return
    job = JOBS[0]
    st.job_progress = job.done / job.total if job.total else 0.0
    eta = f", about {format_seconds(job.eta_s)} left" if job.eta_s is not None and job.done else ""
    more = f" (+{len(JOBS) - 1} more jobs)" if len(JOBS) > 1 else ""
    st.job_text = f"{job.handler.title}: {job.done}/{job.total} frames{eta}{more}"


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "IMAGE_EDITOR", "PROPERTIES"):
                area.tag_redraw()


def _tick() -> float:
    try:
        drain_all()
    except Exception as err:  # noqa: BLE001 (a timer that raises is unregistered by Blender)
        report_error(f"internal error while applying results: {err}")
    return TICK_ACTIVE_S if is_busy() else TICK_IDLE_S


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=TICK_ACTIVE_S, persistent=True)


@persistent
def _on_load_pre(*_args: Any) -> None:
    # Datablocks of the old file die with it: stop the jobs (their frames stay on disk), forget the calls.
    cancel_all()
    JOBS.clear()
    CALLS.clear()


@persistent
def _on_load_post(*_args: Any) -> None:
    st = status()
    if st is not None:
        st.busy, st.job_progress, st.job_text = False, 0.0, ""


def register() -> None:
    bpy.app.handlers.load_pre.append(_on_load_pre)
    bpy.app.handlers.load_post.append(_on_load_post)
    ensure_timer()


def unregister() -> None:
    cancel_all()
    JOBS.clear()
    CALLS.clear()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    for handlers, fn in ((bpy.app.handlers.load_pre, _on_load_pre), (bpy.app.handlers.load_post, _on_load_post)):
        if fn in handlers:
            handlers.remove(fn)


__all__ = ["ActiveJob", "BackgroundCall", "cancel_all", "drain_all", "start_call", "start_job",
           "wait_idle"]
