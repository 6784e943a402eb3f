"""Read and check a dataset in the ZJU-MoCap layout (real ZJU-MoCap sequences or the project's synthetic ones).

Prints the dataset summary as JSON and lists every missing or corrupt file; exit status 1 when something is
wrong. The layout: annots.npy (cameras, image list), images, mask_cihp/ masks, params/{i}.npy, vertices/{i}.npy,
and for synthetic datasets dataset.json and faces.npy.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from server.data import image_ops
from server.errors import NeuralHumanError

DATASET_FORMAT = "neural-human-zju/"  # prefix of dataset.json "format" (version after the slash)
DEFAULT_TRAIN_VIEWS = (0, 6, 12, 18)
REAL_ZJU_RATIO = 0.5
MASK_DIR = "mask_cihp"
_MAP_CACHE_SIZE = 4  # undistortion maps kept per dataset (one per training view is the common case)


@dataclass(frozen=True)
class SequenceSplit:
    """Training range and unseen-pose test range of a known ZJU-MoCap sequence (Neural Body configs)."""

    begin: int
    num_train: int
    novel_start: int
    novel_count: int | None  # None: to the end of the sequence


# Neural Body's configs + supplementary material (the original's configs/zju_mocap_exp); all use frame_interval 1.
KNOWN_SEQUENCES: dict[str, SequenceSplit] = {
    "313": SequenceSplit(0, 60, 60, 1000),
    "315": SequenceSplit(0, 400, 400, 1000),
    **{seq: SequenceSplit(0, 300, 300, None) for seq in ("377", "386", "387", "392", "393", "394", "395")},
    "390": SequenceSplit(700, 300, 0, 700),
    "396": SequenceSplit(810, 540, 1350, None),
}


def known_sequence(name: str) -> str | None:
    """The ZJU-MoCap sequence number in a name like ``CoreView_313`` (None when it is not a known one)."""
    match = re.search(r"CoreView_(\d+)", name, flags=re.IGNORECASE)
    return match.group(1) if match and match.group(1) in KNOWN_SEQUENCES else None


class DatasetError(NeuralHumanError):
    """A dataset that cannot be read: the message names the file and what to do about it."""


@dataclass(frozen=True, eq=False)
class CameraView:
    """OpenCV pinhole camera of one view, at the resolution of the images the dataset returns.

    ``x_cam = R @ x_world + T`` (metres). ``D`` is the distortion of the *returned* images: zeros when the
    reader undistorts (the default), the stored coefficients otherwise.
    """

    K: np.ndarray  # (3,3) float64, pixels of the returned image, pixel centres at integer coordinates
    R: np.ndarray  # (3,3) float64
    T: np.ndarray  # (3,) float64, metres
    D: np.ndarray  # (5,) float64 (k1, k2, p1, p2, k3)
    width: int
    height: int

    def to_wire(self) -> dict[str, Any]:
        """The HTTP API camera message (DESIGN.md §4)."""
        return {"K": self.K.tolist(), "R": self.R.tolist(), "T": self.T.tolist(),
                "width": self.width, "height": self.height}


@dataclass
class FrameParams:
    """SMPL parameters of one frame in the EasyMocap/ZJU convention, float32."""

    poses: np.ndarray  # (72,)
    shapes: np.ndarray  # (10,)
    Rh: np.ndarray  # (3,)
    Th: np.ndarray  # (3,)

    def to_wire(self) -> dict[str, list[float]]:
        return {"poses": self.poses.tolist(), "shapes": self.shapes.tolist(),
                "Rh": self.Rh.tolist(), "Th": self.Th.tolist()}


@dataclass(frozen=True)
class _RawCamera:
    K: np.ndarray  # full-resolution pixels
    D: np.ndarray
    R: np.ndarray
    T: np.ndarray  # metres
    width: int  # full-resolution image size
    height: int


class ZjuMocapDataset:
    """Images, masks, cameras, SMPL parameters and vertices per frame and view of one sequence.

    ``frame`` arguments are frame indices 0..num_frames-1 into ``annots['ims']``; ``view`` arguments are camera
    indices. Images are undistorted at full resolution, then downscaled by ``ratio`` (box filter; masks nearest),
    and their background (mask 0) is set to 0, as in Neural Body's data loader.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        ratio: float | None = None,
        undistort: bool = True,
        train_views: list[int] | tuple[int, ...] | None = None,
        begin_frame: int | None = None,
        num_train_frames: int | None = None,
        frame_interval: int | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such directory; pass the folder that holds annots.npy")
        self._listings: dict[Path, frozenset[str]] = {}
        self.meta: dict[str, Any] = self._read_meta()
        self.is_synthetic = bool(self.meta)
        self.name: str = str(self.meta.get("name") or self.root.name)
        self.up_axis: str = str(self.meta.get("up_axis", "z"))
        self.fps: float | None = float(self.meta["fps"]) if "fps" in self.meta else None
        self.undistort = bool(undistort)

        annots = self._read_annots()
        raw_cams = self._parse_cameras(annots["cams"])
        self.num_views = len(raw_cams["K"])
        self._relpaths: list[list[str]] = self._parse_image_lists(annots["ims"], self.num_views)
        self.num_frames = len(self._relpaths)
        self.frame_ids: list[int] = self._parse_frame_ids()
        self._image_prefix, self._mask_strip = self._resolve_prefixes()
        self._check_meta_counts()

        self.ratio = self._choose_ratio(ratio)
        self._raw_cameras = [self._raw_camera(raw_cams, v) for v in range(self.num_views)]
        self.cameras: list[CameraView] = [self._output_camera(cam) for cam in self._raw_cameras]
        self._maps: OrderedDict[int, image_ops.UndistortMap] = OrderedDict()

        self.train_views, self.test_views = self._choose_views(train_views)
        self._choose_frames(begin_frame, num_train_frames, frame_interval)
        self._faces: np.ndarray | None = None
        self._check_first_frame()

    # ------------------------------------------------------------------ public API

    def image(self, frame: int, view: int) -> np.ndarray:
        """float32 (H,W,3) RGB in [0,1] (sRGB values), 0 where the mask is background."""
        return self.image_and_mask(frame, view)[0]

    def mask(self, frame: int, view: int) -> np.ndarray:
        """uint8 (H,W): 0 background, 1 foreground, 100 "don't care" border band."""
        self._check_index(frame, view)
        cam = self._raw_cameras[view]
        mask = image_ops.mask_with_band(self._read_foreground(frame, view))
        if self._needs_undistort(view):
            mask = image_ops.remap_nearest(mask, self._undistort_map(view))
        out = self.cameras[view]
        if (out.width, out.height) != (cam.width, cam.height):
            mask = image_ops.resize_nearest(mask, out.width, out.height)
        return mask

    def image_and_mask(self, frame: int, view: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image(frame, view), mask(frame, view))`` computed together (the mask is needed for both)."""
        self._check_index(frame, view)
        cam, out = self._raw_cameras[view], self.cameras[view]
        pixels = self._read_rgb(frame, view)
        if self._needs_undistort(view):  # sampling uint8 and scaling after equals Neural Body's /255-then-remap
            image = image_ops.remap_bilinear(pixels, self._undistort_map(view)) / np.float32(255.0)
        else:
            image = pixels.astype(np.float32) / np.float32(255.0)
        if (out.width, out.height) != (cam.width, cam.height):
            image = image_ops.resize_area(image, out.width, out.height)
        mask = self.mask(frame, view)
        image[mask == 0] = 0.0
        np.clip(image, 0.0, 1.0, out=image)
        return image, mask

    def params(self, frame: int) -> FrameParams:
        """SMPL parameters of ``params/{frame_id}.npy``."""
        path = self._frame_file("params", frame)
        data = self._load_npy(path, "SMPL parameters")
        if isinstance(data, np.ndarray) and data.dtype == object and data.shape == ():
            data = data.item()
        if not isinstance(data, dict):
            raise DatasetError(f"{path}: expected a dict with poses, shapes, Rh, Th; got {type(data).__name__}. "
                               "Regenerate the file (np.save of a dict)")
        fields: dict[str, np.ndarray] = {}
        for key, size in (("poses", 72), ("shapes", 10), ("Rh", 3), ("Th", 3)):
            if key not in data:
                raise DatasetError(f"{path}: key {key!r} is missing (has {sorted(data)}); regenerate the file")
            value = np.asarray(data[key], dtype=np.float32).reshape(-1)
            if key == "poses" and value.size == 69:  # body pose without the (zero) global orientation
                value = np.concatenate([np.zeros(3, np.float32), value])
            if value.size != size or not np.all(np.isfinite(value)):
                raise DatasetError(f"{path}: {key!r} must hold {size} finite numbers, got shape "
                                   f"{np.shape(data[key])}; regenerate the file")
            fields[key] = value
        return FrameParams(**fields)

    def vertices(self, frame: int) -> np.ndarray:
        """float32 (V,3) posed body vertices in world metres (``vertices/{frame_id}.npy``)."""
        path = self._frame_file("vertices", frame)
        verts = self._load_npy(path, "vertices")
        verts = np.asarray(verts)
        if verts.ndim != 2 or verts.shape[1] != 3 or not np.issubdtype(verts.dtype, np.number):
            raise DatasetError(f"{path}: expected a (V,3) array of vertices, got {verts.dtype} {verts.shape}; "
                               "regenerate the file")
        verts = verts.astype(np.float32)
        if not np.all(np.isfinite(verts)):
            raise DatasetError(f"{path}: holds non-finite vertices; regenerate the file")
        return verts

    def gt_mesh(self, frame: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact ground-truth posed mesh ``(vertices (V,3) float32, faces (F,3) int32)`` when faces.npy exists."""
        faces = self._load_faces()
        if faces is None:
            return None
        verts = self.vertices(frame)
        if faces.size and int(faces.max()) >= len(verts):
            raise DatasetError(f"{self.root / 'faces.npy'}: faces index vertex {int(faces.max())} but "
                               f"{self._frame_file('vertices', frame)} has {len(verts)}; the files do not match")
        return verts, faces

    def latent_index(self, frame: int) -> int:
        """Row of the per-frame appearance code: (frame − begin)//interval inside the training range, else the
        last trained code (Neural Body's rule for unseen poses)."""
        self._check_index(frame, 0)
        if self._train_lookup is not None:
            return self._train_lookup.get(frame, self.num_train_frames - 1)
        offset = frame - self.begin_frame
        if 0 <= offset < self.num_train_frames * self.frame_interval:
            return offset // self.frame_interval
        return self.num_train_frames - 1

    def summary(self) -> dict[str, Any]:
        sizes = sorted({(c.width, c.height) for c in self.cameras})
        return {
            "name": self.name,
            "root": str(self.root),
            "is_synthetic": self.is_synthetic,
            "sequence": known_sequence(self.name),
            "num_frames": self.num_frames,
            "num_views": self.num_views,
            "frame_ids": [self.frame_ids[0], self.frame_ids[-1]],
            "train_views": list(self.train_views),
            "test_views": list(self.test_views),
            "train_frames": {"begin": self.begin_frame, "interval": self.frame_interval,
                             "count": self.num_train_frames, "first": self.train_frames[0],
                             "last": self.train_frames[-1]},
            "novel_pose_frames": {"count": len(self.novel_pose_frames),
                                  "first": self.novel_pose_frames[0] if self.novel_pose_frames else None,
                                  "last": self.novel_pose_frames[-1] if self.novel_pose_frames else None},
            "image_size": list(sizes[0]) if len(sizes) == 1 else [list(s) for s in sizes],
            "ratio": self.ratio,
            "undistort": self.undistort,
            "distorted_views": [v for v in range(self.num_views) if image_ops.has_distortion(self._raw_cameras[v].D)],
            "up_axis": self.up_axis,
            "fps": self.fps,
            "has_gt_mesh": (self.root / "faces.npy").is_file(),
        }

    def validate(self, *, deep: bool = False) -> list[str]:
        """Every problem found, one line each (empty: the dataset is complete).

        Checks that all images, masks, params and vertices files exist; ``deep`` also opens every file (image
        sizes, params/vertices contents), which reads the whole dataset.
        """
        problems: list[str] = []
        self._listings.clear()  # files may have changed since the last check
        for frame in range(self.num_frames):
            problems += self._frame_problems(frame, deep)
        if self.meta.get("gt_mesh") or (self.root / "faces.npy").is_file():
            try:
                if self._load_faces() is None:
                    problems.append(f"missing: {self.root / 'faces.npy'} (dataset.json declares a ground-truth mesh)")
                elif deep:
                    self.gt_mesh(0)  # faces must index the vertices
            except DatasetError as err:
                problems.append(str(err))
        return problems

    def _frame_problems(self, frame: int, deep: bool) -> list[str]:
        """The problems of one frame's images, masks, params and vertices (see validate)."""
        problems: list[str] = []
        for view in range(self.num_views):
            for path in (self._image_path(frame, view), self._mask_path(frame, view)):
                if not self._exists(path):
                    problems.append(f"missing: {path}")
                elif deep:
                    problems += self._check_image_size(path, view)
        for kind in ("params", "vertices"):
            path = self.root / kind / f"{self.frame_ids[frame]}.npy"
            if not self._exists(path):
                problems.append(f"missing: {path}")
            elif deep:
                try:
                    self.params(frame) if kind == "params" else self.vertices(frame)
                except DatasetError as err:
                    problems.append(str(err))
        return problems

    # ------------------------------------------------------------------ opening

    def _read_meta(self) -> dict[str, Any]:
        path = self.root / "dataset.json"
        if not path.is_file():
            return {}
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DatasetError(f"{path}: not valid JSON ({err}); regenerate the dataset") from err
        if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith(DATASET_FORMAT):
            raise DatasetError(f"{path}: 'format' must start with {DATASET_FORMAT!r}, got "
                               f"{meta.get('format') if isinstance(meta, dict) else meta!r}; "
                               "this is not a Neural Human dataset description")
        return meta

    def _read_annots(self) -> dict[str, Any]:
        path = self.root / "annots.npy"
        if not path.is_file():
            raise DatasetError(f"{path}: missing. A ZJU-MoCap-layout dataset needs annots.npy (cameras and image "
                               "list) in its root; check the path or re-extract the sequence")
        try:
            annots = np.load(path, allow_pickle=True)
            annots = annots.item() if annots.dtype == object and annots.shape == () else annots
        except Exception as err:  # numpy raises many kinds for truncated/corrupt pickles
            raise DatasetError(f"{path}: cannot be read ({type(err).__name__}: {err}); the file is corrupt, "
                               "re-download or regenerate it") from err
        if not isinstance(annots, dict) or "cams" not in annots or "ims" not in annots:
            keys = sorted(annots) if isinstance(annots, dict) else type(annots).__name__
            raise DatasetError(f"{path}: expected a dict with 'cams' and 'ims', got {keys}; "
                               "the file is not a ZJU-MoCap annots.npy")
        return annots

    def _parse_cameras(self, cams: Any) -> dict[str, list[Any]]:
        path = self.root / "annots.npy"
        if not isinstance(cams, dict) or any(k not in cams for k in ("K", "D", "R", "T")):
            raise DatasetError(f"{path}: 'cams' must be a dict with lists 'K', 'D', 'R', 'T'")
        counts = {k: len(cams[k]) for k in ("K", "D", "R", "T")}
        if len(set(counts.values())) != 1 or counts["K"] == 0:
            raise DatasetError(f"{path}: camera lists disagree or are empty ({counts}); the file is corrupt")
        return cams

    def _parse_image_lists(self, ims: Any, num_views: int) -> list[list[str]]:
        path = self.root / "annots.npy"
        if not isinstance(ims, list | tuple | np.ndarray) or len(ims) == 0:
            raise DatasetError(f"{path}: 'ims' must be a non-empty list over frames of {{'ims': [path per camera]}}")
        out: list[list[str]] = []
        for frame, entry in enumerate(ims):
            paths = entry.get("ims") if isinstance(entry, dict) else None
            if paths is None or len(paths) != num_views:
                got = "no 'ims' list" if paths is None else f"{len(paths)} paths"
                raise DatasetError(f"{path}: frame {frame} of 'ims' has {got}, but 'cams' has {num_views} "
                                   "cameras; the file is corrupt or belongs to another sequence")
            out.append([str(p).replace("\\", "/") for p in paths])
        return out

    def _parse_frame_ids(self) -> list[int]:
        ids: list[int] = []
        for frame, paths in enumerate(self._relpaths):
            frame_ids = {_frame_id_from_name(p) for p in paths}
            if None in frame_ids or len(frame_ids) != 1:
                raise DatasetError(f"{self.root / 'annots.npy'}: frame {frame} has image names {paths[:3]}... that "
                                   "do not name one frame number (expected 'Camera (k)/CoreView_313_Camera_(k)_"
                                   "0001_*.jpg' or '<dir>/000000.jpg')")
            ids.append(frame_ids.pop())  # type: ignore[arg-type]
        if len(set(ids)) != len(ids):
            raise DatasetError(f"{self.root / 'annots.npy'}: 'ims' lists the same frame number twice")
        return ids

    def _resolve_prefixes(self) -> tuple[str, str]:
        """(prefix added to listed image paths, prefix stripped from them for masks): ZJU keeps image paths
        relative to the root and masks at mask_cihp/<same path>.png; synthetic datasets may list image paths
        relative to images/ and keep masks at mask_cihp/<path without 'images/'>.png."""
        rel = self._relpaths[0][0]
        image_prefix = next((p for p in ("", "images/") if (self.root / (p + rel)).is_file()), None)
        if image_prefix is None:
            raise DatasetError(f"{self.root / rel}: missing (first image listed in annots.npy); check the dataset "
                               "root or re-extract the images")
        full = image_prefix + rel
        strips = [""] + (["images/"] if full.startswith("images/") else [])
        mask_strip = next((p for p in strips if (self.root / MASK_DIR / _png(full[len(p):])).is_file()), None)
        if mask_strip is None:
            raise DatasetError(f"{self.root / MASK_DIR / _png(full)}: missing (mask of the first image); the "
                               f"masks must be in {MASK_DIR}/ with the image's relative path and a .png suffix")
        return image_prefix, mask_strip

    def _check_meta_counts(self) -> None:
        for key, value in (("num_frames", self.num_frames), ("num_views", self.num_views)):
            if key in self.meta and int(self.meta[key]) != value:
                raise DatasetError(f"{self.root / 'dataset.json'}: {key} = {self.meta[key]} but annots.npy has "
                                   f"{value}; the dataset is incomplete or the files do not belong together")

    def _choose_ratio(self, ratio: float | None) -> float:
        if ratio is None:
            ratio = float(self.meta.get("ratio", 1.0)) if self.is_synthetic else REAL_ZJU_RATIO
        if not 0.0 < float(ratio) <= 1.0:
            raise DatasetError(f"ratio must be in (0, 1] (images are only downscaled), got {ratio}")
        return float(ratio)

    def _raw_camera(self, cams: dict[str, list[Any]], view: int) -> _RawCamera:
        where = f"{self.root / 'annots.npy'}: camera {view}"
        try:
            K = np.asarray(cams["K"][view], dtype=np.float64).reshape(3, 3)
            R = np.asarray(cams["R"][view], dtype=np.float64).reshape(3, 3)
            T = np.asarray(cams["T"][view], dtype=np.float64).reshape(3) / 1000.0  # annots store millimetres
            D = np.asarray(cams["D"][view], dtype=np.float64).reshape(-1)
        except (ValueError, TypeError) as err:
            raise DatasetError(f"{where}: K, R must be 3x3 and T 3 numbers ({err}); the file is corrupt") from err
        if not all(np.all(np.isfinite(a)) for a in (K, R, T, D)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise DatasetError(f"{where}: non-finite values or non-positive focal length; the file is corrupt")
        if D.size > 5 and np.any(D[5:] != 0):
            raise DatasetError(f"{where}: {D.size} distortion coefficients; only (k1,k2,p1,p2,k3) is supported")
        D5 = np.zeros(5)
        D5[: min(5, D.size)] = D[:5]
        width, height = self._image_size(self._image_path(0, view))
        if "image_size" in self.meta and [width, height] != [int(x) for x in self.meta["image_size"]]:
            raise DatasetError(f"{self._image_path(0, view)}: {width}x{height} pixels but dataset.json says "
                               f"image_size {self.meta['image_size']}; regenerate the dataset")
        return _RawCamera(K=K, D=D5, R=R, T=T, width=width, height=height)

    def _output_camera(self, cam: _RawCamera) -> CameraView:
        width, height = image_ops.resized_size(cam.width, cam.height, self.ratio)
        K = cam.K.copy()
        K[:2] *= self.ratio  # as Neural Body: scale by ratio (not by the truncated size ratio)
        D = np.zeros(5) if self.undistort else cam.D.copy()
        arrays = [K, cam.R.copy(), cam.T.copy(), D]
        for a in arrays:
            a.setflags(write=False)
        return CameraView(*arrays, width=width, height=height)

    def _choose_views(self, train_views: Any) -> tuple[list[int], list[int]]:
        if train_views is None:
            default = [v for v in DEFAULT_TRAIN_VIEWS if v < self.num_views]  # small custom rigs keep view 0
            train_views = self.meta.get("train_views", default)
            test_views = self.meta.get("test_views")
        else:
            test_views = None
        train = [int(v) for v in train_views]
        bad = [v for v in train if not 0 <= v < self.num_views]
        if bad or len(set(train)) != len(train) or not train:
            raise DatasetError(f"train views {train} must be distinct camera indices in 0..{self.num_views - 1}")
        if test_views is None:
            test_views = [v for v in range(self.num_views) if v not in train]
        test = [int(v) for v in test_views]
        if any(not 0 <= v < self.num_views for v in test):
            raise DatasetError(f"{self.root / 'dataset.json'}: test_views {test} outside 0..{self.num_views - 1}")
        return train, test

    def _choose_frames(self, begin: int | None, count: int | None, interval: int | None) -> None:
        self._train_lookup: dict[int, int] | None = None
        sequence = known_sequence(self.name) if not self.is_synthetic else None
        split = KNOWN_SEQUENCES.get(sequence) if sequence else None
        overridden = begin is not None or count is not None or interval is not None
        meta_frames = self.meta.get("train_frames")
        if meta_frames is not None and not overridden:
            frames = [int(f) for f in meta_frames]
            if not frames or any(not 0 <= f < self.num_frames for f in frames) or len(set(frames)) != len(frames):
                raise DatasetError(f"{self.root / 'dataset.json'}: train_frames must be distinct frame indices in "
                                   f"0..{self.num_frames - 1}")
            interval = frames[1] - frames[0] if len(frames) > 1 else 1
            regular = interval >= 1 and frames == list(range(frames[0], frames[0] + len(frames) * interval, interval))
            self.begin_frame, self.num_train_frames = frames[0], len(frames)
            self.frame_interval = interval if regular else 1
            if not regular:  # an irregular list: codes follow the list order
                self._train_lookup = {f: k for k, f in enumerate(frames)}
            self.train_frames = frames
        else:
            self.begin_frame = begin if begin is not None else (split.begin if split else 0)
            self.frame_interval = interval if interval is not None else 1
            if count is None:
                count = split.num_train if split else len(range(self.begin_frame, self.num_frames,
                                                                self.frame_interval))
            self.num_train_frames = int(count)
            if self.frame_interval < 1 or self.num_train_frames < 1 or self.begin_frame < 0:
                raise DatasetError(f"begin_frame {self.begin_frame}, num_train_frames {self.num_train_frames} and "
                                   f"frame_interval {self.frame_interval} must be >= 0, >= 1 and >= 1")
            last = self.begin_frame + (self.num_train_frames - 1) * self.frame_interval
            if last >= self.num_frames:
                raise DatasetError(f"{self.name}: training frames {self.begin_frame}..{last} need {last + 1} frames "
                                   f"but annots.npy lists {self.num_frames}; pass begin_frame/num_train_frames "
                                   "that fit, or complete the download")
            self.train_frames = list(range(self.begin_frame, last + 1, self.frame_interval))

        meta_novel = self.meta.get("novel_pose_frames")
        if meta_novel is not None and not overridden:
            self.novel_pose_frames = [int(f) for f in meta_novel if 0 <= int(f) < self.num_frames]
        elif split is not None and not overridden:
            stop = self.num_frames if split.novel_count is None else split.novel_start + split.novel_count
            self.novel_pose_frames = list(range(split.novel_start, min(stop, self.num_frames)))
        elif self._train_lookup is not None:  # every frame not listed for training
            listed = set(self.train_frames)
            self.novel_pose_frames = [f for f in range(self.num_frames) if f not in listed]
        else:  # every frame outside the training range
            end = self.begin_frame + self.num_train_frames * self.frame_interval
            self.novel_pose_frames = [f for f in range(self.num_frames) if not self.begin_frame <= f < end]

    def _check_first_frame(self) -> None:
        for view in range(self.num_views):
            self._require(self._mask_path(0, view), "mask")
        self._frame_file("params", 0)
        self._frame_file("vertices", 0)

    # ------------------------------------------------------------------ files

    def _image_path(self, frame: int, view: int) -> Path:
        return self.root / (self._image_prefix + self._relpaths[frame][view])

    def _mask_path(self, frame: int, view: int) -> Path:
        full = self._image_prefix + self._relpaths[frame][view]
        return self.root / MASK_DIR / _png(full[len(self._mask_strip):])

    def _frame_file(self, kind: str, frame: int) -> Path:
        self._check_index(frame, 0)
        path = self.root / kind / f"{self.frame_ids[frame]}.npy"
        what = "SMPL parameters" if kind == "params" else "posed SMPL vertices"
        return self._require(path, f"{what} of frame index {frame}")

    def _exists(self, path: Path) -> bool:
        """Existence through cached directory listings (fast for the tens of thousands of files of a sequence)."""
        listing = self._listings.get(path.parent)
        if listing is None:
            try:
                listing = frozenset(e.name for e in os.scandir(path.parent))
            except OSError:
                listing = frozenset()
            self._listings[path.parent] = listing
        return path.name in listing

    def _require(self, path: Path, what: str) -> Path:
        if not path.is_file():
            raise DatasetError(f"{path}: missing ({what}); the dataset is incomplete: re-extract the sequence or "
                               "regenerate it, and run `python -m server check-dataset <root>` to list all gaps")
        return path

    def _load_npy(self, path: Path, what: str) -> Any:
        try:
            return np.load(path, allow_pickle=True)
        except Exception as err:  # corrupt/truncated files raise ValueError, EOFError, UnpicklingError, ...
            raise DatasetError(f"{path}: cannot be read as {what} ({type(err).__name__}: {err}); the file is "
                               "corrupt, re-download or regenerate it") from err

    def _load_faces(self) -> np.ndarray | None:
        if self._faces is None:
            path = self.root / "faces.npy"
            if not path.is_file():
                return None
            faces = np.asarray(self._load_npy(path, "mesh faces"))
            if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer) or (
                    faces.size and faces.min() < 0):
                raise DatasetError(f"{path}: expected non-negative integer faces (F,3), got {faces.dtype} "
                                   f"{faces.shape}; regenerate the dataset")
            self._faces = faces.astype(np.int32)
        return self._faces

    def _image_size(self, path: Path) -> tuple[int, int]:
        self._require(path, "image")
        try:
            with Image.open(path) as im:
                return im.size
        except OSError as err:
            raise DatasetError(f"{path}: not a readable image ({err}); re-extract it") from err

    def _check_image_size(self, path: Path, view: int) -> list[str]:
        try:
            size = self._image_size(path)
        except DatasetError as err:
            return [str(err)]
        cam = self._raw_cameras[view]
        expected = (cam.width, cam.height)
        return [] if size == expected else [f"{path}: {size[0]}x{size[1]} pixels, camera {view} images are "
                                            f"{expected[0]}x{expected[1]}"]

    def _read_pixels(self, path: Path, what: str, view: int) -> np.ndarray:
        self._require(path, what)
        try:
            with Image.open(path) as im:
                if what == "image":
                    arr = np.asarray(im.convert("RGB") if im.mode != "RGB" else im)
                else:
                    arr = np.asarray(im)
        except OSError as err:
            raise DatasetError(f"{path}: cannot be decoded ({err}); the file is corrupt, re-extract it") from err
        cam = self._raw_cameras[view]
        if arr.shape[:2] != (cam.height, cam.width):
            raise DatasetError(f"{path}: {arr.shape[1]}x{arr.shape[0]} pixels, but camera {view} images are "
                               f"{cam.width}x{cam.height}; the file does not belong to this dataset")
        return arr

    def _read_rgb(self, frame: int, view: int) -> np.ndarray:
        return self._read_pixels(self._image_path(frame, view), "image", view)

    def _read_foreground(self, frame: int, view: int) -> np.ndarray:
        labels = self._read_pixels(self._mask_path(frame, view), "mask", view)
        return labels.any(axis=2) if labels.ndim == 3 else labels != 0

    # ------------------------------------------------------------------ helpers

    def _needs_undistort(self, view: int) -> bool:
        return self.undistort and image_ops.has_distortion(self._raw_cameras[view].D)

    def _undistort_map(self, view: int) -> image_ops.UndistortMap:
        mapping = self._maps.get(view)
        if mapping is None:
            cam = self._raw_cameras[view]
            mapping = image_ops.undistort_map(cam.K, cam.D, cam.width, cam.height)
            self._maps[view] = mapping
            while len(self._maps) > _MAP_CACHE_SIZE:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(view)
        return mapping

    def _check_index(self, frame: int, view: int) -> None:
        if not 0 <= frame < self.num_frames:
            raise IndexError(f"frame index {frame} outside 0..{self.num_frames - 1} of {self.name}")
        if not 0 <= view < self.num_views:
            raise IndexError(f"view {view} outside 0..{self.num_views - 1} of {self.name}")

    def __repr__(self) -> str:
        return (f"ZjuMocapDataset({str(self.root)!r}, {self.num_frames} frames, {self.num_views} views, "
                f"ratio {self.ratio})")


def _png(relpath: str) -> str:
    return str(Path(relpath).with_suffix(".png"))


def _frame_id_from_name(relpath: str) -> int | None:
    """Frame number of an image: ``CoreView_313_Camera_(1)_0001_*.jpg`` → 1 (field 4), ``000123.jpg`` → 123."""
    stem = Path(relpath).stem
    if stem.isdigit():
        return int(stem)
    parts = Path(relpath).name.split("_")
    if len(parts) > 4 and parts[0].lower() == "coreview" and parts[4].isdigit():
        return int(parts[4])
    return None


# ---------------------------------------------------------------------- CLI
