"""Per-pose cache of what rendering a pose needs besides the camera: the sparse-conv feature volumes and the body's
occupancy. Both depend only on the voxelised body (and the network), so every camera of one pose reuses one encode,
and a pose that only moves (Th) voxelises to the same SMPL-frame voxels and reuses them too.

- ``pose_key(owner, sparse_input, device, *, batchnorm) -> str``: a SHA-256 over what the volumes depend on: the
  voxel indices and grid size of the voxelised body, the voxel size, the owner (actor id), the device and the
  network's eval-time BatchNorm mode.
- ``FeatureCache(budget_bytes)``: LRU of ``key -> value`` bounded by the values' total bytes; ``get(key, owner,
  build)``, ``evict_owner(owner)``, ``clear()``, ``hits``/``misses``/``bytes_used``. One value larger than the
  whole budget is computed and returned but not kept.
- ``cached_volumes(cache, owner, network, sparse_input) -> volumes``: the pose's dense volumes (reference path)
  from the cache (encoded on a miss, keyed with the network's current BatchNorm mode); renders and meshes of one
  pose share them. ``cached_tables`` is the same for the fast path's ``FeatureTables``, ``cached_occupancy`` for the
  pose's ``Occupancy``.
- ``CachedRenderer(cache=..., owner=...)``: a ``ReferenceRenderer`` that takes the volumes from the cache; pixels
  are bit-for-bit those of ``ReferenceRenderer`` (same ops, same order). ``CachedFastRenderer`` is the same for the
  ``FastRenderer`` (feature tables, occupancy and density-refined occupancy from the cache).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from server.neural_body.batchnorm_mode import batchnorm_mode
from server.neural_body.fast_renderer import FastRenderer
from server.neural_body.feature_tables import FeatureTables
from server.neural_body.network import NeuralBodyNetwork
from server.neural_body.occupancy import Occupancy, body_occupancy
from server.neural_body.sparse_input import SparseInput
from server.neural_body.volume_renderer import ReferenceRenderer

T = TypeVar("T")

Volumes = list[torch.Tensor]


def pose_key(owner: str, sparse_input: SparseInput, device: str | torch.device, *,
             batchnorm: str = "batch_stats") -> str:
    """Cache key of one voxelised body for one actor on one device and BatchNorm mode: what its volumes depend on."""
    h = hashlib.sha256()
    for part in (owner, str(torch.device(device)), repr(float(sparse_input.voxel_size)), repr(sparse_input.out_sh),
                 batchnorm):
        h.update(part.encode())
        h.update(b"\0")
    h.update(np.ascontiguousarray(sparse_input.coords.detach().cpu().numpy(), dtype=np.int32).tobytes())
    return h.hexdigest()


def volumes_nbytes(volumes: Volumes) -> int:
    return sum(int(v.element_size() * v.nelement()) for v in volumes)


def nbytes_of(value: Any) -> int:
    """Bytes held by a cached value: a list of tensors (volumes) or an object with ``nbytes``."""
    return volumes_nbytes(value) if isinstance(value, list) else int(value.nbytes)


class FeatureCache:
    """LRU of per-pose values (feature volumes, feature tables, occupancies) bounded by ``budget_bytes`` (0 disables
    keeping anything). ``hits``/``misses`` count the feature encodes (the expensive part), not the occupancies."""

    def __init__(self, budget_bytes: int):
        if budget_bytes < 0:
            raise ValueError(f"the cache budget must be >= 0 bytes; got {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[str, tuple[str, Any, int]] = OrderedDict()  # key -> (owner, value, bytes)
        self._lock = threading.Lock()
        self.bytes_used = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        """Number of poses held (a pose's volumes, tables and occupancies count once)."""
        with self._lock:
            return len({key.split(":", 1)[0] for key in self._entries})

    def __contains__(self, key: str) -> bool:
        return key in self._entries or any(k.startswith(key + ":") for k in self._entries)

    def get(self, key: str, owner: str, build: Callable[[], T], *, counted: bool = True) -> T:
        """The value kept under ``key``, or ``build()`` kept for next time (when it fits the budget)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += counted
                return entry[1]
            self.misses += counted
        value = build()  # outside the lock: encoding is the slow part
        with self._lock:
            if key not in self._entries:
                self._insert(key, owner, value)
        return value

    def peek(self, key: str) -> Any | None:
        """The value kept under ``key`` (marked recently used), or None; builds nothing."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: str, owner: str, value: Any) -> None:
        """Keep ``value`` under ``key``, replacing what was there (dropped when it alone exceeds the budget)."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes_used -= old[2]
            self._insert(key, owner, value)

    def _insert(self, key: str, owner: str, value: Any) -> None:
        """Keep a new entry (the lock held), dropping the least recently used ones beyond the budget."""
        size = nbytes_of(value)
        if size > self.budget_bytes:
            return
        self._entries[key] = (owner, value, size)
        self.bytes_used += size
        while self.bytes_used > self.budget_bytes:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self.bytes_used -= dropped

    def get_or_encode(self, key: str, owner: str, encode: Callable[[], Volumes]) -> Volumes:
        return self.get(key, owner, encode)

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


def _key(owner: str, network: NeuralBodyNetwork, sparse_input: SparseInput, kind: str) -> str:
    return pose_key(owner, sparse_input, network.c.weight.device, batchnorm=batchnorm_mode(network)) + ":" + kind


def cached_volumes(cache: FeatureCache, owner: str, network: NeuralBodyNetwork, sparse_input: SparseInput) -> Volumes:
    """The dense feature volumes of ``sparse_input`` from ``cache``, encoded on a miss. Call it in the BatchNorm mode
    the volumes are used in: the mode is part of the key (meshes always use batch statistics; renders the actor's
    mode)."""
    return cache.get(_key(owner, network, sparse_input, "volumes"), owner,
                     lambda: network.encode_sparse_voxels(sparse_input))


def cached_tables(cache: FeatureCache, owner: str, network: NeuralBodyNetwork,
                  sparse_input: SparseInput) -> FeatureTables:
    """The fast path's feature tables of ``sparse_input`` from ``cache`` (same key rules as the volumes)."""
    return cache.get(_key(owner, network, sparse_input, "tables"), owner,
                     lambda: FeatureTables.from_levels(network.encode_sparse_levels(sparse_input)))


def cached_occupancy(cache: FeatureCache, owner: str, network: NeuralBodyNetwork, sparse_input: SparseInput,
                     margin: float) -> Occupancy:
    """The body's occupancy of ``sparse_input`` with ``margin``, kept beside its features (placed at this input's
    SMPL-frame box: a body that only moved shares the cells of the one cached)."""
    occupancy = cache.get(_key(owner, network, sparse_input, f"occupancy:{margin!r}"), owner,
                          lambda: body_occupancy(sparse_input, margin), counted=False)
    return occupancy.anchored_at(sparse_input)


@dataclass(kw_only=True)
class CachedRenderer(ReferenceRenderer):
    """``ReferenceRenderer`` with the feature volumes looked up in ``cache`` (encoded on a miss) for ``owner``."""

    cache: FeatureCache
    owner: str

    def volumes(self, network: NeuralBodyNetwork, sparse_input: SparseInput) -> list[torch.Tensor]:
        return cached_volumes(self.cache, self.owner, network, sparse_input)


@dataclass(kw_only=True)
class CachedFastRenderer(FastRenderer):
    """``FastRenderer`` with the feature tables and the occupancy from ``cache`` for ``owner``."""

    cache: FeatureCache
    owner: str

    def features(self, network: NeuralBodyNetwork, sparse_input: SparseInput) -> FeatureTables:
        return cached_tables(self.cache, self.owner, network, sparse_input)

    def occupancy(self, network: NeuralBodyNetwork, sparse_input: SparseInput) -> Occupancy:
        return cached_occupancy(self.cache, self.owner, network, sparse_input, self.margin)

    def refined_occupancy(self, network: NeuralBodyNetwork, sparse_input: SparseInput, occupancy: Occupancy,
                          tables: FeatureTables,
                          samples_in: Callable[[Occupancy], int] | None = None) -> Occupancy:
        # The density depends on the voxelised body only (not on the appearance code), so the pose's refinement is
        # kept and used by every later image. A level is applied once the pose's images together pay for its probes
        # (ski rental: an orbit of 256² views refines fully from its second view, a 64² preview after a few).
        key = _key(self.owner, network, sparse_input, f"refined:{self.margin!r}:{self.refine_dilations}")
        kept = self.cache.peek(key)
        if kept is not None:
            occupancy = kept.occupancy.anchored_at(sparse_input)
            if occupancy.level >= len(self.refine_dilations):
                return occupancy  # fully refined: nothing left to pay for
        earlier = kept.samples if kept is not None else 0
        counted = None if samples_in is None else (lambda occ: earlier + samples_in(occ))
        refined = super().refined_occupancy(network, sparse_input, occupancy, tables, counted)
        samples = earlier + (samples_in(refined) if samples_in is not None else 0)
        if kept is None or refined.level != kept.occupancy.level:
            self.cache.put(key, self.owner, RefinedOccupancy(refined, samples))
        else:
            kept.samples = samples  # a heuristic tally: a lost update between threads only delays a level
        return refined


@dataclass
class RefinedOccupancy:
    """A pose's occupancy as refined so far and the samples its images have had (what pays for the next level)."""

    occupancy: Occupancy
    samples: int

    @property
    def nbytes(self) -> int:
        return self.occupancy.nbytes
