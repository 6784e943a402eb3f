"""Render a synthetic multi-view dataset of the demo body in the ZJU-MoCap layout (Blender Cycles on the CPU).

The textured demo body is posed with a captured SMPL-X clip and procedural motions (walking in a circle, arm
raises while turning, and held-out squats and kicks), placed in a Z-up world standing on z = 0, and rendered
from a ring of known cameras. Written: annots.npy (cameras K, D, R, T in millimetres; image list),
images/{view:02d}/{frame:06d}.png (RGB on black), mask_cihp/images/{view:02d}/{frame:06d}.png (255 where the Cycles
alpha > 0.5), params/{i}.npy (EasyMocap SMPL parameters), vertices/{i}.npy and faces.npy (the exact posed mesh),
dataset.json (splits: train/test views, train/novel-pose frames). Presets: 'tiny' (seconds, for tests) and
'demo'. The dataset is rendered into a temporary folder beside --out and moved into place at the end, so an
interrupted or failed run leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from neural_human_addon.core.camera import (
    BlenderCameraSettings,
    CameraError,
    PinholeCamera,
    blender_to_pinhole,
    look_at_matrix_world,
    render_size,
)
from server.body.model import load_body_model
from server.data import synthetic_poses as poses_lib
from server.data.image_ops import save_png
from server.data.synthetic_poses import Motion
from server.data.synthetic_scene import RenderSettings, SyntheticScene, encode_srgb
from server.data.synthetic_texture import body_texture
from server.errors import NeuralHumanError

DATASET_FORMAT = "neural-human-zju/1"


class MakeDataError(NeuralHumanError):
    """A misconfigured run (bad output folder, missing body model, bad camera rig); the message says the fix."""


def _tiny_motion() -> tuple[Motion, Motion]:
    clip = poses_lib.amass_clip()
    train = poses_lib.concatenate([poses_lib.walk_circle(16).subsample(2), clip.subsample(2)])
    novel = poses_lib.concatenate([poses_lib.squat_and_reach(5).select([2]), poses_lib.kick_and_wave(5).select([2])])
    return train, novel


def _demo_motion() -> tuple[Motion, Motion]:
    train = poses_lib.concatenate([
        poses_lib.walk_circle(32, radius=0.45, steps_per_circle=8),
        poses_lib.amass_clip(heading0=0.3, turn=np.pi).subsample(24),  # captured motion, turning half a turn
        poses_lib.arm_raises(12, heading0=np.pi, turn=np.pi),
    ])
    novel = poses_lib.concatenate([poses_lib.squat_and_reach(8), poses_lib.kick_and_wave(8)])
    return train, novel


@dataclass(frozen=True)
class Preset:
    """What to render: camera ring, image size, render quality and the motion (train frames, novel-pose frames)."""

    name: str
    image_size: tuple[int, int]  # (W, H)
    num_views: int
    train_views: tuple[int, ...]
    ring_radius: float  # metres from the world origin
    heights: tuple[float, ...]  # camera heights, cycled over the views
    lenses: tuple[float, ...]  # focal lengths in mm (36 mm sensor), cycled over the views
    samples: int
    texture_size: int
    motion: Callable[[], tuple[Motion, Motion]] = field(repr=False)
    fps: float = 30.0
    target_height: float = 0.9  # cameras look at (0, 0, target_height)


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", (64, 64), 4, (0, 2), 3.0, (1.2, 1.5), (40.0,), samples=64, texture_size=512,
                   motion=_tiny_motion),
    "demo": Preset("demo", (384, 384), 8, (0, 2, 4, 6), 3.0, (1.0, 1.6, 1.3, 1.9), (38.0, 40.0, 42.0),
                   samples=48, texture_size=1024, motion=_demo_motion),
}


def ring_rig(preset: Preset) -> list[BlenderCameraSettings]:
    """The preset's cameras: evenly spaced on a ring around the origin, heights and lenses varied per view."""
    rig = []
    w, h = preset.image_size
    for view in range(preset.num_views):
        angle = 2 * np.pi * view / preset.num_views - np.pi / 2  # view 0 in front of the body (at −Y)
        radius = preset.ring_radius * (1.0 + 0.03 * ((view % 3) - 1))
        location = (radius * np.cos(angle), radius * np.sin(angle), preset.heights[view % len(preset.heights)])
        target = (0.0, 0.0, preset.target_height)
        rig.append(BlenderCameraSettings(
            lens=preset.lenses[view % len(preset.lenses)], sensor_width=36.0, sensor_height=24.0,
            sensor_fit="AUTO", resolution_x=w, resolution_y=h, matrix_world=look_at_matrix_world(location, target)))
    return rig


