# SPDX-License-Identifier: GPL-3.0-or-later
"""Server frames -> files and Blender images: ``frame_NNNNNN.npz`` (rgba + depth, DESIGN §3) becomes
``rgba_NNNNNN.png`` (8-bit RGBA, straight alpha, the server's sRGB values unchanged) and ``depth_NNNNNN.exr``
(float32 camera z-depth in metres, :data:`FAR_DEPTH` where alpha == 0), written atomically with Blender's own image
writer; then images / image sequences load as datablocks and show as camera backgrounds.

Runs on Blender's main thread only (bpy). Numbering: the NNNNNN of every file is the scene frame it belongs to.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from typing import Any

import bpy
import numpy as np

from ..core.errors import UserError

__all__ = [
    "FAR_DEPTH",
    "FrameImageError",
    "frame_number",
    "load_image",
    "read_frame_npz",
    "rgba_to_image",
    "sequence_range",
    "set_camera_background",
    "set_sequence_user",
    "write_frame_files",
]

# Depth written where the actor is transparent: far behind anything a scene holds, so a depth-aware composite
# never puts the actor there (Cycles' own background depth is 1e10, still farther).
FAR_DEPTH = 1.0e4

_FRAME_RE = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)(?P<ext>\.[A-Za-z0-9]+)$")
_FRAME_NPZ_RE = re.compile(r"^frame_(\d+)\.npz$")


class FrameImageError(UserError, ValueError):
    """A frame file or array that cannot be turned into images; the message names the file/array and the fix."""


def frame_number(path: str) -> int:
    """The frame number in a numbered file name (``frame_000012.npz`` -> 12): the last digit run before the
    extension."""
    m = _FRAME_RE.match(os.path.basename(path))
    if m is None:
        raise FrameImageError(f"{path!r} has no frame number before its extension (expected e.g. rgba_000001.png)")
    return int(m.group("digits"))


def read_frame_npz(npz_path: str) -> dict[str, np.ndarray]:
    """The arrays of a server frame npz, checked against the wire format (rgba (H,W,4); depth (H,W) optional)."""
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise FrameImageError(f"cannot read frame file {npz_path!r}: {exc}; fetch the frame from the server again")\
            from exc
    _check_frame(arrays, npz_path)
    return arrays


def _check_frame(arrays: Mapping[str, np.ndarray], where: str) -> None:
    if "rgba" not in arrays:
        raise FrameImageError(f"{where}: no 'rgba' array (has {sorted(arrays)}); request outputs ['rgba', 'depth']")
    rgba = arrays["rgba"]
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.shape[0] < 1 or rgba.shape[1] < 1:
        raise FrameImageError(f"{where}: 'rgba' must have shape (H, W, 4), got {rgba.shape}")
    depth = arrays.get("depth")
    if depth is not None and depth.shape != rgba.shape[:2]:
        raise FrameImageError(f"{where}: 'depth' shape {depth.shape} does not match rgba's (H, W) = {rgba.shape[:2]}")


def _bottom_up(pixels: np.ndarray) -> np.ndarray:
    """Row 0 = top (wire) -> Blender's row order (bottom row first), flattened float32."""
    return np.ascontiguousarray(pixels[::-1], dtype=np.float32).ravel()


