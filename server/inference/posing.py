"""Posing for the service: one body message (any accepted convention) -> posed world vertices through the actor's
body model; the appearance code a request asks for. Errors name the request field at fault."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from server.body.params import BodyParamsError, to_easymocap
from server.body.rotations import axis_angle_to_matrix
from server.errors import InvalidInput
from server.inference.actor_registry import LoadedActor
from server.inference.limits import MAX_BODY_EXTENT


def pose_body(loaded: LoadedActor, body: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One body in any accepted convention -> posed world vertices (V,3), Rh (3,), Th (3,); InvalidInput naming the
    field (``body.<name>``)."""
    model = loaded.body_model
    try:
        p = to_easymocap(body, model.pelvis_rest)
    except BodyParamsError as err:
        raise InvalidInput(str(err), f"body.{err.field}", code=err.code) from err
    if p["poses"].shape[0] != 1:
        raise InvalidInput(f"body: holds {p['poses'].shape[0]} frames; send one frame per request (use POST /v1/jobs "
                           "for many)", "body", code="invalid_body")
    t = {k: torch.from_numpy(v).to(model.device) for k, v in p.items()}
    with torch.no_grad():
        out = model(t["poses"], t["shapes"], t["Rh"], t["Th"])
    verts = out.vertices[0].cpu().numpy()
    check_extent(verts, p["Rh"][0], p["Th"][0])
    return verts, p["Rh"][0], p["Th"][0]


def check_extent(verts: np.ndarray, rh: np.ndarray, th: np.ndarray) -> None:
    """InvalidInput naming ``body.shapes`` when the posed body's box in its own frame (the frame of the feature grid)
    is not finite or exceeds ``MAX_BODY_EXTENT`` on an axis: checked before any grid is allocated."""
    rot = axis_angle_to_matrix(np.asarray(rh, np.float64)[None])[0]
    local = (np.asarray(verts, np.float64) - np.asarray(th, np.float64)) @ rot  # undo v·Rᵀ + Th
    extent = local.max(axis=0) - local.min(axis=0) if np.all(np.isfinite(local)) else np.full(3, np.inf)
    if not np.all(extent <= MAX_BODY_EXTENT):
        raise InvalidInput(f"body.shapes: the posed body spans {np.round(extent, 2).tolist()} m, more than "
                           f"{MAX_BODY_EXTENT} m on an axis; use shape and pose values a body can have",
                           "body.shapes", code="invalid_body")


def appearance_code(value: int | None, frames_trained: int) -> int:
    """The appearance code to use: the given frame, else the last trained one (Neural Body's choice for new poses)."""
    if value is None:
        return frames_trained - 1
    if not 0 <= value < frames_trained:
        raise InvalidInput(f"appearance_frame must be in 0..{frames_trained - 1} (the actor's trained frames); got "
                           f"{value}", "appearance_frame")
    return value
