"""Request models of API v1 (DESIGN.md §4); field names are the contract. Validation errors name the field."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

MAX_SIDE = 4096
MAX_PIXELS = 4096 * 2304  # 4K UHD-ish; larger frames go through tiles/jobs, not one request
MIN_VOXEL_SIZE = 0.002  # metres; finer grids take minutes per pose and gigabytes
MAX_VOXEL_SIZE = 0.2
DEFAULT_VOXEL_SIZE = 0.005
MAX_MESH_GRID_POINTS = 50_000_000

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
        import numpy as np

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


def check_appearance_frame(value: int | None, frames_trained: int) -> int:
    """The appearance code to use: the given frame, else the last trained one (Neural Body's choice for new poses)."""
    from server.http.errors import ApiError

    if value is None:
        return frames_trained - 1
    if not 0 <= value < frames_trained:
        raise ApiError(422, "invalid_request", f"appearance_frame must be in 0..{frames_trained - 1} (the actor's "
                       f"trained frames); got {value}", "appearance_frame")
    return value


def grid_points(extent: tuple[float, float, float], voxel_size: float) -> int:
    return math.prod(math.ceil(e / voxel_size) + 1 for e in extent)


MAX_JOB_FRAMES = 100_000
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