def _save_image_atomically(image: Any, path: str, file_format: str) -> None:
    """Save ``image`` to ``path`` via a temp file in the same folder + os.replace. The temp name ends in the target
    extension so no writer can 'fix' it by appending one; we still check the temp file is where we asked."""
    folder, base = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(base)
    tmp = os.path.join(folder, f".{stem}.{uuid.uuid4().hex[:8]}.tmp{ext}")
    image.filepath_raw = tmp
    image.file_format = file_format
    try:
        image.save()
        if not os.path.isfile(tmp):
            raise FrameImageError(f"Blender did not write {tmp!r} while saving {path!r}; check the folder is writable")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_frame_files(npz_path: str, out_dir: str | None = None) -> dict[str, str]:
    """Write ``rgba_NNNNNN.png`` and (when the npz has depth) ``depth_NNNNNN.exr`` for ``frame_NNNNNN.npz``,
    next to it or in ``out_dir``. Returns {"rgba": path, "depth": path} (only the keys written).

    PNG: 8-bit RGBA, straight alpha, RGB = the server's sRGB-encoded values (rounded to the nearest byte).
    EXR: float32, depth in R=G=B (alpha 1), metres of camera z; FAR_DEPTH where alpha == 0.
    """
    name = os.path.basename(npz_path)
    m = _FRAME_NPZ_RE.match(name)
    if m is None:
        raise FrameImageError(f"{npz_path!r} is not named frame_NNNNNN.npz; frames are numbered by scene frame")
    digits = m.group(1)
    arrays = read_frame_npz(npz_path)
    folder = out_dir if out_dir is not None else os.path.dirname(os.path.abspath(npz_path))
    os.makedirs(folder, exist_ok=True)

    rgba = np.asarray(arrays["rgba"], dtype=np.float32)
    if not np.isfinite(rgba).all():
        raise FrameImageError(f"{npz_path}: 'rgba' holds NaN/inf values; the server sent a broken frame")
    rgba = np.clip(rgba, 0.0, 1.0)
    height, width = rgba.shape[:2]
    written: dict[str, str] = {}
    temp_images = []
    try:
        img = bpy.data.images.new(f".nh_rgba_{digits}", width, height, alpha=True, float_buffer=False)
        temp_images.append(img)
        img.colorspace_settings.name = "sRGB"
        img.alpha_mode = "STRAIGHT"
        img.pixels.foreach_set(_bottom_up(rgba))
        written["rgba"] = os.path.join(folder, f"rgba_{digits}.png")
        _save_image_atomically(img, written["rgba"], "PNG")

        if "depth" in arrays:
            depth = np.asarray(arrays["depth"], dtype=np.float32)
            far = (rgba[..., 3] <= 0.0) | ~np.isfinite(depth) | (depth <= 0.0)
            depth = np.where(far, np.float32(FAR_DEPTH), depth)
            px = np.ones((height, width, 4), dtype=np.float32)
            px[..., :3] = depth[..., None]
            dimg = bpy.data.images.new(f".nh_depth_{digits}", width, height, alpha=True, float_buffer=True)
            temp_images.append(dimg)
            dimg.colorspace_settings.name = "Non-Color"  # raw metres: no colour transform on save
            dimg.use_half_precision = False  # float32: half floats lose mm at a few metres and cap at 65504
            dimg.pixels.foreach_set(_bottom_up(px))
            written["depth"] = os.path.join(folder, f"depth_{digits}.exr")
            _save_image_atomically(dimg, written["depth"], "OPEN_EXR")
    finally:
        for img in temp_images:
            bpy.data.images.remove(img)
    return written


def sequence_range(path: str) -> tuple[int, int]:
    """(first, last) frame numbers of the contiguous run of numbered files that ``path`` belongs to, looking in its
    folder: for one member (``rgba_000007.png``) the run around that file, for a '#' pattern (``rgba_######.png``)
    the run that starts at the lowest number present."""
    folder, base = os.path.split(bpy.path.abspath(path))
    if "#" in base:
        prefix, ext = base[: base.index("#")], base[base.rindex("#") + 1:]
        member = None
    else:
        m = _FRAME_RE.match(base)
        if m is None:
            raise FrameImageError(f"{path!r} has no frame number before its extension (expected e.g. rgba_000001.png)")
        prefix, ext, member = m.group("prefix"), m.group("ext"), int(m.group("digits"))
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(ext) + "$")
    numbers = {int(mm.group(1)) for f in os.listdir(folder or ".") if (mm := pattern.match(f))}
    if not numbers or (member is not None and member not in numbers):
        raise FrameImageError(f"no file {path!r} in {folder!r}; write the frames first")
    first = last = member if member is not None else min(numbers)
    while first - 1 in numbers:
        first -= 1
    while last + 1 in numbers:
        last += 1
    return first, last


def _normpath(path: str) -> str:
    return os.path.normcase(os.path.normpath(bpy.path.abspath(path)))


def load_image(path: str, name: str | None = None, sequence: bool = False, frame_start: int | None = None,
               colorspace: str | None = None) -> Any:
    """Load ``path`` as an image datablock, or reload the datablock that already points at it.

    ``sequence=True`` makes it an image sequence (``source = 'SEQUENCE'``); ``path`` may be one member
    (``rgba_000001.png``) or a pattern with '#'s (``rgba_######.png``), where '#'s become ``frame_start`` (default:
    the lowest-numbered file present). The datablock's filepath is then the first file of the sequence; play it with
    an image user (see :func:`set_camera_background`, :func:`compositing.setup_actor_compositing`).
    ``colorspace`` defaults to 'Non-Color' for .exr files (depth data) and Blender's default (sRGB) otherwise.
    """
    base = os.path.basename(path)
    if "#" in base:
        if not sequence:
            raise FrameImageError(f"{path!r} is a '#' pattern; pass sequence=True or a real file path")
        hashes = base.count("#")
        first = frame_start if frame_start is not None else sequence_range(path)[0]
        path = os.path.join(os.path.dirname(path), base.replace("#" * hashes, f"{first:0{hashes}d}", 1))
    if not os.path.isfile(bpy.path.abspath(path)):
        raise FrameImageError(f"image file {path!r} does not exist; write the frames first (write_frame_files)")
    if colorspace is None:
        colorspace = "Non-Color" if path.lower().endswith(".exr") else None
    target = _normpath(path)
    image = next((im for im in bpy.data.images if im.source in {"FILE", "SEQUENCE"} and im.filepath
                  and _normpath(im.filepath) == target), None)
    if image is None:
        image = bpy.data.images.load(path, check_existing=False)
    source = "SEQUENCE" if sequence else "FILE"
    if image.source != source:
        image.source = source
    if colorspace is not None and image.colorspace_settings.name != colorspace:
        image.colorspace_settings.name = colorspace
    image.reload()  # pick up files rewritten since the datablock was loaded
    if name is not None and image.name != name:
        image.name = name
    return image


