"""Image operations of the ZJU-MoCap pipeline in plain numpy/scipy (no OpenCV).

Conventions follow OpenCV, which Neural Body's data loader uses: pixel centres at integer coordinates,
distortion model (k1, k2, p1, p2, k3), ``cv2.undistort`` = for every output pixel apply the forward
distortion and sample the input (bilinear, zero outside), ``INTER_AREA`` = area-weighted box filter,
``INTER_NEAREST`` = ``src = floor(dst * scale)``. Also the one PNG writer of the server (``png_bytes``, ``save_png``).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage, sparse

from neural_human_addon.core.atomic_files import write_bytes_atomic

BAND_VALUE = 100  # "don't care" label of the mask border band (Neural Body's get_mask)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (float, any channels) -> uint8 0..255, rounded; uint8 input is returned as it is."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.round(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """A PNG of an (H,W) grey, (H,W,3) RGB or (H,W,4) RGBA image, uint8 or floats in [0, 1]; row 0 = top."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write ``image`` (see png_bytes) as a PNG file, atomically, readable by everyone (0644); makes the folder."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    write_bytes_atomic(path, png_bytes(image), mode=0o644)


def distort_normalized(x: np.ndarray, y: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply the OpenCV (k1, k2, p1, p2, k3) model to normalised camera coordinates (x = X/Z, y = Y/Z)."""
    k1, k2, p1, p2, k3 = (float(c) for c in _dist5(dist))
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return xd, yd


def project_points(points_cam: np.ndarray, K: np.ndarray, dist: np.ndarray | None = None) -> np.ndarray:
    """Project camera-space points (N,3) to pixels (N,2), with the distortion model when ``dist`` is given."""
    pts = np.asarray(points_cam, dtype=np.float64)
    x, y = pts[:, 0] / pts[:, 2], pts[:, 1] / pts[:, 2]
    if dist is not None:
        x, y = distort_normalized(x, y, dist)
    uvw = np.stack([x, y, np.ones_like(x)], axis=1) @ np.asarray(K, dtype=np.float64).T
    return uvw[:, :2] / uvw[:, 2:3]


def has_distortion(dist: np.ndarray | None) -> bool:
    return dist is not None and bool(np.any(_dist5(dist) != 0.0))


@dataclass(frozen=True, eq=False)
class UndistortMap:
    """Precomputed sampling of an undistortion, reading the input padded by one zero pixel on every side.

    ``matrix`` (H*W, (H+2)*(W+2)) holds the 4 bilinear weights of each output pixel (a sparse product is
    several times faster than numpy gathers); ``nearest`` is each output pixel's nearest padded input pixel.
    Output pixels that sample outside the input read only zero padding, i.e. 0 (OpenCV's BORDER_CONSTANT).
    """

    height: int
    width: int
    matrix: Any  # scipy.sparse.csr_matrix, float32
    nearest: np.ndarray  # (H*W,) int32 flat indices into the padded image

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


def undistort_map(K: np.ndarray, dist: np.ndarray, width: int, height: int) -> UndistortMap:
    """The sampling map of ``cv2.undistort(img, K, dist)`` (new camera matrix = K, no rectification)."""
    K = np.asarray(K, dtype=np.float64)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    # Invert K exactly (skew included; ZJU cameras have none) to get normalised coordinates of output pixels.
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    xd, yd = distort_normalized(x, y, dist)
    return sampling_map(K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2])


def sampling_map(src_x: np.ndarray, src_y: np.ndarray) -> UndistortMap:
    """Map for sampling an (H,W) input at input pixel coordinates ``(src_x, src_y)``, one per output pixel."""
    height, width = src_x.shape
    pitch = width + 2  # row length of the padded image
    sx, sy = src_x.reshape(-1) + 1.0, src_y.reshape(-1) + 1.0  # padded coordinates
    inside = (sx >= 0.0) & (sx <= width + 1) & (sy >= 0.0) & (sy <= height + 1)
    x0 = np.clip(np.floor(sx), 0, width)
    y0 = np.clip(np.floor(sy), 0, height)
    fx = np.where(inside, np.clip(sx - x0, 0.0, 1.0), 0.0)
    fy = np.where(inside, np.clip(sy - y0, 0.0, 1.0), 0.0)
    base = np.where(inside, y0 * pitch + x0, 0.0).astype(np.int32)  # outside: the zero corner, weight 1
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=1).astype(np.float32)
    columns = np.stack([base, base + 1, base + pitch, base + pitch + 1], axis=1)
    n_out, n_in = height * width, (height + 2) * pitch
    indptr = np.arange(0, 4 * n_out + 1, 4, dtype=np.int64 if 4 * n_out >= 2**31 else np.int32)
    matrix = sparse.csr_matrix((weights.reshape(-1), columns.reshape(-1), indptr), shape=(n_out, n_in))
    xn, yn = np.floor(sx + 0.5), np.floor(sy + 0.5)
    near_inside = (xn >= 1) & (xn <= width) & (yn >= 1) & (yn <= height)
    nearest = np.where(near_inside, yn * pitch + xn, 0.0).astype(np.int32)
    return UndistortMap(height, width, matrix, nearest)


def _padded_flat(image: np.ndarray, mapping: UndistortMap) -> np.ndarray:
    if image.shape[:2] != mapping.shape:
        raise ValueError(f"undistortion map is {mapping.shape}, image is {image.shape[:2]}")
    pad = [(1, 1), (1, 1)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad)
    return padded.reshape(padded.shape[0] * padded.shape[1], -1)


def remap_bilinear(image: np.ndarray, mapping: UndistortMap) -> np.ndarray:
    """Bilinear sampling of ``image`` (H,W) or (H,W,C), any numeric dtype, as float32."""
    flat = _padded_flat(image, mapping).astype(np.float32, copy=False)
    out = mapping.matrix @ flat
    return np.asarray(out, dtype=np.float32).reshape(image.shape)


def remap_nearest(labels: np.ndarray, mapping: UndistortMap) -> np.ndarray:
    """Nearest-neighbour sampling of a label map (keeps the label set); outside the image gives 0."""
    return _padded_flat(labels, mapping)[mapping.nearest].reshape(labels.shape)


def resized_size(width: int, height: int, ratio: float) -> tuple[int, int]:
    """Output (W,H) for a scale ``ratio``: truncated like Neural Body's ``int(W * ratio)``."""
    return max(1, int(width * ratio)), max(1, int(height * ratio))


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix: output pixel i averages the input interval [i*s, (i+1)*s), s = n_in/n_out."""
    scale = n_in / n_out
    starts = np.arange(n_out, dtype=np.float64)[:, None] * scale
    cells = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(starts + scale, cells + 1.0) - np.maximum(starts, cells), 0.0, None)
    return overlap / scale


def resize_area(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Downscale with an area-weighted box filter (OpenCV ``INTER_AREA`` for shrinking), float32 out."""
    h, w = image.shape[:2]
    if width > w or height > h:
        raise ValueError(f"resize_area only shrinks: {w}x{h} -> {width}x{height}")
    img = image.astype(np.float32, copy=False)
    if (width, height) == (w, h):
        return img.copy()
    if w % width == 0 and h % height == 0:  # integer factor: exact block means, cheaper than the matrices
        fy, fx = h // height, w // width
        out = np.zeros((height, width, *img.shape[2:]), np.float32)
        for dy in range(fy):
            for dx in range(fx):
                out += img[dy::fy, dx::fx]
        out *= np.float32(1.0 / (fx * fy))
        return out
    wy = _area_weights(h, height).astype(np.float32)
    wx = _area_weights(w, width).astype(np.float32)
    out = np.tensordot(wy, img, axes=(1, 0))  # (height, w, ...)
    out = np.tensordot(wx, out, axes=(1, 1))  # (width, height, ...)
    return np.ascontiguousarray(np.swapaxes(out, 0, 1)).astype(np.float32, copy=False)


def resize_nearest(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize like OpenCV ``INTER_NEAREST``: ``src = floor(dst * in/out)``."""
    h, w = labels.shape[:2]
    if (width, height) == (w, h):
        return labels.copy()
    ys = np.minimum(np.floor(np.arange(height) * (h / height)).astype(np.intp), h - 1)
    xs = np.minimum(np.floor(np.arange(width) * (w / width)).astype(np.intp), w - 1)
    return labels[ys[:, None], xs[None, :]]


def mask_with_band(foreground: np.ndarray, border: int = 5) -> np.ndarray:
    """uint8 mask: 1 foreground, 0 background, ``BAND_VALUE`` where a ``border``² dilation and erosion differ.

    Matches Neural Body's ``get_mask`` (``cv2.erode``/``cv2.dilate`` with a ones((5,5)) kernel; OpenCV's
    default border neither erodes nor dilates, hence ``border_value`` 1 for the erosion).
    """
    mask = np.asarray(foreground, dtype=bool).astype(np.uint8)
    # A square structuring element is separable: min/max filters are the fast binary erosion/dilation.
    eroded = ndimage.minimum_filter(mask, size=border, mode="constant", cval=1)
    dilated = ndimage.maximum_filter(mask, size=border, mode="constant", cval=0)
    mask[dilated != eroded] = BAND_VALUE
    return mask


def _dist5(dist: np.ndarray) -> np.ndarray:
    d = np.asarray(dist, dtype=np.float64).reshape(-1)
    if d.size > 5 and np.any(d[5:] != 0.0):
        raise ValueError(f"only the 5-coefficient distortion model (k1,k2,p1,p2,k3) is supported, got {d.size}")
    out = np.zeros(5)
    out[: min(5, d.size)] = d[:5]
    return out
