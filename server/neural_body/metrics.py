"""Image and geometry metrics of the evaluation: PSNR, SSIM (Neural Body's protocol), volumetric IoU, Chamfer-L1.

Image metrics follow Neural Body's evaluator (the original's lib/evaluators/if_nerf.py):

- ``psnr``: −10·log10(MSE) over the given pixels (the evaluator passes the pixels inside ``mask_at_box`` only).
- ``ssim_box``: SSIM on the crop of the full images to the bounding rectangle of ``mask_at_box`` (the equivalent of
  ``cv2.boundingRect``), with scikit-image's ``structural_similarity(channel_axis=-1, data_range=2)``: a 7×7 uniform
  window, sample covariance and the ``data_range`` of old skimage's ``compare_ssim`` on float images.

Geometry metrics follow Occupancy Networks / Neural Parts, in metres:

- ``volumetric_iou``: |A∩B| / |A∪B| estimated from points drawn uniformly in the joint bounding box of both meshes
  (stratified over columns, uniform along z), with an exact inside test by ray parity along +z. Both meshes must
  be closed (watertight); open meshes give noisy insides.
- ``chamfer_l1``: ½·(mean over samples of A of the distance to the nearest sample of B + the same from B to A),
  with points drawn uniformly by area on both surfaces. "L1" is the name Occupancy Networks uses for this mean of
  (unsquared, Euclidean) distances, as opposed to the mean of squared distances.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree
from skimage.metrics import structural_similarity

SSIM_DATA_RANGE = 2.0  # skimage 0.14 compare_ssim on float images: dtype range (-1, 1)
SSIM_WIN_SIZE = 7


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """Peak signal-to-noise ratio (peak 1) of two arrays of values in [0,1]; ``inf`` when they are equal."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"psnr: shapes differ, {pred.shape} vs {gt.shape}")
    if pred.size == 0:
        raise ValueError("psnr: no pixels to compare (is the mask empty?)")
    mse = float(np.mean((pred - gt) ** 2))
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def bounding_rect(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` of the smallest rectangle holding every nonzero pixel (``cv2.boundingRect`` of a mask)."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    cols = np.flatnonzero(np.any(mask, axis=0))
    if rows.size == 0:
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """SSIM of two (H,W,3) float images with Neural Body's settings (7×7 uniform window, data_range 2)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"ssim: expected two (H,W,C) images of the same shape, got {pred.shape} and {gt.shape}")
    if min(pred.shape[:2]) < SSIM_WIN_SIZE:
        raise ValueError(f"ssim: the images are {pred.shape[1]}x{pred.shape[0]} pixels; SSIM needs at least "
                         f"{SSIM_WIN_SIZE}x{SSIM_WIN_SIZE}")
    return float(structural_similarity(pred, gt, channel_axis=-1, data_range=SSIM_DATA_RANGE,
                                       win_size=SSIM_WIN_SIZE))


def ssim_box(pred: np.ndarray, gt: np.ndarray, mask_at_box: np.ndarray) -> float:
    """SSIM of the crop to the bounding rectangle of ``mask_at_box`` (pixels outside it should be 0 in both)."""
    x, y, w, h = bounding_rect(mask_at_box)
    if w == 0:
        raise ValueError("ssim_box: mask_at_box is empty; the body box is not in view of this camera")
    # A crop thinner than the window cannot be scored; grow it symmetrically inside the image.
    x, w = _grow(x, w, pred.shape[1])
    y, h = _grow(y, h, pred.shape[0])
    return ssim(pred[y:y + h, x:x + w], gt[y:y + h, x:x + w])


def _grow(start: int, size: int, limit: int) -> tuple[int, int]:
    if size >= SSIM_WIN_SIZE or limit < SSIM_WIN_SIZE:
        return start, size
    start = max(0, min(start - (SSIM_WIN_SIZE - size) // 2, limit - SSIM_WIN_SIZE))
    return start, SSIM_WIN_SIZE


# ---------------------------------------------------------------------------------------------------- geometry


def _check_mesh(vertices: np.ndarray, faces: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"{what}: expected vertices (N,3) and a non-empty faces (M,3), got {v.shape} and {f.shape}")
    if not np.issubdtype(f.dtype, np.integer) or f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"{what}: faces must index the {len(v)} vertices")
    return v, f.astype(np.int64)


def inside_mesh(vertices: np.ndarray, faces: np.ndarray, columns_xy: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Inside test of a closed mesh for points grouped in vertical columns.

    ``columns_xy`` (C,2) are the columns' x,y; ``z`` (C,K) the heights of the K points of each column. A point is
    inside when a ray from it along +z crosses the surface an odd number of times. Returns bool (C,K).
    """
    v, f = _check_mesh(vertices, faces, "inside_mesh")
    cols = np.asarray(columns_xy, np.float64)
    z = np.asarray(z, np.float64)
    crossings_col, crossings_z = _column_crossings(v[f], cols)
    # Count the crossings above each point: sort crossings by (column, z), then binary-search each point's key.
    zmin = min(float(z.min()), float(crossings_z.min()) if crossings_z.size else 0.0)
    zspan = max(float(z.max()), float(crossings_z.max()) if crossings_z.size else 0.0) - zmin
    scale = 1.0 / (zspan * 1.0001 + 1e-12)
    keys = np.sort(crossings_col + (crossings_z - zmin) * scale)
    col_ids = np.arange(len(cols), dtype=np.float64)
    point_keys = col_ids[:, None] + (z - zmin) * scale
    below = np.searchsorted(keys, point_keys) - np.searchsorted(keys, col_ids)[:, None]
    total = np.searchsorted(keys, col_ids + 1.0) - np.searchsorted(keys, col_ids)
    above = total[:, None] - below
    return (above % 2) == 1


def _column_crossings(tris: np.ndarray, cols: np.ndarray, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """(column index, z) of every crossing of a vertical line through ``cols`` with the triangles ``tris``."""
    # Bucket the columns on a uniform xy grid so each triangle only tests the columns under its xy bounding box.
    lo, hi = cols.min(axis=0), cols.max(axis=0)
    n_cells = max(1, int(math.sqrt(len(cols))))
    cell = np.maximum((hi - lo) / n_cells, 1e-9)
    cell_of = np.minimum(((cols - lo) / cell).astype(np.int64), n_cells - 1)
    flat_cell = cell_of[:, 0] * n_cells + cell_of[:, 1]
    order = np.argsort(flat_cell, kind="stable")
    starts = np.searchsorted(flat_cell[order], np.arange(n_cells * n_cells + 1))
    out_col, out_z = [np.zeros(0, np.int64)], [np.zeros(0)]
    for first in range(0, len(tris), chunk):  # chunks of triangles bound the memory of the expansion
        part = tris[first:first + chunk]
        tmin = np.floor((part[:, :, :2].min(axis=1) - lo) / cell).astype(np.int64)
        tmax = np.floor((part[:, :, :2].max(axis=1) - lo) / cell).astype(np.int64)
        keep = np.all(tmax >= 0, axis=1) & np.all(tmin < n_cells, axis=1)
        part, tmin, tmax = part[keep], np.clip(tmin[keep], 0, n_cells - 1), np.clip(tmax[keep], 0, n_cells - 1)
        # Expand every triangle into the cells under its box, then into the columns of those cells.
        nx, ny = tmax[:, 0] - tmin[:, 0] + 1, tmax[:, 1] - tmin[:, 1] + 1
        tri_of = np.repeat(np.arange(len(part)), nx * ny)
        local = np.arange(len(tri_of)) - np.repeat(np.cumsum(nx * ny) - nx * ny, nx * ny)
        cells = (tmin[tri_of, 0] + local // ny[tri_of]) * n_cells + tmin[tri_of, 1] + local % ny[tri_of]
        counts = starts[cells + 1] - starts[cells]
        pair = np.repeat(np.arange(len(cells)), counts)
        pair_local = np.arange(len(pair)) - np.repeat(np.cumsum(counts) - counts, counts)
        col = order[starts[cells[pair]] + pair_local]
        hit, zhit = _vertical_hits(part[tri_of[pair]], cols[col])
        out_col.append(col[hit])
        out_z.append(zhit[hit])
    return np.concatenate(out_col).astype(np.float64), np.concatenate(out_z)


def _vertical_hits(tri: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether the vertical line at ``xy`` (P,2) crosses each triangle ``tri`` (P,3,3), and at which z."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    d = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    px, py = xy[:, 0] - a[:, 0], xy[:, 1] - a[:, 1]
    # Triangles seen edge-on from above (d = 0, e.g. vertical walls) cannot be crossed by a vertical line.
    safe = np.where(d != 0, d, 1.0)
    u = (px * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * py) / safe
    w = ((b[:, 0] - a[:, 0]) * py - px * (b[:, 1] - a[:, 1])) / safe
    # Half-open barycentric bounds count a crossing through a shared edge once (the degenerate case).
    hit = (d != 0) & (u >= 0) & (w >= 0) & (u + w < 1)
    z = a[:, 2] + u * (b[:, 2] - a[:, 2]) + w * (c[:, 2] - a[:, 2])
    return hit, z


def volumetric_iou(
    mesh_a: tuple[np.ndarray, np.ndarray],
    mesh_b: tuple[np.ndarray, np.ndarray],
    *,
    num_points: int = 100_000,
    seed: int = 0,
) -> float:
    """Volumetric IoU of two closed meshes ``(vertices, faces)`` from ``num_points`` points in their joint box."""
    va, fa = _check_mesh(*mesh_a, "volumetric_iou mesh A")
    vb, fb = _check_mesh(*mesh_b, "volumetric_iou mesh B")
    lo = np.minimum(va.min(axis=0), vb.min(axis=0))
    hi = np.maximum(va.max(axis=0), vb.max(axis=0))
    pad = 0.01 * (hi - lo).max()
    lo, hi = lo - pad, hi + pad
    rng = np.random.default_rng(seed)
    # Columns stratified in xy (one jittered sample per cell), points uniform in z: uniform in the box overall.
    per_column = max(1, int(round(num_points ** (1.0 / 3.0))))
    side = max(1, int(round(math.sqrt(num_points / per_column))))
    ix, iy = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    cells = np.stack([ix.ravel(), iy.ravel()], axis=1) + rng.random((side * side, 2))
    xy = lo[:2] + cells / side * (hi[:2] - lo[:2])
    z = lo[2] + rng.random((len(xy), per_column)) * (hi[2] - lo[2])
    inside_a = inside_mesh(va, fa, xy, z)
    inside_b = inside_mesh(vb, fb, xy, z)
    union = int(np.count_nonzero(inside_a | inside_b))
    if union == 0:
        return 0.0
    return float(np.count_nonzero(inside_a & inside_b)) / union


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points drawn uniformly by area on the triangles of a mesh, (count,3) float64."""
    v, f = _check_mesh(vertices, faces, "sample_surface")
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        raise ValueError("sample_surface: the mesh has zero area")
    which = rng.choice(len(f), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    return np.einsum("nk,nkd->nd", bary, tri[which])


def chamfer_l1(
    mesh_a: tuple[np.ndarray, np.ndarray],
    mesh_b: tuple[np.ndarray, np.ndarray],
    *,
    num_points: int = 100_000,
    seed: int = 0,
) -> float:
    """½·(mean NN distance A→B + mean NN distance B→A) between ``num_points`` surface samples of each mesh."""
    rng = np.random.default_rng(seed)
    pa = sample_surface(*mesh_a, num_points, rng)
    pb = sample_surface(*mesh_b, num_points, rng)
    d_ab = cKDTree(pb).query(pa, workers=-1)[0]
    d_ba = cKDTree(pa).query(pb, workers=-1)[0]
    return float(0.5 * (d_ab.mean() + d_ba.mean()))
