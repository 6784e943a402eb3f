"""Voxelisation of a posed body for Neural Body's sparse conv net (the original's multi_view_dataset.py::prepare_input).

``prepare_sparse_input(vertices, Rh, Th, *, voxel_size=0.005, box_padding=ZJU_PADDING) -> SparseInput``

- ``vertices``: (V,3) posed world vertices in metres; ``Rh`` (3,) axis-angle; ``Th`` (3,) metres
  (EasyMocap/ZJU convention: world = SMPL_frame @ R(Rh)ᵀ + Th).
- SMPL frame: ``xyz_smpl = (v − Th) @ R`` (row vectors, i.e. Rᵀ(v − Th)).
- ``bounds``: SMPL-frame box (min, max) padded per ``box_padding`` (ZJU: ±0.05 m on axis 2 only).
- ``coords``: (V,3) int32 voxel indices in (d,h,w) = (z,y,x) order,
  ``round((xyz_smpl[:, [2,1,0]] − min[[2,1,0]]) / voxel_size)`` with numpy's round-half-to-even.
- ``out_sh``: (D,H,W) = ``(ceil(extent/voxel_size) | 31) + 1`` — a multiple of 32, an exact multiple gets +32.
- ``world_bounds``: the world box of the vertices with the same padding rule; rays are clipped against it.
- All V vertices are kept (duplicate voxels included), in vertex order, matching the rows of the code table ``c``.

Batch size is 1: one body per ``SparseInput``. The numeric path follows the original's numpy dtypes (float32
vertices / rotation, float64 division by the voxel size) so voxel indices match it exactly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import torch

from server.body.rotations import axis_angle_to_matrix
from server.neural_body.device_values import device_values

VOXEL_SIZE = 0.005  # metres


@dataclass(frozen=True)
class BoxPadding:
    """Padding of the body's bounding boxes: ``amount`` metres subtracted/added on each axis in ``axes``."""

    axes: tuple[int, ...]
    amount: float


ZJU_PADDING = BoxPadding(axes=(2,), amount=0.05)  # ZJU-MoCap default (big_box False): world z is vertical
BIG_BOX_PADDING = BoxPadding(axes=(0, 1, 2), amount=0.05)  # big_box True (custom / H36M configs)
SNAPSHOT_PADDING = BoxPadding(axes=(1,), amount=0.1)  # People-Snapshot (monocular_dataset.py)


@dataclass(frozen=True, eq=False)
class SparseInput:
    """One voxelised body (batch size 1). Tensors live on one device (``to(device)`` moves them)."""

    coords: torch.Tensor  # (V,3) int32 voxel indices (d,h,w) = SMPL-frame (z,y,x)
    out_sh: tuple[int, int, int]  # (D,H,W) full-resolution grid size, multiples of 32
    bounds: torch.Tensor  # (2,3) float32 SMPL-frame box [min, max] in xyz order, metres
    world_bounds: torch.Tensor  # (2,3) float32 world box [min, max], metres (ray clipping)
    R: torch.Tensor  # (3,3) float32 Rodrigues(Rh); smpl = (world − Th) @ R
    Th: torch.Tensor  # (3,) float32 metres
    voxel_size: float = VOXEL_SIZE

    @property
    def num_vertices(self) -> int:
        return int(self.coords.shape[0])

    @property
    def device(self) -> torch.device:
        return self.coords.device

    @functools.cached_property
    def grid_extent(self) -> torch.Tensor:
        """(3,) float32 ``out_sh`` in xyz order on the tensors' device (made once: point queries divide by it)."""
        return device_values(list(self.out_sh[::-1]), dtype=torch.float32, device=self.bounds.device)

    def indices(self) -> torch.Tensor:
        """(V,4) int32 spconv indices (batch, d, h, w) with batch 0."""
        batch = torch.zeros((self.coords.shape[0], 1), dtype=torch.int32, device=self.coords.device)
        return torch.cat([batch, self.coords], dim=1).contiguous()

    def to(self, device: torch.device | str) -> SparseInput:
        return replace(self, coords=self.coords.to(device), bounds=self.bounds.to(device),
                       world_bounds=self.world_bounds.to(device), R=self.R.to(device), Th=self.Th.to(device))

    def world_to_smpl(self, points: torch.Tensor) -> torch.Tensor:
        """(...,3) world points → SMPL frame: ``(p − Th) @ R``."""
        return (points - self.Th) @ self.R


