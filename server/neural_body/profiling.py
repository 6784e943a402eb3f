"""Where a piece of work's time goes, by the torch profiler: what ``bench --profile`` writes for a frame and a mesh.

``profile_work(fn, device) -> (fn's result, Profile)`` runs ``fn()`` once under ``torch.profiler`` (CPU activity,
and CUDA's on a GPU) and keeps:

- ``wall_ms``: the whole run, the device synchronised at its end;
- ``device_busy_ms``: on a GPU, the time some kernel or copy ran (the union of their intervals): a frame whose wall
  time is much longer than this is bound by its host side (launches, read-backs), not by the GPU's arithmetic;
  None on a CPU;
- ``device_kernels``: the kernels and copies the GPU ran (0 on a CPU);
- ``host_syncs``: the CUDA runtime's synchronising calls (stream and device synchronisations, blocking copies);
- ``table``: the operations by time (device time on a GPU, CPU time elsewhere), the profiler's own table;
- ``Profile.write(folder, name)``: ``name_ops.txt`` (that table) and ``name_trace.json.gz`` (a Chrome trace, gzipped:
  Perfetto or chrome://tracing open it), both written atomically.
"""

from __future__ import annotations

import gzip
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.profiler import ProfilerActivity, profile

from neural_human_addon.core.atomic_files import atomic_path

T = TypeVar("T")

# CUDA runtime calls that make the host wait for the device (a read-back is an asynchronous copy, then a stream
# synchronisation; cudaMemcpy itself blocks)
_SYNC_CALLS = frozenset({"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"})
TABLE_ROWS = 40


@dataclass
class Profile:
    wall_ms: float
    device_busy_ms: float | None
    device_kernels: int
    host_syncs: int
    table: str
    _trace: Any  # the profiler, for its Chrome trace

    def figures(self) -> dict[str, Any]:
        return {"wall_ms": round(self.wall_ms, 2),
                "device_busy_ms": None if self.device_busy_ms is None else round(self.device_busy_ms, 2),
                "device_kernels": self.device_kernels, "host_syncs": self.host_syncs}

    def write(self, folder: Path, name: str) -> list[Path]:
        """``folder/name_ops.txt`` and ``folder/name_trace.json``; returns their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        table, trace = folder / f"{name}_ops.txt", folder / f"{name}_trace.json.gz"
        with atomic_path(table, mode=0o644) as tmp:
            tmp.write_text(self.table + "\n", encoding="utf-8")
        # a 5 mm mesh's trace is ~25 MB of JSON, a tenth of that compressed (the viewers read it so)
        with atomic_path(trace, mode=0o644) as tmp:
            plain = tmp.with_name(tmp.name + ".json")  # the profiler writes plain JSON
            try:
                self._trace.export_chrome_trace(str(plain))
                with plain.open("rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
                    shutil.copyfileobj(src, dst)
            finally:
                plain.unlink(missing_ok=True)
        return [table, trace]


def profile_work(fn: Callable[[], T], device: torch.device) -> tuple[T, Profile]:
    """Run ``fn()`` once under the profiler (see the module doc)."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize(device)
        wall_ms = (time.perf_counter() - start) * 1000
    events = prof.events()
    busy, kernels = None, 0
    if cuda:
        spans = sorted((e.time_range.start, e.time_range.end) for e in events
                       if e.device_type == torch.autograd.DeviceType.CUDA)
        kernels = len(spans)
        busy = _union_length(spans) / 1000  # µs → ms
    syncs = sum(1 for e in events if e.name in _SYNC_CALLS)
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=TABLE_ROWS, max_name_column_width=60)
    return result, Profile(wall_ms, busy, kernels, syncs, table, prof)


def _union_length(spans: list[tuple[float, float]]) -> float:
    """Total length of the union of sorted (start, end) intervals."""
    total, end = 0.0, float("-inf")
    for s, e in spans:
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total

