"""One frame of model work, shared by the single-frame endpoints and jobs: pose a body, render it, mesh it, and the
npz the answers travel in. Callers run these inside the model queue."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from neural_human_addon.core.camera import PinholeCamera
from server.errors import InvalidInput
from server.inference.actor_registry import LoadedActor
from server.inference.limits import MAX_MESH_GRID_POINTS, grid_points
from server.inference.posing import appearance_code, pose_body
from server.neural_body.feature_cache import FeatureCache
from server.neural_body.mesh import Mesh
from server.neural_body.render_settings import DEFAULT_SETTINGS, RenderSettings
from server.neural_body.sparse_input import prepare_sparse_input
from server.neural_body.volume_renderer import render_image


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def render_frame(loaded: LoadedActor, body: dict[str, Any], camera: PinholeCamera, outputs: list[str],
                 appearance_frame: int | None, cache: FeatureCache | None = None,
                 settings: RenderSettings = DEFAULT_SETTINGS) -> dict[str, np.ndarray]:
    """→ {"rgba": (H,W,4) float32 straight alpha, "depth": (H,W) float32, 0 where alpha = 0} (those in outputs),
    by the fast or the reference path (``settings``). With ``cache`` the pose's features (and occupancy) are reused
    across cameras (same pixels as without)."""
    network = loaded.actor.network
    latent = appearance_code(appearance_frame, network.num_train_frames)
    verts, rh, th = pose_body(loaded, body)
    renderer = settings.image_renderer(cache, loaded.actor_id)
    result = render_image(network, verts, rh, th, latent, np.asarray(camera.K, np.float64),
                          np.asarray(camera.R, np.float64), np.asarray(camera.T, np.float64), camera.width,
                          camera.height, renderer=renderer)
    # Compositing outputs: the box volume's own opacity as straight alpha, the colour it holds, the expected depth of
    # what it holds (volume_renderer.RayOutputs.opacity_map: the original's 1e10 last interval left out).
    alpha = np.clip(result.opacity, 0.0, 1.0).astype(np.float32)
    out = {}
    if "rgba" in outputs:
        rgb = np.where(alpha[..., None] > 0, np.clip(result.straight_rgb, 0.0, 1.0), 0.0)
        out["rgba"] = np.concatenate([rgb, alpha[..., None]], axis=2).astype(np.float32)
    if "depth" in outputs:
        out["depth"] = np.where(alpha > 0, result.surface_depth, 0.0).astype(np.float32)
    return out


def mesh_frame(loaded: LoadedActor, body: dict[str, Any], voxel_size: float, colors: bool,
               appearance_frame: int | None, cache: FeatureCache | None = None,
               settings: RenderSettings = DEFAULT_SETTINGS) -> Mesh:
    """→ server.neural_body.mesh.Mesh in world metres (colours (N,3) uint8 when ``colors``, even when empty), coarse
    to fine inside the occupancy (fast) or on the dense grid (reference). With ``cache`` the pose's features are
    shared with renders and other meshes of the pose (same mesh)."""
    network = loaded.actor.network
    latent = appearance_code(appearance_frame, network.num_train_frames)
    verts, rh, th = pose_body(loaded, body)
    sparse = prepare_sparse_input(verts, rh, th, device=network.c.weight.device)
    box = sparse.world_bounds.cpu().numpy()
    points = grid_points(tuple(float(e) for e in box[1] - box[0]), voxel_size)
    if points > MAX_MESH_GRID_POINTS:
        raise InvalidInput(f"voxel_size: a {voxel_size} m grid over this body's box has {points} points (limit "
                           f"{MAX_MESH_GRID_POINTS}); use a larger voxel_size", "voxel_size")

    result = settings.mesh(network, sparse, latent, voxel_size=voxel_size, colors=colors, cache=cache,
                           owner=loaded.actor_id)
    if colors and result.colors is None:  # an empty mesh still answers every requested array
        result.colors = np.zeros((0, 3), np.uint8)
    return result
