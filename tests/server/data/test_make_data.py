"""`make-data`: the synthetic ZJU-MoCap-layout dataset rendered with real Blender Cycles, checked against its own
ground truth (cameras written through the camera module, GT meshes, SMPL parameters) and the project's reader."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from neural_human_addon.core.camera import PinholeCamera, project

pytest.importorskip("bpy")
pytestmark = [pytest.mark.blender, pytest.mark.slow]


def _annots(root: Path) -> dict:
    return np.load(root / "annots.npy", allow_pickle=True).item()


def _cameras(root: Path) -> list[PinholeCamera]:
    cams = _annots(root)["cams"]
    meta = json.loads((root / "dataset.json").read_text())
    w, h = meta["image_size"]
    return [PinholeCamera(K=np.asarray(K), R=np.asarray(R), T=np.asarray(T).reshape(3) / 1000.0, width=w, height=h)
            for K, R, T in zip(cams["K"], cams["R"], cams["T"], strict=True)]


def _mask(root: Path, view: int, frame: int) -> np.ndarray:
    return np.asarray(Image.open(root / "mask_cihp" / "images" / f"{view:02d}" / f"{frame:06d}.png"))


def _coverage(vertices: np.ndarray, faces: np.ndarray, cam: PinholeCamera, ss: int = 16) -> np.ndarray:
    """(H,W) fraction of each pixel covered by the GT mesh, from ss×ss samples per pixel (pixel (i,j) spans
    [j−½, j+½]×[i−½, i+½]): the exact counterpart of a box-filtered Cycles alpha."""
    uv, depth = project(vertices, cam)
    assert np.all(depth > 0)
    tri = uv[faces] * ss + (ss - 1) / 2.0  # in sample units: sample (r, c) sits at pixel (c+½)/ss − ½, ...
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    tri, area = tri[area != 0], area[area != 0]
    lo = np.maximum(np.ceil(tri.min(axis=1)), 0).astype(np.int64)
    hi = np.minimum(np.floor(tri.max(axis=1)), [cam.width * ss - 1, cam.height * ss - 1]).astype(np.int64)
    w, h = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0), np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    n = w * h
    idx = np.repeat(np.arange(len(tri)), n)  # one row per sample in each triangle's bounding box
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    x, y = lo[idx, 0] + k % w[idx], lo[idx, 1] + k // w[idx]
    t, s = tri[idx], np.sign(area[idx])
    inside = np.ones(len(idx), dtype=bool)
    for i, j in ((0, 1), (1, 2), (2, 0)):  # same side of all three edges (either winding)
        edge = (t[:, j, 0] - t[:, i, 0]) * (y - t[:, i, 1]) - (t[:, j, 1] - t[:, i, 1]) * (x - t[:, i, 0])
        inside &= s * edge >= 0
    samples = np.zeros((cam.height * ss, cam.width * ss), dtype=bool)
    samples[y[inside], x[inside]] = True
    return samples.reshape(cam.height, ss, cam.width, ss).mean(axis=(1, 3))


def _vertex_weights(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Surface area around each vertex (a third of its faces'), normalised: dense regions count as they cover."""
    e1, e2 = vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]]
    area = 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)
    weights = np.zeros(len(vertices))
    np.add.at(weights, faces.ravel(), np.repeat(area / 3.0, 3))
    return weights / weights.sum()


def test_layout_and_file_formats(synthetic_tiny):
    root = synthetic_tiny
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["format"] == "neural-human-zju/1" and meta["preset"] == "tiny" and meta["up_axis"] == "z"
    assert (meta["num_views"], meta["num_frames"], meta["image_size"]) == (4, 6, [64, 64])
    assert sorted(meta["train_views"] + meta["test_views"]) == list(range(4))
    assert sorted(meta["train_frames"] + meta["novel_pose_frames"]) == list(range(6))
    assert set(meta["train_frames"]).isdisjoint(meta["novel_pose_frames"])
    annots = _annots(root)
    cams = annots["cams"]
    assert [len(cams[k]) for k in ("K", "D", "R", "T")] == [4] * 4
    for K, D, R, T in zip(cams["K"], cams["D"], cams["R"], cams["T"], strict=True):
        assert np.shape(K) == (3, 3) and np.shape(R) == (3, 3) and np.shape(T) == (3, 1) and np.shape(D) == (5, 1)
        assert not np.any(D)
        assert 2500 < np.linalg.norm(-np.asarray(R).T @ T) < 3500  # camera centres ~3 m away: T is in millimetres
    assert len(annots["ims"]) == 6
    assert annots["ims"][2]["ims"][3] == "images/03/000002.png"
    faces = np.load(root / "faces.npy")
    assert faces.dtype == np.int32 and faces.ndim == 2 and faces.shape[1] == 3
    for frame in range(6):
        params = np.load(root / "params" / f"{frame}.npy", allow_pickle=True).item()
        shapes = {k: (v.shape, v.dtype) for k, v in params.items()}
        assert shapes == {"poses": ((1, 72), np.float32), "Rh": ((1, 3), np.float32), "Th": ((1, 3), np.float32),
                          "shapes": ((1, 10), np.float32)}
        assert not np.any(params["poses"][0, :3])
        verts = np.load(root / "vertices" / f"{frame}.npy")
        assert verts.dtype == np.float32 and verts.shape[1] == 3 and faces.max() < len(verts)
        for view in range(4):
            image = np.asarray(Image.open(root / annots["ims"][frame]["ims"][view]))
            mask = _mask(root, view, frame)
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8
            assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}
            assert image[mask == 255].mean() > 30  # a lit, textured body