# ---------------------------------------------------------------------------- output folder handling


def _check_output(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MakeDataError(f"--out {out} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MakeDataError(f"--out {out} exists and is not empty; pass --force to replace it, or choose another "
                            "folder")


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


# ---------------------------------------------------------------------------- writing


def _frame_relpath(view: int, frame: int) -> str:
    return f"{view:02d}/{frame:06d}.png"


def _annots(cameras: Sequence[PinholeCamera], num_frames: int) -> dict[str, Any]:
    return {
        "cams": {
            "K": [np.asarray(c.K, dtype=np.float64) for c in cameras],
            "D": [np.zeros((5, 1)) for _ in cameras],
            "R": [np.asarray(c.R, dtype=np.float64) for c in cameras],
            "T": [np.asarray(c.T, dtype=np.float64).reshape(3, 1) * 1000.0 for c in cameras],  # millimetres
        },
        "ims": [{"ims": ["images/" + _frame_relpath(v, f) for v in range(len(cameras))]} for f in range(num_frames)],
    }


def _check_rig(rig: Sequence[BlenderCameraSettings]) -> tuple[int, int]:
    if not rig:
        raise MakeDataError("the camera rig is empty; give at least one camera")
    for view, settings in enumerate(rig):
        try:
            blender_to_pinhole(settings)
        except CameraError as err:
            raise MakeDataError(f"camera {view} of the rig: {err}") from None
    sizes = {render_size(s) for s in rig}
    if len(sizes) != 1:
        raise MakeDataError(f"every camera of a rig must render the same image size, got {sorted(sizes)}; "
                            "set one resolution and percentage for all views")
    return sizes.pop()


def generate(preset: Preset | str, out: str | Path, *, force: bool = False,
             rig: Sequence[BlenderCameraSettings] | None = None, train_views: Sequence[int] | None = None,
             samples: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Render the dataset into ``out`` (see the module docstring); returns the dataset.json contents.

    ``rig`` replaces the preset's camera ring (all cameras must share one render size) and ``train_views`` its
    training views (default: the preset's that exist in the rig, else view 0).
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise MakeDataError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    if samples is not None:
        if samples < 1:
            raise MakeDataError(f"samples must be at least 1, got {samples}")
        preset = replace(preset, samples=int(samples))
    out = Path(out).absolute()
    _check_output(out, force)
    rig = list(rig) if rig is not None else ring_rig(preset)
    width, height = _check_rig(rig)
    views = list(range(len(rig)))
    train = [v for v in (train_views if train_views is not None else preset.train_views) if v in views] or [0]
    if train_views is not None and sorted(set(train_views)) != sorted(train):
        raise MakeDataError(f"train views {list(train_views)} must be distinct camera indices in 0..{len(rig) - 1}")
    test = [v for v in views if v not in train]

    if importlib.util.find_spec("bpy") is None:
        raise MakeDataError("make-data renders with Blender's Python module: install it with `pip install "
                            "bpy==5.0.1` (Python 3.11), as `make setup` does")
    try:
        model = load_body_model()
        train_motion, novel_motion = preset.motion()
    except FileNotFoundError as err:
        raise MakeDataError(str(err)) from None
    if model.face_uvs is None:
        raise MakeDataError("the body model has no UVs (face_uvs); rebuild it with `python -m server "
                            "build-demo-body`")
    motion = poses_lib.concatenate([train_motion, novel_motion])
    params = poses_lib.to_world_params(model, motion)
    num_frames = len(motion)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        meta = _render_dataset(tmp, preset, model, params, rig, (width, height), train, test,
                               list(range(len(train_motion))), list(range(len(train_motion), num_frames)), progress)
        _move_into_place(tmp, out)
    except BaseException:  # Ctrl-C included: leave no partial dataset behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _render_dataset(root: Path, preset: Preset, model: Any, params: dict[str, np.ndarray],
                    rig: Sequence[BlenderCameraSettings], size: tuple[int, int], train_views: list[int],
                    test_views: list[int], train_frames: list[int], novel_frames: list[int],
                    progress: bool) -> dict[str, Any]:
    start = time.perf_counter()
    faces = np.ascontiguousarray(model.faces, dtype=np.int32)
    rest = model.v_template.cpu().numpy()
    texture = body_texture(rest, model.rest_joints().cpu().numpy(), model.vertex_parts, faces, model.face_uvs,
                           preset.texture_size)
    work = root / ".render"
    work.mkdir()
    scene = SyntheticScene(faces, model.face_uvs, rest, texture, RenderSettings(samples=preset.samples), work)
    try:
        cameras = [scene.set_camera(settings) for settings in rig]  # read back through the add-on's camera module
        _write_frames(root, scene, params, faces, rig, preset.name, progress)
    finally:
        scene.close()
    shutil.rmtree(work, ignore_errors=True)
    num_frames = len(params["poses"])

    np.save(root / "annots.npy", _annots(cameras, num_frames), allow_pickle=True)
    meta = {
        "format": DATASET_FORMAT, "name": f"synthetic_{preset.name}", "preset": preset.name, "body_model": "demo",
        "num_frames": num_frames, "num_views": len(rig), "image_size": [int(size[0]), int(size[1])], "ratio": 1.0,
        "up_axis": "z", "fps": preset.fps, "train_views": train_views, "test_views": test_views,
        "train_frames": train_frames, "novel_pose_frames": novel_frames, "gt_mesh": "vertices+faces.npy",
        "camera_source": "Blender camera settings per view", "samples": preset.samples,
        "render_seconds": round(time.perf_counter() - start, 2),
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def _write_frames(root: Path, scene: Any, params: dict[str, np.ndarray], faces: np.ndarray,
                  rig: Sequence[BlenderCameraSettings], name: str, progress: bool) -> None:
    """SMPL parameters, GT meshes and the rendered images + masks of every frame and view."""
    num_frames = len(params["poses"])
    (root / "params").mkdir()
    (root / "vertices").mkdir()
    for frame in range(num_frames):
        np.save(root / "params" / f"{frame}.npy", {k: params[k][frame][None].astype(np.float32)
                                                    for k in ("poses", "Rh", "Th", "shapes")}, allow_pickle=True)
        np.save(root / "vertices" / f"{frame}.npy", params["vertices"][frame].astype(np.float32))
    np.save(root / "faces.npy", faces)
    with tqdm(total=num_frames * len(rig), desc=f"make-data {name}", unit="img", file=sys.stderr,
              disable=not progress) as bar:
        for frame in range(num_frames):
            scene.set_vertices(params["vertices"][frame])
            for view, settings in enumerate(rig):
                scene.set_camera(settings)
                rgba = scene.render()
                rel = _frame_relpath(view, frame)
                rgb = np.round(encode_srgb(rgba[..., :3]) * 255).astype(np.uint8)  # premultiplied: black bg
                save_png(root / "images" / rel, rgb)
                save_png(root / "mask_cihp" / "images" / rel, np.where(rgba[..., 3] > 0.5, 255, 0).astype(np.uint8))
                bar.update(1)


# ---------------------------------------------------------------------------- CLI
