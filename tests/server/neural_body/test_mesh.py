"""Mesh extraction: marching cubes in metres with outward normals, the network path, PLY round trip, the CLI."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
import torch

from server.commands import mesh as mesh_command
from server.neural_body import mesh as mesh_mod
from server.neural_body.mesh import Mesh, extract_mesh, extract_mesh_from_density, read_ply, signed_volume, write_ply
from server.neural_body.sparse_input import prepare_sparse_input
from tests.cli_args import command_args
from tests.server.neural_body.nb_fixtures import ellipsoid_body, random_network


def _sphere_density(center: np.ndarray, radius: float):
    def density(points: np.ndarray) -> np.ndarray:
        return 100.0 * (radius - np.linalg.norm(points - center, axis=1))  # > 0 inside, in "raw alpha" units

    return density


def test_sphere_density_gives_a_sphere_in_metres_with_outward_normals():
    center, radius = np.array([0.3, -1.2, 0.9]), 0.12
    bounds = np.stack([center - 0.2, center + 0.2])
    mesh = extract_mesh_from_density(_sphere_density(center, radius), bounds, voxel_size=0.01, threshold=5.0,
                                     chunk=1000)  # small chunks exercise the chunked queries
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32 and mesh.colors is None
    # density 5 ⇔ 100·(radius − distance) = 5 ⇔ distance = radius − 0.05
    dist = np.linalg.norm(mesh.vertices - center, axis=1)
    np.testing.assert_allclose(dist, radius - 0.05, atol=0.002)
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    outward = np.einsum("ij,ij->i", normals, tri.mean(axis=1) - center)
    proper = np.linalg.norm(normals, axis=1) > 1e-10  # marching cubes emits a few zero-area slivers
    assert proper.mean() > 0.95 and np.all(outward[proper] > 0)
    assert signed_volume(mesh.vertices, mesh.faces) == pytest.approx(4 / 3 * np.pi * 0.07 ** 3, rel=0.05)


def test_surface_touching_the_box_is_closed():
    center = np.array([0.0, 0.0, 0.0])
    bounds = np.array([[-0.1, -0.1, -0.1], [0.1, 0.1, 0.1]])  # the sphere (r 0.15) pokes out of the box
    mesh = extract_mesh_from_density(_sphere_density(center, 0.2), bounds, voxel_size=0.02)
    edges = np.sort(np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert np.all(counts == 2)  # every edge shared by two faces: watertight
    assert signed_volume(mesh.vertices, mesh.faces) > 0
    assert np.all(mesh.vertices >= -0.1 - 1e-6) and np.all(mesh.vertices <= 0.1 + 1e-6)


def test_no_surface_gives_an_empty_mesh_and_bad_grids_are_refused():
    mesh = extract_mesh_from_density(lambda p: np.zeros(len(p)), np.array([[0, 0, 0], [0.1, 0.1, 0.1]]),
                                     voxel_size=0.02)
    assert mesh.vertices.shape == (0, 3) and mesh.faces.shape == (0, 3)
    with pytest.raises(ValueError, match="larger voxel size"):
        mesh_mod.grid_axes(np.array([[0, 0, 0], [10.0, 10.0, 10.0]]), 0.001)
    with pytest.raises(ValueError, match="voxel_size > 0"):
        mesh_mod.grid_axes(np.array([[0, 0, 0], [1.0, 1.0, 1.0]]), 0.0)


@pytest.mark.slow
def test_network_mesh_uses_batch_stats_and_colours_the_vertices():
    verts = ellipsoid_body(200)
    network = random_network(len(verts), 2)
    sparse = prepare_sparse_input(verts, np.zeros(3), np.zeros(3))
    running = network.xyzc_net.conv0[1].running_mean.clone()
    # Pick the iso level from the density itself so the random network has a surface.
    with torch.no_grad():
        volumes = network.encode_sparse_voxels(sparse)
        probe = torch.from_numpy(verts)
        level = float(network.calculate_density(probe, volumes, sparse).median())
    mesh = extract_mesh(network, sparse, 1, voxel_size=0.02, threshold=level)
    assert len(mesh.faces) > 0 and mesh.colors is not None
    assert mesh.colors.shape == mesh.vertices.shape and mesh.colors.dtype == np.uint8
    box = sparse.world_bounds.numpy()
    # the grid starts at the box minimum and covers the maximum (its last sample may lie up to a voxel beyond)
    assert np.all(mesh.vertices >= box[0] - 1e-5) and np.all(mesh.vertices <= box[1] + 0.02 + 1e-5)
    assert signed_volume(mesh.vertices, mesh.faces) > 0
    torch.testing.assert_close(network.xyzc_net.conv0[1].running_mean, running)  # buffers untouched
    assert not network.training
    # colours = sigmoid(rgb head) at the vertices viewed along −normal
    normals = mesh_mod.vertex_normals(torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces)).numpy()
    with torch.no_grad():
        raw = network.calculate_density_color(torch.from_numpy(mesh.vertices[:5]), torch.from_numpy(-normals[:5]),
                                              volumes, sparse, 1)
    expected = np.round(torch.sigmoid(raw[:, :3]).numpy() * 255).astype(np.uint8)
    assert np.abs(expected.astype(int) - mesh.colors[:5]).max() <= 1


def test_ply_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    mesh = Mesh(rng.random((10, 3)).astype(np.float32), rng.integers(0, 10, (7, 3)).astype(np.int32),
                rng.integers(0, 256, (10, 3)).astype(np.uint8))
    path = tmp_path / "m.ply"
    write_ply(path, mesh)
    back = read_ply(path)
    np.testing.assert_array_equal(back.vertices, mesh.vertices)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_array_equal(back.colors, mesh.colors)
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    write_ply(path, Mesh(mesh.vertices, mesh.faces))
    assert read_ply(path).colors is None
    assert os.listdir(tmp_path) == ["m.ply"]  # no temp files left


def test_ply_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.ply"
    good = Mesh(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]], np.int32))
    write_ply(path, good)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(mesh_mod.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_ply(path, Mesh(np.ones((4, 3), np.float32), np.array([[0, 1, 2]], np.int32)))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.ply"]


def _mesh_args(*argv: str) -> argparse.Namespace:
    return command_args("mesh", *argv)


@pytest.mark.slow
def test_cli_meshes_an_amass_body_with_the_demo_body(tmp_path, capsys):
    from server.body.model import load_body_model
    from server.neural_body.actor import ActorManifest, Motion, save_actor

    model = load_body_model()
    network = random_network(int(model.v_template.shape[0]), 2)
    manifest = ActorManifest(name="demo-random", body_model="demo", vertex_count=network.num_vertices,
                             frames_trained=2)
    save_actor(tmp_path / "actor", network, manifest, Motion.empty(), np.zeros(10, np.float32))
    body = {"global_orient": [0.0, 0.0, 0.0], "body_pose": [0.0] * 69, "transl": [0.0, 0.0, 0.0]}
    (tmp_path / "body.json").write_text(json.dumps(body))
    out = tmp_path / "m.ply"
    code = mesh_command.run(_mesh_args(str(tmp_path / "actor"), "--body", str(tmp_path / "body.json"), "--out",
                                       str(out), "--voxel-size", "0.03", "--threshold", "0", "--device", "cpu"))
    assert code == 0, capsys.readouterr().err
    mesh = read_ply(out)
    posed = model.pose(body).vertices[0].numpy()
    lo, hi = posed.min(0), posed.max(0)
    # inside the world box (padded 5 cm on z), whose grid may reach one voxel (3 cm) past the maximum
    assert np.all(mesh.vertices >= lo - 0.0501) and np.all(mesh.vertices <= hi + 0.0801)
    assert mesh.colors is not None


def test_cli_errors_name_the_problem(tmp_path, capsys):
    code = mesh_command.run(_mesh_args(str(tmp_path / "nope"), "--frame", "0", "--out", str(tmp_path / "m.ply"),
                                   "--device", "cpu"))
    assert code == 1 and "no such actor folder" in capsys.readouterr().err
