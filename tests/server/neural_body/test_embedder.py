"""Positional encoding layout and sizes (as the original's embedder.py)."""

from __future__ import annotations

import math

import torch

from server.neural_body.embedder import VIEW_FREQS, XYZ_FREQS, encoded_dim, positional_encoding


def test_dims() -> None:
    assert encoded_dim(3, XYZ_FREQS) == 63
    assert encoded_dim(3, VIEW_FREQS) == 27
    assert positional_encoding(torch.zeros(5, 7, 3), XYZ_FREQS).shape == (5, 7, 63)
    assert positional_encoding(torch.zeros(4, 3), VIEW_FREQS).shape == (4, 27)


def test_layout_is_input_then_sin_cos_per_frequency_without_pi() -> None:
    x = torch.tensor([[0.3, -1.2, 2.5]], dtype=torch.float64)
    out = positional_encoding(x, 4)[0]
    values = [0.3, -1.2, 2.5]
    expected = list(values)
    for k in range(4):
        f = 2.0**k
        expected += [math.sin(f * v) for v in values]
        expected += [math.cos(f * v) for v in values]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))
