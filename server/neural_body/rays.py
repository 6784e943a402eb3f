"""Camera rays and their clipping against the body box (the original's lib/utils/if_nerf/if_nerf_data_utils.py).

- ``get_rays(height, width, K, R, T) -> (ray_o (H,W,3), ray_d (H,W,3))``: OpenCV pinhole, ``x_cam = R x_world + T``
  (T in metres), pixel centres at **integer** coordinates (no +0.5). ``ray_o = −RᵀT``; ``ray_d`` is
  **unnormalised**: it reaches the camera-space z = 1 plane, so a depth ``t`` along it is camera z-depth.
- ``near_far(world_bounds (2,3), ray_o (...,3), ray_d (...,3)) -> (near (...), far (...), mask_at_box (...))``:
  slab test against the padded world box with the normalised direction (components with |d| < 1e-5 clamped to
  ±1e-5), then divided by ‖ray_d‖ so near/far are camera z-depths. ``mask_at_box = near < far``. Where the mask is
  False near/far are 0.

  One deliberate difference from the original: only the part of the box in front of the camera counts — a box
  entirely behind the camera is a miss (far <= 0) and near is clamped to 0 when the camera is inside the box. The
  original samples behind the camera in those cases; they never arise with its datasets' cameras (all outside and
  facing the body), so results on them are unchanged, but a Blender camera can be anywhere.

Geometry is computed in float64 and returned as float32 tensors on ``device`` (default: CPU).
"""

from __future__ import annotations

import numpy as np
import torch

DIRECTION_EPS = 1e-5


def _matrix(x: np.ndarray | torch.Tensor, shape: tuple[int, ...], name: str, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.array(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64))
    if t.numel() != int(np.prod(shape)):
        raise ValueError(f"{name} must have shape {list(shape)}; got {list(t.shape)}")
    t = t.reshape(shape)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds non-finite values")
    return t.to(device)


def get_rays(height: int, width: int, K: np.ndarray | torch.Tensor, R: np.ndarray | torch.Tensor,
             T: np.ndarray | torch.Tensor, *, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through every pixel (u, v) = (column, row) at integer coordinates, row 0 = top."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive; got {width}x{height}")
    dev = torch.device(device)
    k = _matrix(K, (3, 3), "K", dev)
    r = _matrix(R, (3, 3), "R", dev)
    t = _matrix(T, (3,), "T", dev)
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64, device=dev),
                          torch.arange(width, dtype=torch.float64, device=dev), indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (H,W,3)
    cam = pixels @ torch.linalg.inv(k).T  # camera-space points on z = 1
    world = (cam - t) @ r  # Rᵀ(p − T), row-vector form
    ray_o = -(r.T @ t)
    ray_d = world - ray_o
    return ray_o.expand_as(ray_d).float().contiguous(), ray_d.float()


def near_far(world_bounds: np.ndarray | torch.Tensor, ray_o: torch.Tensor | np.ndarray,
             ray_d: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entry/exit camera z-depths of rays through the axis-aligned ``world_bounds`` box, and which rays hit it."""
    ray_o, ray_d = torch.as_tensor(ray_o), torch.as_tensor(ray_d)
    box = torch.as_tensor(world_bounds).to(device=ray_o.device, dtype=torch.float64).reshape(2, 3)
    o = ray_o.to(torch.float64)
    d = ray_d.to(ray_o.device, torch.float64)
    norm = torch.linalg.norm(d, dim=-1, keepdim=True)
    direction = d / norm
    tiny = direction.abs() < DIRECTION_EPS
    # components within ±1e-5 are replaced by ±1e-5 (the sign of ~0 counts as positive, as the original)
    direction = torch.where(tiny & (direction > -1e-10), torch.full_like(direction, DIRECTION_EPS), direction)
    direction = torch.where(tiny & (direction <= -1e-10), torch.full_like(direction, -DIRECTION_EPS), direction)
    t0 = (box[0] - o) / direction
    t1 = (box[1] - o) / direction
    near = torch.minimum(t0, t1).amax(dim=-1)
    far = torch.maximum(t0, t1).amin(dim=-1)
    near = near.clamp_min(0.0)  # only the part of the box in front of the camera (see the module docstring)
    mask = near < far
    scale = norm[..., 0]
    zero = torch.zeros_like(near)
    near = torch.where(mask, near / scale, zero)
    far = torch.where(mask, far / scale, zero)
    return near.float(), far.float(), mask
