"""Evaluate an actor on its dataset with Neural Body's protocol and write the metrics as JSON.

PSNR and SSIM of novel views (every ``--frame-interval``-th training frame seen from the test cameras) and novel poses
(the unseen-pose frames), as the original evaluator computes them; with ground-truth meshes in the dataset also
volumetric IoU and Chamfer-L1 of the actor's mesh. Comparison images (prediction | ground truth) go to
``<json dir>/comparison/``. The protocol is described in server/neural_body/evaluate.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from server.neural_body.config import FRAME_INTERVAL, MESH_POINTS, MESH_THRESHOLD, MESH_VOXEL_SIZE, RENDERERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("actor", type=Path, help="actor folder (holds actor.json)")
    parser.add_argument("--data", type=Path, required=True, help="the dataset the actor was trained on")
    parser.add_argument("--json", type=Path, required=True, help="output JSON path (comparison images go beside it)")
    parser.add_argument("--frame-interval", type=int, default=FRAME_INTERVAL,
                        help=f"evaluate every n-th frame ({FRAME_INTERVAL}, the original; 1 for tiny datasets)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--ratio", type=float, default=None, help="image scale (default: dataset's; 0.5 for ZJU)")
    parser.add_argument("--no-mesh", action="store_true", help="skip the geometry metrics")
    parser.add_argument("--mesh-voxel-size", type=float, default=MESH_VOXEL_SIZE,
                        help=f"mesh grid spacing, metres ({MESH_VOXEL_SIZE})")
    parser.add_argument("--mesh-threshold", type=float, default=MESH_THRESHOLD,
                        help=f"raw density iso level ({MESH_THRESHOLD:g})")
    parser.add_argument("--mesh-points", type=int, default=MESH_POINTS, help=f"IoU/Chamfer samples ({MESH_POINTS})")
    parser.add_argument("--renderer", choices=(*RENDERERS, "both"), default="reference",
                        help="reference (default): the protocol's own rendering of the whole box; fast: the fast "
                             "path; both: the reference, and the fast path's figures and agreement beside them")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from server.data.zju_reader import ZjuMocapDataset
    from server.errors import NeuralHumanError
    from server.neural_body.actor import load_actor
    from server.neural_body.evaluate import evaluate_actor, finite_or_none, write_json
    from server.neural_body.render_settings import RenderSettings
    from server.neural_body.train import resolve_device

    if args.frame_interval < 1 or args.mesh_points < 100 or args.mesh_voxel_size <= 0:
        print("error: --frame-interval must be >= 1, --mesh-points >= 100 and --mesh-voxel-size > 0",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        device = resolve_device(args.device)
        actor = load_actor(args.actor, device)
        dataset = ZjuMocapDataset(args.data, ratio=args.ratio)
        result = evaluate_actor(actor, dataset, args.json.parent, frame_interval=args.frame_interval,
                                mesh=not args.no_mesh, mesh_voxel_size=args.mesh_voxel_size,
                                mesh_threshold=args.mesh_threshold, mesh_points=args.mesh_points,
                                progress=not args.no_progress,
                                settings=RenderSettings("fast" if args.renderer == "fast" else "reference"),
                                beside=RenderSettings("fast") if args.renderer == "both" else None)
    except (NeuralHumanError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    result["timing"]["total_seconds"] = round(time.perf_counter() - start, 2)
    write_json(args.json, result)
    summary = {k: {m: result[k][m] for m in ("psnr", "ssim", "psnr_whole")} for k in ("novel_view", "novel_pose")}
    if result["mesh"]:
        summary["mesh"] = {m: result["mesh"][m] for m in ("iou", "chamfer_l1")}
    if "beside" in result:
        summary["fast_path"] = {k: result["beside"][k] for k in ("novel_view", "novel_pose", "agreement")}
    print(json.dumps(finite_or_none(summary), indent=2))
    print(f"wrote {args.json} and comparison images in {args.json.parent / 'comparison'}")
    return 0
