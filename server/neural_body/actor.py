"""The actor folder: a trained Neural Body with its manifest and the motion it was trained on.

Layout of ``ACTOR_DIR/``:

- ``model.pt``: state dict of ``NeuralBodyNetwork`` in this project's layout (spconv-2 KRSC conv weights); floating
  tensors float32, or float16 when saved with ``weights="float16"`` (loaded back as float32).
- ``actor.json``: manifest ``{"format": "neural-human-actor/1", "name", "body_model": "demo" | "smpl:<path or
  name>", "vertex_count", "frames_trained", "up_axis": "z", "bounds": [[min xyz], [max xyz]] | null (padded world
  box of the training motion, metres), "batchnorm": "batch_stats" | "running", "training_data": {...},
  "metrics": {...}}``.
- ``motion.npz``: the captured SMPL motion: ``poses`` (N,72), ``shapes`` (N,10), ``Rh`` (N,3), ``Th`` (N,3) float32,
  ``fps`` scalar (N may be 0 when the motion is unknown, e.g. a checkpoint imported without its dataset).
- ``shapes.npy``: the body's β (10,) float32.

API:

- ``save_actor(directory, network, manifest: ActorManifest, motion: Motion, shapes) -> Path``: written into a temp
  folder next to the target, then renamed into place (an existing actor is replaced).
- ``load_actor(directory, device="cpu") -> Actor(network, manifest, motion, shapes)``: the network in eval mode with
  the manifest's BatchNorm mode. Anything missing, unreadable or inconsistent raises ``ActorError``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server.body.model import check_body_model_name
from server.errors import InvalidInput, NeuralHumanError
from server.neural_body.batchnorm_mode import set_batchnorm_mode
from server.neural_body.config import BATCHNORM_MODES
from server.neural_body.network import NeuralBodyNetwork, state_dict_problems

ACTOR_FORMAT = "neural-human-actor/1"
MODEL_FILE = "model.pt"
MANIFEST_FILE = "actor.json"
MOTION_FILE = "motion.npz"
SHAPES_FILE = "shapes.npy"
ACTOR_FILES = (MODEL_FILE, MANIFEST_FILE, MOTION_FILE, SHAPES_FILE)


class ActorError(NeuralHumanError):
    """An actor folder that cannot be saved or loaded; the message names the file and the fix."""


@dataclass
class ActorManifest:
    name: str
    body_model: str  # "demo" or "smpl:<path or name>"
    vertex_count: int
    frames_trained: int
    up_axis: str = "z"
    bounds: list[list[float]] | None = None  # [[min x,y,z], [max x,y,z]] world metres
    batchnorm: str = "batch_stats"
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format: str = ACTOR_FORMAT

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": data.pop("format"), **data}

    @classmethod
    def from_json(cls, data: Any, source: str = MANIFEST_FILE) -> ActorManifest:
        if not isinstance(data, dict):
            raise ActorError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != ACTOR_FORMAT:
            raise ActorError(f"{source}: format is {data.get('format')!r}, expected {ACTOR_FORMAT!r}; "
                             "re-export the actor with this version")
        required = {"name": (str, "a string"), "body_model": (str, "a string"), "vertex_count": (int, "an integer"),
                    "frames_trained": (int, "an integer")}
        for key, (kind, what) in required.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise ActorError(f"{source}: field {key!r} must be {what}; got {data.get(key)!r}")
        known = {f for f in cls.__dataclass_fields__}
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        manifest.validate(source)
        return manifest

    def validate(self, source: str = MANIFEST_FILE) -> None:
        if self.vertex_count < 2 or self.frames_trained < 1:
            raise ActorError(f"{source}: vertex_count and frames_trained must be positive; got "
                             f"{self.vertex_count}, {self.frames_trained}")
        try:
            check_body_model_name(self.body_model)
        except InvalidInput as err:
            raise ActorError(f"{source}: {err}") from None
        if self.up_axis not in ("x", "y", "z", "-x", "-y", "-z"):
            raise ActorError(f"{source}: up_axis must be one of x, y, z (optionally negated); got {self.up_axis!r}")
        if self.batchnorm not in BATCHNORM_MODES:
            raise ActorError(f"{source}: batchnorm must be one of {BATCHNORM_MODES}; got {self.batchnorm!r}")
        if self.bounds is not None:
            box = np.asarray(self.bounds, dtype=object)
            ok = box.shape == (2, 3) and all(isinstance(v, int | float) and math.isfinite(v) for v in box.ravel())
            if not ok or np.any(np.asarray(self.bounds, dtype=float)[0] > np.asarray(self.bounds, dtype=float)[1]):
                raise ActorError(f"{source}: bounds must be [[min x,y,z],[max x,y,z]] with min <= max; "
                                 f"got {self.bounds!r}")


@dataclass
class Motion:
    """SMPL motion in the EasyMocap/ZJU convention (float32 arrays, N frames)."""

    poses: np.ndarray  # (N,72) axis-angle, first 3 = 0
    shapes: np.ndarray  # (N,10)
    Rh: np.ndarray  # (N,3) axis-angle
    Th: np.ndarray  # (N,3) metres
    fps: float = 30.0

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])

    @classmethod
    def empty(cls, fps: float = 30.0) -> Motion:
        return cls(np.zeros((0, 72), np.float32), np.zeros((0, 10), np.float32), np.zeros((0, 3), np.float32),
                   np.zeros((0, 3), np.float32), fps)

    def validate(self, source: str = MOTION_FILE) -> None:
        n = self.poses.shape[0] if self.poses.ndim == 2 else -1
        for name, width in (("poses", 72), ("shapes", 10), ("Rh", 3), ("Th", 3)):
            value = getattr(self, name)
            if value.shape != (n, width):
                raise ActorError(f"{source}: {name} must have shape [N, {width}] with N = {max(n, 0)} frames; "
                                 f"got {list(value.shape)}")
            if not np.all(np.isfinite(value)):
                raise ActorError(f"{source}: {name} holds non-finite values")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ActorError(f"{source}: fps must be a positive number; got {self.fps}")


@dataclass
class Actor:
    network: Any  # NeuralBodyNetwork
    manifest: ActorManifest
    motion: Motion
    shapes: np.ndarray  # (10,)
    path: Path | None = None


def _check_shapes(shapes: np.ndarray, source: str) -> np.ndarray:
    arr = np.asarray(shapes)
    if arr.shape != (10,) or not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ActorError(f"{source}: shapes (β) must be 10 finite numbers; got {arr.dtype} {list(arr.shape)}")
    return arr.astype(np.float32)


def save_actor(directory: str | os.PathLike[str], network: Any, manifest: ActorManifest, motion: Motion,
               shapes: np.ndarray, weights: str = "float32") -> Path:
    """Write an actor folder atomically (temp folder next to it, then rename); returns its path. ``weights="float16"``
    stores the floating-point tensors in half precision (half the size; they load back as float32)."""
    if weights not in ("float32", "float16"):
        raise ActorError(f"weights must be 'float32' or 'float16', got {weights!r}")
    target = Path(directory)
    if manifest.vertex_count != network.num_vertices or manifest.frames_trained != network.num_train_frames:
        raise ActorError(f"manifest says {manifest.vertex_count} vertices / {manifest.frames_trained} frames but the "
                         f"network has {network.num_vertices} / {network.num_train_frames}; fix the manifest")
    manifest.validate()
    motion.validate()
    beta = _check_shapes(shapes, SHAPES_FILE)
    if target.exists() and not target.is_dir():
        raise ActorError(f"{target} exists and is not a folder; choose another output path")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
        if weights == "float16":
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        torch.save(state, tmp / MODEL_FILE)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
        np.savez(tmp / MOTION_FILE, poses=motion.poses.astype(np.float32), shapes=motion.shapes.astype(np.float32),
                 Rh=motion.Rh.astype(np.float32), Th=motion.Th.astype(np.float32),
                 fps=np.float32(motion.fps))
        np.save(tmp / SHAPES_FILE, beta)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "actor")
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_manifest(directory: str | os.PathLike[str]) -> ActorManifest:
    """Only the manifest of an actor folder (cheap; for listings)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ActorError(f"{path}: missing; {Path(directory)} is not an actor folder "
                         f"(expected {', '.join(ACTOR_FILES)})")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ActorError(f"{path}: not valid JSON ({err}); re-export the actor") from err
    return ActorManifest.from_json(data, str(path))


