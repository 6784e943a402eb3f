"""One work queue for the model: a lock serialises GPU/CPU model work, so many clients wait without racing for
memory. Endpoints are sync FastAPI handlers (run in the thread pool); each wraps its model work in ``run``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from server.http.errors import ApiError

T = TypeVar("T")


class InferenceQueue:
    """Serialises model work; ``run(fn)`` waits up to ``timeout_s`` for its turn, else 503 busy."""

    def __init__(self, timeout_s: float = 600.0):
        self._lock = threading.Lock()
        self._waiting = 0
        self._count = threading.Lock()
        self.timeout_s = timeout_s

    @property
    def waiting(self) -> int:
        return self._waiting

    def run(self, fn: Callable[[], T]) -> T:
        with self._count:
            self._waiting += 1
        try:
            if not self._lock.acquire(timeout=self.timeout_s):
                raise ApiError(503, "busy", f"the model queue stayed busy for {self.timeout_s:.0f} s; retry later")
        finally:
            with self._count:
                self._waiting -= 1
        try:
            start = time.perf_counter()
            try:
                return fn()
            except RuntimeError as err:  # torch raises OutOfMemoryError (a RuntimeError) for GPU memory
                if "out of memory" in str(err).lower():
                    _free_cuda_cache()
                    raise ApiError(503, "out_of_memory", "the GPU ran out of memory; use a smaller image / coarser "
                                   "voxel size, unload other actors, or retry later") from err
                raise
            finally:
                self.last_seconds = time.perf_counter() - start
        finally:
            self._lock.release()


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
