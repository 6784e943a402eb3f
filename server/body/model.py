"""One body-model interface for every body in SMPL's layout (real SMPL or the bundled demo body).

Input convention (EasyMocap / ZJU-MoCap): ``poses`` (B,72) axis-angle, ``shapes`` (B,10), ``Rh`` (B,3),
``Th`` (B,3); world vertices = SMPL(poses, shapes) · R(Rh)ᵀ + Th (rotation about the SMPL origin). Skinning is
smplx's ``lbs``. Other conventions go through :func:`server.body.params.to_easymocap` (see :meth:`BodyModel.pose`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from smplx.lbs import batch_rodrigues, lbs

from server.body.model_file import ModelArrays, read_model_file
from server.body.params import NUM_BETAS, to_easymocap
from server.body.skeleton import DEMO_BODY_PATH, SMPL_JOINT_NAMES, SMPL_MIRROR_PAIRS, SMPL_PARENTS
from server.errors import BodyModelMissing, InvalidInput

__all__ = [
    "DEMO_BODY_PATH",
    "SMPL_JOINT_NAMES",
    "SMPL_MIRROR_PAIRS",
    "SMPL_PARENTS",
    "BodyModel",
    "BodyOutput",
    "load_body_model",
]

NUM_POSE_BASIS = 207  # 23 joints x 9 rotation-matrix entries


@dataclass
class BodyOutput:
    vertices: torch.Tensor  # (B,V,3) world frame, metres
    joints: torch.Tensor  # (B,24,3) world frame, metres


class BodyModel(torch.nn.Module):
    """SMPL-layout body: template, shape blend shapes, (optional) pose blend shapes, joint regressor, LBS weights."""

    def __init__(self, arrays: ModelArrays, num_betas: int = NUM_BETAS):
        super().__init__()
        if len(arrays.parents) != len(SMPL_PARENTS) or tuple(arrays.parents.tolist()) != SMPL_PARENTS:
            raise ValueError(f"{arrays.name}: kinematic tree {arrays.parents.tolist()} is not SMPL's 24-joint tree")
        self.name = arrays.name
        self.num_vertices = int(arrays.v_template.shape[0])
        self.num_betas = num_betas
        self.faces = np.ascontiguousarray(arrays.faces, dtype=np.int32)
        self.face_uvs: np.ndarray | None = None
        if arrays.uvs is not None and arrays.face_uv_index is not None:
            self.face_uvs = np.ascontiguousarray(arrays.uvs[arrays.face_uv_index], dtype=np.float32)
        shapedirs = np.zeros((self.num_vertices, 3, num_betas))
        n = min(num_betas, arrays.shapedirs.shape[2])
        shapedirs[:, :, :n] = arrays.shapedirs[:, :, :n]
        dt = torch.float32
        self.register_buffer("v_template", torch.tensor(arrays.v_template, dtype=dt))
        self.register_buffer("shapedirs", torch.tensor(shapedirs, dtype=dt))
        if arrays.posedirs is None:  # no pose blend shapes: zeros keep smplx's lbs unchanged
            posedirs = torch.zeros(NUM_POSE_BASIS, self.num_vertices * 3, dtype=dt)
        else:  # SMPL's (V,3,207) -> smplx's (207, V*3)
            posedirs = torch.tensor(arrays.posedirs.reshape(-1, arrays.posedirs.shape[-1]).T, dtype=dt)
        self.register_buffer("posedirs", posedirs.contiguous())
        self.register_buffer("J_regressor", torch.tensor(arrays.J_regressor, dtype=dt))
        self.register_buffer("lbs_weights", torch.tensor(arrays.weights, dtype=dt))
        self.register_buffer("parents", torch.tensor(arrays.parents, dtype=torch.long))
        self.register_buffer("faces_tensor", torch.tensor(self.faces, dtype=torch.long))

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    @property
    def vertex_parts(self) -> np.ndarray:
        """(V,) int64: for each vertex the SMPL joint with the largest skinning weight (body-part labels)."""
        return self.lbs_weights.argmax(dim=1).cpu().numpy()

    def _shapes(self, shapes: torch.Tensor, batch: int) -> torch.Tensor:
        shapes = shapes.to(self.v_template)
        if shapes.ndim == 1:
            shapes = shapes[None]
        if shapes.shape[-1] < self.num_betas:
            shapes = torch.nn.functional.pad(shapes, (0, self.num_betas - shapes.shape[-1]))
        shapes = shapes[..., : self.num_betas]
        return shapes.expand(batch, -1) if shapes.shape[0] == 1 else shapes

    def forward(self, poses: torch.Tensor, shapes: torch.Tensor, Rh: torch.Tensor, Th: torch.Tensor) -> BodyOutput:  # noqa: N803
        """Posed world vertices and joints for (B,72) poses, (B,10) shapes, (B,3) Rh, (B,3) Th."""
        poses = poses.to(self.v_template)
        if poses.ndim != 2 or poses.shape[1] != 72:
            raise ValueError(f"poses must have shape (B, 72), got {tuple(poses.shape)}")
        batch = poses.shape[0]
        shapes = self._shapes(shapes, batch)
        rh = Rh.to(self.v_template).reshape(-1, 3).expand(batch, -1)
        th = Th.to(self.v_template).reshape(-1, 3).expand(batch, -1)
        verts, joints = lbs(shapes, poses, self.v_template, self.shapedirs, self.posedirs, self.J_regressor,
                            self.parents, self.lbs_weights, pose2rot=True)
        rot = batch_rodrigues(rh)  # (B,3,3)
        verts = torch.matmul(verts, rot.transpose(1, 2)) + th[:, None]
        joints = torch.matmul(joints, rot.transpose(1, 2)) + th[:, None]
        return BodyOutput(vertices=verts, joints=joints)

    def rest_joints(self, shapes: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """Joints in the canonical frame at zero pose: (24,3) for one shape (or none), (B,24,3) for a batch."""
        if shapes is None:
            shapes = torch.zeros(self.num_betas)
        shapes = torch.as_tensor(shapes)
        single = shapes.ndim == 1
        s = self._shapes(shapes, 1 if single else shapes.shape[0])
        v = self.v_template + torch.einsum("bl,vkl->bvk", s, self.shapedirs)
        joints = torch.einsum("jv,bvk->bjk", self.J_regressor, v)
        return joints[0] if single else joints

    def pelvis_rest(self, shapes: np.ndarray) -> np.ndarray:
        """Rest pelvis joint J0(β) for (B,10) shapes, as numpy (B,3) — what params.to_easymocap needs."""
        with torch.no_grad():
            return self.rest_joints(torch.as_tensor(np.asarray(shapes, dtype=np.float32)).reshape(-1, self.num_betas)
                                    )[:, 0].cpu().numpy()

    def pose(self, body: Mapping[str, Any]) -> BodyOutput:
        """Pose from any accepted convention (see server.body.params); values may be lists or numpy arrays."""
        p = to_easymocap(body, self.pelvis_rest)
        t = {k: torch.from_numpy(v).to(self.device) for k, v in p.items()}
        with torch.no_grad():
            return self(t["poses"], t["shapes"], t["Rh"], t["Th"])


def load_body_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> BodyModel:
    """Load a body model: None -> the bundled demo body; else an SMPL .pkl/.npz in SMPL's layout."""
    target = Path(path) if path is not None else DEMO_BODY_PATH
    if path is None and not target.is_file():
        raise FileNotFoundError(f"demo body not found at {target}; build it with `python -m server build-demo-body`")
    return BodyModel(read_model_file(target)).to(device)


