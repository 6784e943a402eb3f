"""Jobs: many frames of one actor computed in order by one worker thread (through the inference queue); each
finished frame is an npz written atomically into the job's folder, and stays there after a cancel.

Each job folder also holds ``job.json`` (request summary, state, done/total, errors), rewritten atomically after
every frame; a new ``JobManager`` on the same folder serves the finished frames of earlier jobs again. Frame files are
named as the add-on names its copies (``neural_human_addon.core.wire.frame_file_name``)."""

from __future__ import annotations

import errno
import json
import queue as queue_module
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from neural_human_addon.core.atomic_files import write_bytes_atomic
from neural_human_addon.core.camera import PinholeCamera
from neural_human_addon.core.wire import frame_file_name
from server.errors import DiskFull, FrameNotAvailable, InvalidInput, NeuralHumanError, UnknownJob
from server.inference.actor_registry import ActorRegistry
from server.inference.frames import mesh_frame, npz_bytes, render_frame
from server.inference.model_queue import ModelQueue
from server.neural_body.render_settings import DEFAULT_SETTINGS, RenderSettings

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
RENDER_OUTPUTS = ("rgba", "depth")


JOB_FILE = "job.json"
JOB_FILE_VERSION = 1


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
        """What job.json holds: the request summary and progress (enough to serve the frames after a restart)."""
        return {"version": JOB_FILE_VERSION, "id": self.id, "actor": self.actor, "outputs": self.outputs,
                "frames": self.frames, "state": self.state, "done": self.done,
                "errors": {str(k): v for k, v in self.errors.items()}, "frames_done": sorted(self.finished),
                "created": self.created, "started": self.started, "ended": self.ended, "message": self.message}

    def save(self) -> None:
        write_bytes_atomic(self.folder / JOB_FILE, json.dumps(self.record(), indent=1).encode())


def restore_job(folder: Path) -> Job | None:
    """The job saved in ``folder`` (None when there is no readable job.json). A job that was queued or running when
    the server stopped becomes "failed" with a message; only frames whose npz exists count as finished."""
    try:
        rec = json.loads((folder / JOB_FILE).read_text())
        if rec.get("id") != folder.name or not JOB_ID.match(folder.name):
            return None
        finished = {int(n) for n in rec["frames_done"] if (folder / frame_file_name(int(n))).is_file()}
        job = Job(id=folder.name, actor=str(rec["actor"]), outputs=[str(o) for o in rec["outputs"]],
                  frames=[int(n) for n in rec["frames"]], folder=folder, state=str(rec["state"]),
                  done=int(rec["done"]), errors={int(k): str(v) for k, v in rec["errors"].items()},
                  finished=finished, created=float(rec["created"]), started=rec.get("started"),
                  ended=rec.get("ended"), message=rec.get("message"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if job.state in ("queued", "running"):
        job.state = "failed"
        job.ended = job.ended or time.time()
        job.message = (f"the server stopped while this job was {rec['state']}; {len(finished)} of {len(job.frames)} "
                       "frames finished and are still served (submit the rest again)")
        job.save()
    return job


class JobManager:
    def __init__(self, root: str | Path, registry: ActorRegistry, inference: ModelQueue,
                 settings: RenderSettings = DEFAULT_SETTINGS):
        self.root = Path(root)
        self.settings = settings
        self.root.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.inference = inference
        self._jobs: dict[str, Job] = {}
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and JOB_ID.match(folder.name):
                job = restore_job(folder)
                if job is not None:
                    self._jobs[job.id] = job
        self._pending: queue_module.Queue[Job] = queue_module.Queue()
        self._worker = threading.Thread(target=self._work, name="jobs", daemon=True)
        self._worker.start()

    def submit(self, req: JobSpec) -> Job:
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
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        job = Job(job_id, req.actor, list(req.outputs), [f.frame for f in req.frames], folder, request=req)
        try:
            folder.mkdir()
            job.save()
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise DiskFull(f"the jobs folder {str(self.root)!r} is full; free disk space or start the server "
                               "with another --jobs-dir") from err
            raise
        self._jobs[job_id] = job
        self._pending.put(job)
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise UnknownJob(f"no job {job_id!r} on this server (jobs live in the server's "
                           f"--jobs-dir {str(self.root)!r})", "id")
        return job

    def frame_path(self, job_id: str, frame: int) -> Path:
        job = self.get(job_id)
        if frame in job.errors:
            raise FrameNotAvailable(f"frame {frame} failed: {job.errors[frame]}", "n", code="frame_failed")
        if frame not in job.finished:
            known = frame in job.frames
            raise FrameNotAvailable(f"frame {frame} is not finished yet" if known else f"the job has no frame {frame}",
                                    "n", code="frame_not_ready" if known else "unknown_frame")
        return job.folder / frame_file_name(frame)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel.set()
        if job.state == "queued":
            job.state, job.ended = "cancelled", time.time()
            job.save()
        return job

    def _work(self) -> None:
        while True:
            job = self._pending.get()
            if job.cancel.is_set() or job.request is None:
                continue
            job.state, job.started = "running", time.time()
            self._save(job)
            for f in job.request.frames:
                if job.cancel.is_set():
                    break
                try:
                    arrays = self.inference.run(partial(self._frame, job.request, f),
                                                relieve=partial(self.registry.free_memory, keep=job.actor))
                    write_bytes_atomic(job.folder / frame_file_name(f.frame), npz_bytes(arrays))
                    job.finished.add(f.frame)
                except NeuralHumanError as err:
                    job.errors[f.frame] = err.message
                except Exception as err:  # one bad frame must not stop the others
                    job.errors[f.frame] = f"{type(err).__name__}: {err}"
                job.done += 1
                self._save(job)
            job.ended = time.time()
            if job.cancel.is_set():
                job.state = "cancelled"
            else:
                job.state = "failed" if not job.finished else "done"
            self._save(job)

    @staticmethod
    def _save(job: Job) -> None:
        try:
            job.save()
        except OSError as err:  # a full disk must not kill the worker; the frames in memory still count
            job.message = f"could not write job.json: {err}"

    def _frame(self, req: JobSpec, f: FrameSpec) -> dict[str, Any]:
        loaded = self.registry.get(req.actor)
        out: dict[str, Any] = {}
        render = [o for o in req.outputs if o in RENDER_OUTPUTS]
        if render:
            out.update(render_frame(loaded, f.body, f.camera, render, req.appearance_frame,
                                    self.registry.feature_cache, self.settings))
        if "mesh" in req.outputs:
            out.update(mesh_frame(loaded, f.body, req.voxel_size, req.colors, req.appearance_frame,
                                  self.registry.feature_cache, self.settings).to_wire())
        return out
