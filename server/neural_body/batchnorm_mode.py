"""BatchNorm at test time: batch statistics (as Neural Body's run.py) or running statistics.

The original evaluates, visualises and meshes with ``network.train()``, so its BatchNorm layers normalise with the
statistics of the current frame's active voxels (the original's run.py). Here that behaviour is a per-layer
flag that never touches the running buffers:

- ``FrameBatchNorm1d``: ``nn.BatchNorm1d`` (same state-dict entries) whose eval-mode forward uses batch statistics
  when ``use_batch_stats`` is set. In training mode it is a plain BatchNorm1d (batch stats + running-stat update,
  as the original training).
- ``set_batchnorm_mode(module, mode)`` with mode ``"batch_stats"`` or ``"running"`` sets the flag on every layer.
- ``batch_statistics(module, enabled=True)`` is a context manager that sets it temporarily and restores it.
- ``batchnorm_mode(module) -> str`` reads it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from server.neural_body.config import BATCHNORM_MODES

BatchNormMode = Literal["batch_stats", "running"]


class FrameBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that, in eval mode and with ``use_batch_stats``, normalises with the batch's own statistics
    without reading or writing the running buffers."""

    use_batch_stats: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and self.use_batch_stats:
            return F.batch_norm(x, None, None, self.weight, self.bias, training=True, momentum=0.0, eps=self.eps)
        return super().forward(x)


def _layers(module: nn.Module) -> list[FrameBatchNorm1d]:
    return [m for m in module.modules() if isinstance(m, FrameBatchNorm1d)]


def set_batchnorm_mode(module: nn.Module, mode: str) -> None:
    """Make every ``FrameBatchNorm1d`` in ``module`` use ``"batch_stats"`` or ``"running"`` statistics in eval mode."""
    if mode not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm mode must be one of {BATCHNORM_MODES}; got {mode!r}")
    for layer in _layers(module):
        layer.use_batch_stats = mode == "batch_stats"


def batchnorm_mode(module: nn.Module) -> str:
    """The eval-time BatchNorm mode of ``module`` ("batch_stats" or "running"); "mixed" if the layers disagree."""
    flags = {layer.use_batch_stats for layer in _layers(module)}
    if flags == {True}:
        return "batch_stats"
    if flags == {False} or not flags:
        return "running"
    return "mixed"


@contextmanager
def batch_statistics(module: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Within the block, eval-mode BatchNorm layers of ``module`` use batch statistics (or running ones when
    ``enabled`` is False); the previous flags are restored afterwards."""
    layers = _layers(module)
    saved = [layer.use_batch_stats for layer in layers]
    try:
        for layer in layers:
            layer.use_batch_stats = enabled
        yield module
    finally:
        for layer, flag in zip(layers, saved, strict=True):
            layer.use_batch_stats = flag
