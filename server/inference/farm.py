"""The Ray farm: a job's frames computed by a pool of Ray actors (``FrameWorker``), one per GPU (or per N CPUs), each
holding its own loaded actors and per-pose feature cache; the server keeps its HTTP API and job store.

``Farm`` is a ``jobs.FrameExecutor``: the job's frames are cut into chunks of consecutive frames (cache locality); a
worker takes the next chunk when its own is done and has one frame in flight at a time, so a cancel stops the workers
between frames. Each frame's arrays come back to the server process, whose job thread alone writes the frame into
the job folder: a frame is written once, by one writer. A worker (or its node) lost mid-frame: that frame and the
rest of the worker's chunk go back to the queue for another worker (Ray restarts the lost one, and it rejoins once
it answers); a frame lost with ``max_attempts`` workers is reported in the job's errors and the rest go on. An error
a frame raises inside a worker (a bad body, ...) is that frame's error, as in-process, and is not retried.

``ray`` is an optional package: this module imports without it, and ``start_farm`` then says how to install it. The
single-machine server never imports this module.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch

from server.inference.actor_registry import ActorRegistry
from server.inference.jobs import FrameOutcome, FrameSpec, JobSpec, compute_frame, frame_error
from server.inference.limits import DEFAULT_CACHE_MB, DEFAULT_MIN_FREE_GPU_MB
from server.inference.model_queue import ModelQueue
from server.neural_body.render_settings import DEFAULT_SETTINGS, RenderSettings

try:
    import ray
    from ray.exceptions import (
        ActorUnavailableError,
        NodeDiedError,
        ObjectLostError,
        RayActorError,
        RayTaskError,
        WorkerCrashedError,
    )

    LOST = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError)  # the worker, not the frame, failed
except ImportError:  # the optional extra is not installed
    ray = None
    LOST = ()

RAY_MISSING = ("the Ray farm needs the optional 'ray' package: pip install ray==2.60.0 (the 'farm' extra of "
               "pyproject.toml; make setup installs it)")
REPO_ROOT = Path(__file__).resolve().parents[2]  # holds the server and neural_human_addon packages
MAX_CHUNK = 16  # frames per chunk at most: long jobs still spread over every worker until their end

log = logging.getLogger("server.farm")


class FarmUnavailable(RuntimeError):
    """The farm cannot start: no ray package, no cluster at the address, workers that cannot start."""


class WorkerLost(Exception):
    """A worker process or its node died (or its result was lost with the node) during a call; ``temporary``: Ray
    is restarting it (or cannot reach it for now)."""

    def __init__(self, message: str, temporary: bool = False):
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class WorkerConfig:
    """What each worker builds its registry from; ``actors_root`` must be the same path on every node."""

    actors_root: str
    device: str = "cpu"
    cache_bytes: int = DEFAULT_CACHE_MB * 2**20
    max_loaded: int = 0
    min_free_gpu_bytes: int = DEFAULT_MIN_FREE_GPU_MB * 2**20
    settings: RenderSettings = DEFAULT_SETTINGS
    threads: int = 1  # torch CPU threads (the worker's Ray CPUs)


class FrameWorker:
    """One Ray actor: its own actor registry (loaded actors, feature cache) and model queue (out-of-memory relief),
    computing one job frame per call exactly as the server does in-process (``jobs.compute_frame``)."""

    def __init__(self, config: WorkerConfig):
        root = Path(config.actors_root)
        if not root.is_dir():
            raise FarmUnavailable(f"Ray worker on {socket.gethostname()}: the actors folder {root} is not there; every "
                                  "node needs the actors at the same path (shared storage)")
        torch.set_num_threads(max(1, config.threads))
        self.registry = ActorRegistry(root, config.device, config.cache_bytes, max_loaded=config.max_loaded,
                                      min_free_gpu_bytes=config.min_free_gpu_bytes)
        self.queue = ModelQueue()
        self.settings = config.settings
        self.settings.compile_point_network(config.device)  # with --compile: before the first frame, not during it

    def info(self) -> dict[str, Any]:
        """Where this worker runs (also the farm's sign that a restarted worker is back)."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": self.registry.device,
                "threads": torch.get_num_threads()}

    def frame(self, req: JobSpec, f: FrameSpec) -> tuple[dict[str, Any] | None, str | None]:
        """(arrays, None), or (None, the frame's error as the job reports it)."""
        try:
            return self.queue.run(partial(compute_frame, self.registry, self.settings, req, f),
                                  relieve=partial(self.registry.free_memory, keep=req.actor)), None
        except Exception as err:  # the frame's own error; only a lost process is retried
            return None, frame_error(err)