# --- body-model names ("demo" | "smpl:<path or name>"): parsed here and nowhere else ---------------------------------

DEMO_BODY_MODEL = "demo"
SMPL_PREFIX = "smpl:"


def body_model_name(value: str) -> str:
    """The manifest spelling of a body model: ``demo``, or ``smpl:<path or name>`` (a bare path or name gets the
    prefix)."""
    if value == DEMO_BODY_MODEL or value.startswith(SMPL_PREFIX):
        return value
    return f"{SMPL_PREFIX}{value}"


def check_body_model_name(name: str) -> None:
    """Raise InvalidInput unless ``name`` is ``demo`` or ``smpl:<path or name>``."""
    if not (name == DEMO_BODY_MODEL or name.startswith(SMPL_PREFIX)):
        raise InvalidInput(f"body_model must be 'demo' or 'smpl:<path or name>'; got {name!r}", "body_model")


def body_model_file(name: str) -> Path | None:
    """The model file of a body-model name: None for the bundled demo body, else the SMPL file, which must exist on
    this machine (BodyModelMissing otherwise: SMPL files are licensed and never shipped)."""
    check_body_model_name(name)
    if name == DEMO_BODY_MODEL:
        return None
    path = Path(name[len(SMPL_PREFIX):])
    if not path.is_file():
        raise BodyModelMissing(f"the SMPL model {str(path)!r} is not a file on this machine; place your SMPL model "
                               "file there", "body_model")
    return path


def resolve_body_model(name: str, device: str | torch.device = "cpu") -> BodyModel:
    """Load the body model named ``demo`` or ``smpl:<path>`` (see body_model_file)."""
    return load_body_model(body_model_file(name), device=device)