def test_world_is_z_up_with_the_body_on_the_floor(synthetic_tiny):
    import torch

    from server.body.model import load_body_model

    model = load_body_model()
    for frame in range(6):
        params = np.load(synthetic_tiny / "params" / f"{frame}.npy", allow_pickle=True).item()
        verts = np.load(synthetic_tiny / "vertices" / f"{frame}.npy")
        # the stored vertices are exactly the body model posed with the stored parameters (EasyMocap convention)
        with torch.no_grad():
            out = model(*(torch.from_numpy(params[k]) for k in ("poses", "shapes", "Rh", "Th")))
        np.testing.assert_allclose(out.vertices[0].numpy(), verts, atol=2e-5)
        assert abs(float(verts[:, 2].min())) < 1e-4  # soles on z = 0
        joints = out.joints[0].numpy()
        assert joints[15, 2] - joints[0, 2] > 0.4  # head above pelvis: Z is up
        assert np.linalg.norm(joints[0, :2]) < 0.8  # near the origin, where the cameras look


def test_novel_pose_frames_hold_poses_not_seen_in_training(synthetic_tiny):
    meta = json.loads((synthetic_tiny / "dataset.json").read_text())
    poses = {f: np.load(synthetic_tiny / "params" / f"{f}.npy", allow_pickle=True).item()["poses"][0]
             for f in range(meta["num_frames"])}
    for novel in meta["novel_pose_frames"]:
        nearest = min(np.abs(poses[novel] - poses[t]).max() for t in meta["train_frames"])
        assert nearest > 0.5  # radians: some joint differs a lot from every training pose


@pytest.mark.parametrize("dataset", ["synthetic_tiny", "synthetic_odd_rig"])
def test_gt_mesh_projected_with_written_cameras_matches_masks(dataset, request):
    root = request.getfixturevalue(dataset)
    meta = json.loads((root / "dataset.json").read_text())
    faces = np.load(root / "faces.npy")
    cameras = _cameras(root)
    worst_hit, worst_iou = 1.0, 1.0
    for frame in range(meta["num_frames"]):
        verts = np.load(root / "vertices" / f"{frame}.npy")
        weights = _vertex_weights(verts, faces)
        for view, cam in enumerate(cameras):
            where = f"{root.name} view {view} frame {frame}"
            mask = _mask(root, view, frame) > 0
            uv, _ = project(verts, cam)
            pix = np.round(uv).astype(np.int64)
            inside_image = (pix[:, 0] >= 0) & (pix[:, 0] < cam.width) & (pix[:, 1] >= 0) & (pix[:, 1] < cam.height)
            assert inside_image.all(), f"{where}: the body leaves the image"
            # vertices within a pixel of the mask (a 64-px image has 0.3-px fingers; a vertex on the outline
            # rounds outside half the time), weighted by the surface they stand for
            near_mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3)))[pix[:, 1], pix[:, 0]]
            hit = float((weights * near_mask).sum())
            assert hit >= 0.99, f"{where}: only {hit:.3f} of the body surface projects onto the mask"
            coverage = _coverage(verts, faces, cam)
            silhouette = coverage > 0.5  # the mask is Cycles' coverage (alpha) > 0.5
            iou = (silhouette & mask).sum() / (silhouette | mask).sum()
            assert iou >= 0.97, f"{where}: silhouette IoU {iou:.3f}"
            image = np.asarray(Image.open(root / "images" / f"{view:02d}" / f"{frame:06d}.png"))
            background = ~ndimage.binary_dilation(coverage > 0)  # a pixel away from any geometry
            assert not image[background].any(), f"{where}: the background is not black"
            worst_hit, worst_iou = min(worst_hit, hit), min(worst_iou, iou)
    print(f"{root.name}: worst surface-in-mask {worst_hit:.4f}, worst silhouette IoU {worst_iou:.4f}")


