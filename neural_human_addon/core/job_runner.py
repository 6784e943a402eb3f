# SPDX-License-Identifier: GPL-3.0-or-later
"""The worker thread of a server job: submits the frames, polls the job, saves every finished frame's npz into an
output folder and reports what happens as messages on a queue. No bpy here: Blender's main thread drains the queue
with ``drain()`` from a timer and does the Blender work (blender.md §5: threads never touch bpy).

Messages, in order: ``JobStarted``; then ``JobProgress`` (whenever done/total/state change) and ``FrameSaved`` (one
per finished frame); last exactly one of ``JobFinished`` (the server's job ended: done, cancelled or failed) or
``JobFailed`` (the runner could not go on: server gone, wrong token, disk full, ...). ``finished`` is set after the
last message was queued.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .atomic_files import write_bytes_atomic
from .server_client import ServerClient, ServerError
from .wire import frame_file_name

TERMINAL_STATES = ("done", "cancelled", "failed")
T = TypeVar("T")


@dataclass(frozen=True)
class JobStarted:
    job_id: str
    total: int


@dataclass(frozen=True)
class JobProgress:
    job_id: str
    done: int
    total: int
    eta_s: float | None
    state: str


@dataclass(frozen=True)
class FrameSaved:
    """Frame ``frame`` is on disk at ``path`` (the server's npz, byte for byte). ``reused``: the file was already in
    the output folder (an earlier run), so it was not fetched again."""

    job_id: str
    frame: int
    path: str
    reused: bool = False


@dataclass(frozen=True)
class JobFinished:
    """The job ended on the server: ``state`` done | cancelled | failed; ``errors`` maps frame -> why it failed;
    ``message`` the server's note (why a job failed as a whole) or None."""

    job_id: str
    state: str
    errors: dict[int, str] = field(default_factory=dict)
    message: str | None = None


@dataclass(frozen=True)
class JobFailed:
    """The runner stopped before the job ended (``job_id`` None when it was never created)."""

    job_id: str | None
    error: ServerError


JobMessage = JobStarted | JobProgress | FrameSaved | JobFinished | JobFailed


def drain(q: queue.Queue, handle: Callable[[Any], object], max_items: int = 16) -> int:
    """Take at most ``max_items`` messages from ``q`` without blocking and call ``handle`` on each, in order;
    returns how many were handled. An exception from ``handle`` propagates (its message counts as taken)."""
    count = 0
    while count < max_items:
        try:
            message = q.get_nowait()
        except queue.Empty:
            break
        count += 1
        handle(message)
    return count


class JobRunner(threading.Thread):
    """Runs one job of ``frames`` (``[{"frame": n, "body": body, "camera": camera?}, ...]``, wire format, made on
    the main thread before start) on the server and saves its frames as ``out_dir/frame_NNNNNN.npz``.

    Transient failures (timeout, unreachable, busy) while polling or fetching are retried ``retries`` times with
    a doubling pause before the runner gives up with ``JobFailed``; submitting the job is not retried (it could
    create the job twice). After ``cancel()`` the runner asks the server to cancel, keeps polling until the job
    has stopped (at most ``cancel_grace_s``), fetches every frame finished by then, and ends with ``JobFinished``
    (state "cancelled", or "done" when the last frame finished before the cancel took effect)."""

    def __init__(self, client: ServerClient, actor_id: str, frames: list[dict[str, Any]], outputs: list[str],
                 out_dir: str | os.PathLike[str], poll_interval: float = 0.25, voxel_size: float | None = None,
                 colors: bool | None = None, appearance_frame: int | None = None, retries: int = 4,
                 retry_delay: float = 0.25, cancel_grace_s: float = 120.0):
        super().__init__(name=f"neural-human-job-{actor_id}", daemon=True)
        self.client = client
        self.actor_id = actor_id
        self.frames = list(frames)
        self.outputs = list(outputs)
        self.out_dir = Path(out_dir)
        self.poll_interval = float(poll_interval)
        self.voxel_size = voxel_size
        self.colors = colors
        self.appearance_frame = appearance_frame
        self.retries = int(retries)
        self.retry_delay = float(retry_delay)
        self.cancel_grace_s = float(cancel_grace_s)
        self.messages: queue.Queue[JobMessage] = queue.Queue()
        self.finished = threading.Event()
        self.job_id: str | None = None
        self._cancel = threading.Event()
        self._saved: set[int] = set()

    def cancel(self) -> None:
        """Ask the runner to cancel the job (thread-safe, returns at once)."""
        self._cancel.set()

    def frame_path(self, n: int) -> Path:
        return self.out_dir / frame_file_name(n)

    # --- the thread ----------------------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except ServerError as err:
            self.messages.put(JobFailed(self.job_id, err))
        except OSError as err:
            self.messages.put(JobFailed(self.job_id, ServerError(
                "io", f"Cannot write the job's frames into {str(self.out_dir)!r} ({err.strerror or err}): choose a "
                "writable output folder with free space.")))
        except Exception as err:  # never let the thread die silently: the UI waits for a last message
            self.messages.put(JobFailed(self.job_id, ServerError(
                "protocol", f"The job runner stopped on an unexpected {type(err).__name__}: {err}")))
        finally:
            self.finished.set()

    def _run(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self._cancel.is_set():
            raise ServerError("cancelled", "The job was cancelled before it was sent to the server.")
        status = self.client.create_job(self.actor_id, self.frames, self.outputs, voxel_size=self.voxel_size,
                                        colors=self.colors, appearance_frame=self.appearance_frame)
        job_id = self.job_id = str(status["id"])
        self.messages.put(JobStarted(job_id, int(status.get("total", len(self.frames)))))
        last: tuple[int, int, str] | None = None
        cancel_deadline: float | None = None
        while True:
            if self._cancel.is_set() and cancel_deadline is None:
                self._retrying(lambda: self.client.cancel_job(job_id))
                cancel_deadline = time.monotonic() + self.cancel_grace_s
            status = self._retrying(lambda: self.client.job(job_id))
            self._save_frames(job_id, status.get("frames_done") or [])
            state = str(status["state"])
            progress = (int(status.get("done", 0)), int(status.get("total", len(self.frames))), state)
            if progress != last:
                eta = status.get("eta_s")
                self.messages.put(JobProgress(job_id, progress[0], progress[1],
                                              None if eta is None else float(eta), state))
                last = progress
            if state in TERMINAL_STATES:
                break
            if cancel_deadline is not None:
                if time.monotonic() >= cancel_deadline:  # the server did not stop in time: leave it be
                    state = "cancelled"
                    break
                time.sleep(self.poll_interval)
            else:
                self._cancel.wait(self.poll_interval)  # a cancel wakes the loop at once
        errors = {int(k): str(v) for k, v in (status.get("errors") or {}).items()}
        message = status.get("message")
        self.messages.put(JobFinished(job_id, state, errors, None if message is None else str(message)))

    def _save_frames(self, job_id: str, frames_done: list[Any]) -> None:
        for n in sorted(int(n) for n in frames_done):
            if n in self._saved:
                continue
            path = self.frame_path(n)
            reused = path.is_file()
            if not reused:
                data = self._retrying(lambda n=n: self.client.job_frame_bytes(job_id, n))
                write_bytes_atomic(path, data)
            self._saved.add(n)
            self.messages.put(FrameSaved(job_id, n, str(path), reused))

    def _retrying(self, call: Callable[[], T]) -> T:
        delay = self.retry_delay
        for attempt in range(self.retries + 1):
            try:
                return call()
            except ServerError as err:
                if not err.transient or attempt == self.retries:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
        raise AssertionError("unreachable")  # the loop returns or raises
