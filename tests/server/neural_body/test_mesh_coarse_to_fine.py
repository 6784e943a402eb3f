"""The coarse-to-fine grid's core on analytic bodies (fast): the grid and the device's marching cubes against the
dense grid and PyMCubes, and how often the grid reads back from the device.
The demo actor's mesh against the dense one is in test_fast_path.py (and on CUDA in test_cuda.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from server.neural_body.grid_masks import straddling_cells
from server.neural_body.launch_count import count_launches
from server.neural_body.mesh import extract_mesh_from_density, marching_cubes
from server.neural_body.mesh_coarse_to_fine import density_levels, surface_marching_cubes

THRESHOLD = 5.0
BOX = np.array([[-0.3, -0.25, -0.2], [0.35, 0.25, 0.45]])
SHOULDER, WRIST = torch.tensor([0.1, 0.0, 0.1]), torch.tensor([0.25, 0.05, 0.33])
HAND = torch.tensor([0.26, 0.06, 0.39])


def body_density(points: torch.Tensor) -> torch.Tensor:
    """A torso (sphere, r 0.18 m), a raised arm (capsule, r 3 cm) and a hand (sphere, r 2.5 cm) standing off the
    arm's end by a gap of 7 mm: raw density in the mesher's units (> 5 inside)."""
    torso = 0.18 - points.norm(dim=1)
    bone = WRIST - SHOULDER
    t = (((points - SHOULDER) @ bone) / bone.dot(bone)).clamp(0.0, 1.0)
    arm = 0.03 - (points - (SHOULDER + t[:, None] * bone)).norm(dim=1)
    hand = 0.025 - (points - HAND).norm(dim=1)
    return 400.0 * torch.maximum(torch.maximum(torso, arm), hand) + THRESHOLD


def everywhere(points: torch.Tensor) -> torch.Tensor:
    return torch.ones(len(points), dtype=torch.bool)


def dense_grid(voxel: float) -> np.ndarray:
    parts: list[np.ndarray] = []

    def density(points: np.ndarray) -> np.ndarray:
        parts.append(body_density(torch.from_numpy(points)).numpy())
        return parts[-1]

    mesh = extract_mesh_from_density(density, BOX, voxel_size=voxel, threshold=THRESHOLD)
    assert len(mesh.faces) > 1000
    return np.concatenate(parts)


@pytest.mark.parametrize("voxel", [0.005, 0.01])
def test_coarse_to_fine_grid_is_the_dense_grid_where_it_matters(voxel):
    """The inside set is the dense grid's, point for point; the values agree exactly on both sides of every cell
    the surface crosses (so marching cubes sees the same surface), from a small share of the grid's points."""
    volume, origin, evaluated = density_levels(body_density, everywhere, BOX, voxel_size=voxel, threshold=THRESHOLD)
    volume = volume.numpy()
    dense = dense_grid(voxel).reshape(volume.shape)
    assert np.array_equal(volume > THRESHOLD, dense > THRESHOLD)
    crossed = np.zeros(volume.shape, bool)
    crossed[:-1, :-1, :-1] = straddling_cells(torch.from_numpy(dense), THRESHOLD).numpy()
    near = ndimage.binary_dilation(crossed, structure=np.ones((2, 2, 2), bool), origin=-1)  # the crossed cells' corners
    np.testing.assert_array_equal(volume[near], dense[near])
    assert evaluated < (0.12 if voxel == 0.005 else 0.3) * volume.size
    mine, theirs = surface_marching_cubes(torch.from_numpy(volume), THRESHOLD, origin, voxel), \
        marching_cubes(dense, THRESHOLD, origin, voxel)
    assert len(mine[0]) == len(theirs[0]) and len(mine[1]) > 0.99 * len(theirs[1])
    assert cKDTree(theirs[0]).query(mine[0])[0].max() < 1e-6  # the same vertices (edge crossings)


def test_surface_marching_cubes_closes_the_surface_at_the_box_and_handles_no_surface():
    volume, origin, _ = density_levels(body_density, everywhere, np.array([[-0.1, -0.1, -0.1], [0.1, 0.1, 0.1]]),
                                       voxel_size=0.01, threshold=THRESHOLD)  # the torso pokes out of this box
    verts, faces = surface_marching_cubes(volume, THRESHOLD, origin, 0.01)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    assert np.all(np.unique(edges, axis=0, return_counts=True)[1] == 2)  # watertight
    assert np.all(verts >= -0.1 - 1e-6) and np.all(verts <= 0.1 + 1e-6)
    empty = surface_marching_cubes(torch.full((5, 6, 7), -3.0), THRESHOLD, np.zeros(3), 0.01)
    assert empty[0].shape == (0, 3) and empty[1].shape == (0, 3) and empty[1].dtype == np.int32


def test_the_grid_reads_back_only_the_sizes_of_what_it_queries():
    """On a GPU each read-back stalls the queue: the grid reads back a few sizes per query (the inside points, the
    band, the next step of the surface following), never per chunk of points, and makes no tensors of host data
    per query."""
    queries: list[int] = []
    chunks: list[int] = []

    def inside(points: torch.Tensor) -> torch.Tensor:
        queries.append(len(points))
        return everywhere(points)

    def density(points: torch.Tensor) -> torch.Tensor:
        chunks.append(len(points))
        return body_density(points)

    (_, _, evaluated), count = count_launches(
        lambda: density_levels(density, inside, BOX, voxel_size=0.005, threshold=THRESHOLD, chunk=1024))
    assert evaluated == sum(chunks) == sum(queries) and len(queries) >= 4  # three levels, then following
    assert count.syncs <= 5 * len(queries) < len(chunks) / 4
    assert count.host_tensors == 0
