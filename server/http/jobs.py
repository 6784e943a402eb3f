"""Jobs: many frames of one actor computed in order by one worker thread (through the inference queue); each
finished frame is an npz written atomically into the job's folder, and stays there after a cancel."""

from __future__ import annotations

import queue as queue_module
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from server.atomic_files import write_bytes_atomic
from server.http.actor_registry import ActorRegistry
from server.http.errors import ApiError
from server.http.frames import mesh_frame, npz_bytes, render_frame
from server.http.inference import InferenceQueue
from server.http.schemas import JobRequest

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
RENDER_OUTPUTS = ("rgba", "depth")


@dataclass
class Job:
    id: str
    request: JobRequest
    folder: Path
    state: str = "queued"  # queued | running | done | cancelled | failed
    done: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict[str, Any]:
        total = len(self.request.frames)
        elapsed = (self.ended or time.time()) - self.started if self.started else 0.0
        eta = None
        if self.state in ("queued", "running") and self.done:
            eta = elapsed / self.done * (total - self.done)
        return {"id": self.id, "actor": self.request.actor, "state": self.state, "done": self.done, "total": total,
                "eta_s": eta, "elapsed_s": elapsed, "errors": {str(k): v for k, v in self.errors.items()},
                "frames_done": sorted(self.finished)}





class JobManager:
    def __init__(self, root: str | Path, registry: ActorRegistry, inference: InferenceQueue):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.inference = inference
        self._jobs: dict[str, Job] = {}
        self._pending: queue_module.Queue[Job] = queue_module.Queue()
        self._worker = threading.Thread(target=self._work, name="jobs", daemon=True)
        self._worker.start()

    def submit(self, req: JobRequest) -> Job:
        self.registry.folder(req.actor)  # 400/404 now rather than a failed job later
        if any(o in RENDER_OUTPUTS for o in req.outputs):
            for i, f in enumerate(req.frames):
                if f.camera is None:
                    raise ApiError(422, "invalid_request", f"frames.{i}.camera: render outputs need a camera for "
                                   "every frame", f"frames.{i}.camera")
        seen: set[int] = set()
        for i, f in enumerate(req.frames):
            if f.frame in seen:
                raise ApiError(422, "invalid_request", f"frames.{i}.frame: frame {f.frame} appears twice",
                               f"frames.{i}.frame")
            seen.add(f.frame)
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        folder.mkdir()
        job = Job(job_id, req, folder)
        self._jobs[job_id] = job
        self._pending.put(job)
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise ApiError(404, "unknown_job", f"no job {job_id!r} on this server (jobs do not survive a restart)",
                           "id")
        return job

    def frame_path(self, job_id: str, frame: int) -> Path:
        job = self.get(job_id)
        if frame in job.errors:
            raise ApiError(404, "frame_failed", f"frame {frame} failed: {job.errors[frame]}", "n")
        if frame not in job.finished:
            known = any(f.frame == frame for f in job.request.frames)
            raise ApiError(404, "frame_not_ready" if known else "unknown_frame",
                           f"frame {frame} is not finished yet" if known else f"the job has no frame {frame}", "n")
        return job.folder / f"{frame:06d}.npz"

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        job.cancel.set()
        if job.state == "queued":
            job.state, job.ended = "cancelled", time.time()
        return job

    def _work(self) -> None:
        while True:
            job = self._pending.get()
            if job.cancel.is_set():
                continue
            job.state, job.started = "running", time.time()
            for f in job.request.frames:
                if job.cancel.is_set():
                    break
                try:
                    arrays = self.inference.run(partial(self._frame, job.request, f))
                    write_bytes_atomic(job.folder / f"{f.frame:06d}.npz", npz_bytes(arrays))
                    job.finished.add(f.frame)
                except ApiError as err:
                    job.errors[f.frame] = err.message
                except Exception as err:  # one bad frame must not stop the others
                    job.errors[f.frame] = f"{type(err).__name__}: {err}"
                job.done += 1
            job.ended = time.time()
            if job.cancel.is_set():
                job.state = "cancelled"
            else:
                job.state = "failed" if not job.finished else "done"

    def _frame(self, req: JobRequest, f: Any) -> dict[str, Any]:
        loaded = self.registry.get(req.actor)
        out: dict[str, Any] = {}
        render = [o for o in req.outputs if o in RENDER_OUTPUTS]
        if render:
            out.update(render_frame(loaded, f.body, f.camera, render, req.appearance_frame))
        if "mesh" in req.outputs:
            out.update(mesh_frame(loaded, f.body, req.voxel_size, req.colors, req.appearance_frame).to_wire())
        return out
