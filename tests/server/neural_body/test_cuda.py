"""The CUDA side of the renderer, the mesher, training and the server (skipped without a CUDA device; they run on a
GPU machine: see docs/fast_path.md for the figures measured there)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.neural_body.sparse_input import prepare_sparse_input
from tests.server.neural_body.test_fast_path import (
    DEMO_ACTOR,
    assert_agree,
    camera_around,
    posed_body,
    surface_samples,
)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def cuda_actor():
    from server.neural_body.actor import load_actor

    return load_actor(DEMO_ACTOR, "cuda")


@pytest.mark.parametrize(("precision", "segment", "compile"),
                         [("fp32", None, False), ("tf32", None, False), ("bf16", None, False), ("fp16", None, False),
                          ("fp32", 8, False), ("fp32", None, True), ("bf16", None, True)])
def test_fast_path_agrees_with_the_fp32_reference_on_cuda(cuda_actor, precision, segment, compile):
    """The fast path on CUDA (each precision of its point network; the GPU's one-pass march and the CPU's segments;
    the point network through torch.compile's Triton kernels) against the fp32 reference, same bars as on CPU (a new
    pose, a new view)."""
    from server.neural_body.fast_renderer import FastRenderer
    from server.neural_body.volume_renderer import render_image

    verts, rh, th = posed_body(cuda_actor, 50, bend=True)
    K, R, T = camera_around(verts, 2.2)
    ref = render_image(cuda_actor.network, verts, rh, th, 50, K, R, T, 40, 56)
    fast = render_image(cuda_actor.network, verts, rh, th, 50, K, R, T, 40, 56,
                        renderer=FastRenderer(precision=precision, segment=segment, compile=compile))
    assert_agree(ref, fast)
    assert torch.backends.cuda.matmul.allow_tf32 is False  # tf32 is scoped to the fast path's products
    if compile:  # it compiled: no fallback to the eager network
        from server.neural_body.fast_renderer import _compiled, _trunk_and_density

        assert _compiled(_trunk_and_density).compiled is not None


def test_profile_reports_the_gpus_busy_time_and_kernels():
    from server.neural_body.profiling import profile_work

    a = torch.randn(2048, 2048, device="cuda")
    product, prof = profile_work(lambda: (a @ a).sum().item(), torch.device("cuda"))
    figures = prof.figures()
    assert figures["device_kernels"] >= 2 and 0 < figures["device_busy_ms"] <= figures["wall_ms"]
    assert figures["host_syncs"] >= 1 and "Self CUDA" in prof.table


def test_coarse_to_fine_mesh_matches_the_dense_grid_on_cuda(cuda_actor):
    """5 mm (three levels) on the GPU: every vertex within half a voxel of the dense mesh's surface."""
    from scipy.spatial import cKDTree

    from server.neural_body.mesh import extract_mesh
    from server.neural_body.mesh_coarse_to_fine import extract_mesh_coarse_to_fine

    verts, rh, th = posed_body(cuda_actor, 10, bend=True)
    sparse = prepare_sparse_input(verts, rh, th, device="cuda")
    voxel = 0.005
    dense = extract_mesh(cuda_actor.network, sparse, 10, voxel_size=voxel, colors=False)
    fast = extract_mesh_coarse_to_fine(cuda_actor.network, sparse, 10, voxel_size=voxel, colors=True)
    assert len(dense.faces) > 10000 and fast.colors is not None and len(fast.colors) == len(fast.vertices)
    dist, _ = cKDTree(surface_samples(dense.vertices, dense.faces, 4)).query(fast.vertices)
    assert dist.max() <= 0.5 * voxel


def test_training_steps_on_cuda_decrease_the_loss_and_resume(tmp_path):
    from server.data.zju_reader import ZjuMocapDataset
    from server.neural_body.config import TrainConfig
    from server.neural_body.train import Trainer
    from tests.server.neural_body.test_train_sampling import write_blob_dataset

    root = write_blob_dataset(tmp_path / "data", num_frames=4, size=32)
    torch.manual_seed(0)
    config = TrainConfig(iters=24, rays=256, n_samples=8, progress=False, seed=3, save_every=12)
    trainer = Trainer(ZjuMocapDataset(root), torch.device("cuda"), config, checkpoint_dir=tmp_path / "ckpt")
    losses = np.array(trainer.run().losses)
    assert len(losses) == 24 and np.all(np.isfinite(losses))
    assert losses[-4:].mean() < 0.9 * losses[:4].mean()
    assert next(trainer.network.parameters()).is_cuda
    resumed = Trainer(ZjuMocapDataset(root), torch.device("cuda"), TrainConfig(iters=26, rays=256, n_samples=8,
                      progress=False, seed=3), checkpoint_dir=tmp_path / "ckpt")
    resumed.load_checkpoint(tmp_path / "ckpt" / "latest.pt")
    assert resumed.step == 24
    assert len(resumed.run().losses) == 2


def test_the_server_renders_on_cuda(tmp_path):
    """A real `serve --device cuda` process: the health answer names the GPU and a render comes back with the body."""
    import io

    from tests.server.live_server import ACTOR_ID, body, camera, make_actor, running_server

    actors = tmp_path / "actors"
    actors.mkdir()
    make_actor(actors)
    with running_server(actors, tmp_path / "jobs", tmp_path / "config", tmp_path / "server.log",
                        "--device", "cuda") as srv, srv.client() as client:
        health = client.get("/v1/health").json()
        assert health["device"]["type"] == "cuda" and health["device"]["name"]
        r = client.post(f"/v1/actors/{ACTOR_ID}/render",
                        json={"body": body(0), "camera": camera(64, 48), "outputs": ["rgba", "depth"]})
        assert r.status_code == 200, r.text
        rgba = np.load(io.BytesIO(r.content))["rgba"]
        assert rgba.shape == (48, 64, 4) and rgba[..., 3].max() > 0.5


def test_marching_cubes_on_cuda_is_the_cpus_mesh():
    """The mesher's marching cubes on the GPU: the same faces and vertices as on the CPU, on noise full of ambiguous
    faces (the case table, the vertex numbering and the cell lookups are integer work: exact on every device)."""
    from server.neural_body.marching_cubes import closed_marching_cubes
    from server.neural_body.mesh import closed_volume

    volume = closed_volume(torch.from_numpy(np.random.default_rng(2).normal(size=(40, 36, 44)).astype(np.float32)),
                           0.2)
    verts, faces = closed_marching_cubes(volume, 0.2)
    verts_gpu, faces_gpu = closed_marching_cubes(volume.cuda(), 0.2)
    assert faces_gpu.is_cuda and torch.equal(faces_gpu.cpu(), faces) and len(faces) > 10_000
    torch.testing.assert_close(verts_gpu.cpu(), verts)