class Pool(Protocol):
    """Workers numbered 0..size-1 and their calls (``RayPool``; the tests use a fake one)."""

    size: int

    def submit(self, worker: int, req: JobSpec, f: FrameSpec) -> Any: ...

    def ping(self, worker: int) -> Any: ...

    def wait(self, calls: list[Any], timeout: float) -> list[Any]: ...

    def result(self, call: Any) -> Any:
        """The call's return value; WorkerLost when its worker died."""
        ...


class RayPool:
    """``FrameWorker`` Ray actors; Ray restarts a dead one (on any node with room), and never retries a call itself:
    the farm decides what to compute again."""

    def __init__(self, handles: list[Any]):
        self.handles = handles
        self.size = len(handles)

    def submit(self, worker: int, req: JobSpec, f: FrameSpec) -> Any:
        return self.handles[worker].frame.remote(req, f)

    def ping(self, worker: int) -> Any:
        return self.handles[worker].info.remote()

    def wait(self, calls: list[Any], timeout: float) -> list[Any]:
        ready, _ = ray.wait(calls, num_returns=1, timeout=timeout)
        return ready

    def result(self, call: Any) -> Any:
        try:
            return ray.get(call)
        except LOST as err:
            text = str(err).strip()
            raise WorkerLost(text.splitlines()[0] if text else type(err).__name__,
                             temporary=isinstance(err, ActorUnavailableError)) from err
        except RayTaskError as err:  # raised outside FrameWorker.frame's own handling (e.g. unpickling the request)
            return None, f"the Ray worker failed: {type(err.cause).__name__}: {err.cause}"


def split_chunks(frames: list[FrameSpec], workers: int, most: int = MAX_CHUNK) -> list[list[FrameSpec]]:
    """Consecutive frames, about two chunks per worker (the last ones balance the load), at most ``most`` each."""
    size = max(1, min(most, math.ceil(len(frames) / max(1, 2 * workers))))
    return [frames[i:i + size] for i in range(0, len(frames), size)]


@dataclass
class _Task:
    spec: FrameSpec
    attempts: int = 0  # workers lost while computing this frame


class Farm:
    """A ``jobs.FrameExecutor`` over a pool, driven by the job manager's one job thread (jobs run one after
    another). The workers' state (idle, restarting, gone) outlives each job: a worker that Ray restarts rejoins
    whichever job runs when it answers its ping."""

    def __init__(self, pool: Pool, *, max_attempts: int = 3, chunk_frames: int = MAX_CHUNK,
                 revive_timeout_s: float = 300.0, on_close: Callable[[], None] | None = None):
        self.pool = pool
        self.max_attempts = max_attempts
        self.chunk_frames = chunk_frames
        self.revive_timeout_s = revive_timeout_s
        self.idle: list[int] = list(range(pool.size))
        self.reviving: dict[Any, int] = {}  # ping call -> worker, for workers lost and being restarted
        self.gone: set[int] = set()  # workers that could not be restarted
        self.lost = 0  # worker losses seen
        self.computed = [0] * pool.size  # frames each worker answered (its share of the work)
        self._on_close = on_close

    def frames(self, req: JobSpec, cancelled: Callable[[], bool]) -> Iterator[FrameOutcome]:
        return _JobRun(self, req, cancelled).outcomes()

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()

    def revive(self, worker: int) -> None:
        self.reviving[self.pool.ping(worker)] = worker

    def settle_ping(self, call: Any) -> None:
        worker = self.reviving.pop(call)
        try:
            info = self.pool.result(call)
        except WorkerLost as err:
            if err.temporary:  # still restarting: ask again a little later
                time.sleep(0.5)
                self.revive(worker)
                return
            self.gone.add(worker)
            log.error("Ray worker %d could not be restarted and leaves the farm: %s", worker, err)
            return
        self.idle.append(worker)
        log.info("Ray worker %d is back: %s", worker, info)