def padded_box(points: np.ndarray, padding: BoxPadding) -> np.ndarray:
    """(2,3) float32 [min, max] of (N,3) points, padded by ``padding.amount`` on ``padding.axes``."""
    pts = np.asarray(points, dtype=np.float32)
    lo = np.min(pts, axis=0)
    hi = np.max(pts, axis=0)
    for axis in padding.axes:
        lo[axis] -= np.float32(padding.amount)
        hi[axis] += np.float32(padding.amount)
    return np.stack([lo, hi]).astype(np.float32)


def grid_shape(extent_dhw: np.ndarray, voxel_size: float = VOXEL_SIZE) -> tuple[int, int, int]:
    """``(ceil(extent / voxel_size) | 31) + 1`` per axis: the next multiple of 32 above the extent in voxels."""
    cells = np.ceil(np.asarray(extent_dhw, dtype=np.float32) / np.array([voxel_size] * 3)).astype(np.int32)
    out = (cells | 31) + 1
    return int(out[0]), int(out[1]), int(out[2])


def _as_numpy(x: np.ndarray | torch.Tensor, shape: tuple[int, ...] | None, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if shape is not None:
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"{name} must have shape {list(shape)}; got {list(arr.shape)}")
        arr = arr.reshape(shape)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds non-finite values")
    return arr


def prepare_sparse_input(
    vertices: np.ndarray | torch.Tensor,
    Rh: np.ndarray | torch.Tensor,
    Th: np.ndarray | torch.Tensor,
    *,
    voxel_size: float = VOXEL_SIZE,
    box_padding: BoxPadding = ZJU_PADDING,
    device: torch.device | str = "cpu",
) -> SparseInput:
    """Voxelise posed world ``vertices`` (V,3) with the body's global rotation ``Rh`` (3,) and translation ``Th``
    (3,) into a ``SparseInput`` on ``device`` (see the module docstring for every rule)."""
    verts = _as_numpy(vertices, None, "vertices")
    if verts.ndim != 2 or verts.shape[1] != 3 or verts.shape[0] < 2:
        raise ValueError(f"vertices must have shape [V, 3] with V >= 2; got {list(verts.shape)}")
    rot = axis_angle_to_matrix(_as_numpy(Rh, (3,), "Rh")).astype(np.float32)
    trans = _as_numpy(Th, (3,), "Th")

    world_box = padded_box(verts, box_padding)
    xyz = np.dot(verts - trans, rot)  # (V,3) float32, SMPL frame
    box = padded_box(xyz, box_padding)

    dhw = xyz[:, [2, 1, 0]]
    min_dhw = box[0, [2, 1, 0]]
    max_dhw = box[1, [2, 1, 0]]
    step = np.array([voxel_size] * 3)  # float64, as the original's cfg list → array
    coords = np.round((dhw - min_dhw) / step).astype(np.int32)
    out_sh = grid_shape(max_dhw - min_dhw, voxel_size)

    dev = torch.device(device)
    return SparseInput(
        coords=torch.from_numpy(coords).to(dev),
        out_sh=out_sh,
        bounds=torch.from_numpy(box).to(dev),
        world_bounds=torch.from_numpy(world_box).to(dev),
        R=torch.from_numpy(rot).to(dev),
        Th=torch.from_numpy(trans).to(dev),
        voxel_size=float(voxel_size),
    )
