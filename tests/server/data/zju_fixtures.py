"""Small fake datasets in the ZJU-MoCap layout, written with numpy + PIL, for reader tests.

Three naming schemes: "313" (CoreView_313/315: ``Camera (k)/CoreView_313_Camera_(k)_0001_*.jpg``, 1-based
frame numbers, 21 cameras), "23" (``Camera_Bk/000000.jpg``, 0-based, 23 cameras) and "synthetic" (the
project's own: dataset.json, ``images/{view:02d}/{frame:06d}.png``, faces.npy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from neural_human_addon.core.camera import look_at_extrinsics

NUM_VERTS = 40


@dataclass
class FakeDataset:
    root: Path
    relpaths: list[list[str]]  # per frame, per view, relative to the root
    frame_ids: list[int]
    K: list[np.ndarray]  # full-resolution intrinsics
    R: list[np.ndarray]
    T_m: list[np.ndarray]  # metres (annots.npy holds millimetres)
    D: list[np.ndarray]
    params: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # by frame id
    vertices: dict[int, np.ndarray] = field(default_factory=dict)
    faces: np.ndarray | None = None

    def image_path(self, frame: int, view: int) -> Path:
        return self.root / self.relpaths[frame][view]

    def mask_path(self, frame: int, view: int) -> Path:
        rel = self.relpaths[frame][view]
        if rel.startswith("images/"):
            rel = rel[len("images/"):]
        return self.root / "mask_cihp" / Path(rel).with_suffix(".png")

    def decoded_image(self, frame: int, view: int) -> np.ndarray:
        """The stored image as PIL decodes it (JPEG is lossy), uint8 (H,W,3)."""
        with Image.open(self.image_path(frame, view)) as im:
            return np.asarray(im.convert("RGB"))

    def foreground(self, frame: int, view: int) -> np.ndarray:
        with Image.open(self.mask_path(frame, view)) as im:
            return np.asarray(im) != 0


def look_at_camera(center: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV world-to-camera (R, T) of a camera at ``center`` looking at ``target``, world z up."""
    return look_at_extrinsics(center, target)


def relpath(scheme: str, frame: int, view: int) -> str:
    if scheme == "313":
        return f"Camera ({view + 1})/CoreView_313_Camera_({view + 1})_{frame + 1:04d}_2019-08-23_16-08-50.592.jpg"
    if scheme == "23":
        return f"Camera_B{view + 1}/{frame:06d}.jpg"
    if scheme == "synthetic":
        return f"images/{view:02d}/{frame:06d}.png"
    raise ValueError(scheme)


def write_dataset(
    root: Path,
    scheme: str,
    *,
    num_frames: int = 3,
    num_views: int | None = None,
    size: tuple[int, int] = (64, 48),
    distortion: np.ndarray | None = None,
    files_for_frames: int | None = None,
    seed: int = 0,
    meta: dict | None = None,
) -> FakeDataset:
    """Write a fake dataset; ``files_for_frames`` limits the image/mask/params/vertices files to the first
    frames (annots.npy still lists ``num_frames``)."""
    rng = np.random.default_rng(seed)
    num_views = num_views or {"313": 21, "23": 23, "synthetic": 4}[scheme]
    width, height = size
    root.mkdir(parents=True, exist_ok=True)
    Ks, Rs, Ts, Ds = [], [], [], []
    for view in range(num_views):
        angle = 2 * np.pi * view / num_views
        R, T = look_at_camera(np.array([3 * np.cos(angle), 3 * np.sin(angle), 1.2]), np.array([0.0, 0.0, 0.9]))
        focal = 1.2 * width * (1 + 0.05 * rng.standard_normal())
        Ks.append(np.array([[focal, 0, width / 2 + rng.uniform(-2, 2)], [0, focal, height / 2 + rng.uniform(-2, 2)],
                            [0, 0, 1]]))
        Rs.append(R)
        Ts.append(T)
        Ds.append(np.zeros(5) if distortion is None else np.asarray(distortion, dtype=np.float64))
    relpaths = [[relpath(scheme, f, v) for v in range(num_views)] for f in range(num_frames)]
    frame_ids = [f + 1 if scheme == "313" else f for f in range(num_frames)]
    annots = {
        "cams": {"K": Ks, "R": Rs, "T": [t[:, None] * 1000.0 for t in Ts], "D": [d[:, None] for d in Ds]},
        "ims": [{"ims": paths, "kpts2d": None} for paths in relpaths],
    }
    np.save(root / "annots.npy", np.array(annots, dtype=object), allow_pickle=True)
    fake = FakeDataset(root, relpaths, frame_ids, Ks, Rs, Ts, Ds)

    yy, xx = np.mgrid[0:height, 0:width]
    for frame in range(num_frames if files_for_frames is None else files_for_frames):
        for view in range(num_views):
            image_path = fake.image_path(frame, view)
            image_path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(image_path)
            cy, cx = height / 2 + rng.uniform(-3, 3), width / 2 + rng.uniform(-3, 3)
            inside = ((yy - cy) / (0.3 * height)) ** 2 + ((xx - cx) / (0.2 * width)) ** 2 <= 1.0
            # CIHP masks hold part labels; the synthetic ones 255/0
            labels = np.where(inside, 255 if scheme == "synthetic" else rng.integers(1, 20, inside.shape), 0)
            mask_path = fake.mask_path(frame, view)
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(labels.astype(np.uint8)).save(mask_path)
        fid = frame_ids[frame]
        poses = rng.normal(0, 0.2, (1, 72))
        poses[0, :3] = 0
        params = {"poses": poses, "Rh": rng.normal(0, 0.3, (1, 3)), "Th": np.array([[fid, 0.1, 0.9]]),
                  "shapes": rng.normal(0, 1, (1, 10))}
        verts = (rng.normal(0, 0.3, (NUM_VERTS, 3)) + [fid, 0, 0]).astype(np.float32)
        for kind, value in (("params", np.array(params, dtype=object)), ("vertices", verts)):
            (root / kind).mkdir(exist_ok=True)
            np.save(root / kind / f"{fid}.npy", value, allow_pickle=True)
        fake.params[fid], fake.vertices[fid] = params, verts

    if scheme == "synthetic":
        fake.faces = rng.integers(0, NUM_VERTS, (60, 3)).astype(np.int32)
        np.save(root / "faces.npy", fake.faces)
        description = {
            "format": "neural-human-zju/1", "name": "fake-synthetic", "preset": "test", "body_model": "demo",
            "num_frames": num_frames, "num_views": num_views, "image_size": [width, height], "ratio": 1.0,
            "up_axis": "z", "fps": 24, "train_views": [0, 2], "test_views": [1, 3],
            "train_frames": list(range(0, num_frames - 1)), "novel_pose_frames": [num_frames - 1],
            "gt_mesh": "vertices+faces.npy",
        }
        description.update(meta or {})
        (root / "dataset.json").write_text(json.dumps(description))
    return fake


def replace_image(fake: FakeDataset, frame: int, view: int, pixels: np.ndarray, labels: np.ndarray) -> None:
    """Overwrite one image and its mask with exact (lossless PNG-encoded) content, keeping the file names."""
    Image.fromarray(pixels).save(fake.image_path(frame, view), format="PNG")
    Image.fromarray(labels.astype(np.uint8)).save(fake.mask_path(frame, view))