def test_odd_rig_cameras_are_what_was_asked(synthetic_odd_rig):
    from neural_human_addon.core.camera import blender_to_pinhole
    from tests.server.data.conftest import odd_camera_rig

    meta = json.loads((synthetic_odd_rig / "dataset.json").read_text())
    assert meta["image_size"] == [160, 112] and meta["train_views"] == [0, 1] and meta["test_views"] == [2]
    for written, settings in zip(_cameras(synthetic_odd_rig), odd_camera_rig(), strict=True):
        expected = blender_to_pinhole(settings)
        np.testing.assert_allclose(written.K, expected.K, rtol=1e-5)
        np.testing.assert_allclose(written.R, expected.R, atol=1e-5)
        np.testing.assert_allclose(written.T, expected.T, atol=1e-5)
    K1 = _cameras(synthetic_odd_rig)[1].K
    assert K1[1, 1] == pytest.approx(K1[0, 0] * 1.25)  # stretched pixels: fy = fx * pixel_aspect_x / pixel_aspect_y


def test_the_project_reader_reads_it(synthetic_tiny):
    from server.data.zju_reader import ZjuMocapDataset

    ds = ZjuMocapDataset(synthetic_tiny)
    assert ds.validate(deep=True) == []
    assert (ds.num_views, ds.num_frames, ds.ratio) == (4, 6, 1.0)
    assert ds.train_views == [0, 2] and ds.novel_pose_frames == [4, 5]
    np.testing.assert_allclose(ds.cameras[1].T, _cameras(synthetic_tiny)[1].T, atol=1e-9)


# ---------------------------------------------------------------------------- refusals and interruption


def test_cli_refuses_a_non_empty_output_without_force(tmp_path, capsys):
    from server.commands.cli import main

    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["make-data", "--preset", "tiny", "--out", str(out), "--quiet"]) == 1
    assert "--force" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_bad_rigs_are_refused_before_rendering(tmp_path):
    from neural_human_addon.core.camera import BlenderCameraSettings
    from server.data.make_data import MakeDataError, generate

    with pytest.raises(MakeDataError, match="same image size"):
        generate("tiny", tmp_path / "a", rig=[BlenderCameraSettings(resolution_x=64, resolution_y=64),
                                              BlenderCameraSettings(resolution_x=64, resolution_y=48)])
    with pytest.raises(MakeDataError, match="camera 1 of the rig.*orthographic"):
        generate("tiny", tmp_path / "d", rig=[BlenderCameraSettings(), BlenderCameraSettings(camera_type="ORTHO")])
    with pytest.raises(MakeDataError, match="unknown preset"):
        generate("huge", tmp_path / "b")
    with pytest.raises(MakeDataError, match="train views"):
        generate("tiny", tmp_path / "c", train_views=[0, 9])
    assert list(tmp_path.iterdir()) == []


def _one_frame_preset():
    from server.data.make_data import PRESETS

    def motion():
        train, novel = PRESETS["tiny"].motion()
        return train.select([0]), novel.select([0])

    return replace(PRESETS["tiny"], image_size=(24, 24), num_views=2, train_views=(0,), samples=1,
                   texture_size=64, motion=motion)


def test_interrupted_run_leaves_nothing_behind(tmp_path, monkeypatch):
    from server.data import synthetic_scene
    from server.data.make_data import generate

    real_render = synthetic_scene.SyntheticScene.render
    calls = []

    def render_then_interrupt(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_render(self)

    monkeypatch.setattr(synthetic_scene.SyntheticScene, "render", render_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        generate(_one_frame_preset(), tmp_path / "out", progress=False)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []  # neither --out nor the temporary folder beside it


def test_force_replaces_an_existing_dataset(tmp_path):
    import bpy

    from server.data.make_data import generate

    scenes_before, meshes_before = set(bpy.data.scenes.keys()), set(bpy.data.meshes.keys())
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    meta = generate(_one_frame_preset(), out, force=True, progress=False)
    assert meta["num_frames"] == 2 and meta["image_size"] == [24, 24]
    assert not (out / "stale.txt").exists() and (out / "annots.npy").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # the render scene and its datablocks are gone again: other bpy users in the process keep their state
    assert set(bpy.data.scenes.keys()) == scenes_before and set(bpy.data.meshes.keys()) == meshes_before
