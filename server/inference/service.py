"""The inference service: what the API asks of the server, without HTTP. Holds the actor registry, the model queue
and the jobs; every piece of model work goes through the queue, and on an out-of-memory error the other actors are
unloaded and the work runs once more."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from neural_human_addon.core.camera import PinholeCamera
from server.body.skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS
from server.inference.actor_registry import ActorRegistry
from server.inference.frames import mesh_frame, render_frame
from server.inference.jobs import FrameExecutor, JobManager
from server.inference.limits import JobPolicy
from server.inference.model_queue import ModelQueue
from server.neural_body.mesh import Mesh
from server.neural_body.render_settings import DEFAULT_SETTINGS, RenderSettings

T = TypeVar("T")


def default_jobs_dir() -> Path:
    """$XDG_CACHE_HOME/neural-human/jobs (default ~/.cache/neural-human/jobs): jobs outlive the server process."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "neural-human" / "jobs"


def device_info(device: str) -> dict[str, Any]:
    """Type (cuda/cpu), GPU name and memory of the model device."""
    info: dict[str, Any] = {"type": "cuda" if device.startswith("cuda") else "cpu", "name": None,
                            "free_memory_bytes": None, "total_memory_bytes": None}
    if info["type"] == "cuda":
        free, total = torch.cuda.mem_get_info()
        info.update(name=torch.cuda.get_device_name(), free_memory_bytes=int(free), total_memory_bytes=int(total))
    return info


class InferenceService:
    """Actors under ``registry``'s root, model work serialised by ``queue``, jobs kept by ``jobs``."""

    def __init__(self, registry: ActorRegistry, queue: ModelQueue, jobs: JobManager,
                 settings: RenderSettings = DEFAULT_SETTINGS):
        self.registry = registry
        self.queue = queue
        self.jobs = jobs
        self.settings = settings

    @classmethod
    def create(cls, actors_root: str | Path, device: str, jobs_dir: str | Path, cache_bytes: int, *,
               max_loaded: int, min_free_gpu_bytes: int,
               settings: RenderSettings = DEFAULT_SETTINGS, policy: JobPolicy | None = None,
               executor: FrameExecutor | None = None) -> InferenceService:
        """``executor`` computes the jobs' frames (None: here, through the queue; a ``farm.Farm``: Ray workers)."""
        registry = ActorRegistry(actors_root, device, cache_bytes, max_loaded=max_loaded,
                                 min_free_gpu_bytes=min_free_gpu_bytes)
        queue = ModelQueue()
        return cls(registry, queue, JobManager(jobs_dir, registry, queue, settings, policy, executor), settings)

    def model_work(self, actor_id: str, fn: Callable[[], T], abandoned: Callable[[], bool] | None = None) -> T:
        """``fn`` through the queue; on out-of-memory every other actor is unloaded and fn runs once more; dropped
        (ClientGone) when ``abandoned()`` is true by its turn."""
        return self.queue.run(fn, relieve=partial(self.registry.free_memory, keep=actor_id), abandoned=abandoned)

    def status(self) -> dict[str, Any]:
        """Device, loaded actors, queue, feature cache and memory figures (the health answer's body)."""
        registry, cache = self.registry, self.registry.feature_cache
        return {"device": device_info(registry.device), "loaded_actors": registry.loaded_ids(),
                "renderer": {"path": self.settings.renderer, "margin_m": self.settings.margin,
                             "precision": self.settings.precision, "compile": self.settings.compile},
                "queue_waiting": self.queue.waiting, "queue_dropped": self.queue.dropped,
                "feature_cache": {"entries": len(cache), "bytes": cache.bytes_used, "budget_bytes": cache.budget_bytes,
                                  "hits": cache.hits, "misses": cache.misses},
                "memory": {**registry.memory_status(), "oom_retries": self.queue.oom_retries}}

    def skeleton(self, actor_id: str) -> dict[str, Any]:
        """The actor's rest joints (24,3) for its shapes, with the SMPL joint names and tree."""
        loaded = self.model_work(actor_id, lambda: self.registry.get(actor_id))
        joints = loaded.body_model.rest_joints(np.asarray(loaded.actor.shapes, np.float32)).cpu().numpy()
        return {"names": list(SMPL_JOINT_NAMES), "parents": list(SMPL_PARENTS),
                "joints": joints.astype(float).tolist(), "shapes": loaded.actor.shapes.astype(float).tolist(),
                "up_axis": loaded.actor.manifest.up_axis}

    def motion(self, actor_id: str) -> dict[str, Any]:
        """The SMPL parameters of the actor's captured frames, one body message per frame."""
        m = self.model_work(actor_id, lambda: self.registry.get(actor_id)).actor.motion
        frames = [{"poses": m.poses[i].astype(float).tolist(), "shapes": m.shapes[i].astype(float).tolist(),
                   "Rh": m.Rh[i].astype(float).tolist(), "Th": m.Th[i].astype(float).tolist()}
                  for i in range(m.num_frames)]
        return {"fps": float(m.fps), "frames": frames}

    def render(self, actor_id: str, body: dict[str, Any], camera: PinholeCamera, outputs: list[str],
               appearance_frame: int | None, abandoned: Callable[[], bool] | None = None) -> dict[str, np.ndarray]:
        """One frame (see frames.render_frame), with the per-pose feature cache."""
        cache = self.registry.feature_cache
        return self.model_work(actor_id, lambda: render_frame(self.registry.get(actor_id), body, camera, outputs,
                                                              appearance_frame, cache, self.settings), abandoned)

    def mesh(self, actor_id: str, body: dict[str, Any], voxel_size: float, colors: bool,
             appearance_frame: int | None, abandoned: Callable[[], bool] | None = None) -> Mesh:
        """One mesh (see frames.mesh_frame), sharing the per-pose feature cache with renders."""
        cache = self.registry.feature_cache
        return self.model_work(actor_id, lambda: mesh_frame(self.registry.get(actor_id), body, voxel_size, colors,
                                                            appearance_frame, cache, self.settings), abandoned)

    def unload(self, actor_id: str) -> dict[str, Any]:
        was = self.queue.run(lambda: self.registry.unload(actor_id))
        return {"id": actor_id, "unloaded": was, "loaded_actors": self.registry.loaded_ids()}