class _JobRun:
    """One job on the farm: its chunks, which worker holds which chunk, and the frames in flight."""

    def __init__(self, farm: Farm, req: JobSpec, cancelled: Callable[[], bool]):
        self.farm, self.pool, self.cancelled = farm, farm.pool, cancelled
        self.header = replace(req, frames=[])  # a call carries the job's settings and one frame, not every frame
        self.chunks: deque[deque[_Task]] = deque(deque(_Task(f) for f in chunk)
                                                 for chunk in split_chunks(req.frames, farm.pool.size,
                                                                           farm.chunk_frames))
        self.held: dict[int, deque[_Task]] = {}  # worker -> the rest of its chunk
        self.calls: dict[Any, tuple[int, _Task]] = {}  # frame call -> (worker, task)
        self.stalled_since: float | None = None

    def outcomes(self) -> Iterator[FrameOutcome]:
        while True:
            self._dispatch()
            if self.calls:
                self.stalled_since = None
            else:
                if self.cancelled() or not self._left():
                    return
                stalled = self._stalled()
                if stalled is not None:  # no worker left to compute the rest
                    yield from self._fail_left(stalled)
                    return
            for call in self.pool.wait([*self.calls, *self.farm.reviving], timeout=1.0):
                if call in self.farm.reviving:
                    self.farm.settle_ping(call)
                else:
                    yield from self._settle(call)

    def _left(self) -> bool:
        return bool(self.chunks) or any(self.held.values())

    def _next_task(self, worker: int) -> _Task | None:
        chunk = self.held.get(worker)
        if not chunk:
            if not self.chunks:
                return None
            chunk = self.held[worker] = self.chunks.popleft()
        return chunk.popleft()

    def _dispatch(self) -> None:
        """Give each idle worker the next frame of its chunk (or a new chunk); nothing new once cancelled."""
        for worker in list(self.farm.idle):
            if self.cancelled():
                return
            task = self._next_task(worker)
            if task is not None:
                self.farm.idle.remove(worker)
                self.calls[self.pool.submit(worker, self.header, task.spec)] = (worker, task)

    def _settle(self, call: Any) -> Iterator[FrameOutcome]:
        worker, task = self.calls.pop(call)
        try:
            arrays, error = self.pool.result(call)
        except WorkerLost as err:
            yield from self._lost(worker, task, err)
            return
        self.farm.idle.append(worker)
        self.farm.computed[worker] += 1
        yield FrameOutcome(task.spec.frame, arrays, error)

    def _lost(self, worker: int, task: _Task, err: WorkerLost) -> Iterator[FrameOutcome]:
        """The worker died computing ``task``: the task (unless at its cap) and the rest of the worker's chunk go
        back to the front of the queue, and the worker is pinged until Ray has restarted it."""
        self.farm.lost += 1
        task.attempts += 1
        rest = self.held.pop(worker, deque())
        log.warning("Ray worker %d lost while computing frame %d (attempt %d of %d): %s", worker, task.spec.frame,
                    task.attempts, self.farm.max_attempts, err)
        if task.attempts >= self.farm.max_attempts:
            yield FrameOutcome(task.spec.frame, error=f"{task.attempts} Ray workers were lost while computing this "
                                                      f"frame (the last: {err}); it was not retried again")
        else:
            rest.appendleft(task)
        if rest:
            self.chunks.appendleft(rest)
        self.farm.revive(worker)

    def _stalled(self) -> str | None:
        """Why the frames left cannot be computed (every worker gone, or none back for revive_timeout_s), else
        None while a worker may still come back."""
        if not self.farm.reviving:
            return "no Ray worker is left in the farm (every worker was lost and could not be restarted)"
        now = time.monotonic()
        self.stalled_since = self.stalled_since or now
        if now - self.stalled_since > self.farm.revive_timeout_s:
            return f"no Ray worker came back within {self.farm.revive_timeout_s:.0f} s"
        return None

    def _fail_left(self, why: str) -> Iterator[FrameOutcome]:
        for chunk in [*self.held.values(), *self.chunks]:
            for task in chunk:
                yield FrameOutcome(task.spec.frame, error=f"not computed: {why}")
        self.held.clear()
        self.chunks.clear()


