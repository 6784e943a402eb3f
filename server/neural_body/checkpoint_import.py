"""Import a checkpoint of the original Neural Body implementation (latest.pth) as a Neural Human actor folder.

The checkpoint is the dict written by the original's save_model — {'net': state_dict, 'optim', 'scheduler',
'recorder', 'epoch'} — or a bare state dict. Its sparse-conv weights are in spconv 1.x layout [k,k,k,in,out] and are
permuted to spconv 2's [out,k,k,k,in]; every key and shape is checked against the network this project builds for
the checkpoint's vertex count (rows of c.weight) and frame count (rows of latent.weight). With --motion the training
motion (SMPL parameters per trained frame) and the world box of the body are read from the dataset folder
(ZJU-MoCap layout) the checkpoint was trained on.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server.body.model import body_model_name
from server.body.skeleton import SMPL_VERTEX_COUNT
from server.data.zju_reader import DatasetError, ZjuMocapDataset, known_sequence
from server.errors import NeuralHumanError
from server.neural_body.actor import ActorManifest, Motion, save_actor
from server.neural_body.network import (
    NeuralBodyNetwork,
    expected_state_dict_shapes,
    sizes_from_state_dict,
    state_dict_problems,
)
from server.neural_body.sparse_input import ZJU_PADDING, padded_box


class CheckpointError(NeuralHumanError):
    """A checkpoint that cannot be imported; the message says what is wrong and how to fix it."""




def load_checkpoint_file(path: Path) -> Any:
    """torch.load on CPU; weights_only first, then a full unpickle (only for trusted original checkpoints)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; pass the path of the original's latest.pth")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        print(f"note: {path} holds objects beyond tensors ({str(err).splitlines()[0][:120]}); loading it with "
              "weights_only=False. Do this only for checkpoints you trust (the original implementation's own files).",
              file=sys.stderr)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err


