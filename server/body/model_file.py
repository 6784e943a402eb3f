"""Read body-model files in SMPL's layout: licensed SMPL .pkl (chumpy or plain), SMPL .npz, the demo body .npz.

SMPL's own .pkl files hold ``v_template``, ``shapedirs``, ``posedirs``, ``J_regressor`` (scipy sparse),
``weights``, ``kintree_table`` and ``f``; several of these are pickled chumpy objects, and chumpy does not import
on modern numpy. The unpickler here maps every chumpy class to a stub that keeps the pickled state, from which
the stored array (chumpy's ``x``) is taken — chumpy itself is never needed.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

REQUIRED = ("v_template", "shapedirs", "J_regressor", "weights", "kintree_table", "f")


@dataclass
class ModelArrays:
    name: str
    v_template: np.ndarray  # (V,3)
    shapedirs: np.ndarray  # (V,3,S)
    posedirs: np.ndarray | None  # (V,3,P) or None (no pose blend shapes)
    J_regressor: np.ndarray  # (J,V) dense
    weights: np.ndarray  # (V,J)
    parents: np.ndarray  # (J,) int64, parents[0] = -1
    faces: np.ndarray  # (F,3) int32
    uvs: np.ndarray | None = None  # (T,2)
    face_uv_index: np.ndarray | None = None  # (F,3)


class ChumpyStub:
    """Stands in for any chumpy class while unpickling; keeps the pickled state."""

    def __new__(cls, *args: Any, **kwargs: Any) -> ChumpyStub:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def array(self) -> np.ndarray | None:
        state = self.__dict__.get("_state")
        if isinstance(state, tuple):  # (dict, slots) form
            state = next((s for s in state if isinstance(s, dict)), None)
        if isinstance(state, dict) and "x" in state:
            return np.asarray(state["x"])
        return None


class _SmplUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return ChumpyStub
        return super().find_class(module, name)


def _as_array(key: str, value: Any, path: Path) -> np.ndarray:
    if isinstance(value, ChumpyStub):
        arr = value.array()
        if arr is None:
            raise ValueError(f"{path}: '{key}' is a chumpy object without a stored array; re-export the model "
                             "with plain numpy arrays (e.g. with smplx's tools)")
        return arr
    if hasattr(value, "toarray"):  # scipy sparse
        return np.asarray(value.toarray())
    return np.asarray(value)


def _read_pickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = _SmplUnpickler(f, encoding="latin1").load()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a pickled dict of SMPL arrays, got {type(data).__name__}")
    return data


def _read_npz(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    if "J_regressor" not in data and "J_regressor_data" in data:  # demo layout: CSR pieces
        n_verts = data["v_template"].shape[0]
        n_joints = len(data["J_regressor_indptr"]) - 1
        data["J_regressor"] = csr_matrix(
            (data["J_regressor_data"], data["J_regressor_indices"], data["J_regressor_indptr"]),
            shape=(n_joints, n_verts),
        )
    return data


def read_model_file(path: str | Path) -> ModelArrays:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"body model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        data = _read_pickle(path)
    elif suffix == ".npz":
        try:
            data = _read_npz(path)
        except ValueError:  # an npz holding object arrays (some SMPL conversions): allow pickle for that file
            with np.load(path, allow_pickle=True) as z:
                data = {k: z[k] for k in z.files}
    else:
        raise ValueError(f"{path}: unsupported body model file; give an SMPL .pkl or .npz")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ValueError(f"{path}: not an SMPL-layout model, missing {', '.join(missing)}")
    arr = {k: _as_array(k, data[k], path) for k in REQUIRED}
    posedirs = _as_array("posedirs", data["posedirs"], path) if "posedirs" in data else None
    parents = arr["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # SMPL stores uint32 max for the root
    v = arr["v_template"].astype(np.float64)
    shapedirs = arr["shapedirs"].astype(np.float64)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != v.shape:
        raise ValueError(f"{path}: shapedirs has shape {shapedirs.shape}, expected ({v.shape[0]}, 3, S)")
    uvs = data.get("vt")
    face_uv_index = data.get("ft")
    name = str(data["name"]) if "name" in data else path.stem
    return ModelArrays(
        name=name,
        v_template=v,
        shapedirs=shapedirs,
        posedirs=None if posedirs is None else posedirs.astype(np.float64),
        J_regressor=arr["J_regressor"].astype(np.float64),
        weights=arr["weights"].astype(np.float64),
        parents=parents,
        faces=arr["f"].astype(np.int32),
        uvs=None if uvs is None else np.asarray(uvs, dtype=np.float32),
        face_uv_index=None if face_uv_index is None else np.asarray(face_uv_index, dtype=np.int64),
    )
