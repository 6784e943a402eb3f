"""The model queue: model work is serialised, an out-of-memory error frees memory and runs once more, then becomes
OutOfMemory (HTTP 503); other errors pass through."""

from __future__ import annotations

import threading
import time

import pytest


def test_queue_serialises_work():
    from server.inference.model_queue import ModelQueue

    queue = ModelQueue()
    active, peak, lock = [0], [0], threading.Lock()

    def work() -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return 1

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(queue.run(work))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1] * 6 and peak[0] == 1


def test_queue_maps_out_of_memory_to_503():
    from server.errors import OutOfMemory
    from server.http.errors import status_of
    from server.inference.model_queue import ModelQueue

    def oom() -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemory) as info:
        ModelQueue().run(oom)
    assert status_of(info.value) == 503 and info.value.code == "out_of_memory"
    with pytest.raises(RuntimeError, match="other"):
        ModelQueue().run(lambda: (_ for _ in ()).throw(RuntimeError("other")))


def test_queue_frees_memory_and_retries_once_on_out_of_memory():
    from server.errors import OutOfMemory
    from server.http.errors import status_of
    from server.inference.model_queue import ModelQueue

    queue = ModelQueue()
    calls, relieved = [], []

    def first_fails() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise torch_oom()
        return "ok"

    assert queue.run(first_fails, relieve=lambda: relieved.append(1)) == "ok"
    assert len(calls) == 2 and relieved == [1] and queue.oom_retries == 1

    def always_fails() -> None:
        raise torch_oom()

    with pytest.raises(OutOfMemory) as info:
        queue.run(always_fails, relieve=lambda: relieved.append(1))
    assert status_of(info.value) == 503 and info.value.code == "out_of_memory"
    assert "even after unloading the other actors" in info.value.message and relieved == [1, 1]
    with pytest.raises(ValueError):  # other errors are not retried
        queue.run(lambda: (_ for _ in ()).throw(ValueError("bad")), relieve=lambda: relieved.append(1))
    assert relieved == [1, 1]


def torch_oom() -> Exception:
    import torch

    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
