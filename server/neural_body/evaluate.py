"""Evaluate an actor on its dataset with Neural Body's protocol and write the metrics as JSON.

Protocol (the original's if_nerf.py evaluator): BatchNorm with the frame's batch statistics, no perturbation, 64 samples
per ray; test cameras = the dataset's non-training views; every ``--frame-interval``-th (30) frame of the training
frames (novel view) and of the unseen-pose frames (novel pose, appearance code clamped to the last trained one).
PSNR over the pixels whose ray hits the body box (``mask_at_box``) against the masked ground truth; SSIM on the
crop to the bounding rectangle of ``mask_at_box`` (7×7 window, data_range 2); also PSNR over the whole image.
Side-by-side comparison images (prediction | ground truth) are written to ``<json dir>/comparison/``.

When the dataset has ground-truth meshes, geometry is scored on the same frames: the actor's mesh (marching cubes
of the raw density at ``--mesh-threshold``) against the ground truth, by volumetric IoU (100k points in the joint
box, ray-parity inside test) and Chamfer-L1 (½ of the two directed mean nearest-neighbour distances between 100k
surface samples each, metres), as Occupancy Networks / Neural Parts report them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from neural_human_addon.core.atomic_files import atomic_path
from server.data.image_ops import save_png
from server.neural_body import metrics
from server.neural_body.config import FRAME_INTERVAL, MESH_POINTS, MESH_THRESHOLD, MESH_VOXEL_SIZE
from server.neural_body.render_settings import RenderSettings
from server.neural_body.sparse_input import prepare_sparse_input
from server.neural_body.volume_renderer import render_image

REFERENCE = RenderSettings("reference")


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def image_metrics(pred: np.ndarray, gt: np.ndarray, mask_at_box: np.ndarray) -> dict[str, float]:
    """Neural Body's per-image metrics: PSNR in the box, SSIM on the box crop, PSNR on the whole image."""
    box = mask_at_box.astype(bool)
    gt_box = np.where(box[..., None], gt, 0.0)  # both images are 0 outside mask_at_box, as the evaluator's
    pred_box = np.where(box[..., None], pred, 0.0)
    return {"psnr": metrics.psnr(pred_box[box], gt_box[box]), "ssim": metrics.ssim_box(pred_box, gt_box, box),
            "psnr_whole": metrics.psnr(pred, gt)}


