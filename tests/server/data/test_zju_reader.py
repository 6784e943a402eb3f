"""ZJU-MoCap-layout reader: naming schemes, units, image pipeline (undistort, resize, mask band), splits, errors."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest

from server.commands import check_dataset
from server.data import image_ops
from server.data.zju_reader import DatasetError, ZjuMocapDataset, known_sequence
from tests.server.data.zju_fixtures import replace_image, write_dataset

# ---------------------------------------------------------------------------- naming schemes, cameras, params


def test_313_scheme_is_one_based_and_converts_millimetres(tmp_path):
    fake = write_dataset(tmp_path / "CoreView_313", "313", num_frames=3)
    ds = ZjuMocapDataset(fake.root, num_train_frames=2)
    assert (ds.num_views, ds.num_frames, ds.is_synthetic) == (21, 3, False)
    assert ds.frame_ids == [1, 2, 3]
    for frame in range(3):
        fid = frame + 1
        np.testing.assert_allclose(ds.params(frame).Th, fake.params[fid]["Th"].reshape(3), rtol=1e-6)
        np.testing.assert_array_equal(ds.vertices(frame), fake.vertices[fid])
    params = ds.params(1)
    assert params.poses.shape == (72,) and params.poses.dtype == np.float32
    np.testing.assert_allclose(params.shapes, fake.params[2]["shapes"].reshape(10), rtol=1e-6)
    np.testing.assert_allclose(params.Rh, fake.params[2]["Rh"].reshape(3), rtol=1e-6)
    for view in (0, 20):
        cam = ds.cameras[view]
        np.testing.assert_allclose(cam.T, fake.T_m[view], atol=1e-12)  # mm in annots -> metres
        assert 2.0 < np.linalg.norm(-cam.R.T @ cam.T) < 4.0  # camera centre ~3 m from the actor
        np.testing.assert_array_equal(cam.R, fake.R[view])
    assert ds.train_views == [0, 6, 12, 18]
    assert ds.test_views == [v for v in range(21) if v not in (0, 6, 12, 18)]


def test_23_camera_scheme_is_zero_based(tmp_path):
    fake = write_dataset(tmp_path / "CoreView_377", "23", num_frames=2)
    ds = ZjuMocapDataset(fake.root, num_train_frames=1)
    assert (ds.num_views, ds.frame_ids) == (23, [0, 1])
    np.testing.assert_array_equal(ds.vertices(1), fake.vertices[1])
    assert len(ds.test_views) == 19
    assert json.loads(json.dumps(ds.summary()))["num_views"] == 23


def test_known_sequence_defaults_and_lazy_file_checks(tmp_path):
    # annots lists all 1470 frames of 313 but only frame 0 has files: opening stays cheap and lazy
    fake = write_dataset(tmp_path / "CoreView_313", "313", num_frames=1470, files_for_frames=1)
    ds = ZjuMocapDataset(fake.root)
    assert known_sequence("CoreView_313") == "313" and known_sequence("my_actor") is None
    assert ds.train_frames == list(range(60)) and ds.novel_pose_frames == list(range(60, 1060))
    assert ds.ratio == 0.5 and ds.cameras[0].width == 32
    assert ds.latent_index(59) == 59 and ds.latent_index(500) == 59
    with pytest.raises(DatasetError, match=r"params/2\.npy"):
        ds.params(1)
    problems = ds.validate()
    assert len(problems) == 1469 * (21 * 2 + 2)
    assert any("vertices/1470.npy" in p for p in problems)


def test_too_few_frames_for_the_sequence_defaults(tmp_path):
    fake = write_dataset(tmp_path / "CoreView_390", "23", num_frames=3)
    with pytest.raises(DatasetError, match="training frames 700..999"):
        ZjuMocapDataset(fake.root)


def test_latent_index_clamps_unseen_poses(tmp_path):
    fake = write_dataset(tmp_path / "seq", "23", num_frames=6, num_views=2)
    ds = ZjuMocapDataset(fake.root, train_views=[0], begin_frame=1, num_train_frames=3)
    assert ds.train_frames == [1, 2, 3] and ds.novel_pose_frames == [0, 4, 5]
    assert [ds.latent_index(f) for f in range(6)] == [2, 0, 1, 2, 2, 2]
    ds = ZjuMocapDataset(fake.root, train_views=[0], begin_frame=0, num_train_frames=3, frame_interval=2)
    assert ds.train_frames == [0, 2, 4]
    assert [ds.latent_index(f) for f in range(6)] == [0, 0, 1, 1, 2, 2]
    assert ds.test_views == [1]


# ---------------------------------------------------------------------------- image pipeline


def test_ratio_box_filter_nearest_mask_and_scaled_k(tmp_path):
    fake = write_dataset(tmp_path / "seq", "23", num_frames=1, num_views=2, size=(64, 48))
    ds = ZjuMocapDataset(fake.root, num_train_frames=1, train_views=[0])  # real ZJU default ratio 0.5
    image, mask = ds.image_and_mask(0, 1)
    assert image.shape == (24, 32, 3) and image.dtype == np.float32 and mask.dtype == np.uint8
    assert (ds.cameras[1].width, ds.cameras[1].height) == (32, 24)
    expected_k = fake.K[1].copy()
    expected_k[:2] *= 0.5
    np.testing.assert_allclose(ds.cameras[1].K, expected_k)
    assert ds.cameras[1].K[2, 2] == 1.0
    decoded = fake.decoded_image(0, 1).astype(np.float64) / 255.0
    blocks = decoded.reshape(24, 2, 32, 2, 3).mean(axis=(1, 3))
    full_mask = image_ops.mask_with_band(fake.foreground(0, 1))
    np.testing.assert_array_equal(mask, full_mask[::2, ::2])
    np.testing.assert_allclose(image, np.where((mask == 0)[..., None], 0.0, blocks), atol=1e-6)
    np.testing.assert_array_equal(ds.image(0, 1), image)
    np.testing.assert_array_equal(ds.mask(0, 1), mask)


def test_area_resize_matches_supersampled_box_filter():
    rng = np.random.default_rng(3)
    image = rng.random((9, 8, 3)).astype(np.float32)
    out = image_ops.resize_area(image, 6, 6)  # factors 8/6 and 9/6: fractional pixel overlaps
    # independent reference: replicate every pixel 6x (so both factors become integral), then average blocks
    finer = np.repeat(np.repeat(image.astype(np.float64), 6, axis=0), 6, axis=1)  # (54, 48)
    reference = finer.reshape(6, 9, 6, 8, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(out, reference, atol=1e-6)
    assert image_ops.resized_size(1024, 1024, 0.5) == (512, 512)
    assert image_ops.resized_size(1001, 999, 0.5) == (500, 499)


def test_mask_band_is_five_by_five_and_background_is_zeroed(tmp_path):
    fake = write_dataset(tmp_path / "seq", "23", num_frames=1, num_views=1, size=(40, 30))
    pixels = np.random.default_rng(1).integers(1, 256, (30, 40, 3), dtype=np.uint8)
    labels = np.zeros((30, 40), np.uint8)
    labels[10:20, 0:25] = 7  # rectangle touching the left image border
    replace_image(fake, 0, 0, pixels, labels)
    ds = ZjuMocapDataset(fake.root, ratio=1.0, train_views=[0], num_train_frames=1)
    image, mask = ds.image_and_mask(0, 0)
    rows, cols = np.mgrid[0:30, 0:40]
    dilated = (rows >= 8) & (rows < 22) & (cols < 27)
    eroded = (rows >= 12) & (rows < 18) & (cols < 23)  # the image border does not erode (OpenCV default)
    np.testing.assert_array_equal(mask == 100, dilated & ~eroded)
    np.testing.assert_array_equal(mask == 1, eroded)
    np.testing.assert_array_equal(mask == 0, ~dilated)
    assert set(np.unique(mask)) == {0, 1, 100}
    np.testing.assert_allclose(image[mask != 0], pixels[mask != 0] / 255.0, atol=1e-6)  # band keeps pixels
    assert np.all(image[mask == 0] == 0.0) and np.all(pixels[mask == 0] > 0)


def _blob_image(centres: np.ndarray, width: int, height: int, sigma: float = 1.5) -> np.ndarray:
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.zeros((height, width))
    for cu, cv in centres:
        image += np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * sigma**2))
    return image


def _centroid(image: np.ndarray, near: np.ndarray, radius: int = 7) -> np.ndarray:
    v, u = np.mgrid[0: image.shape[0], 0: image.shape[1]].astype(np.float64)
    window = (np.abs(u - near[0]) <= radius) & (np.abs(v - near[1]) <= radius)
    weights = np.where(window, image, 0.0)
    return np.array([(weights * u).sum(), (weights * v).sum()]) / weights.sum()


def test_undistortion_moves_distorted_points_to_their_pinhole_projection():
    width, height = 160, 120
    K = np.array([[120.0, 0.0, 81.0], [0.0, 118.0, 58.0], [0.0, 0.0, 1.0]])
    D = np.array([-0.3, 0.1, 0.002, -0.003, -0.02])
    points = np.array([[x, y, 2.0] for x in (-0.9, 0.0, 0.8) for y in (-0.7, 0.1, 0.6)])
    distorted_px = image_ops.project_points(points, K, D)
    pinhole_px = image_ops.project_points(points, K)
    assert np.max(np.linalg.norm(distorted_px - pinhole_px, axis=1)) > 4.0  # the distortion is visible
    distorted = _blob_image(distorted_px, width, height)
    mapping = image_ops.undistort_map(K, D, width, height)
    undistorted = image_ops.remap_bilinear(distorted.astype(np.float32), mapping)
    for expected in pinhole_px:
        np.testing.assert_allclose(_centroid(undistorted, expected), expected, atol=0.2)
    labels = np.zeros((height, width), np.uint8)
    for cu, cv in distorted_px:  # small discs in the label map follow the same mapping (nearest sampling)
        labels[(np.mgrid[0:height, 0:width][1] - cu) ** 2 + (np.mgrid[0:height, 0:width][0] - cv) ** 2 <= 9] = 1
    moved = image_ops.remap_nearest(labels, mapping)
    assert set(np.unique(moved)) <= {0, 1}
    for expected in pinhole_px:
        np.testing.assert_allclose(_centroid(moved.astype(float), expected), expected, atol=0.6)


def test_distortion_follows_the_opencv_model():
    # OpenCV's documented model, evaluated by hand for x=0.3, y=-0.2: r² = 0.13,
    # radial = 1 + 0.1·0.13 + 0.01·0.13² + 0.001·0.13³ = 1.013171197
    # x'' = 0.3·radial + 2·0.02·0.3·(−0.2) + 0.03·(0.13 + 2·0.09) = 0.3039513591 − 0.0024 + 0.0093
    # y'' = −0.2·radial + 0.02·(0.13 + 2·0.04) + 2·0.03·0.3·(−0.2) = −0.2026342394 + 0.0042 − 0.0036
    xd, yd = image_ops.distort_normalized(np.array([0.3]), np.array([-0.2]), np.array([0.1, 0.01, 0.02, 0.03, 0.001]))
    np.testing.assert_allclose([xd[0], yd[0]], [0.3108513591, -0.2020342394], atol=1e-9)
    K = np.array([[100.0, 0.0, 50.0], [0.0, 90.0, 40.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(image_ops.project_points(np.array([[0.6, -0.4, 2.0]]), K, np.array([0.1, 0.01, 0.02,
                               0.03, 0.001])), [[100 * 0.3108513591 + 50, 90 * -0.2020342394 + 40]], atol=1e-7)
    with pytest.raises(ValueError, match="5-coefficient"):
        image_ops.distort_normalized(np.zeros(1), np.zeros(1), np.array([0, 0, 0, 0, 0, 0.1, 0, 0]))


def test_zero_distortion_is_the_identity():
    K = np.array([[50.0, 0.0, 20.3], [0.0, 52.0, 14.9], [0.0, 0.0, 1.0]])
    image = np.random.default_rng(2).random((30, 40, 3)).astype(np.float32)
    mapping = image_ops.undistort_map(K, np.zeros(5), 40, 30)
    np.testing.assert_allclose(image_ops.remap_bilinear(image, mapping), image, atol=1e-5)
    labels = (image[..., 0] > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(image_ops.remap_nearest(labels, mapping), labels)
    assert not image_ops.has_distortion(np.zeros((5, 1)))


def test_dataset_undistorts_image_and_mask_before_resizing(tmp_path):
    D = np.array([0.25, 0.05, 0.001, -0.002, 0.0])  # pincushion: the corners sample outside the input
    fake = write_dataset(tmp_path / "seq", "23", num_frames=1, num_views=1, size=(96, 72), distortion=D)
    K, (width, height) = fake.K[0], (96, 72)
    points = np.array([[-0.35, -0.25, 3.0], [0.3, 0.2, 3.0], [0.0, 0.0, 3.0]])
    distorted_px = image_ops.project_points(points, K, D)
    blobs = _blob_image(distorted_px, width, height, sigma=2.0)
    pixels = np.repeat(np.clip(blobs * 255, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    replace_image(fake, 0, 0, pixels, np.full((height, width), 5, np.uint8))  # all foreground: no band
    ds = ZjuMocapDataset(fake.root, ratio=1.0, train_views=[0], num_train_frames=1)
    assert ds.summary()["distorted_views"] == [0]
    np.testing.assert_array_equal(ds.cameras[0].D, np.zeros(5))  # returned images carry no distortion
    image, mask = ds.image_and_mask(0, 0)
    for expected in image_ops.project_points(points, K):
        np.testing.assert_allclose(_centroid(image[..., 0], expected), expected, atol=0.25)
    assert mask[height // 2, width // 2] == 1 and mask[0, 0] == 0 and image[0, 0, 0] == 0
    raw = ZjuMocapDataset(fake.root, ratio=1.0, undistort=False, train_views=[0], num_train_frames=1)
    np.testing.assert_array_equal(raw.cameras[0].D, D)
    np.testing.assert_allclose(raw.image(0, 0), pixels / 255.0, atol=1e-6)
    half = ZjuMocapDataset(fake.root, ratio=0.5, train_views=[0], num_train_frames=1).image(0, 0)
    np.testing.assert_allclose(half, image_ops.resize_area(image, 48, 36), atol=1e-6)


# ---------------------------------------------------------------------------- synthetic layout


def test_synthetic_layout_uses_dataset_json(tmp_path):
    fake = write_dataset(tmp_path / "demo", "synthetic", num_frames=4, num_views=4, size=(40, 32))
    ds = ZjuMocapDataset(fake.root)
    assert ds.is_synthetic and ds.name == "fake-synthetic" and ds.ratio == 1.0 and ds.fps == 24.0
    assert (ds.train_views, ds.test_views) == ([0, 2], [1, 3])
    assert (ds.train_frames, ds.novel_pose_frames) == ([0, 1, 2], [3])
    assert ds.frame_ids == [0, 1, 2, 3] and ds.latent_index(3) == 2
    image, mask = ds.image_and_mask(2, 3)
    assert image.shape == (32, 40, 3) and (ds.cameras[3].width, ds.cameras[3].height) == (40, 32)
    np.testing.assert_allclose(ds.cameras[3].K, fake.K[3])
    fg = fake.foreground(2, 3)
    np.testing.assert_array_equal(mask, image_ops.mask_with_band(fg))
    np.testing.assert_allclose(image[mask != 0], fake.decoded_image(2, 3)[mask != 0] / 255.0, atol=1e-6)
    verts, faces = ds.gt_mesh(1)
    np.testing.assert_array_equal(verts, fake.vertices[1])
    np.testing.assert_array_equal(faces, fake.faces)
    assert faces.dtype == np.int32
    assert ds.validate(deep=True) == []
    summary = json.loads(json.dumps(ds.summary()))
    assert summary["image_size"] == [40, 32] and summary["has_gt_mesh"] is True
    # explicit arguments win over dataset.json
    override = ZjuMocapDataset(fake.root, ratio=0.5, train_views=[1], begin_frame=1, num_train_frames=2)
    assert override.cameras[0].width == 20 and override.test_views == [0, 2, 3]
    assert override.train_frames == [1, 2] and override.novel_pose_frames == [0, 3]
    np.save(fake.root / "faces.npy", np.array([[0, 1, 999]], np.int32))  # faces that do not fit the vertices
    broken = ZjuMocapDataset(fake.root)
    with pytest.raises(DatasetError, match=r"faces\.npy: faces index vertex 999"):
        broken.gt_mesh(0)
    assert any("faces index vertex 999" in p for p in broken.validate(deep=True))


def test_real_zju_has_no_gt_mesh(tmp_path):
    fake = write_dataset(tmp_path / "seq", "23", num_frames=1, num_views=1)
    assert ZjuMocapDataset(fake.root, train_views=[0]).gt_mesh(0) is None


def test_dataset_json_disagreeing_with_files(tmp_path):
    fake = write_dataset(tmp_path / "demo", "synthetic", num_frames=2, num_views=2, size=(40, 32),
                         meta={"image_size": [41, 32]})
    with pytest.raises(DatasetError, match=r"000000\.png: 40x32 pixels but dataset.json says image_size"):
        ZjuMocapDataset(fake.root)
    (fake.root / "dataset.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DatasetError, match="dataset.json: 'format'"):
        ZjuMocapDataset(fake.root)


# ---------------------------------------------------------------------------- errors


def test_missing_annots_names_the_file(tmp_path):
    fake = write_dataset(tmp_path / "seq", "23", num_frames=1, num_views=1)
    (fake.root / "annots.npy").unlink()
    with pytest.raises(DatasetError, match=r"annots\.npy: missing"):
        ZjuMocapDataset(fake.root)
    with pytest.raises(DatasetError, match="no such directory"):
        ZjuMocapDataset(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("annots", "message"),
    [
        ([1, 2, 3], "expected a dict with 'cams' and 'ims'"),
        ({"cams": {"K": [np.eye(3)], "R": [np.eye(3)], "D": [np.zeros(5)]}, "ims": []}, "'K', 'D', 'R', 'T'"),
        ({"cams": {"K": [np.eye(3)] * 2, "R": [np.eye(3)] * 2, "D": [np.zeros(5)] * 2, "T": [np.zeros(3)] * 2},
          "ims": [{"ims": ["Camera_B1/000000.jpg"]}]}, "frame 0 of 'ims' has 1 paths, but 'cams' has 2"),
        ({"cams": {"K": [np.eye(3)], "R": [np.eye(3)], "D": [np.zeros(5)], "T": [np.zeros(2)]},
          "ims": [{"ims": ["Camera_B1/000000.jpg"]}]}, "camera 0: K, R must be 3x3 and T 3 numbers"),
        ({"cams": {"K": [np.eye(3)], "R": [np.eye(3)], "D": [np.zeros(5)], "T": [np.zeros(3)]},
          "ims": [{"ims": ["Camera_B1/frame.jpg"]}]}, "do not name one frame number"),
    ],
)
def test_malformed_annots(tmp_path, annots, message):
    fake = write_dataset(tmp_path / "seq", "23", num_frames=1, num_views=1)
    np.save(fake.root / "annots.npy", np.array(annots, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=message):
        ZjuMocapDataset(fake.root)
    (fake.root / "annots.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match=r"annots\.npy: cannot be read"):
        ZjuMocapDataset(fake.root)


def test_missing_and_corrupt_frame_files_are_named(tmp_path):
    fake = write_dataset(tmp_path / "CoreView_315", "313", num_frames=3, num_views=21)
    fake.image_path(2, 5).unlink()
    fake.mask_path(1, 7).unlink()
    (fake.root / "params" / "3.npy").unlink()
    (fake.root / "vertices" / "2.npy").write_bytes(b"not numpy")
    ds = ZjuMocapDataset(fake.root, num_train_frames=2)  # frame 0 is complete: opening works
    assert ds.novel_pose_frames == [2]
    with pytest.raises(DatasetError, match=r"Camera \(6\)/CoreView_313_Camera_\(6\)_0003_.*\.jpg: missing"):
        ds.image(2, 5)
    with pytest.raises(DatasetError, match=r"mask_cihp/Camera \(8\)/CoreView_313_Camera_\(8\)_0002_.*\.png: missing"):
        ds.mask(1, 7)
    with pytest.raises(DatasetError, match=r"params/3\.npy: missing \(SMPL parameters of frame index 2\)"):
        ds.params(2)
    with pytest.raises(DatasetError, match=r"vertices/2\.npy: cannot be read as vertices"):
        ds.vertices(1)
    problems = ds.validate(deep=True)
    assert len(problems) == 4
    assert any("params/3.npy" in p for p in problems) and any("vertices/2.npy" in p for p in problems)
    with pytest.raises(IndexError):
        ds.image(3, 0)


def test_missing_first_frame_files_fail_on_open(tmp_path):
    fake = write_dataset(tmp_path / "seq", "23", num_frames=1, num_views=2)
    shutil.rmtree(fake.root / "mask_cihp" / "Camera_B2")
    with pytest.raises(DatasetError, match=r"mask_cihp/Camera_B2/000000\.png: missing"):
        ZjuMocapDataset(fake.root)
    shutil.rmtree(fake.root / "mask_cihp")
    with pytest.raises(DatasetError, match=r"mask_cihp/Camera_B1/000000\.png: missing \(mask of the first image\)"):
        ZjuMocapDataset(fake.root)


def test_bad_params_content(tmp_path):
    fake = write_dataset(tmp_path / "seq", "23", num_frames=1, num_views=1)
    np.save(fake.root / "params" / "0.npy", np.array({"poses": np.zeros((1, 72)), "Rh": np.zeros((1, 3)),
                                                      "Th": np.zeros((1, 3))}, dtype=object), allow_pickle=True)
    ds = ZjuMocapDataset(fake.root, train_views=[0])
    with pytest.raises(DatasetError, match=r"params/0\.npy: key 'shapes' is missing"):
        ds.params(0)
    np.save(fake.root / "params" / "0.npy", np.array({"poses": np.ones((1, 69)), "Rh": np.zeros((1, 3)),
                                                      "Th": np.zeros((1, 3)), "shapes": np.zeros((1, 10))},
                                                     dtype=object), allow_pickle=True)
    poses = ds.params(0).poses  # 69-d body pose: the zero global orientation is prepended
    assert poses.shape == (72,) and np.all(poses[:3] == 0) and np.all(poses[3:] == 1)
    with pytest.raises(DatasetError, match="train views"):
        ZjuMocapDataset(fake.root, train_views=[0, 5])
    with pytest.raises(DatasetError, match=r"ratio must be in \(0, 1\]"):
        ZjuMocapDataset(fake.root, ratio=2.0)


def test_check_dataset_command(tmp_path, capsys):
    fake = write_dataset(tmp_path / "seq", "23", num_frames=2, num_views=2)
    parser = argparse.ArgumentParser()
    check_dataset.add_arguments(parser)
    assert check_dataset.run(parser.parse_args([str(fake.root), "--deep"])) == 0
    out = capsys.readouterr().out
    assert '"num_views": 2' in out and "dataset complete" in out
    fake.image_path(1, 1).unlink()
    assert check_dataset.run(parser.parse_args([str(fake.root)])) == 1
    assert "missing: " + str(fake.image_path(1, 1)) in capsys.readouterr().out
    (fake.root / "annots.npy").unlink()
    assert check_dataset.run(parser.parse_args([str(fake.root)])) == 1
    assert "annots.npy: missing" in capsys.readouterr().out
