"""One frame of model work, shared by the single-frame endpoints and jobs: pose a body, render it, mesh it.
Callers run these inside the inference queue."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

from server.http.errors import ApiError
from server.http.schemas import MAX_MESH_GRID_POINTS, Camera, check_appearance_frame, grid_points
from server.inference.actor_registry import LoadedActor

if TYPE_CHECKING:
    from server.neural_body.feature_cache import FeatureCache


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def pose_body(loaded: LoadedActor, body: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One body in any accepted convention -> posed world vertices (V,3), Rh (3,), Th (3,); 422 naming the field."""
    import torch

    from server.body.params import BodyParamsError, to_easymocap

    model = loaded.body_model
    try:
        p = to_easymocap(body, model.pelvis_rest)
    except BodyParamsError as err:
        raise ApiError(422, "invalid_body", str(err), f"body.{err.field}") from err
    if p["poses"].shape[0] != 1:
        raise ApiError(422, "invalid_body", f"body: holds {p['poses'].shape[0]} frames; send one frame per request "
                       "(use POST /v1/jobs for many)", "body")
    t = {k: torch.from_numpy(v).to(model.device) for k, v in p.items()}
    with torch.no_grad():
        out = model(t["poses"], t["shapes"], t["Rh"], t["Th"])
    return out.vertices[0].cpu().numpy(), p["Rh"][0], p["Th"][0]


def render_frame(loaded: LoadedActor, body: dict[str, Any], camera: Camera, outputs: list[str],
                 appearance_frame: int | None, cache: FeatureCache | None = None) -> dict[str, np.ndarray]:
    """→ {"rgba": (H,W,4) float32 straight alpha, "depth": (H,W) float32, 0 where alpha = 0} (those in outputs).
    With ``cache`` the pose's feature volumes are reused across cameras (same pixels as without)."""
    from server.neural_body.feature_cache import CachedRenderer
    from server.neural_body.volume_renderer import render_image

    network = loaded.actor.network
    latent = check_appearance_frame(appearance_frame, network.num_train_frames)
    verts, rh, th = pose_body(loaded, body)
    renderer = CachedRenderer(cache=cache, owner=loaded.actor_id, pose=(verts, rh, th)) if cache is not None else None
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
               appearance_frame: int | None, cache: FeatureCache | None = None) -> Any:
    """→ server.neural_body.mesh.Mesh in world metres (colours (N,3) uint8 when ``colors``, even when empty).
    With ``cache`` the pose's feature volumes are shared with renders and other meshes of the pose (same mesh)."""
    from server.neural_body.feature_cache import cached_volumes
    from server.neural_body.mesh import extract_mesh
    from server.neural_body.sparse_input import prepare_sparse_input

    network = loaded.actor.network
    latent = check_appearance_frame(appearance_frame, network.num_train_frames)
    verts, rh, th = pose_body(loaded, body)
    sparse = prepare_sparse_input(verts, rh, th, device=network.c.weight.device)
    box = sparse.world_bounds.cpu().numpy()
    points = grid_points(tuple(float(e) for e in box[1] - box[0]), voxel_size)
    if points > MAX_MESH_GRID_POINTS:
        raise ApiError(422, "invalid_request", f"voxel_size: a {voxel_size} m grid over this body's box has {points} "
                       f"points (limit {MAX_MESH_GRID_POINTS}); use a larger voxel_size", "voxel_size")
    def cached_encode(sparse_input: Any) -> Any:
        return cached_volumes(cache, loaded.actor_id, network, sparse_input, (verts, rh, th))

    result = extract_mesh(network, sparse, latent, voxel_size=voxel_size, colors=colors,
                          encode=cached_encode if cache is not None else None)
    if colors and result.colors is None:  # an empty mesh still answers every requested array
        result.colors = np.zeros((0, 3), np.uint8)
    return result
