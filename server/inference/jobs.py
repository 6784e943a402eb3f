"""Jobs: many frames of one actor computed in order by one worker thread (through the inference queue); each
finished frame is an npz written atomically into the job's folder, and stays there after a cancel.

Who computes the frames is the manager's ``executor`` (a ``FrameExecutor``): None (the default) computes them here,
in order, through the model queue; ``server.inference.farm.Farm`` hands them to a pool of Ray workers. Either way the
job's own thread is the only writer of its folder: each outcome is written (npz, then frames.log line) as it comes.

Each job folder also holds ``job.json`` (request summary, state, times), rewritten atomically only when the state
changes, and ``frames.log``, one JSON line appended per computed frame (``{"frame": n}`` or ``{"frame": n, "error":
msg}``): what is written grows linearly with the job. A new ``JobManager`` on the same folder serves the finished
frames of earlier jobs again (a frame counts as finished when its npz exists, whichever side of the log line a crash
came); a damaged job.json is skipped with a log line. Frame files are named as the add-on names its copies
(``neural_human_addon.core.wire.frame_file_name``).

Retention (``JobPolicy``): ended jobs older than ``max_age_s`` and, beyond ``keep`` jobs, the oldest ended ones are
removed with their folders (at start and on every submit); queued and running jobs and jobs that ended less than
``recent_s`` ago are never removed. A submit answers TooManyJobs (429) when ``keep`` jobs remain after that, or when
``max_queued`` jobs are queued or running. A finished job drops its request (only the summary stays in memory)."""

from __future__ import annotations

import errno
import json
import logging
import math
import queue as queue_module
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from neural_human_addon.core.atomic_files import write_bytes_atomic
from neural_human_addon.core.camera import PinholeCamera
from neural_human_addon.core.wire import frame_file_name
from server.errors import DiskFull, FrameNotAvailable, InvalidInput, NeuralHumanError, TooManyJobs, UnknownJob
from server.inference.actor_registry import ActorRegistry
from server.inference.frames import mesh_frame, npz_bytes, render_frame
from server.inference.limits import JobPolicy
from server.inference.model_queue import ModelQueue
from server.neural_body.render_settings import DEFAULT_SETTINGS, RenderSettings

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
RENDER_OUTPUTS = ("rgba", "depth")


JOB_FILE = "job.json"
FRAME_LOG = "frames.log"
JOB_FILE_VERSION = 2
STATES = ("queued", "running", "done", "cancelled", "failed")
ENDED = ("done", "cancelled", "failed")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

log = logging.getLogger("server.jobs")


@dataclass(frozen=True)
class FrameSpec:
    """One frame of a job: its number, a body message and, for render outputs, a camera."""

    frame: int
    body: dict[str, Any]
    camera: PinholeCamera | None = None


@dataclass(frozen=True)
class JobSpec:
    """Many frames of one actor, computed in order (the HTTP layer builds it from a validated request)."""

    actor: str
    outputs: list[str]
    frames: list[FrameSpec]
    voxel_size: float
    colors: bool = True
    appearance_frame: int | None = None


@dataclass(frozen=True)
class FrameOutcome:
    """A computed frame: its arrays, or the error that stopped it (``error`` set, ``arrays`` None)."""

    frame: int
    arrays: dict[str, Any] | None = None
    error: str | None = None


class FrameExecutor(Protocol):
    """Computes a job's frames elsewhere than the job's thread (``server.inference.farm.Farm``)."""

    def frames(self, req: JobSpec, cancelled: Callable[[], bool]) -> Iterator[FrameOutcome]:
        """One outcome per frame of ``req`` as each finishes (any order); once ``cancelled()`` is true no frame is
        started, the frames already being computed still come out, and the iterator ends."""
        ...


def frame_error(err: Exception) -> str:
    """What a job's errors say about a frame that raised ``err`` (one bad frame never stops the others)."""
    if isinstance(err, NeuralHumanError):
        return err.message
    if isinstance(err, OSError):
        return ("the disk is full; free space and submit this frame again" if err.errno in DISK_FULL
                else f"could not write the frame: {err}")
    return f"{type(err).__name__}: {err}"


def compute_frame(registry: ActorRegistry, settings: RenderSettings, req: JobSpec, f: FrameSpec) -> dict[str, Any]:
    """The arrays of one job frame (render outputs and/or the mesh), with ``registry``'s per-pose feature cache;
    run inside a model queue (the server's, or a Ray worker's own)."""
    loaded = registry.get(req.actor)
    out: dict[str, Any] = {}
    render = [o for o in req.outputs if o in RENDER_OUTPUTS]
    if render:
        out.update(render_frame(loaded, f.body, f.camera, render, req.appearance_frame, registry.feature_cache,
                                settings))
    if "mesh" in req.outputs:
        out.update(mesh_frame(loaded, f.body, req.voxel_size, req.colors, req.appearance_frame,
                              registry.feature_cache, settings).to_wire())
    return out