def rgba_to_image(name: str, rgba: np.ndarray) -> Any:
    """An in-memory image for one rendered frame (wire rgba (H,W,4), row 0 = top, sRGB values, straight alpha).

    The image is an 8-bit sRGB byte image, packed into the .blend (as PNG) so it survives save/reload without a file
    on disk; like any datablock it is saved only while something uses it (e.g. a camera background slot). An existing
    in-memory image of that name and size is overwritten in place (same datablock, same users); one of another
    size, or backed by a file, is renamed to ``<name>.old`` and left to its users.
    """
    rgba = np.asarray(rgba)
    _check_frame({"rgba": rgba}, f"image {name!r}")
    height, width = rgba.shape[:2]
    image = bpy.data.images.get(name)
    if image is not None and (tuple(image.size) != (width, height) or image.filepath or image.is_float):
        image.name = f"{name}.old"  # different size/kind: replace, leaving the old datablock to its users
        image = None
    if image is None:
        image = bpy.data.images.new(name, width, height, alpha=True, float_buffer=False)
    image.colorspace_settings.name = "sRGB"
    image.alpha_mode = "STRAIGHT"
    image.pixels.foreach_set(_bottom_up(np.clip(np.nan_to_num(rgba.astype(np.float32)), 0.0, 1.0)))
    image.update()
    image.pack()
    return image


def set_camera_background(camera_obj: Any, image: Any, frame_start: int | None = None,
                          frame_duration: int | None = None, alpha: float = 1.0,
                          display_depth: str = "FRONT") -> Any:
    """Show ``image`` as a background image of ``camera_obj`` (visible when looking through the camera) and return
    the background slot. A slot already holding an image of the same name is reused, so repeated imports do not
    stack slots.

    For sequences the slot's image user plays it: ``frame_start`` = the scene frame showing the first file
    (default: that file's own number, so file numbers equal scene frames), ``frame_duration`` = number of frames
    (default: the contiguous run of files on disk). Outside the range Blender holds the first/last frame.
    ``display_depth`` 'FRONT' draws the actor over the scene's objects (the default 'BACK' would hide it behind
    every floor and wall).
    """
    if camera_obj is None or getattr(camera_obj, "type", None) != "CAMERA":
        kind = getattr(camera_obj, "type", type(camera_obj).__name__)
        raise FrameImageError(f"set_camera_background needs a camera object, got {kind}")
    cam = camera_obj.data
    slot = next((bg for bg in cam.background_images if bg.image is not None and bg.image.name == image.name), None)
    if slot is None:
        slot = cam.background_images.new()
    slot.source = "IMAGE"
    slot.image = image
    slot.alpha = float(alpha)
    slot.display_depth = display_depth
    slot.show_background_image = True
    cam.show_background_images = True
    if image.source == "SEQUENCE":
        set_sequence_user(slot.image_user, image, frame_start, frame_duration)
    return slot


def set_sequence_user(user: Any, image: Any, frame_start: int | None = None, frame_duration: int | None = None) -> None:
    """Point an ImageUser (background slot) or a compositor Image node at the numbered sequence ``image``.

    Blender plays file number ``scene_frame - frame_start + 1 + frame_offset`` (clamped to the duration), so with
    offset = first_number - 1 the file shown at scene frame ``frame_start`` is the first file.
    """
    first = frame_number(image.filepath)  # the datablock's own file is the sequence's first frame
    last = sequence_range(image.filepath)[1]
    user.frame_offset = first - 1
    user.frame_start = first if frame_start is None else int(frame_start)
    user.frame_duration = (last - first + 1) if frame_duration is None else int(frame_duration)
    user.use_cyclic = False
    user.use_auto_refresh = True