# One loop over the protocol's splits, frames and views, kept whole so it reads as the original evaluator does:
# splitting it would scatter the per-frame state.
def evaluate_actor(actor: Any, dataset: Any, out_dir: Path, *, frame_interval: int = FRAME_INTERVAL,  # noqa: PLR0915
                   mesh: bool = True, mesh_voxel_size: float = MESH_VOXEL_SIZE, mesh_threshold: float = MESH_THRESHOLD,
                   mesh_points: int = MESH_POINTS, progress: bool = True, settings: RenderSettings = REFERENCE,
                   beside: RenderSettings | None = None) -> dict[str, Any]:
    """Run the protocol for ``actor`` (``load_actor``) on ``dataset`` (``ZjuMocapDataset``); comparison images go to
    ``out_dir/comparison``. Returns the JSON-ready result. ``settings`` picks the path that renders and meshes (the
    reference path, the protocol's, by default); ``beside`` renders every image again with another path and reports
    its figures and its agreement with the first under ``result["beside"]``."""
    network = actor.network
    vertex_count = int(dataset.vertices(dataset.train_frames[0]).shape[0])
    if vertex_count != network.num_vertices:
        raise ValueError(f"the dataset's bodies have {vertex_count} vertices but the actor was trained with "
                         f"{network.num_vertices}; evaluate on the dataset the actor was trained on")
    if not dataset.test_views:
        raise ValueError(f"{dataset.root}: the dataset has no test views (every camera is a training view)")
    last_code = network.num_train_frames - 1
    splits = {"novel_view": list(dataset.train_frames)[::frame_interval],
              "novel_pose": list(dataset.novel_pose_frames)[::frame_interval]}
    has_mesh = mesh and dataset.gt_mesh(dataset.train_frames[0]) is not None
    comparison = out_dir / "comparison"
    comparison.mkdir(parents=True, exist_ok=True)

    result: dict[str, Any] = {}
    render_seconds: list[float] = []
    mesh_seconds: list[float] = []
    mesh_rows: list[dict[str, Any]] = []
    beside_rows: list[dict[str, Any]] = []
    beside_seconds: list[float] = []
    total = sum(len(frames) for frames in splits.values()) * len(dataset.test_views)
    bar = tqdm(total=total, desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True)
    for split, frames in splits.items():
        rows: list[dict[str, Any]] = []
        for frame in frames:
            params = dataset.params(frame)
            vertices = dataset.vertices(frame)
            latent = min(int(dataset.latent_index(frame)), last_code)
            for view in dataset.test_views:
                cam = dataset.cameras[view]
                start = time.perf_counter()
                out = render_image(network, vertices, params.Rh, params.Th, latent, cam.K, cam.R, cam.T,
                                   cam.width, cam.height, renderer=settings.image_renderer())
                render_seconds.append(time.perf_counter() - start)
                if beside is not None:
                    start = time.perf_counter()
                    other = render_image(network, vertices, params.Rh, params.Th, latent, cam.K, cam.R, cam.T,
                                         cam.width, cam.height, renderer=beside.image_renderer())
                    beside_seconds.append(time.perf_counter() - start)
                    beside_rows.append({"split": split, **image_metrics(other.rgb, dataset.image(frame, view),
                                                                        other.mask_at_box),
                                        **render_agreement(out, other)})
                gt = dataset.image(frame, view)
                if not out.mask_at_box.any():
                    raise ValueError(f"frame {frame}, view {view}: the body box is not in view of the camera")
                row = {"frame": int(frame), "view": int(view), "latent_index": latent,
                       **image_metrics(out.rgb, gt, out.mask_at_box)}
                rows.append(row)
                save_png(comparison / f"{split}_frame{frame:04d}_view{view:04d}.png",
                          np.concatenate([out.rgb, gt], axis=1))
                bar.update(1)
            if has_mesh:
                start = time.perf_counter()
                sparse_input = prepare_sparse_input(vertices, params.Rh, params.Th, device=network.c.weight.device)
                pred = settings.mesh(network, sparse_input, latent, voxel_size=mesh_voxel_size,
                                     threshold=mesh_threshold, colors=False)
                gt_verts, gt_faces = dataset.gt_mesh(frame)
                if len(pred.faces):
                    iou = metrics.volumetric_iou((pred.vertices, pred.faces), (gt_verts, gt_faces),
                                                 num_points=mesh_points)
                    chamfer = metrics.chamfer_l1((pred.vertices, pred.faces), (gt_verts, gt_faces),
                                                 num_points=mesh_points)
                else:  # no surface at this threshold: nothing overlaps, distance undefined
                    iou, chamfer = 0.0, None
                mesh_seconds.append(time.perf_counter() - start)
                mesh_rows.append({"split": split, "frame": int(frame), "iou": iou, "chamfer_l1": chamfer,
                                  "faces": int(len(pred.faces))})
        result[split] = {"psnr": _mean([r["psnr"] for r in rows]), "ssim": _mean([r["ssim"] for r in rows]),
                         "psnr_whole": _mean([r["psnr_whole"] for r in rows]), "images": len(rows),
                         "frames": [int(f) for f in frames], "per_image": rows}
    bar.close()
    if has_mesh:
        result["mesh"] = {"iou": _mean([r["iou"] for r in mesh_rows]),
                          "chamfer_l1": _mean([r["chamfer_l1"] for r in mesh_rows]),
                          "empty_meshes": sum(1 for r in mesh_rows if r["faces"] == 0), "per_frame": mesh_rows}
    else:
        result["mesh"] = None
    if beside is not None:
        result["beside"] = _beside_summary(beside, beside_rows, beside_seconds)
    result["protocol"] = {
        "renderer": settings.renderer,
        "batchnorm": "batch_stats", "perturb": 0, "n_samples": 64, "frame_interval": frame_interval,
        "test_views": list(dataset.test_views), "train_views": list(dataset.train_views),
        "latent_index_novel_pose": last_code,
        "psnr": "-10 log10 MSE over mask_at_box pixels vs the masked ground truth (black background)",
        "ssim": "skimage structural_similarity(channel_axis=-1, data_range=2, win_size=7) on the bounding "
                "rectangle of mask_at_box",
        "psnr_whole": "-10 log10 MSE over the whole image",
        "mesh": None if not has_mesh else {
            "voxel_size": mesh_voxel_size, "threshold": mesh_threshold, "points": mesh_points,
            "iou": "volumetric IoU from points uniform in the joint box, ray-parity inside test",
            "chamfer_l1": "0.5 (mean NN distance pred->gt + gt->pred) over area-uniform surface samples, metres"},
        "dataset": dataset.summary(),
        "actor": {"name": actor.manifest.name, "frames_trained": actor.manifest.frames_trained,
                  "path": str(actor.path) if actor.path else None},
    }
    result["timing"] = {"render_seconds_per_image": _mean(render_seconds),
                        "mesh_seconds_per_frame": _mean(mesh_seconds) if has_mesh else None,
                        "device": str(network.c.weight.device)}
    return result


def render_agreement(a: Any, b: Any) -> dict[str, float]:
    """PSNR over premultiplied RGB (the compositing outputs) and max alpha difference of two ``ImageRender``."""
    pa, pb = a.straight_rgb * a.opacity[..., None], b.straight_rgb * b.opacity[..., None]
    return {"agreement_psnr": metrics.psnr(pa, pb), "max_alpha_difference": float(np.abs(a.opacity - b.opacity).max())}


def _beside_summary(beside: RenderSettings, rows: list[dict[str, Any]], seconds: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"renderer": beside.renderer, "margin": beside.margin,
                           "render_seconds_per_image": _mean(seconds)}
    for split in ("novel_view", "novel_pose"):
        mine = [r for r in rows if r["split"] == split]
        out[split] = {"psnr": _mean([r["psnr"] for r in mine]), "ssim": _mean([r["ssim"] for r in mine])}
    out["agreement"] = {"min_psnr_premultiplied": min((r["agreement_psnr"] for r in rows), default=None),
                        "max_alpha_difference": max((r["max_alpha_difference"] for r in rows), default=None)}
    return out


def finite_or_none(value: Any) -> Any:
    """JSON has no inf/nan: a perfect PSNR (inf) and undefined values become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, mode=0o644) as tmp:
        tmp.write_text(json.dumps(finite_or_none(data), indent=2) + "\n", encoding="utf-8")
