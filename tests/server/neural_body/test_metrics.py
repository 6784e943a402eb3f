"""Evaluation metrics against cases with known answers: PSNR, SSIM, bounding rect, IoU, Chamfer-L1."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.neural_body import metrics
from tests.server.neural_body.test_train_sampling import icosphere


def cube(center=(0.0, 0.0, 0.0), side: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Closed axis-aligned cube, outward faces."""
    c = np.asarray(center, float)
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float) - 0.5
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [(a, b, c_) for a, b, c_, _ in quads] + [(a, c_, d) for a, _, c_, d in quads]
    return v * side + c, np.array(faces, np.int32)


def sphere(radius: float, center=(0.0, 0.0, 0.0), subdivisions: int = 4) -> tuple[np.ndarray, np.ndarray]:
    v, f = icosphere(subdivisions)
    return v * radius + np.asarray(center, float), f


def test_psnr_of_a_known_mse():
    rng = np.random.default_rng(0)
    gt = rng.random((100, 3))
    pred = gt + np.where(rng.random((100, 3)) < 0.5, 0.1, -0.1)  # every error is ±0.1 → MSE 0.01
    assert metrics.psnr(pred, gt) == pytest.approx(20.0)
    assert metrics.psnr(gt, gt) == math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(gt, gt[:5])


def test_ssim_identical_is_one_and_noise_lowers_it():
    rng = np.random.default_rng(1)
    img = rng.random((32, 40, 3))
    assert metrics.ssim(img, img) == pytest.approx(1.0)
    noisy = np.clip(img + rng.normal(0, 0.2, img.shape), 0, 1)
    assert metrics.ssim(noisy, img) < 0.95


def test_ssim_uses_data_range_two():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(2)
    a, b = rng.random((20, 20, 3)), rng.random((20, 20, 3))
    expected = structural_similarity(a, b, channel_axis=-1, data_range=2.0)
    assert metrics.ssim(a, b) == pytest.approx(expected)
    assert metrics.ssim(a, b) != pytest.approx(structural_similarity(a, b, channel_axis=-1, data_range=1.0))


def test_ssim_box_crops_to_the_mask_rectangle():
    rng = np.random.default_rng(3)
    pred, gt = rng.random((64, 64, 3)), rng.random((64, 64, 3))
    mask = np.zeros((64, 64), bool)
    mask[10:30, 20:50] = True
    assert metrics.bounding_rect(mask) == (20, 10, 30, 20)
    assert metrics.ssim_box(pred, gt, mask) == pytest.approx(metrics.ssim(pred[10:30, 20:50], gt[10:30, 20:50]))
    with pytest.raises(ValueError, match="empty"):
        metrics.ssim_box(pred, gt, np.zeros((64, 64), bool))


def test_inside_mesh_of_a_sphere():
    v, f = sphere(0.5)
    rng = np.random.default_rng(4)
    xy = rng.uniform(-0.6, 0.6, (300, 2))
    z = rng.uniform(-0.6, 0.6, (300, 20))
    inside = metrics.inside_mesh(v, f, xy, z)
    r = np.sqrt((xy ** 2).sum(1)[:, None] + z ** 2)
    clear = np.abs(r - 0.5) > 0.01  # away from the faceted surface
    np.testing.assert_array_equal(inside[clear], (r < 0.5)[clear])


def test_iou_of_two_offset_cubes_is_analytic():
    a = cube((0, 0, 0), 1.0)
    b = cube((0.5, 0, 0), 1.0)  # overlap 0.5, union 1.5
    assert metrics.volumetric_iou(a, b) == pytest.approx(1 / 3, abs=0.01)
    c = cube((0.25, 0.25, 0.25), 0.5)  # inside a: IoU = 1/8
    assert metrics.volumetric_iou(a, c) == pytest.approx(1 / 8, abs=0.01)
    assert metrics.volumetric_iou(a, a) == pytest.approx(1.0)
    assert metrics.volumetric_iou(a, cube((3, 0, 0), 1.0)) == 0.0


def test_iou_of_concentric_spheres():
    iou = metrics.volumetric_iou(sphere(0.4), sphere(0.5))
    assert iou == pytest.approx(0.4 ** 3 / 0.5 ** 3, abs=0.015)


def test_chamfer_of_concentric_and_shifted_spheres():
    # Concentric radii r, r + d: every nearest distance is d.
    assert metrics.chamfer_l1(sphere(0.5), sphere(0.55)) == pytest.approx(0.05, rel=0.1)
    # Shifted by a small s: distance ≈ s·|cos θ|, whose mean over the sphere is s/2.
    shift = 0.04
    assert metrics.chamfer_l1(sphere(0.5), sphere(0.5, (shift, 0, 0))) == pytest.approx(shift / 2, rel=0.15)
    # Identical meshes: only the sampling spacing remains (well under a millimetre at 100k points).
    assert metrics.chamfer_l1(sphere(0.5), sphere(0.5)) < 0.003


def test_mesh_checks_name_the_problem():
    v, f = cube()
    with pytest.raises(ValueError, match="faces must index"):
        metrics.volumetric_iou((v, f), (v, f + 100))
    with pytest.raises(ValueError, match="non-empty faces"):
        metrics.chamfer_l1((v, np.zeros((0, 3), np.int32)), (v, f))
