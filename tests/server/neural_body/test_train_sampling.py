"""Training-ray sampling (body/box split, no band rays, all rays inside the box) and the lr schedule.

Also holds ``write_blob_dataset``, a tiny synthetic dataset in the project's ZJU-MoCap layout shared by the
training, evaluation and mesh tests: a closed ellipsoid "body" (icosphere mesh) ray-cast analytically into 4
cameras of 48×48 pixels, moving and turning a little per frame, with exact ground-truth meshes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neural_human_addon.core.camera import look_at_extrinsics
from server.body.rotations import axis_angle_to_matrix
from server.data.image_ops import BAND_VALUE
from server.data.zju_reader import ZjuMocapDataset
from server.neural_body import ray_sampling
from server.neural_body.rays import get_rays, near_far
from server.neural_body.train import EpochExponentialLR, learning_rate, make_optimizer

BLOB_RADII = np.array([0.10, 0.07, 0.22])  # metres, z up
BLOB_CENTER = np.array([0.0, 0.0, 0.9])


def icosphere(subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: (V,3) vertices, (F,3) outward-oriented faces; closed."""
    t = (1 + 5**0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11),
             (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    v = [np.array(p, float) / np.linalg.norm(p) for p in verts]
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int, cache: dict[tuple[int, int], int] = cache) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = v[a] + v[b]
                v.append(m / np.linalg.norm(m))
                cache[key] = len(v) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    return np.array(v), np.array(faces, dtype=np.int32)


def look_at(center: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return look_at_extrinsics(center, target)


def _blob_color(p_body: np.ndarray) -> np.ndarray:
    """Texture in the body frame: smooth colour bands (the same surface point has the same colour in every view)."""
    return np.stack([0.5 + 0.4 * np.sin(12 * p_body[:, 2]), 0.5 + 0.4 * np.cos(9 * p_body[:, 0]),
                     0.5 + 0.3 * np.sin(7 * p_body[:, 1] + 1.0)], axis=1)


def write_blob_dataset(root: Path, *, num_frames: int = 6, size: int = 48, num_views: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    unit, faces = icosphere(2)
    canonical = unit * BLOB_RADII  # "SMPL frame" vertices: the body frame
    Ks, Rs, Ts = [], [], []
    for view in range(num_views):
        angle = 2 * np.pi * view / num_views + 0.3
        R, T = look_at(np.array([1.6 * np.cos(angle), 1.6 * np.sin(angle), 1.0]), BLOB_CENTER)
        f = 2.2 * size
        Ks.append(np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1.0]]))
        Rs.append(R)
        Ts.append(T)
    relpaths = [[f"images/{v:02d}/{f:06d}.png" for v in range(num_views)] for f in range(num_frames)]
    annots = {"cams": {"K": Ks, "R": Rs, "T": [t[:, None] * 1000.0 for t in Ts], "D": [np.zeros((5, 1))] * num_views},
              "ims": [{"ims": p} for p in relpaths]}
    np.save(root / "annots.npy", np.array(annots, dtype=object), allow_pickle=True)
    for kind in ("params", "vertices"):
        (root / kind).mkdir(exist_ok=True)
    vv, uu = np.mgrid[0:size, 0:size].astype(float)
    pix = np.stack([uu.ravel(), vv.ravel(), np.ones(size * size)], axis=1)
    for frame in range(num_frames):
        Rh = np.array([0.0, 0.0, 0.15 * frame])
        Th = BLOB_CENTER + np.array([0.02 * frame, -0.01 * frame, 0.0])
        rot = axis_angle_to_matrix(Rh)
        np.save(root / "params" / f"{frame}.npy", np.array({"poses": np.zeros((1, 72)), "shapes": np.zeros((1, 10)),
                                                           "Rh": Rh[None], "Th": Th[None]}, dtype=object))
        np.save(root / "vertices" / f"{frame}.npy", (canonical @ rot.T + Th).astype(np.float32))
        for view in range(num_views):
            K, R, T = Ks[view], Rs[view], Ts[view]
            # ray in the body frame: p = o + t d, solve |p / radii| = 1
            d_world = (np.linalg.inv(K) @ pix.T).T @ R  # Rᵀ K⁻¹ x, row form
            o_world = -R.T @ T
            o = ((o_world - Th) @ rot) / BLOB_RADII
            d = (d_world @ rot) / BLOB_RADII
            a, b, c = (d * d).sum(1), 2 * (d @ o), o @ o - 1
            disc = b * b - 4 * a * c
            hit = disc > 0
            t = (-b - np.sqrt(np.where(hit, disc, 0))) / (2 * a)
            p_body = (o + t[:, None] * d) * BLOB_RADII
            rgb = np.where(hit[:, None], _blob_color(p_body), 0.0)
            image = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8).reshape(size, size, 3)
            mask = (hit.reshape(size, size) * 255).astype(np.uint8)
            path = root / relpaths[frame][view]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            mpath = root / "mask_cihp" / relpaths[frame][view][len("images/"):]
            mpath.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(mpath)
    np.save(root / "faces.npy", faces)
    train_frames = list(range(max(1, num_frames - 2)))
    meta = {"format": "neural-human-zju/1", "name": "blob", "body_model": "demo", "num_frames": num_frames,
            "num_views": num_views, "image_size": [size, size], "ratio": 1.0, "up_axis": "z", "fps": 24,
            "train_views": [0, 2], "test_views": [1, 3], "train_frames": train_frames,
            "novel_pose_frames": list(range(len(train_frames), num_frames)), "gt_mesh": "vertices+faces.npy"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> ZjuMocapDataset:
    return ZjuMocapDataset(write_blob_dataset(tmp_path_factory.mktemp("blob")))


# ---------------------------------------------------------------------------------------------------- sampling


def test_bound_2d_mask_covers_exactly_the_projected_box():
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 31.5], [0, 0, 1]])
    R, T = np.eye(3), np.array([0.0, 0.0, 2.0])
    box = np.array([[-0.2, -0.4, -0.1], [0.2, 0.4, 0.1]])
    mask = ray_sampling.bound_2d_mask(box, K, R, T, 64, 64)
    # The front face (z = -0.1, depth 1.9) projects widest: u = 31.5 ± 50·0.2/1.9, v = 31.5 ± 50·0.4/1.9.
    half_u, half_v = 50 * 0.2 / 1.9, 50 * 0.4 / 1.9
    v, u = np.nonzero(mask)
    assert abs(u.min() - round(31.5 - half_u)) <= 1 and abs(u.max() - round(31.5 + half_u)) <= 1
    assert abs(v.min() - round(31.5 - half_v)) <= 1 and abs(v.max() - round(31.5 + half_v)) <= 1
    assert mask.sum() == pytest.approx((2 * half_u + 1) * (2 * half_v + 1), rel=0.15)