def network_state(checkpoint: Any, source: str = "checkpoint") -> dict[str, Any]:
    """The network's state dict inside an original checkpoint ('net'), or the checkpoint itself if it is one."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("net"), dict):
        state = dict(checkpoint["net"])
    elif isinstance(checkpoint, dict) and "c.weight" in checkpoint:
        state = dict(checkpoint)
    else:
        keys = sorted(map(str, checkpoint))[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{source}: expected the original's checkpoint dict with a 'net' state dict; got {keys}")
    if state and all(k.startswith("module.") for k in state):  # saved from a DataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def convert_state_dict(state: dict[str, Any], source: str = "checkpoint") -> tuple[dict[str, Any], str]:
    """Original state dict → this project's layout; returns (state dict, weight layout found).

    Sparse-conv weights [k,k,k,in,out] (spconv 1.x) become [out,k,k,k,in] via permute(4,0,1,2,3); weights already in
    spconv 2 layout are kept. Raises CheckpointError listing missing/unexpected keys and shape mismatches.
    """
    try:
        num_vertices, num_frames = sizes_from_state_dict(state)
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}; this is not a Neural Body checkpoint") from err
    expected = expected_state_dict_shapes(num_vertices, num_frames)
    converted: dict[str, Any] = {}
    layouts: set[str] = set()
    for key, value in state.items():
        shape = expected.get(key)
        if isinstance(value, torch.Tensor) and value.ndim == 5 and shape is not None:
            out_ch, kd, kh, kw, in_ch = shape
            if tuple(value.shape) == (kd, kh, kw, in_ch, out_ch):
                value = value.permute(4, 0, 1, 2, 3).contiguous()
                layouts.add("spconv1 [k,k,k,in,out]")
            elif tuple(value.shape) == shape:
                layouts.add("spconv2 [out,k,k,k,in]")
        converted[key] = value
    if len(layouts) > 1:
        raise CheckpointError(f"{source}: sparse-conv weights mix spconv 1 and spconv 2 layouts; the file is damaged")
    problems = state_dict_problems(converted, expected)
    if problems:
        raise CheckpointError(f"{source} does not match Neural Body's network ({num_vertices} vertices, {num_frames} "
                              "frames):\n  " + "\n  ".join(problems))
    return converted, layouts.pop() if layouts else "none"


def _body_model(value: str | None, num_vertices: int) -> str:
    if value is None:
        if num_vertices != SMPL_VERTEX_COUNT:
            raise CheckpointError(f"the checkpoint has codes for {num_vertices} vertices, not SMPL's "
                                  f"{SMPL_VERTEX_COUNT}: pass --body-model demo or the body model it was trained with")
        return "smpl:neutral"
    return body_model_name(value)


def motion_from_dataset(data_dir: Path, num_frames: int, num_vertices: int, fps: float | None) -> dict[str, Any]:
    """Training motion, β, padded world box and a summary of a ZJU-layout dataset's first ``num_frames`` trained
    frames → {"motion": Motion, "shapes": (10,), "bounds": [[3],[3]], "up_axis": str, "summary": dict}."""
    try:
        dataset = ZjuMocapDataset(data_dir)  # its own training split (dataset.json or the known ZJU sequence)
        if (dataset.num_train_frames != num_frames and not dataset.is_synthetic
                and known_sequence(dataset.name) is None):  # a custom capture: the first num_frames frames
            dataset = ZjuMocapDataset(data_dir, num_train_frames=num_frames)
        frames = list(dataset.train_frames)
        if len(frames) != num_frames:
            raise CheckpointError(f"{data_dir}: the dataset gives {len(frames)} training frames but the checkpoint was "
                                  f"trained on {num_frames}; pass the dataset the checkpoint was trained on")
        params = [dataset.params(f) for f in frames]
        boxes = []
        for f in frames:
            verts = dataset.vertices(f)
            if verts.shape[0] != num_vertices:
                raise CheckpointError(f"{data_dir}: frame {f} has {verts.shape[0]} vertices but the checkpoint has "
                                      f"codes for {num_vertices}; pass the dataset the checkpoint was trained on")
            boxes.append(padded_box(verts, ZJU_PADDING))
    except DatasetError as err:
        raise CheckpointError(f"--motion: {err}") from err
    stack = np.stack(boxes)
    bounds = [stack[:, 0].min(axis=0).tolist(), stack[:, 1].max(axis=0).tolist()]
    motion = Motion(poses=np.stack([p.poses for p in params]), shapes=np.stack([p.shapes for p in params]),
                    Rh=np.stack([p.Rh for p in params]), Th=np.stack([p.Th for p in params]),
                    fps=float(fps or dataset.fps or 30.0))
    summary = {"dataset": dataset.name, "root": str(data_dir), "train_views": list(dataset.train_views),
               "frames": [frames[0], frames[-1]], "num_train_frames": len(frames)}
    return {"motion": motion, "shapes": motion.shapes[0].copy(), "bounds": bounds, "up_axis": dataset.up_axis,
            "summary": summary}


def import_checkpoint(checkpoint_path: Path, out: Path, *, name: str | None = None, body_model: str | None = None,
                      motion_dir: Path | None = None, fps: float | None = None,
                      batchnorm: str = "batch_stats") -> Path:
    """Convert an original checkpoint into an actor folder at ``out``; returns ``out``."""
    checkpoint = load_checkpoint_file(checkpoint_path)
    state, layout = convert_state_dict(network_state(checkpoint, str(checkpoint_path)), str(checkpoint_path))
    num_vertices, num_frames = sizes_from_state_dict(state)
    model = _body_model(body_model, num_vertices)
    network = NeuralBodyNetwork(num_vertices, num_frames, batchnorm=batchnorm)
    network.load_state_dict(state, strict=True)

    motion, shapes = Motion.empty(fps or 30.0), np.zeros(10, np.float32)
    bounds, up_axis, dataset_summary = None, "z", None
    if motion_dir is not None:
        found = motion_from_dataset(motion_dir, num_frames, num_vertices, fps)
        motion, shapes, bounds = found["motion"], found["shapes"], found["bounds"]
        up_axis, dataset_summary = found["up_axis"], found["summary"]
    meta = checkpoint if isinstance(checkpoint, dict) else {}
    recorder = meta.get("recorder")
    training_data = {
        "source": "original Neural Body checkpoint",
        "checkpoint": checkpoint_path.name,
        "epoch": meta.get("epoch") if isinstance(meta.get("epoch"), int) else None,
        "iterations": recorder.get("step") if isinstance(recorder, dict) else None,
        "weight_layout": layout,
        "dataset": dataset_summary,
    }
    manifest = ActorManifest(name=name or out.name, body_model=model, vertex_count=num_vertices,
                             frames_trained=num_frames, up_axis=up_axis, bounds=bounds, batchnorm=batchnorm,
                             training_data=training_data, metrics={})
    return save_actor(out, network, manifest, motion, shapes)
