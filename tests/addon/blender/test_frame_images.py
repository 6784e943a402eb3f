"""frame_images with real bpy: npz frames -> PNG/EXR files (read back through Blender), image (sequence) loading and
reloading, in-memory packed images that survive a save, camera background slots."""

from __future__ import annotations

import os

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender

from neural_human_addon.blender import frame_images  # noqa: E402
from neural_human_addon.blender.frame_images import FAR_DEPTH, FrameImageError  # noqa: E402


def _frame(seed: int, height: int = 6, width: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgba = rng.random((height, width, 4)).astype(np.float32)
    rgba[0, :, 3] = 0.0  # a transparent top row
    rgba[:, 0, 3] = 0.0
    depth = np.where(rgba[..., 3] > 0, rng.uniform(1.0, 9.0, (height, width)), 0.0).astype(np.float32)
    return rgba, depth


def _write_npz(folder, frame: int, rgba: np.ndarray, depth: np.ndarray | None = None) -> str:
    path = os.path.join(folder, f"frame_{frame:06d}.npz")
    arrays = {"rgba": rgba} if depth is None else {"rgba": rgba, "depth": depth}
    np.savez(path, **arrays)
    return path


def _pixels_top_down(image) -> np.ndarray:
    w, h = image.size
    px = np.empty(w * h * image.channels, dtype=np.float32)
    image.pixels.foreach_get(px)
    return px.reshape(h, w, image.channels)[::-1]


def test_write_frame_files_round_trips_through_blender(blender_scene, tmp_path):
    rgba, depth = _frame(0)
    npz = _write_npz(tmp_path, 12, rgba, depth)
    images_before = set(bpy.data.images)

    paths = frame_images.write_frame_files(npz)

    assert paths == {"rgba": str(tmp_path / "rgba_000012.png"), "depth": str(tmp_path / "depth_000012.exr")}
    assert sorted(os.listdir(tmp_path)) == ["depth_000012.exr", "frame_000012.npz", "rgba_000012.png"]  # no temps
    assert set(bpy.data.images) == images_before  # the temporary datablocks are gone

    png = bpy.data.images.load(paths["rgba"])
    exr = bpy.data.images.load(paths["depth"])
    exr.colorspace_settings.name = "Non-Color"
    got = _pixels_top_down(png)
    assert got.shape == rgba.shape
    # straight alpha, sRGB values stored as given: bytes = round(value * 255)
    np.testing.assert_array_equal(np.round(got * 255), np.round(rgba * 255))
    got_depth = _pixels_top_down(exr)[..., 0]
    assert exr.is_float
    np.testing.assert_array_equal(got_depth[rgba[..., 3] > 0], depth[rgba[..., 3] > 0])  # float32 exact
    assert (got_depth[rgba[..., 3] == 0] == FAR_DEPTH).all()


def test_write_frame_files_out_dir_and_rgba_only(blender_scene, tmp_path):
    rgba, _ = _frame(1)
    npz = _write_npz(tmp_path, 3, rgba)
    out = tmp_path / "images"
    paths = frame_images.write_frame_files(npz, out_dir=str(out))
    assert paths == {"rgba": str(out / "rgba_000003.png")}
    assert os.listdir(out) == ["rgba_000003.png"]


def test_write_frame_files_rejects_bad_input(blender_scene, tmp_path):
    rgba, depth = _frame(2)
    np.savez(tmp_path / "render.npz", rgba=rgba)
    with pytest.raises(FrameImageError, match="frame_NNNNNN.npz"):
        frame_images.write_frame_files(str(tmp_path / "render.npz"))
    bad = _write_npz(tmp_path, 1, rgba, depth[:, :-1])
    with pytest.raises(FrameImageError, match="'depth' shape"):
        frame_images.write_frame_files(bad)
    bad = _write_npz(tmp_path, 2, rgba[..., :3])
    with pytest.raises(FrameImageError, match=r"\(H, W, 4\)"):
        frame_images.write_frame_files(bad)


def test_load_image_reloads_the_same_datablock(blender_scene, tmp_path):
    rgba, depth = _frame(3)
    paths = frame_images.write_frame_files(_write_npz(tmp_path, 1, rgba, depth))
    img = frame_images.load_image(paths["rgba"], name="actor rgba")
    dimg = frame_images.load_image(paths["depth"])
    assert img.name == "actor rgba" and img.source == "FILE"
    assert dimg.colorspace_settings.name == "Non-Color"
    assert img.colorspace_settings.name == "sRGB"

    rgba2 = rgba.copy()
    rgba2[..., 0] = 1.0 - rgba2[..., 0]
    frame_images.write_frame_files(_write_npz(tmp_path, 1, rgba2, depth))
    again = frame_images.load_image(paths["rgba"])
    assert again == img
    assert sum(1 for i in bpy.data.images if i.filepath == img.filepath) == 1
    np.testing.assert_array_equal(np.round(_pixels_top_down(again) * 255), np.round(rgba2 * 255))

    with pytest.raises(FrameImageError, match="does not exist"):
        frame_images.load_image(str(tmp_path / "rgba_000099.png"))


def test_sequence_background_and_in_memory_image(blender_scene, tmp_path):
    for frame in (5, 6, 7):
        frame_images.write_frame_files(_write_npz(tmp_path, frame, *_frame(frame)))
    assert frame_images.sequence_range(str(tmp_path / "rgba_000006.png")) == (5, 7)
    assert frame_images.sequence_range(str(tmp_path / "rgba_######.png")) == (5, 7)
    seq = frame_images.load_image(str(tmp_path / "rgba_######.png"), sequence=True)
    assert seq.source == "SEQUENCE" and os.path.basename(seq.filepath) == "rgba_000005.png"

    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    blender_scene.collection.objects.link(cam)
    slot = frame_images.set_camera_background(cam, seq, alpha=0.7)
    assert cam.data.show_background_images and slot.image == seq
    assert slot.alpha == pytest.approx(0.7) and slot.display_depth == "FRONT"
    user = slot.image_user
    # file number = scene frame - frame_start + 1 + offset: scene frame 5 shows file 5
    assert (user.frame_start, user.frame_offset, user.frame_duration) == (5, 4, 3)
    # a second import reuses the slot and can shift the sequence
    again = frame_images.set_camera_background(cam, seq, frame_start=1, frame_duration=2)
    assert len(cam.data.background_images) == 1 and again == slot
    assert (user.frame_start, user.frame_offset, user.frame_duration) == (1, 4, 2)

    # in-memory frame, packed: survives saving the .blend (while a background slot uses it)
    rgba, _ = _frame(9)
    mem = frame_images.rgba_to_image("nh test frame", rgba)
    assert mem.packed_file is not None
    rgba[..., 1] = 0.25  # overwrite in place: same datablock, repacked
    assert frame_images.rgba_to_image("nh test frame", rgba) == mem
    frame_images.set_camera_background(cam, mem)
    assert len(cam.data.background_images) == 2
    blend = str(tmp_path / "saved.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend, copy=True)
    with bpy.data.libraries.load(blend) as (src, dst):
        assert "nh test frame" in src.images
        dst.images = ["nh test frame"]
    loaded = dst.images[0]
    try:
        assert loaded.packed_file is not None and tuple(loaded.size) == (9, 6)
        np.testing.assert_array_equal(np.round(_pixels_top_down(loaded) * 255), np.round(rgba * 255))
    finally:
        bpy.data.images.remove(loaded)
        for lib in list(bpy.data.libraries):
            if bpy.path.abspath(lib.filepath) == blend:
                bpy.data.libraries.remove(lib)

    with pytest.raises(FrameImageError, match="camera object"):
        frame_images.set_camera_background(None, seq)
