"""Marching cubes on torch tensors (fast, no network): its derived case table, closed and outward-facing meshes on
volumes full of ambiguous faces, the vertices of every other marching cubes (scikit-image's, PyMCubes'), and its
errors."""

from __future__ import annotations

import mcubes
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes as skimage_marching_cubes

from server.body.surface import signed_volume
from server.neural_body.launch_count import count_launches
from server.neural_body.marching_cubes import (
    CORNER_OFFSETS,
    EDGE_END,
    EDGE_START,
    case_table,
    closed_marching_cubes,
)
from server.neural_body.mesh import closed_volume


def _directed_edges(faces: np.ndarray) -> np.ndarray:
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def assert_closed_and_oriented(faces: np.ndarray) -> None:
    """Every directed edge appears once and its reverse once: a closed surface whose faces agree on their side."""
    edges = _directed_edges(faces)
    keys = {tuple(e) for e in edges.tolist()}
    assert len(keys) == len(edges), "a directed edge appears twice: two faces disagree on orientation"
    assert all((b, a) in keys for a, b in keys), "an edge without its reverse: the surface has a hole"


def crossed_edges(volume: np.ndarray, threshold: float) -> int:
    above = volume > threshold
    return sum(int(np.count_nonzero(np.diff(above, axis=axis))) for axis in range(3))


def test_the_case_table_cuts_every_crossed_edge_of_every_configuration_and_no_other():
    table, counts = case_table()
    assert table.shape == (256, 5, 3) and counts[0] == counts[255] == 0
    for config in range(256):
        inside = [(config >> c) & 1 for c in range(8)]
        crossed = {e for e in range(12) if inside[EDGE_START[e]] != inside[EDGE_END[e]]}
        rows = table[config, :counts[config]]
        assert set(rows.reshape(-1).tolist()) == crossed
        assert np.all(table[config, counts[config]:] == -1)
        # each triangle faces away from the inside corners: its normal points from their centre to the outside ones
        mid = (CORNER_OFFSETS[EDGE_START] + CORNER_OFFSETS[EDGE_END]) / 2.0
        if 0 < config < 255:
            direction = (CORNER_OFFSETS[[c for c in range(8) if not inside[c]]].mean(0)
                         - CORNER_OFFSETS[[c for c in range(8) if inside[c]]].mean(0))
            normal = sum(np.cross(mid[b] - mid[a], mid[c] - mid[a]) for a, b, c in rows)
            assert np.dot(normal, direction) > 0 or np.allclose(normal, 0), config


@pytest.mark.parametrize("seed", range(4))
def test_noise_gives_a_closed_outward_mesh_with_a_vertex_on_every_crossed_edge(seed):
    """Noise makes ambiguous faces everywhere: neighbouring cells still cut them the same way."""
    rng = np.random.default_rng(seed)
    volume = np.full((14, 12, 16), -1.0, np.float32)
    volume[1:-1, 1:-1, 1:-1] = rng.normal(size=(12, 10, 14))
    verts, faces = closed_marching_cubes(torch.from_numpy(volume), 0.3)
    verts, faces = verts.numpy(), faces.numpy()
    assert verts.dtype == np.float32 and faces.dtype == np.int64
    assert len(verts) == crossed_edges(volume, 0.3) and np.array_equal(np.unique(faces), np.arange(len(verts)))
    assert_closed_and_oriented(faces)
    assert signed_volume(verts, faces) > 0
    theirs, _, _, _ = skimage_marching_cubes(volume, 0.3, method="lorensen")
    assert len(theirs) == len(verts) and cKDTree(theirs).query(verts)[0].max() < 1e-5  # the same crossings


def test_a_sphere_is_its_volume_and_its_normals_point_out():
    grid = np.stack(np.meshgrid(*[np.arange(40.0)] * 3, indexing="ij"), -1)
    distance = np.linalg.norm(grid - 19.5, axis=-1)
    volume = torch.from_numpy((15.0 - distance).astype(np.float32))  # inside above 0, radius 15 samples
    verts, faces = (t.numpy() for t in closed_marching_cubes(volume, 0.0))
    np.testing.assert_allclose(np.linalg.norm(verts - 19.5, axis=1), 15.0, atol=0.05)
    assert signed_volume(verts, faces) == pytest.approx(4 / 3 * np.pi * 15.0 ** 3, rel=0.01)
    tri = verts[faces].astype(np.float64)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    proper = np.linalg.norm(normals, axis=1) > 1e-6
    assert np.all(np.einsum("ij,ij->i", normals[proper], tri[proper].mean(1) - 19.5) > 0)
    reference, _ = mcubes.marching_cubes(volume.numpy().astype(np.float64), 0.0)
    assert len(reference) == len(verts) and cKDTree(reference).query(verts)[0].max() < 1e-4


def test_no_surface_is_an_empty_mesh_and_open_or_flat_volumes_are_refused():
    verts, faces = closed_marching_cubes(torch.full((4, 5, 6), -2.0), 0.0)
    assert verts.shape == (0, 3) and faces.shape == (0, 3)
    touching = torch.full((4, 5, 6), -2.0)
    touching[1, 4, 2] = 1.0  # an inside sample on the border: the surface would be open there
    with pytest.raises(ValueError, match="closed_volume"):
        closed_marching_cubes(touching, 0.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        closed_marching_cubes(torch.zeros(4, 1, 6), 0.0)


def test_it_reads_back_three_sizes_and_a_check_and_copies_nothing_from_the_host():
    """On a GPU each read-back stalls the queue and each host tensor is a copy: a mesh costs four of the former
    (the border check, the cells, the vertices, the triangles) and none of the latter once the tables are made."""
    rng = np.random.default_rng(5)
    small, large = (closed_volume(torch.from_numpy(rng.normal(size=size).astype(np.float32)), 0.0)
                    for size in ((6, 5, 7), (30, 28, 32)))
    closed_marching_cubes(small, 0.0)  # the tables, once per device
    (_, faces), count = count_launches(lambda: closed_marching_cubes(large, 0.0))
    assert count.syncs <= 4 and count.host_tensors == 0
    (_, few), count_small = count_launches(lambda: closed_marching_cubes(small, 0.0))
    assert len(faces) > 50 * len(few) and count_small.ops == count.ops  # whole-array operations, never per cell
