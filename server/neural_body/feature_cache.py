"""Per-pose cache of the sparse-conv feature volumes: they depend only on the posed body (and the network), not on
the camera, so every camera of one pose reuses one encode.

- ``pose_key(owner, vertices, Rh, Th, device, *, voxel_size, box_padding, batchnorm) -> str``: a SHA-256 over the
  posed vertices' float32 bytes, Rh, Th, the voxelisation settings, the owner (actor id), the device and the
  network's eval-time BatchNorm mode (the volumes depend on it).
- ``FeatureCache(budget_bytes)``: LRU of ``key -> volumes`` bounded by the volumes' total tensor bytes;
  ``get_or_encode(key, owner, encode)``, ``evict_owner(owner)``, ``clear()``, ``hits``/``misses``/``bytes_used``.
  One entry larger than the whole budget is computed and returned but not kept.
- ``cached_volumes(cache, owner, network, sparse_input, pose, *, voxel_size, box_padding) -> volumes``: the pose's
  volumes from the cache (encoded on a miss, keyed with the network's current BatchNorm mode); renders and meshes
  of one pose share them.
- ``CachedRenderer(cache=..., owner=..., pose=(vertices, Rh, Th))``: a ``ReferenceRenderer`` that
  takes the volumes from the cache; pixels are bit-for-bit those of ``ReferenceRenderer`` (same ops, same order).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from server.neural_body.batchnorm_mode import batchnorm_mode
from server.neural_body.network import NeuralBodyNetwork
from server.neural_body.sparse_input import VOXEL_SIZE, ZJU_PADDING, BoxPadding, SparseInput
from server.neural_body.volume_renderer import ReferenceRenderer

Volumes = list[torch.Tensor]


def _array_bytes(value: np.ndarray | torch.Tensor) -> bytes:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value, dtype=np.float32)).tobytes()


def pose_key(owner: str, vertices: np.ndarray | torch.Tensor, Rh: np.ndarray | torch.Tensor,
             Th: np.ndarray | torch.Tensor, device: str | torch.device, *, voxel_size: float = VOXEL_SIZE,
             box_padding: BoxPadding = ZJU_PADDING, batchnorm: str = "batch_stats") -> str:
    """Cache key of one posed body for one actor on one device (the inputs of the voxelisation, as float32, and the
    BatchNorm mode the encoder runs in)."""
    h = hashlib.sha256()
    for part in (owner, str(torch.device(device)), repr(float(voxel_size)), repr(box_padding), batchnorm):
        h.update(part.encode())
        h.update(b"\0")
    for array in (vertices, Rh, Th):
        data = _array_bytes(array)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def volumes_nbytes(volumes: Volumes) -> int:
    return sum(int(v.element_size() * v.nelement()) for v in volumes)


class FeatureCache:
    """LRU of feature volumes bounded by ``budget_bytes`` (0 disables keeping anything)."""

    def __init__(self, budget_bytes: int):
        if budget_bytes < 0:
            raise ValueError(f"the cache budget must be >= 0 bytes; got {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[str, tuple[str, Volumes, int]] = OrderedDict()  # key -> (owner, volumes, bytes)
        self._lock = threading.Lock()
        self.bytes_used = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get_or_encode(self, key: str, owner: str, encode: Callable[[], Volumes]) -> Volumes:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            self.misses += 1
        volumes = encode()  # outside the lock: encoding is the slow part
        size = volumes_nbytes(volumes)
        with self._lock:
            if size <= self.budget_bytes and key not in self._entries:
                self._entries[key] = (owner, volumes, size)
                self.bytes_used += size
                while self.bytes_used > self.budget_bytes:
                    _, (_, _, dropped) = self._entries.popitem(last=False)
                    self.bytes_used -= dropped
        return volumes

    def evict_owner(self, owner: str) -> int:
        """Drop every entry of ``owner`` (an unloaded actor); returns how many were dropped."""
        with self._lock:
            keys = [k for k, (o, _, _) in self._entries.items() if o == owner]
            for k in keys:
                self.bytes_used -= self._entries.pop(k)[2]
        return len(keys)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes_used = 0


def cached_volumes(cache: FeatureCache, owner: str, network: NeuralBodyNetwork, sparse_input: SparseInput,
                   pose: tuple[np.ndarray, np.ndarray, np.ndarray], *, voxel_size: float = VOXEL_SIZE,
                   box_padding: BoxPadding = ZJU_PADDING) -> Volumes:
    """The feature volumes of ``sparse_input`` (voxelised from ``pose`` = (vertices, Rh, Th) with ``voxel_size`` and
    ``box_padding``) from ``cache``, encoded on a miss. Call it in the BatchNorm mode the volumes are used in: the
    mode is part of the key (meshes always use batch statistics; renders the actor's mode)."""
    key = pose_key(owner, *pose, network.c.weight.device, voxel_size=voxel_size, box_padding=box_padding,
                   batchnorm=batchnorm_mode(network))
    return cache.get_or_encode(key, owner, lambda: network.encode_sparse_voxels(sparse_input))


@dataclass(kw_only=True)
class CachedRenderer(ReferenceRenderer):
    """``ReferenceRenderer`` with the feature volumes looked up in ``cache`` (encoded on a miss) for ``owner``."""

    cache: FeatureCache
    owner: str
    voxel_size: float = VOXEL_SIZE
    box_padding: BoxPadding = ZJU_PADDING
    pose: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (vertices, Rh, Th) the sparse input came from

    def volumes(self, network: NeuralBodyNetwork, sparse_input: SparseInput) -> list[torch.Tensor]:
        if self.pose is None:
            raise ValueError("CachedRenderer needs pose=(vertices, Rh, Th) of the body to key its cache")
        return cached_volumes(self.cache, self.owner, network, sparse_input, self.pose, voxel_size=self.voxel_size,
                              box_padding=self.box_padding)