@dataclass
class Job:
    """One job; ``request`` is None for a job restored from its folder (its frames are served, not computed)."""

    id: str
    actor: str
    outputs: list[str]
    frames: list[int]  # frame numbers in computing order
    folder: Path
    request: JobSpec | None = None
    state: str = "queued"  # queued | running | done | cancelled | failed
    done: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    message: str | None = None  # why a job is failed/cancelled beyond per-frame errors (e.g. a server restart)
    cancel: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict[str, Any]:
        total = len(self.frames)
        elapsed = (self.ended or time.time()) - self.started if self.started else 0.0
        eta = None
        if self.state in ("queued", "running") and self.done:
            eta = elapsed / self.done * (total - self.done)
        return {"id": self.id, "actor": self.actor, "state": self.state, "done": self.done, "total": total,
                "eta_s": eta, "elapsed_s": elapsed, "errors": {str(k): v for k, v in self.errors.items()},
                "frames_done": sorted(self.finished), "message": self.message}

    def record(self) -> dict[str, Any]:
        """What job.json holds: the request summary and state (the frames' progress is in frames.log)."""
        return {"version": JOB_FILE_VERSION, "id": self.id, "actor": self.actor, "outputs": self.outputs,
                "frames": self.frames, "state": self.state, "done": self.done,
                "errors": {str(k): v for k, v in self.errors.items()},
                "created": self.created, "started": self.started, "ended": self.ended, "message": self.message}

    def save(self) -> None:
        write_bytes_atomic(self.folder / JOB_FILE, json.dumps(self.record()).encode())

    def log_frame(self, frame: int, error: str | None = None) -> None:
        """One line appended to frames.log (after the frame's npz is in place)."""
        line = {"frame": frame} if error is None else {"frame": frame, "error": error}
        with open(self.folder / FRAME_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


class DamagedJob(ValueError):
    """A job.json that does not describe a job (wrong types, unknown state)."""


def _number(value: Any, name: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DamagedJob(f"{name} is {value!r}, not a time")
    return float(value)


def _ints(values: Any, name: str) -> list[int]:
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise DamagedJob(f"{name} is not a list of frame numbers")
    return values


def _parse_record(rec: Any, folder: Path) -> Job:
    """A Job from a job.json's contents, every field checked; DamagedJob says what is wrong."""
    if not isinstance(rec, dict) or rec.get("id") != folder.name:
        raise DamagedJob("no job record of this folder's id")
    if rec.get("state") not in STATES:
        raise DamagedJob(f"state is {rec.get('state')!r}")
    outputs, errors, message = rec.get("outputs"), rec.get("errors", {}), rec.get("message")
    if not isinstance(rec.get("actor"), str) or not isinstance(outputs, list) or \
            not all(isinstance(o, str) for o in outputs):
        raise DamagedJob("actor or outputs are not text")
    if not isinstance(errors, dict) or not all(isinstance(v, str) and k.lstrip("-").isdigit()
                                               for k, v in errors.items()):
        raise DamagedJob("errors is not a map of frame numbers to messages")
    if message is not None and not isinstance(message, str):
        raise DamagedJob("message is not text")
    return Job(id=folder.name, actor=rec["actor"], outputs=outputs, frames=_ints(rec.get("frames"), "frames"),
               folder=folder, state=rec["state"], errors={int(k): v for k, v in errors.items()},
               created=_number(rec.get("created"), "created"), started=_number(rec.get("started"), "started", True),
               ended=_number(rec.get("ended"), "ended", True), message=message,
               finished=set(_ints(rec.get("frames_done", []), "frames_done")))  # version 1 kept frames_done here


def _read_frame_log(job: Job) -> None:
    """Merge frames.log into ``job`` (a torn last line from a crash is ignored)."""
    try:
        lines = (job.folder / FRAME_LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            entry = json.loads(line)
            frame = int(entry["frame"])
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(entry.get("error"), str):
            job.errors[frame] = entry["error"]
        else:
            job.finished.add(frame)


def restore_job(folder: Path) -> Job | None:
    """The job saved in ``folder``; None, with a log line, when its job.json is missing or damaged. A job that was
    queued or running when the server stopped becomes "failed" with a message; a frame counts as finished when its
    npz exists (also when the crash came before its frames.log line). A full disk does not stop the restore."""
    try:
        job = _parse_record(json.loads((folder / JOB_FILE).read_text()), folder)
    except (OSError, ValueError) as err:  # json errors and DamagedJob are ValueErrors
        log.warning("skipping job folder %s: unreadable or damaged %s (%s)", folder, JOB_FILE, err)
        return None
    _read_frame_log(job)
    wanted = set(job.frames)
    job.finished = {n for n in job.finished | wanted if n in wanted and (folder / frame_file_name(n)).is_file()}
    job.errors = {n: e for n, e in job.errors.items() if n in wanted and n not in job.finished}
    job.done = len(job.finished) + len(job.errors)
    if job.state in ("queued", "running"):
        was = job.state
        job.state = "failed"
        job.ended = job.ended or time.time()
        job.message = (f"the server stopped while this job was {was}; {len(job.finished)} of {len(job.frames)} "
                       "frames finished and are still served (submit the rest again)")
        JobManager.save_quietly(job)
    return job


class JobManager:
    def __init__(self, root: str | Path, registry: ActorRegistry, inference: ModelQueue,
                 settings: RenderSettings = DEFAULT_SETTINGS, policy: JobPolicy | None = None,
                 executor: FrameExecutor | None = None):
        self.root = Path(root)
        self.executor = executor  # None: frames computed here through ``inference``
        self.settings = settings
        self.policy = policy or JobPolicy()
        self.root.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.inference = inference
        self._lock = threading.Lock()  # guards _jobs against submit/prune from several request threads
        self._jobs: dict[str, Job] = {}
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and JOB_ID.match(folder.name):
                job = restore_job(folder)
                if job is not None:
                    self._jobs[job.id] = job
        self.prune()
        self._pending: queue_module.Queue[Job] = queue_module.Queue()
        self._worker = threading.Thread(target=self._work, name="jobs", daemon=True)
        self._worker.start()

    @property
    def count(self) -> int:
        return len(self._jobs)

    def _check_request(self, req: JobSpec) -> None:
        self.registry.folder(req.actor)  # a bad or unknown actor id now rather than a failed job later
        if any(o in RENDER_OUTPUTS for o in req.outputs):
            for i, f in enumerate(req.frames):
                if f.camera is None:
                    raise InvalidInput(f"frames.{i}.camera: render outputs need a camera for every frame",
                                       f"frames.{i}.camera")
        seen: set[int] = set()
        for i, f in enumerate(req.frames):
            if f.frame in seen:
                raise InvalidInput(f"frames.{i}.frame: frame {f.frame} appears twice", f"frames.{i}.frame")
            seen.add(f.frame)

    def _check_room(self) -> None:
        """TooManyJobs when the queue is full or the server keeps as many jobs as it may (after pruning)."""
        active = sum(1 for j in self._jobs.values() if j.state in ("queued", "running"))
        if active >= self.policy.max_queued:
            raise TooManyJobs(f"{active} jobs are queued or running (the limit is {self.policy.max_queued}); wait "
                              "for one to end or cancel one", code="queue_full")
        self.prune(room=1)
        if len(self._jobs) >= self.policy.keep:
            raise TooManyJobs(f"the server keeps {len(self._jobs)} jobs (the limit is {self.policy.keep}) and none "
                              f"ended more than {self.policy.recent_s:.0f} s ago; retry later",
                              code="too_many_jobs")

    def submit(self, req: JobSpec) -> Job:
        self._check_request(req)
        with self._lock:
            self._check_room()
            job_id = uuid.uuid4().hex
            folder = self.root / job_id
            job = Job(job_id, req.actor, list(req.outputs), [f.frame for f in req.frames], folder, request=req)
            try:
                folder.mkdir()
                job.save()
            except OSError as err:
                shutil.rmtree(folder, ignore_errors=True)  # no half-made job folder left behind
                if err.errno in DISK_FULL:
                    raise DiskFull(f"the jobs folder {str(self.root)!r} is full; free disk space or start the "
                                   "server with another --jobs-dir") from err
                raise
            self._jobs[job_id] = job
        self._pending.put(job)
        return job

    def prune(self, now: float | None = None, room: int = 0) -> list[str]:
        """Remove (folders included) ended jobs older than max_age_s, then the oldest ended ones beyond keep (less
        ``room`` for new jobs); never a queued or running job or one that ended less than recent_s ago. The ids
        removed."""
        now = time.time() if now is None else now
        p = self.policy
        removable = sorted((j for j in self._jobs.values()
                            if j.state in ENDED and (j.ended or j.created) < now - p.recent_s),
                           key=lambda j: j.ended or j.created)
        over = len(self._jobs) - p.keep + room
        gone = []
        for job in removable:
            if (job.ended or job.created) < now - p.max_age_s or len(gone) < over:
                gone.append(job.id)
                self._jobs.pop(job.id, None)
                shutil.rmtree(job.folder, ignore_errors=True)
        if gone:
            log.info("removed %d old job(s): %s", len(gone), ", ".join(gone))
        return gone

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise UnknownJob(f"no job {job_id!r} on this server (jobs live in the server's "
                           f"--jobs-dir {str(self.root)!r}; ended jobs are removed after a while)", "id")
        return job

    def frame_path(self, job_id: str, frame: int) -> Path:
        job = self.get(job_id)
        if frame in job.errors:
            raise FrameNotAvailable(f"frame {frame} failed: {job.errors[frame]}", "n", code="frame_failed")
        if frame not in job.finished:
            if frame not in job.frames:
                raise FrameNotAvailable(f"the job has no frame {frame}", "n", code="unknown_frame")
            if job.state in ENDED:
                raise FrameNotAvailable(f"frame {frame} will not be computed: the job is {job.state}", "n",
                                        code="frame_not_computed")
            raise FrameNotAvailable(f"frame {frame} is not finished yet", "n", code="frame_not_ready")
        return job.folder / frame_file_name(frame)

    def cancel(self, job_id: str) -> Job:
        """Stop a queued or running job between frames (what is finished stays); an ended job is left as it is."""
        job = self.get(job_id)
        if job.state in ENDED:
            return job
        job.cancel.set()
        if job.state == "queued":
            job.state, job.ended, job.request = "cancelled", time.time(), None
            self.save_quietly(job)
        return job

    def _work(self) -> None:
        while True:
            job = self._pending.get()
            if job.cancel.is_set() or job.request is None:
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        req = job.request
        assert req is not None
        job.state, job.started = "running", time.time()
        self.save_quietly(job)
        broken = None
        try:
            outcomes = self._frames(job, req) if self.executor is None else self.executor.frames(req, job.cancel.is_set)
            for outcome in outcomes:
                self._store(job, outcome)
        except Exception as err:  # the executor itself broke (not one frame): the job fails, the server goes on
            log.exception("job %s: the frame executor failed", job.id)
            broken = f"the frames could not be computed: {type(err).__name__}: {err}"
        job.ended = time.time()
        if broken is not None:
            job.state, job.message = "failed", broken
        elif job.done < len(job.frames):  # only a cancel stops the frames early
            job.state = "cancelled"
        else:
            job.state = "failed" if not job.finished else "done"
        job.request = None  # the bodies and cameras are no longer needed
        self.save_quietly(job)

    def _frames(self, job: Job, req: JobSpec) -> Iterator[FrameOutcome]:
        """The in-process executor: the frames in order through the model queue, checking cancel between frames."""
        for f in req.frames:
            if job.cancel.is_set():
                return
            try:
                outcome = FrameOutcome(f.frame, self.inference.run(
                    partial(self._frame, req, f), relieve=partial(self.registry.free_memory, keep=job.actor)))
            except Exception as err:  # one bad frame must not stop the others
                outcome = FrameOutcome(f.frame, error=frame_error(err))
            yield outcome

    def _store(self, job: Job, outcome: FrameOutcome) -> None:
        """One frame: its npz written atomically, then its frames.log line; errors are recorded, never raised."""
        if outcome.frame in job.finished or outcome.frame in job.errors:  # an executor's slip must not write twice
            log.warning("job %s: frame %d came twice; the second is ignored", job.id, outcome.frame)
            return
        error = outcome.error
        if error is None:
            try:
                write_bytes_atomic(job.folder / frame_file_name(outcome.frame), npz_bytes(outcome.arrays or {}))
            except Exception as err:
                error = frame_error(err)
        if error is None:
            job.finished.add(outcome.frame)
        else:
            job.errors[outcome.frame] = error
        job.done += 1
        try:
            job.log_frame(outcome.frame, error)
        except OSError as err:  # the frame's npz (if any) still counts after a restart
            job.message = f"could not write {FRAME_LOG}: {err}"

    @staticmethod
    def save_quietly(job: Job) -> None:
        """job.save(); a full disk must not kill the worker or the restore (the state in memory still counts)."""
        try:
            job.save()
        except OSError as err:
            job.message = f"could not write {JOB_FILE}: {err}"
            log.warning("job %s: could not write %s: %s", job.id, JOB_FILE, err)

    def _frame(self, req: JobSpec, f: FrameSpec) -> dict[str, Any]:
        return compute_frame(self.registry, self.settings, req, f)
