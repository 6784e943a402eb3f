"""Request and response models of API v1 (DESIGN.md §4, docs/API.md); field names are the contract. Validation errors
name the field. Response models let /openapi.json document the answers; they allow extra fields, so adding a field
to an answer never drops it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from neural_human_addon.core.camera import PinholeCamera
from server.inference.jobs import FrameSpec, JobSpec
from server.inference.limits import (
    DEFAULT_VOXEL_SIZE,
    MAX_JOB_FRAMES,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_VOXEL_SIZE,
    MIN_VOXEL_SIZE,
)

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Output = Literal["rgba", "depth"]


def _matrix(value: list[list[float]], name: str) -> list[list[float]]:
    if len(value) != 3 or any(len(row) != 3 for row in value):
        raise ValueError(f"{name} must be a 3x3 matrix (3 rows of 3 numbers); got {[len(r) for r in value]} "
                         f"per row in {len(value)} rows")
    return value


class Camera(BaseModel):
    """OpenCV pinhole: K in pixels of width×height, world-to-camera x_cam = R·x_world + T."""

    model_config = ConfigDict(extra="ignore")

    K: list[list[FiniteFloat]]
    R: list[list[FiniteFloat]]
    T: list[FiniteFloat]
    width: StrictInt = Field(ge=1, le=MAX_SIDE)
    height: StrictInt = Field(ge=1, le=MAX_SIDE)

    @field_validator("K")
    @classmethod
    def _check_k(cls, k: list[list[float]]) -> list[list[float]]:
        _matrix(k, "K")
        if not (k[0][0] > 0 and k[1][1] > 0):
            raise ValueError(f"focal lengths K[0][0] and K[1][1] must be positive pixels; got {k[0][0]}, {k[1][1]}")
        if k[1][0] != 0 or k[2][0] != 0 or k[2][1] != 0 or k[2][2] != 1:
            raise ValueError("K must be upper triangular with K[2] = [0, 0, 1] (a pinhole intrinsic matrix)")
        return k

    @field_validator("R")
    @classmethod
    def _check_r(cls, r: list[list[float]]) -> list[list[float]]:
        _matrix(r, "R")
        m = np.asarray(r, dtype=np.float64)
        if not np.allclose(m @ m.T, np.eye(3), atol=1e-3) or np.linalg.det(m) <= 0:
            raise ValueError("R must be a rotation matrix (orthonormal, determinant +1); check the camera conversion")
        return r

    @field_validator("T")
    @classmethod
    def _check_t(cls, t: list[float]) -> list[float]:
        if len(t) != 3:
            raise ValueError(f"T must be 3 numbers (metres); got {len(t)}")
        return t

    @model_validator(mode="after")
    def _check_size(self) -> Camera:
        if self.width * self.height > MAX_PIXELS:
            raise ValueError(f"width x height = {self.width * self.height} pixels exceeds the limit of {MAX_PIXELS}")
        return self

    def to_pinhole(self) -> PinholeCamera:
        return PinholeCamera(np.asarray(self.K, np.float64), np.asarray(self.R, np.float64),
                             np.asarray(self.T, np.float64), self.width, self.height)


class RenderRequest(BaseModel):
    body: dict[str, Any]
    camera: Camera
    outputs: list[Output] = Field(default_factory=lambda: ["rgba", "depth"], min_length=1, max_length=2)
    appearance_frame: StrictInt | None = Field(default=None, ge=0)


class MeshRequest(BaseModel):
    body: dict[str, Any]
    voxel_size: FiniteFloat = Field(default=DEFAULT_VOXEL_SIZE, ge=MIN_VOXEL_SIZE, le=MAX_VOXEL_SIZE)
    colors: bool = True
    appearance_frame: StrictInt | None = Field(default=None, ge=0)


JobOutput = Literal["rgba", "depth", "mesh"]


class JobFrame(BaseModel):
    frame: StrictInt = Field(ge=0)
    body: dict[str, Any]
    camera: Camera | None = None


class JobRequest(BaseModel):
    """Many frames of one actor; render outputs need a camera per frame. Frames are computed in order."""

    actor: str
    outputs: list[JobOutput] = Field(min_length=1, max_length=3)
    frames: list[JobFrame] = Field(min_length=1, max_length=MAX_JOB_FRAMES)
    voxel_size: FiniteFloat = Field(default=DEFAULT_VOXEL_SIZE, ge=MIN_VOXEL_SIZE, le=MAX_VOXEL_SIZE)
    colors: bool = True
    appearance_frame: StrictInt | None = Field(default=None, ge=0)

    def to_spec(self) -> JobSpec:
        frames = [FrameSpec(f.frame, f.body, f.camera.to_pinhole() if f.camera is not None else None)
                  for f in self.frames]
        return JobSpec(self.actor, list(self.outputs), frames, self.voxel_size, self.colors, self.appearance_frame)


# --- answers ------------------------------------------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(_Answer):
    code: str
    message: str
    field: str | None = None


class ErrorAnswer(_Answer):
    """Every error: 4xx for bad input, 404 for unknown ids, 401 for a missing or wrong token, 503 when out of GPU
    memory or busy, 507 when the disk is full."""

    error: ErrorBody


class DeviceInfo(_Answer):
    type: str  # cuda | cpu
    name: str | None = None
    free_memory_bytes: int | None = None
    total_memory_bytes: int | None = None


class Health(_Answer):
    status: str
    api_version: str
    server_version: str
    device: DeviceInfo
    loaded_actors: list[str]
    queue_waiting: int
    feature_cache: dict[str, Any]  # entries, bytes, budget_bytes, hits, misses
    memory: dict[str, Any]  # max_loaded, min_free_gpu_bytes, lru_order, evictions, oom_retries


class ActorInfo(_Answer):
    id: str
    name: str
    frames: int
    body_model: str
    up_axis: str
    bounds: Any = None  # [[min x, y, z], [max x, y, z]] in actor world metres, or null
    loaded: bool


class ActorList(_Answer):
    actors: list[ActorInfo]


class Skeleton(_Answer):
    names: list[str]  # the 24 SMPL joints
    parents: list[int]  # 24, -1 for the root
    joints: list[list[float]]  # (24, 3) rest joints of the actor's shape, metres
    shapes: list[float]
    up_axis: str


class MotionFrame(_Answer):
    poses: list[float]  # 72, axis-angle
    shapes: list[float]
    Rh: list[float]  # noqa: N815 (wire name)
    Th: list[float]  # noqa: N815 (wire name)


class Motion(_Answer):
    fps: float
    frames: list[MotionFrame]


class Unloaded(_Answer):
    id: str
    unloaded: bool
    loaded_actors: list[str]


class JobStatus(_Answer):
    id: str
    actor: str
    state: Literal["queued", "running", "done", "cancelled", "failed"]
    done: int
    total: int
    eta_s: float | None = None
    elapsed_s: float
    errors: dict[str, str]  # frame number -> message
    frames_done: list[int]
    message: str | None = None