def _load_motion(path: Path) -> Motion:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("poses", "shapes", "Rh", "Th", "fps") if k not in data.files]
            if missing:
                raise ActorError(f"{path}: missing arrays {missing}; re-export the actor")
            motion = Motion(*(np.asarray(data[k], dtype=np.float32) for k in ("poses", "shapes", "Rh", "Th")),
                            fps=float(data["fps"]))
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ActorError(f"{path}: unreadable ({err}); re-export the actor") from err
    motion.validate(str(path))
    return motion


def load_actor(directory: str | os.PathLike[str], device: str | Any = "cpu") -> Actor:
    """Load and check an actor folder; the network is on ``device`` in eval mode."""
    root = Path(directory)
    if not root.is_dir():
        raise ActorError(f"{root}: no such actor folder")
    missing = [name for name in ACTOR_FILES if not (root / name).is_file()]
    if missing:
        raise ActorError(f"{root}: missing {', '.join(missing)}; an actor folder holds {', '.join(ACTOR_FILES)} "
                         "(re-export or re-import it)")
    manifest = read_manifest(root)
    motion = _load_motion(root / MOTION_FILE)
    try:
        shapes = _check_shapes(np.load(root / SHAPES_FILE, allow_pickle=False), str(root / SHAPES_FILE))
    except (OSError, ValueError, EOFError) as err:
        raise ActorError(f"{root / SHAPES_FILE}: unreadable ({err}); re-export the actor") from err
    try:
        state = torch.load(root / MODEL_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds (pickle, zip, runtime) for a damaged file
        raise ActorError(f"{root / MODEL_FILE}: unreadable ({type(err).__name__}: {err}); re-export the actor") from err
    if not isinstance(state, dict):
        raise ActorError(f"{root / MODEL_FILE}: expected a state dict, got {type(state).__name__}")
    network = NeuralBodyNetwork(manifest.vertex_count, manifest.frames_trained)
    expected = {key: tuple(value.shape) for key, value in network.state_dict().items()}
    problems = state_dict_problems(state, expected)
    if problems:
        raise ActorError(f"{root / MODEL_FILE} does not match {MANIFEST_FILE} (vertex_count "
                         f"{manifest.vertex_count}, frames_trained {manifest.frames_trained}): " + "; ".join(problems))
    network.load_state_dict(state, strict=True)
    set_batchnorm_mode(network, manifest.batchnorm)
    network.to(device).eval()
    return Actor(network=network, manifest=manifest, motion=motion, shapes=shapes, path=root)
