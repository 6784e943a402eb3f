"""One work queue for the model: a lock serialises GPU/CPU model work, so many clients wait without racing for
memory. Callers (the HTTP handlers, run in a thread pool, and the job worker) wrap their model work in ``run``.

On an out-of-memory error ``run(fn, relieve=...)`` calls ``relieve()`` (the registry unloads the other actors and
clears the feature cache), returns the allocator's free blocks to the driver and runs ``fn`` once more; a second
out-of-memory error raises OutOfMemory; waiting longer than ``timeout_s`` for a turn raises Busy."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import torch

from server.errors import Busy, ClientGone, OutOfMemory

T = TypeVar("T")

OOM_MESSAGE = ("the GPU ran out of memory{after}; use a smaller image / coarser voxel size, unload other actors, "
               "or retry later")


def is_out_of_memory(err: BaseException) -> bool:
    """torch raises OutOfMemoryError (a RuntimeError) for GPU memory; some kernels raise a plain RuntimeError."""
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


class ModelQueue:
    """Serialises model work; ``run(fn)`` waits up to ``timeout_s`` for its turn, else raises Busy."""

    def __init__(self, timeout_s: float = 600.0):
        self._lock = threading.Lock()
        self._waiting = 0
        self._count = threading.Lock()
        self.timeout_s = timeout_s
        self.last_seconds = 0.0
        self.oom_retries = 0  # out-of-memory errors answered by freeing memory and running again
        self.dropped = 0  # work dropped because its client left while it waited

    @property
    def waiting(self) -> int:
        return self._waiting

    def run(self, fn: Callable[[], T], relieve: Callable[[], object] | None = None,
            abandoned: Callable[[], bool] | None = None) -> T:
        """``fn()`` in turn; ``abandoned()`` true when the turn comes (the client left): ClientGone, fn not run."""
        with self._count:
            self._waiting += 1
        try:
            if not self._lock.acquire(timeout=self.timeout_s):
                raise Busy(f"the model queue stayed busy for {self.timeout_s:.0f} s; retry later")
        finally:
            with self._count:
                self._waiting -= 1
        start = time.perf_counter()
        try:
            if abandoned is not None and abandoned():
                self.dropped += 1
                raise ClientGone("the client left before its turn; the work was dropped")
            done, result = _attempt(fn)
            if done:
                return result
            # Out of memory. The failed attempt's exception (and the tensors its frames hold) is gone by now.
            _free_cuda_cache()
            if relieve is None:
                raise OutOfMemory(OOM_MESSAGE.format(after=""))
            relieve()
            _free_cuda_cache()
            self.oom_retries += 1
            done, result = _attempt(fn)
            if done:
                return result
            _free_cuda_cache()
            raise OutOfMemory(OOM_MESSAGE.format(
                after=" even after unloading the other actors and clearing the feature cache"))
        finally:
            self.last_seconds = time.perf_counter() - start
            self._lock.release()


def _attempt(fn: Callable[[], T]) -> tuple[bool, T | None]:
    """(True, fn()) or (False, None) when fn ran out of memory; other errors propagate."""
    try:
        return True, fn()
    except RuntimeError as err:
        if not is_out_of_memory(err):
            raise
    return False, None


def _free_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
