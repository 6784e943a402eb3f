"""Training-ray sampling of Neural Body (``sample_ray_h36m`` of the original in if_nerf_data_utils.py).

Per training image, ``n_rays`` pixels are drawn with replacement:

- ``body_ratio`` (0.5) of them uniformly from the body interior: mask == 1 inside the projected 3D box;
- the rest uniformly from the projected 3D box (``bound_2d_mask``: the 8 corners of the world box projected, its
  6 faces filled), excluding the "don't care" border band (mask == 100);
- rays that miss the 3D box (``near >= far``) are dropped and the shortfall is drawn again, until ``n_rays`` are
  collected.

``bound_2d_mask`` is also what the evaluator uses to restrict rendering to the box. Pixel centres are at integer
coordinates, as in ``server.neural_body.rays``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from server.data.image_ops import BAND_VALUE
from server.neural_body.rays import near_far

BODY_RATIO = 0.5
MAX_ROUNDS = 100  # resampling rounds before giving up on an image whose box pixels all miss the box

# The 6 faces of a box as corner indices (corner bit 0 = x max, bit 1 = y max, bit 2 = z max), in cyclic order.
_BOX_FACES = np.array([[0, 1, 3, 2], [4, 5, 7, 6], [0, 1, 5, 4], [2, 3, 7, 6], [0, 2, 6, 4], [1, 3, 7, 5]])


def box_corners(bounds: np.ndarray) -> np.ndarray:
    """(8,3) corners of the axis-aligned box ``bounds`` = [min, max]; corner i takes max on axis k if bit k of i."""
    b = np.asarray(bounds, dtype=np.float64).reshape(2, 3)
    idx = np.arange(8)
    return np.stack([b[(idx >> k) & 1, k] for k in range(3)], axis=1)


def project(points: np.ndarray, K: np.ndarray, R: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection of world points (N,3): pixels (N,2) (u = column, v = row) and camera depths (N,)."""
    cam = np.asarray(points, np.float64) @ np.asarray(R, np.float64).T + np.asarray(T, np.float64).reshape(1, 3)
    uvw = cam @ np.asarray(K, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return uvw[:, :2] / uvw[:, 2:3], cam[:, 2]


def fill_convex_polygon(mask: np.ndarray, polygon: np.ndarray) -> None:
    """Set to True the pixels of ``mask`` whose integer centres lie inside or on the convex ``polygon`` (P,2)."""
    poly = np.round(np.asarray(polygon, np.float64))  # integer vertices, as cv2.fillPoly takes them
    height, width = mask.shape
    lo = np.clip(np.floor(poly.min(axis=0)).astype(int), 0, [width - 1, height - 1])
    hi = np.clip(np.ceil(poly.max(axis=0)).astype(int), 0, [width - 1, height - 1])
    if np.any(poly.max(axis=0) < 0) or poly[:, 0].min() > width - 1 or poly[:, 1].min() > height - 1:
        return
    v, u = np.mgrid[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1]
    edges = np.roll(poly, -1, axis=0) - poly
    cross = edges[:, 0, None, None] * (v[None] - poly[:, 1, None, None]) - \
        edges[:, 1, None, None] * (u[None] - poly[:, 0, None, None])
    nonzero = np.abs(edges).sum(axis=1) > 0
    cross = cross[nonzero]
    inside = np.all(cross >= 0, axis=0) | np.all(cross <= 0, axis=0)
    mask[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] |= inside


def bound_2d_mask(world_bounds: np.ndarray, K: np.ndarray, R: np.ndarray, T: np.ndarray,
                  height: int, width: int) -> np.ndarray:
    """bool (H,W): the pixels covered by the projection of the world box (its 6 faces filled).

    When a box corner is behind the camera the projection is unbounded; the whole image is returned and the
    per-ray box test decides."""
    pixels, depth = project(box_corners(world_bounds), K, R, T)
    mask = np.zeros((height, width), dtype=bool)
    if np.any(depth <= 1e-6):
        mask[:] = True
        return mask
    for face in _BOX_FACES:
        fill_convex_polygon(mask, pixels[face])
    return mask


@dataclass
class RayBatch:
    """Rays of one training image (N rays, float32 tensors on the rays' device)."""

    rgb: torch.Tensor  # (N,3) ground-truth colours
    ray_o: torch.Tensor  # (N,3)
    ray_d: torch.Tensor  # (N,3) unnormalised (camera z = 1 per unit)
    near: torch.Tensor  # (N,) camera z-depths
    far: torch.Tensor  # (N,)
    pixels: np.ndarray  # (N,2) int64 (row, column)
    num_body: int  # rays drawn from the body interior (the first num_body rows)


def sample_rays(
    image: np.ndarray,
    mask: np.ndarray,
    rays: tuple[torch.Tensor, torch.Tensor],
    K: np.ndarray,
    R: np.ndarray,
    T: np.ndarray,
    world_bounds: np.ndarray,
    n_rays: int,
    rng: np.random.Generator,
    *,
    body_ratio: float = BODY_RATIO,
) -> RayBatch:
    """Draw ``n_rays`` training rays from one image.

    ``image`` (H,W,3) float, ``mask`` (H,W) uint8 (0/1/100), ``rays`` = ``get_rays(H, W, K, R, T)`` of the camera
    (full image, reused across frames), ``world_bounds`` (2,3) the padded world box of the frame's body.
    """
    height, width = mask.shape
    if image.shape[:2] != (height, width) or rays[0].shape[:2] != (height, width):
        raise ValueError(f"image {image.shape[:2]}, mask {mask.shape} and rays {tuple(rays[0].shape[:2])} must have "
                         "the same height and width")
    if not 0.0 <= body_ratio <= 1.0 or n_rays < 1:
        raise ValueError(f"need n_rays >= 1 and 0 <= body_ratio <= 1; got {n_rays}, {body_ratio}")
    box = bound_2d_mask(world_bounds, K, R, T, height, width)
    body_pixels = np.flatnonzero((mask == 1) & box)
    box_pixels = np.flatnonzero(box & (mask != BAND_VALUE))
    if box_pixels.size == 0:
        raise ValueError("the body's 3D box does not project into this image; check the camera and the body "
                         "parameters of this frame")
    ray_o, ray_d = (r.reshape(-1, 3) for r in rays)
    bounds = torch.as_tensor(np.asarray(world_bounds, np.float32))

    body_kept: list[np.ndarray] = []
    rest_kept: list[np.ndarray] = []
    got_body = got_rest = 0
    for _ in range(MAX_ROUNDS):
        missing = n_rays - got_body - got_rest
        if missing == 0:
            break
        n_body = int(missing * body_ratio) if body_pixels.size else 0
        draws = [(body_pixels, n_body, body_kept), (box_pixels, missing - n_body, rest_kept)]
        for pool, count, kept in draws:
            if count == 0:
                continue
            pick = pool[rng.integers(0, pool.size, count)]
            _, _, hit = near_far(bounds, ray_o[pick], ray_d[pick])
            good = pick[hit.cpu().numpy()]
            kept.append(good)
            if kept is body_kept:
                got_body += good.size
            else:
                got_rest += good.size
    if got_body + got_rest < n_rays:
        raise ValueError(f"could not draw {n_rays} rays that hit the body's 3D box in {MAX_ROUNDS} rounds; the "
                         "camera or the body parameters of this frame are wrong")
    flat = np.concatenate(body_kept + rest_kept)
    near, far, _ = near_far(bounds, ray_o[flat], ray_d[flat])
    rgb = torch.from_numpy(np.ascontiguousarray(image.reshape(-1, 3)[flat], dtype=np.float32))
    pixels = np.stack(np.divmod(flat, width), axis=1)
    return RayBatch(rgb=rgb.to(ray_o.device), ray_o=ray_o[flat], ray_d=ray_d[flat], near=near, far=far,
                    pixels=pixels, num_body=got_body)
