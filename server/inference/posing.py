"""Posing for the service: one body message (any accepted convention) -> posed world vertices through the actor's
body model; the appearance code a request asks for. Errors name the request field at fault."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from server.body.params import BodyParamsError, to_easymocap
from server.errors import InvalidInput
from server.inference.actor_registry import LoadedActor


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
    return out.vertices[0].cpu().numpy(), p["Rh"][0], p["Th"][0]


def appearance_code(value: int | None, frames_trained: int) -> int:
    """The appearance code to use: the given frame, else the last trained one (Neural Body's choice for new poses)."""
    if value is None:
        return frames_trained - 1
    if not 0 <= value < frames_trained:
        raise InvalidInput(f"appearance_frame must be in 0..{frames_trained - 1} (the actor's trained frames); got "
                           f"{value}", "appearance_frame")
    return value
