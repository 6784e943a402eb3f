"""Actor folders under one root: listed from their manifests, loaded on first use, unloaded on request.

An actor id is the name of a folder directly under the root; ids that could leave the root (``..``, slashes,
absolute paths, hidden names) are refused before touching the file system.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.http.errors import ApiError

ACTOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class LoadedActor:
    actor: Any  # server.neural_body.actor.Actor
    body_model: Any  # server.body.model.BodyModel on the server's device
    actor_id: str = ""


class ActorRegistry:
    def __init__(self, root: str | Path, device: str = "cpu", cache_bytes: int = 512 * 2**20):
        from server.neural_body.feature_cache import FeatureCache

        self.root = Path(root).resolve()
        self.device = device
        self.feature_cache = FeatureCache(cache_bytes)  # per-pose feature volumes of the loaded actors
        self._loaded: dict[str, LoadedActor] = {}
        self._lock = threading.Lock()

    def folder(self, actor_id: str) -> Path:
        """The folder of ``actor_id``; 400 for an id that could escape the root, 404 when there is no such actor."""
        if not ACTOR_ID.match(actor_id) or ".." in actor_id:
            raise ApiError(400, "invalid_actor_id", f"actor id {actor_id!r} is not valid: use the folder name of an "
                           "actor (letters, digits, '_', '-', '.'; no '..' or slashes)", "id")
        path = (self.root / actor_id).resolve()
        if path.parent != self.root:
            raise ApiError(400, "invalid_actor_id", f"actor id {actor_id!r} leaves the actors folder", "id")
        from server.neural_body.actor import MANIFEST_FILE

        if not (path / MANIFEST_FILE).is_file():
            raise ApiError(404, "unknown_actor", f"no actor {actor_id!r} in {self.root}; GET /v1/actors lists them",
                           "id")
        return path

    def list(self) -> list[dict[str, Any]]:
        """Listing entries from the manifests (cheap: nothing is loaded); broken folders are skipped."""
        from server.neural_body.actor import ActorError, read_manifest

        out = []
        if not self.root.is_dir():
            return out
        for path in sorted(self.root.iterdir()):
            if not path.is_dir() or not ACTOR_ID.match(path.name):
                continue
            try:
                m = read_manifest(path)
            except ActorError:
                continue
            out.append({"id": path.name, "name": m.name, "frames": m.frames_trained, "body_model": m.body_model,
                        "up_axis": m.up_axis, "bounds": m.bounds, "loaded": path.name in self._loaded})
        return out

    def loaded_ids(self) -> list[str]:
        return sorted(self._loaded)

    def get(self, actor_id: str) -> LoadedActor:
        """The loaded actor (loading it and its body model on first use)."""
        path = self.folder(actor_id)
        with self._lock:
            if actor_id in self._loaded:
                return self._loaded[actor_id]
            from server.neural_body.actor import ActorError, load_actor

            try:
                actor = load_actor(path, device=self.device)
            except ActorError as err:
                raise ApiError(500, "actor_broken", f"actor {actor_id!r} cannot be loaded: {err}", "id") from err
            body_model = self._body_model(actor_id, actor)
            loaded = LoadedActor(actor, body_model, actor_id)
            self._loaded[actor_id] = loaded
            return loaded

    def _body_model(self, actor_id: str, actor: Any) -> Any:
        from server.body.model import load_body_model

        name = actor.manifest.body_model
        target = None if name == "demo" else Path(name.split(":", 1)[1])
        if target is not None and not target.is_file():
            raise ApiError(500, "body_model_missing", f"actor {actor_id!r} needs the SMPL model {str(target)!r}, "
                           "which is not a file on the server; place the model file there", "id")
        model = load_body_model(target, device=self.device)
        if model.num_vertices != actor.network.num_vertices:
            raise ApiError(500, "actor_broken", f"actor {actor_id!r}: its body model has {model.num_vertices} vertices"
                           f" but the network was trained on {actor.network.num_vertices}", "id")
        return model

    def unload(self, actor_id: str) -> bool:
        """Drop the actor (frees its GPU memory); True when it was loaded."""
        self.folder(actor_id)
        with self._lock:
            was = self._loaded.pop(actor_id, None) is not None
            self.feature_cache.evict_owner(actor_id)
        if was and str(self.device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        return was