# ---------------------------------------------------------------------------------------------------- starting


@dataclass(frozen=True)
class FarmSize:
    """How many workers and what each one asks of Ray."""

    workers: int
    cpus: float
    gpus: float

    @property
    def device(self) -> str:
        return "cuda" if self.gpus > 0 else "cpu"


def plan_workers(resources: dict[str, float], workers: int | None, cpus: float, gpus: float | None) -> FarmSize:
    """Default: one worker per GPU of the cluster (``gpus`` each), else the cluster's CPUs // ``cpus``."""
    cluster_gpus = float(resources.get("GPU", 0.0))
    cluster_cpus = float(resources.get("CPU", 0.0))
    if gpus is None:
        gpus = 1.0 if cluster_gpus >= 1 else 0.0
    if workers is None:
        workers = int(cluster_gpus // gpus) if gpus > 0 else int(cluster_cpus // cpus) if cpus > 0 else 0
    if workers < 1:
        raise FarmUnavailable(f"the Ray cluster has {cluster_cpus:g} CPUs and {cluster_gpus:g} GPUs: no room for one "
                              f"worker of {cpus:g} CPUs and {gpus:g} GPUs (see --ray-cpus-per-worker)")
    return FarmSize(workers, cpus, gpus)


def available() -> bool:
    """Whether the optional ray package is installed."""
    return ray is not None


def disconnect() -> None:
    """Leave the Ray cluster (a local one stops)."""
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def connect(address: str, local_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` ("auto": the one `ray start` runs on this machine; "local": start a
    private one-machine cluster inside this process, with ``local_cpus`` CPUs)."""
    if ray is None:
        raise FarmUnavailable(RAY_MISSING)
    try:
        if address == "local":
            ray.init(num_cpus=local_cpus, include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise FarmUnavailable(f"cannot join the Ray cluster at {address!r}: {err}") from err


def start_farm(address: str, config: WorkerConfig, *, workers: int | None = None, cpus_per_worker: float = 1.0,
               gpus_per_worker: float | None = None, start_timeout_s: float = 300.0, **farm_options: Any) -> Farm:
    """Join the cluster (unless this process already has), start the workers and wait until each one answers
    (FarmUnavailable says why not). Closing the farm stops its workers, and leaves a cluster it joined."""
    joined = ray is not None and not ray.is_initialized()
    if ray is None or joined:
        local_cpus = None
        if address == "local" and workers is not None:
            local_cpus = max(os.cpu_count() or 1, math.ceil(workers * cpus_per_worker))
        connect(address, local_cpus)
    size = plan_workers(ray.cluster_resources(), workers, cpus_per_worker, gpus_per_worker)
    config = replace(config, device=size.device, threads=max(1, int(size.cpus)))
    # Ray adds the driver's working directory to the workers' path; the server may run from anywhere.
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    remote = ray.remote(FrameWorker).options(
        num_cpus=size.cpus, num_gpus=size.gpus, max_restarts=-1, max_task_retries=0,
        runtime_env={"env_vars": {"PYTHONPATH": python_path}})
    handles = [remote.remote(config) for _ in range(size.workers)]

    def close() -> None:
        for handle in handles:
            ray.kill(handle)
        if joined:
            ray.shutdown()

    try:
        infos = ray.get([h.info.remote() for h in handles], timeout=start_timeout_s)
    except ray.exceptions.GetTimeoutError as err:
        close()
        raise FarmUnavailable(f"the {size.workers} Ray workers ({size.cpus:g} CPUs, {size.gpus:g} GPUs each) did not "
                              f"all start within {start_timeout_s:.0f} s: is the cluster big enough?") from err
    except (RayActorError, RayTaskError) as err:
        close()
        raise FarmUnavailable(f"a Ray worker could not start: {err}") from err
    for i, info in enumerate(infos):
        log.info("Ray worker %d: %s", i, info)
    return Farm(RayPool(handles), on_close=close, **farm_options)
