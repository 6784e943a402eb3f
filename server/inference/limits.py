"""Defaults and limits of the inference service (docs/API.md states them). Torch-free: ``serve --help`` and the HTTP
request models read them without loading the model code."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

BUNDLED_ACTORS_DIR = Path(__file__).resolve().parents[1] / "actors"  # server/actors: the shipped demo actor(s)
DEFAULT_MIN_FREE_GPU_MB = 2048  # GPU memory kept free for rendering when an actor loads
DEFAULT_CACHE_MB = 512  # per-pose feature cache

MAX_SIDE = 4096
MAX_PIXELS = 4096 * 2304  # 4K UHD-ish; larger frames go through tiles/jobs, not one request
MIN_VOXEL_SIZE = 0.002  # metres; finer grids take minutes per pose and gigabytes
MAX_VOXEL_SIZE = 0.2
DEFAULT_VOXEL_SIZE = 0.005
MAX_MESH_GRID_POINTS = 50_000_000
MAX_JOB_FRAMES = 20_000  # a frame is ~2 KB of JSON: the largest job fits MAX_BODY_BYTES
MAX_BODY_BYTES = 64 * 2**20  # request body (413 beyond); parsed JSON takes ~10x its size in memory
# The posed body's box in its own frame (Rh, Th removed), per axis: the body model within the parameter ranges of
# server/body/params.py reaches 2.45 m (shapes at ±5, arms out); the 5 mm feature grid over a 3 m box is at most
# 640 cells per axis (sparse_input.grid_shape), which bounds the renderer's memory.
MAX_BODY_EXTENT = 3.0  # metres


def grid_points(extent: tuple[float, float, float], voxel_size: float) -> int:
    """Points of a marching-cubes grid with spacing ``voxel_size`` (metres) over a box of ``extent`` (metres)."""
    return math.prod(math.ceil(e / voxel_size) + 1 for e in extent)


@dataclass(frozen=True)
class JobPolicy:
    """How many jobs a server keeps and for how long, and how many may wait (docs/API.md states the defaults)."""

    keep: int = 200  # jobs kept (ended ones beyond are removed, oldest first)
    max_age_s: float = 7 * 24 * 3600.0  # ended jobs older than this are removed
    max_queued: int = 16  # jobs queued or running at once
    recent_s: float = 600.0  # a job that ended less than this ago is never removed
