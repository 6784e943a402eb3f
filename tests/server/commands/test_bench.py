"""The benchmark's HTTP / feature-cache figures cover 256×256 renders unless --quick keeps them small on CPU."""

from __future__ import annotations

from server.commands.bench import http_sizes


def test_http_figures_include_256_unless_quick_on_cpu():
    assert http_sizes("cpu", quick=False) == (64, 256) == http_sizes("cuda", quick=False)
    assert http_sizes("cpu", quick=True) == (64,)  # --quick stays fast on a CPU
    assert http_sizes("cuda", quick=True) == (256,)
