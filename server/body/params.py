"""SMPL parameter conventions, converted in one place to EasyMocap/ZJU-MoCap's (poses, shapes, Rh, Th).

Accepted bodies (each value a list or array, one frame (D,) or a batch (B, D); one-frame values broadcast):

- EasyMocap / ZJU-MoCap: ``poses`` (72; the first 3 rotate about the pelvis joint, usually 0), ``Rh`` (3),
  ``Th`` (3), ``shapes`` (10). World vertices = SMPL(poses, shapes) · R(Rh)ᵀ + Th (about the SMPL origin).
- AMASS / SMPL: ``global_orient`` (3), ``body_pose`` (69, or 63 for SMPL-X/SMPL-H's 21 body joints), ``transl``
  or ``trans`` (3, default 0), ``betas`` or ``shapes``. global_orient rotates about the pelvis joint J0(β):
  v = R(v0 − J0) + J0 + transl, hence Rh = global_orient and Th = transl + J0 − R·J0.
- AMASS npz style: ``poses`` of 72 (SMPL), 156 (SMPL-H) or 165 (SMPL-X) with ``trans``/``transl``: the first 66
  values are the global orient and 21 body joints; SMPL's hand joints (22, 23) are then zero.
  The same ``poses`` lengths are accepted with ``Rh``/``Th``.

Shapes: ``shapes``/``betas`` of any length 1..300; the first 10 are used (missing ones are 0, as in SMPL, whose
coefficients beyond 10 belong to components this project does not use). Omitted shapes mean the mean body.

Ranges (what the body model can mean; beyond them the mesh degenerates and the posed body's box, hence the feature
grid's memory, grows without bound): every shape coefficient within ±``MAX_SHAPE`` (SMPL's PCA is fitted on people
within about ±3 standard deviations), every axis-angle value (poses, Rh, global_orient, body_pose) within
±``MAX_ANGLE`` (2π: every rotation has an axis-angle of norm ≤ π), translations (Th, transl, trans) within
±``MAX_TRANSLATION`` metres. The values are checked again after the float32 cast (always finite then).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from server.body.rotations import axis_angle_to_matrix
from server.errors import InvalidInput

NUM_BETAS = 10
MAX_BETAS = 300
POSE_LENGTHS = (72, 156, 165)
MAX_BATCH = 100_000
MAX_SHAPE = 5.0
MAX_ANGLE = 2 * np.pi
MAX_TRANSLATION = 1000.0  # metres
# the largest magnitude accepted per field (betas as shapes, trans/transl as Th, orient/pose as angles)
RANGES = {"shapes": MAX_SHAPE, "betas": MAX_SHAPE, "Th": MAX_TRANSLATION, "transl": MAX_TRANSLATION,
          "trans": MAX_TRANSLATION}


class BodyParamsError(InvalidInput):
    """Bad body parameters; ``field`` names the offending field of the body, the message says how to fix it."""

    code = "invalid_body"

    def __init__(self, field: str, message: str):
        super().__init__(f"body.{field}: {message}", field)


def _field(body: Mapping[str, Any], name: str, lengths: tuple[int, ...], hint: str) -> np.ndarray:
    value = body[name]
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BodyParamsError(name, f"must be numbers, a list of {hint}, or a batch of such lists") from None
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] not in lengths or arr.shape[0] == 0:
        want = " or ".join(str(n) for n in lengths)
        raise BodyParamsError(name, f"expected {want} numbers ({hint}) per frame, got shape {tuple(np.shape(value))}")
    if arr.shape[0] > MAX_BATCH:
        raise BodyParamsError(name, f"at most {MAX_BATCH} frames per request, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise BodyParamsError(name, "contains NaN or infinity; send finite numbers")
    limit = RANGES.get(name, MAX_ANGLE)
    if np.any(np.abs(arr) > limit):
        worst = float(arr.flat[int(np.argmax(np.abs(arr)))])
        unit = "metres" if limit == MAX_TRANSLATION else "radians" if limit == MAX_ANGLE else "standard deviations"
        raise BodyParamsError(name, f"values must be within ±{limit:g} ({unit}); got {worst:g}")
    return arr


def _shapes(body: Mapping[str, Any]) -> np.ndarray:
    if "shapes" in body and "betas" in body:
        raise BodyParamsError("betas", "give either 'shapes' or 'betas', not both")
    name = "shapes" if "shapes" in body else "betas" if "betas" in body else None
    if name is None:
        return np.zeros((1, NUM_BETAS))
    arr = _field(body, name, tuple(range(1, MAX_BETAS + 1)), "shape coefficients")
    out = np.zeros((arr.shape[0], NUM_BETAS))
    n = min(NUM_BETAS, arr.shape[1])
    out[:, :n] = arr[:, :n]
    return out


def _poses72(body: Mapping[str, Any]) -> np.ndarray:
    arr = _field(body, "poses", POSE_LENGTHS, "axis-angle values: 72 SMPL, 156 SMPL-H or 165 SMPL-X")
    if arr.shape[1] == 72:
        return arr
    return np.concatenate([arr[:, :66], np.zeros((arr.shape[0], 6))], axis=1)


def _broadcast(fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sizes = {k: v.shape[0] for k, v in fields.items()}
    batch = max(sizes.values())
    for k, n in sizes.items():
        if n not in (1, batch):
            raise BodyParamsError(k, f"has {n} frames but another field has {batch}; give every field the same "
                                     "number of frames (or one frame, which is repeated)")
    return {k: np.broadcast_to(v, (batch,) + v.shape[1:]) for k, v in fields.items()}


def _convention(body: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """(EasyMocap?, the AMASS keys present); BodyParamsError for a body that mixes the conventions."""
    if not isinstance(body, Mapping):
        raise BodyParamsError("body", f"must be an object with SMPL fields, got {type(body).__name__}")
    easymocap = "Rh" in body or "Th" in body
    amass_keys = [k for k in ("global_orient", "body_pose", "transl", "trans") if k in body]
    if easymocap and amass_keys:
        raise BodyParamsError(amass_keys[0], "mixes conventions: use either poses/Rh/Th (EasyMocap) or "
                                             "global_orient/body_pose/transl (AMASS), not both")
    if "transl" in body and "trans" in body:
        raise BodyParamsError("trans", "give either 'trans' or 'transl', not both")
    return easymocap, amass_keys


def _amass_pose(body: Mapping[str, Any], amass_keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(global orient (B,3), body pose (B,69)) of an AMASS/SMPL(-X) body (SMPL-X's 21 body joints padded to 23)."""
    if "poses" in body and "body_pose" in body:
        raise BodyParamsError("body_pose", "give either 'poses' or 'global_orient'+'body_pose', not both")
    if "poses" in body:
        if not amass_keys:
            raise BodyParamsError("Th", "'poses' needs 'Rh' and 'Th' (EasyMocap) or 'trans'/'transl' (AMASS)")
        p = _poses72(body)
        return p[:, :3], p[:, 3:]
    if "body_pose" in body:
        if "global_orient" not in body:
            raise BodyParamsError("global_orient", "missing: 'body_pose' needs 'global_orient' (3, axis-angle)")
        orient = _field(body, "global_orient", (3,), "axis-angle")
        rest = _field(body, "body_pose", (69, 63), "axis-angle values of 23 (SMPL) or 21 (SMPL-X) body joints")
        if rest.shape[1] == 63:
            rest = np.concatenate([rest, np.zeros((rest.shape[0], 6))], axis=1)
        return orient, rest
    raise BodyParamsError("poses", "missing: give poses/Rh/Th (EasyMocap) or global_orient/body_pose/transl "
                                   "(AMASS)")