def test_sampled_rays_split_body_and_box_avoid_band_and_hit_box(blob):
    frame, view = blob.train_frames[1], blob.train_views[0]
    image, mask = blob.image_and_mask(frame, view)
    cam = blob.cameras[view]
    params = blob.params(frame)
    from server.neural_body.sparse_input import prepare_sparse_input

    si = prepare_sparse_input(blob.vertices(frame), params.Rh, params.Th)
    bounds = si.world_bounds.numpy()
    rays = get_rays(cam.height, cam.width, cam.K, cam.R, cam.T)
    batch = ray_sampling.sample_rays(image, mask, rays, cam.K, cam.R, cam.T, bounds, 1024,
                                     np.random.default_rng(0))
    assert batch.rgb.shape == (1024, 3) and batch.ray_o.shape == (1024, 3) and batch.near.shape == (1024,)
    labels = mask[batch.pixels[:, 0], batch.pixels[:, 1]]
    assert not np.any(labels == BAND_VALUE)
    # Half the rays come from the body interior; box rays that miss the 3D box (edge pixels of the rounded 2D
    # polygon) are redrawn half from the body, as the original, so slightly more than half can be body rays.
    assert 512 <= batch.num_body <= 600
    assert np.all(labels[:batch.num_body] == 1)
    assert np.any(labels[batch.num_body:] == 0)
    box2d = ray_sampling.bound_2d_mask(bounds, cam.K, cam.R, cam.T, cam.height, cam.width)
    assert box2d[batch.pixels[:, 0], batch.pixels[:, 1]].all()
    assert torch.all(batch.far > batch.near) and torch.all(batch.near > 0)
    _, _, hit = near_far(bounds, batch.ray_o, batch.ray_d)
    assert hit.all()
    # colours are the image's pixels
    np.testing.assert_array_equal(batch.rgb.numpy(), image[batch.pixels[:, 0], batch.pixels[:, 1]])


def test_rays_missing_the_box_are_resampled():
    # A 2D box mask much larger than the 3D box's true footprint cannot happen with a pinhole, so instead draw
    # from an image whose body pixels sit partly outside the box: those rays must be rejected.
    K = np.array([[40.0, 0, 15.5], [0, 40.0, 15.5], [0, 0, 1]])
    R, T = np.eye(3), np.array([0.0, 0.0, 2.0])
    box = np.array([[-0.1, -0.1, -0.1], [0.1, 0.1, 0.1]])
    mask = np.ones((32, 32), np.uint8)  # "body" everywhere, box covers a small square
    image = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
    rays = get_rays(32, 32, K, R, T)
    batch = ray_sampling.sample_rays(image, mask, rays, K, R, T, box, 256, np.random.default_rng(2))
    _, _, hit = near_far(box, batch.ray_o, batch.ray_d)
    assert hit.all() and len(batch.rgb) == 256


def test_sampling_errors_when_box_is_out_of_view():
    K = np.array([[40.0, 0, 15.5], [0, 40.0, 15.5], [0, 0, 1]])
    R, T = np.eye(3), np.array([0.0, 0.0, 2.0])
    box = np.array([[5.0, 5.0, -0.1], [5.2, 5.2, 0.1]])
    rays = get_rays(32, 32, K, R, T)
    with pytest.raises(ValueError, match="does not project"):
        ray_sampling.sample_rays(np.zeros((32, 32, 3), np.float32), np.ones((32, 32), np.uint8), rays, K, R, T, box,
                                 16, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------------- schedule


def test_learning_rate_schedule_matches_the_original():
    assert learning_rate(0) == pytest.approx(5e-4)
    assert learning_rate(499) == pytest.approx(5e-4)  # stepped once per 500-iteration epoch
    assert learning_rate(500) == pytest.approx(5e-4 * 0.1 ** (1 / 1000))
    assert learning_rate(200_000) == pytest.approx(5e-4 * 0.1 ** 0.4)  # ≈ 2.0e-4 at the end
    assert learning_rate(40, epoch_iters=10, decay_iters=40) == pytest.approx(5e-5)


def test_epoch_scheduler_follows_learning_rate_and_round_trips():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = make_optimizer(net)
    assert len(opt.param_groups) == 4  # one group per parameter
    sched = EpochExponentialLR(opt, decay_epochs=4)
    for step in range(1, 13):
        if step % 3 == 0:
            sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(learning_rate(step, epoch_iters=3, decay_iters=12))
    state = sched.state_dict()
    opt2 = make_optimizer(net)
    sched2 = EpochExponentialLR(opt2, decay_epochs=1)
    sched2.load_state_dict(state)
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([g["lr"] for g in opt.param_groups])
