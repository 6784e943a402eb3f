"""Positional encoding of Neural Body (NeRF layout, no π).

``positional_encoding(x, num_freqs) -> Tensor`` maps ``[..., C]`` to ``[..., C * (1 + 2 * num_freqs)]`` laid out as
``[x, sin(1·x), cos(1·x), sin(2·x), cos(2·x), ..., sin(2^(L-1)·x), cos(2^(L-1)·x)]`` — each sin/cos block holds all
C components. Frequencies are ``2**k`` for k = 0..L-1 with **no π factor** (the original's lib/networks/embedder.py).
``encoded_dim(channels, num_freqs)`` gives the output width: 63 for xyz (L=10), 27 for view directions (L=4).
"""

from __future__ import annotations

import torch

XYZ_FREQS = 10  # applied to world-space sample points
VIEW_FREQS = 4  # applied to the normalised world ray direction


def encoded_dim(channels: int, num_freqs: int) -> int:
    """Width of ``positional_encoding`` of a ``channels``-wide input (include_input + sin/cos per frequency)."""
    return channels * (1 + 2 * num_freqs)


def positional_encoding(x: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """``[..., C]`` → ``[..., C·(1+2L)]``: ``[x, sin(f0 x), cos(f0 x), ...]`` with f_k = 2^k (no π)."""
    parts = [x]
    for k in range(num_freqs):
        scaled = x * float(2.0**k)
        parts.append(torch.sin(scaled))
        parts.append(torch.cos(scaled))
    return torch.cat(parts, dim=-1)
