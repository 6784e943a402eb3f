"""The profiler's summary: the union of the device's busy intervals, and a profiled CPU run's figures."""

from __future__ import annotations

import torch

from server.neural_body.profiling import _union_length, profile_work


def test_union_length_counts_overlapping_and_nested_intervals_once():
    assert _union_length([]) == 0
    assert _union_length([(0, 2), (1, 3), (1.5, 2.5), (5, 6)]) == 4  # [0,3] and [5,6]
    assert _union_length([(0, 10), (2, 3), (4, 5)]) == 10


def test_profile_work_on_a_cpu_returns_the_result_and_its_operations(tmp_path):
    x = torch.arange(1000.0)
    total, prof = profile_work(lambda: float((x * 2).sum()), torch.device("cpu"))
    assert total == 999000.0
    assert prof.figures() == {"wall_ms": round(prof.wall_ms, 2), "device_busy_ms": None, "device_kernels": 0,
                              "host_syncs": 0}
    assert "aten::mul" in prof.table and "aten::sum" in prof.table
    written = prof.write(tmp_path / "out", "cpu_work")
    assert [p.name for p in written] == ["cpu_work_ops.txt", "cpu_work_trace.json.gz"]
    assert all(p.stat().st_size > 0 for p in written)
