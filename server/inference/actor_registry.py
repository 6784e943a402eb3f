"""Actor folders under one root: listed from their manifests, loaded on first use, unloaded on request or under
memory pressure.

An actor id is the name of a folder directly under the root; ids that could leave the root (``..``, slashes,
absolute paths, hidden names) are refused before touching the file system.

Memory: loaded actors are kept in least-recently-used order. Before an actor loads, the least recently used ones
are unloaded (their feature-cache entries dropped) while more than ``max_loaded - 1`` are loaded, and, on CUDA,
while the free GPU memory is below ``min_free_gpu_bytes`` + the new actor's weights; ``free_memory(keep)`` unloads
all but one actor and clears the feature cache (the inference queue calls it on an out-of-memory error).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from server.body.model import BodyModel, resolve_body_model
from server.errors import ActorBroken, BodyModelMissing, InvalidActorId, UnknownActor
from server.inference.limits import DEFAULT_CACHE_MB, DEFAULT_MIN_FREE_GPU_MB
from server.neural_body.actor import MANIFEST_FILE, MODEL_FILE, Actor, ActorError, load_actor, read_manifest
from server.neural_body.feature_cache import FeatureCache

ACTOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

log = logging.getLogger("server.inference")


@dataclass
class LoadedActor:
    actor: Actor
    body_model: BodyModel  # on the server's device
    actor_id: str = ""


class ActorRegistry:
    """Actors under ``root`` on ``device``; ``max_loaded`` (0 = no limit) and ``min_free_gpu_bytes`` (CUDA only)
    bound what stays loaded; ``cache_bytes`` bounds the per-pose feature cache."""

    def __init__(self, root: str | Path, device: str = "cpu", cache_bytes: int = DEFAULT_CACHE_MB * 2**20, *,
                 max_loaded: int = 0, min_free_gpu_bytes: int = DEFAULT_MIN_FREE_GPU_MB * 2**20):
        if max_loaded < 0 or min_free_gpu_bytes < 0:
            raise ValueError(f"max_loaded and min_free_gpu_bytes must be >= 0; got {max_loaded}, {min_free_gpu_bytes}")
        self.root = Path(root).resolve()
        self.device = device
        self.max_loaded = int(max_loaded)
        self.min_free_gpu_bytes = int(min_free_gpu_bytes)
        self.feature_cache = FeatureCache(cache_bytes)  # per-pose feature volumes of the loaded actors
        self._loaded: OrderedDict[str, LoadedActor] = OrderedDict()  # least recently used first
        self._lock = threading.RLock()
        self._order: tuple[str, ...] = ()  # snapshot of _loaded's order, read without the lock (health, listing)
        self.evictions = 0  # actors unloaded under memory pressure (not counting POST .../unload)

    def folder(self, actor_id: str) -> Path:
        """The folder of ``actor_id``; InvalidActorId for an id that could escape the root, UnknownActor when there is
        no such actor."""
        if not ACTOR_ID.match(actor_id) or ".." in actor_id:
            raise InvalidActorId(f"actor id {actor_id!r} is not valid: use the folder name of an "
                           "actor (letters, digits, '_', '-', '.'; no '..' or slashes)", "id")
        path = (self.root / actor_id).resolve()
        if path.parent != self.root:
            raise InvalidActorId(f"actor id {actor_id!r} leaves the actors folder", "id")
        if not (path / MANIFEST_FILE).is_file():
            raise UnknownActor(f"no actor {actor_id!r} in {self.root}; GET /v1/actors lists them",
                           "id")
        return path

    def list(self) -> list[dict[str, Any]]:
        """Listing entries from the manifests (cheap: nothing is loaded); broken folders are skipped, and so is every
        folder ``folder()`` refuses (a symlink out of the root): listing and lookup agree."""
        out = []
        if not self.root.is_dir():
            return out
        for path in sorted(self.root.iterdir()):
            try:
                m = read_manifest(self.folder(path.name))
            except (ActorError, InvalidActorId, UnknownActor):
                continue
            out.append({"id": path.name, "name": m.name, "frames": m.frames_trained, "body_model": m.body_model,
                        "up_axis": m.up_axis, "bounds": m.bounds, "loaded": path.name in self._order})
        return out

    def loaded_ids(self) -> list[str]:
        return sorted(self._order)

    def memory_status(self) -> dict[str, Any]:
        """The memory limits and the loaded actors, least recently used first."""
        return {"max_loaded": self.max_loaded or None, "min_free_gpu_bytes": self.min_free_gpu_bytes,
                "lru_order": list(self._order), "evictions": self.evictions}

    def get(self, actor_id: str) -> LoadedActor:
        """The loaded actor (loading it and its body model on first use, after making room for it)."""
        path = self.folder(actor_id)
        with self._lock:
            if actor_id in self._loaded:
                self._loaded.move_to_end(actor_id)
                self._order = tuple(self._loaded)
                return self._loaded[actor_id]
            weights = path / MODEL_FILE
            self._make_room(actor_id, weights.stat().st_size if weights.is_file() else 0)
            try:
                actor = load_actor(path, device=self.device)
            except ActorError as err:
                raise ActorBroken(f"actor {actor_id!r} cannot be loaded: {err}", "id") from err
            body_model = self._body_model(actor_id, actor)
            loaded = LoadedActor(actor, body_model, actor_id)
            self._loaded[actor_id] = loaded
            self._order = tuple(self._loaded)
            return loaded

    @property
    def _on_cuda(self) -> bool:
        return str(self.device).startswith("cuda")

    def _make_room(self, actor_id: str, weight_bytes: int) -> None:
        """Unload least-recently-used actors until ``actor_id`` fits the count limit and, on CUDA, the free memory
        stays above the margin after its weights load; then, if still short, clear the feature cache."""
        while self.max_loaded and len(self._loaded) >= self.max_loaded:
            self._evict_oldest(f"--max-loaded {self.max_loaded}", actor_id)
        if not self._on_cuda:
            return
        need = self.min_free_gpu_bytes + weight_bytes
        while self._loaded and _free_gpu_bytes() < need:
            self._evict_oldest("free GPU memory", actor_id)
        if len(self.feature_cache) and _free_gpu_bytes() < need:
            self.feature_cache.clear()
            _free_gpu_bytes()

    def _evict_oldest(self, reason: str, for_id: str) -> None:
        oldest = next(iter(self._loaded))
        self._drop(oldest)
        self.evictions += 1
        log.warning("unloaded actor %r (least recently used) to load %r: %s", oldest, for_id, reason)

    def _drop(self, actor_id: str) -> bool:
        was = self._loaded.pop(actor_id, None) is not None
        self._order = tuple(self._loaded)
        self.feature_cache.evict_owner(actor_id)
        return was

    def free_memory(self, keep: str | None = None) -> list[str]:
        """Unload every actor but ``keep`` and clear the feature cache (after an out-of-memory error);
        returns the unloaded ids."""
        with self._lock:
            dropped = [a for a in self._loaded if a != keep]
            for actor_id in dropped:
                self._drop(actor_id)
            self.evictions += len(dropped)
            self.feature_cache.clear()
        if self._on_cuda:
            _free_gpu_bytes()
        if dropped:
            log.warning("out of memory: unloaded actors %s and cleared the feature cache", dropped)
        return dropped

    def _body_model(self, actor_id: str, actor: Actor) -> BodyModel:
        try:
            model = resolve_body_model(actor.manifest.body_model, device=self.device)
        except BodyModelMissing as err:
            raise BodyModelMissing(f"actor {actor_id!r}: {err}", "id") from None
        if model.num_vertices != actor.network.num_vertices:
            raise ActorBroken(f"actor {actor_id!r}: its body model has {model.num_vertices} vertices"
                           f" but the network was trained on {actor.network.num_vertices}", "id")
        return model

    def unload(self, actor_id: str) -> bool:
        """Drop the actor (frees its GPU memory); True when it was loaded."""
        self.folder(actor_id)
        with self._lock:
            was = self._drop(actor_id)
        if was and self._on_cuda:
            _free_gpu_bytes()
        return was


def _free_gpu_bytes() -> int:
    """Free memory of the current CUDA device after returning the allocator's unused blocks to the driver."""
    torch.cuda.empty_cache()
    return int(torch.cuda.mem_get_info()[0])
