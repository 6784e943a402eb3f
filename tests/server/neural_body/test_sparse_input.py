"""Voxelisation of the posed body (as the original's prepare_input)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.body.rotations import axis_angle_to_matrix
from server.neural_body.sparse_input import (
    BIG_BOX_PADDING,
    SNAPSHOT_PADDING,
    grid_shape,
    prepare_sparse_input,
)
from tests.server.neural_body.nb_fixtures import ellipsoid_body


def next_multiple_of_32_above(cells: int) -> int:
    return 32 * (cells // 32 + 1)


@pytest.mark.parametrize("cells", [1, 31, 32, 33, 63, 64, 125, 128, 159, 160, 161])
def test_out_sh_is_the_next_multiple_of_32_above_the_extent(cells: int) -> None:
    extent = cells * 0.5  # exact in binary, so ceil(extent / 0.5) == cells
    assert grid_shape(np.array([extent] * 3), 0.5) == (next_multiple_of_32_above(cells),) * 3
    assert grid_shape(np.array([extent - 0.25] * 3), 0.5) == (next_multiple_of_32_above(cells),) * 3


def test_out_sh_of_a_body_whose_extent_is_an_exact_multiple_of_32_voxels() -> None:
    # x extent 16 m at voxel 0.5 → 32 cells exactly → 64 (the +32 case); y 15.5 → 31 → 32; z 10 + 2·0.05 padding
    verts = np.array([[0.0, 0.0, 0.0], [16.0, 15.5, 10.0]], np.float32)
    sparse = prepare_sparse_input(verts, np.zeros(3), np.zeros(3), voxel_size=0.5)
    cells_z = math.ceil(np.float32(10.0 + 2 * np.float32(0.05)) / 0.5)
    assert sparse.out_sh == (next_multiple_of_32_above(cells_z), 32, 64)  # (D,H,W) = (z,y,x)


def test_padding_axis_rules() -> None:
    verts = ellipsoid_body(100)
    lo, hi = verts.min(0), verts.max(0)
    zju = prepare_sparse_input(verts, np.zeros(3), np.zeros(3))
    np.testing.assert_allclose(zju.world_bounds.numpy(), [lo - [0, 0, 0.05], hi + [0, 0, 0.05]], atol=1e-6)
    big = prepare_sparse_input(verts, np.zeros(3), np.zeros(3), box_padding=BIG_BOX_PADDING)
    np.testing.assert_allclose(big.world_bounds.numpy(), [lo - 0.05, hi + 0.05], atol=1e-6)
    snap = prepare_sparse_input(verts, np.zeros(3), np.zeros(3), box_padding=SNAPSHOT_PADDING)
    np.testing.assert_allclose(snap.world_bounds.numpy(), [lo - [0, 0.1, 0], hi + [0, 0.1, 0]], atol=1e-6)


def test_smpl_frame_bounds_and_coords() -> None:
    rng = np.random.default_rng(3)
    smpl = ellipsoid_body(150, center=(0, 0.3, 0), radii=(0.2, 0.7, 0.15))  # SMPL frame: y up
    Rh, Th = np.array([1.3, 0.2, -0.4]), np.array([0.5, -1.0, 0.9])
    world = (smpl.astype(np.float64) @ axis_angle_to_matrix(Rh).T + Th).astype(np.float32)  # EasyMocap: v·Rᵀ + Th
    sparse = prepare_sparse_input(world, Rh, Th)
    lo, hi = smpl.min(0), smpl.max(0)
    np.testing.assert_allclose(sparse.bounds.numpy(), [lo - [0, 0, 0.05], hi + [0, 0, 0.05]], atol=1e-5)
    # coords: (z,y,x) voxel indices from the padded min corner (each vertex within half a voxel of its centre)
    dhw = (smpl[:, ::-1] - sparse.bounds.numpy()[0, ::-1]) / 0.005
    assert np.all(np.abs(sparse.coords.numpy() - dhw) <= 0.5 + 1e-3)
    assert sparse.coords.dtype.is_floating_point is False and sparse.coords.shape == (150, 3)
    assert np.all(sparse.coords.numpy().max(0) < np.array(sparse.out_sh))
    pts = sparse.world_to_smpl(sparse.Th.new_tensor(world[:4]))
    np.testing.assert_allclose(pts.numpy(), smpl[:4], atol=1e-5)
    assert rng is not None


def test_rounding_is_half_to_even_and_duplicates_are_kept() -> None:
    # x offsets 0, 1.25, 1.75, 1.75 at voxel 0.5 → 0, 2.5, 3.5, 3.5 voxels → 0, 2, 4, 4 (numpy's round)
    verts = np.array([[0, 0, 0], [1.25, 0, 0], [1.75, 0, 0], [1.75, 0, 0], [2.0, 1.0, 1.0]], np.float32)
    sparse = prepare_sparse_input(verts, np.zeros(3), np.zeros(3), voxel_size=0.5)
    assert sparse.coords[:4, 2].tolist() == [0, 2, 4, 4]
    assert sparse.coords.shape[0] == 5  # all vertices, duplicate voxels included
    assert sparse.indices()[:, 0].tolist() == [0] * 5 and sparse.indices().shape == (5, 4)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match=r"vertices must have shape \[V, 3\]"):
        prepare_sparse_input(np.zeros((10, 2)), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"Rh must have shape \[3\]"):
        prepare_sparse_input(np.zeros((10, 3)), np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="Th holds non-finite"):
        prepare_sparse_input(np.zeros((10, 3)), np.zeros(3), np.array([0, np.nan, 0]))