def to_easymocap(body: Mapping[str, Any], pelvis_rest: Callable[[np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
    """Any accepted convention -> {'poses' (B,72), 'shapes' (B,10), 'Rh' (B,3), 'Th' (B,3)} float32.

    ``pelvis_rest(shapes (B,10)) -> (B,3)`` gives the body model's rest pelvis joint J0(β), needed for AMASS input.
    """
    easymocap, amass_keys = _convention(body)
    shapes = _shapes(body)

    if easymocap:
        for name in ("poses", "Rh", "Th"):
            if name not in body:
                raise BodyParamsError(name, "missing: the EasyMocap convention needs poses (72), Rh (3) and Th (3)")
        f = _broadcast({"poses": _poses72(body), "shapes": shapes, "Rh": _field(body, "Rh", (3,), "axis-angle"),
                        "Th": _field(body, "Th", (3,), "translation in metres")})
        return _float32(f)

    orient, rest = _amass_pose(body, amass_keys)
    tname = "transl" if "transl" in body else "trans" if "trans" in body else None
    transl = _field(body, tname, (3,), "translation in metres") if tname else np.zeros((1, 3))
    f = _broadcast({"global_orient": orient, "body_pose": rest, "shapes": shapes, tname or "transl": transl})
    orient, rest, shapes, transl = (f[k] for k in ("global_orient", "body_pose", "shapes", tname or "transl"))
    # AMASS rotates about the pelvis, EasyMocap about the SMPL origin: Th = transl + J0 - R(orient)·J0
    j0 = np.asarray(pelvis_rest(np.ascontiguousarray(shapes, dtype=np.float32)), dtype=np.float64).reshape(-1, 3)
    rot = axis_angle_to_matrix(orient)
    th = transl + j0 - np.einsum("bij,bj->bi", rot, j0)
    poses = np.concatenate([np.zeros((len(rest), 3)), rest], axis=1)
    return _float32({"poses": poses, "shapes": shapes, "Rh": orient, "Th": th})


def _float32(fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fields as contiguous float32, checked finite after the cast (the ranges keep them finite; this is the
    guard should a range ever be widened)."""
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in fields.items()}
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            raise BodyParamsError(k, "does not fit a 32-bit float (too large); send smaller numbers")
    return out
