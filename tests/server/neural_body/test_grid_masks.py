"""The grid masks (pure torch, fast) against their definitions: numpy slices and scipy's morphology."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from server.neural_body.grid_masks import any_corner, cell_corners, dilated, straddling, straddling_cells


def test_cells_and_corners_are_their_definitions():
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(7, 9, 6)).astype(np.float32)
    above = volume > 0.2
    corners = [above[i:i + 6, j:j + 8, k:k + 5] for i, j, k in itertools.product((0, 1), repeat=3)]
    straddle = np.logical_or.reduce(corners) & ~np.logical_and.reduce(corners)
    assert np.array_equal(straddling_cells(torch.from_numpy(volume), 0.2).numpy(), straddle)
    assert np.array_equal(straddling(torch.from_numpy(above)).numpy(), straddle)
    assert np.array_equal(any_corner(torch.from_numpy(above)).numpy(), np.logical_or.reduce(corners))
    expected = np.zeros_like(above)
    for i, j, k in itertools.product((0, 1), repeat=3):
        expected[i:i + 6, j:j + 8, k:k + 5] |= straddle
    assert np.array_equal(cell_corners(torch.from_numpy(straddle)).numpy(), expected)


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_dilations_are_scipys(steps):
    sparse = np.random.default_rng(steps).random((8, 7, 9)) > 0.95
    for block, structure in ((True, np.ones((3, 3, 3), bool)), (False, ndimage.generate_binary_structure(3, 1))):
        grown = dilated(torch.from_numpy(sparse), block=block, steps=steps).numpy()
        expected = ndimage.binary_dilation(sparse, structure=structure, iterations=steps) if steps else sparse
        assert np.array_equal(grown, expected), (block, steps)
