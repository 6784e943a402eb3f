"""Extract a coloured mesh of an actor in one pose and write it as a binary PLY (metres, actor world frame).

The pose is a captured frame of the actor's motion (``--frame``) or any SMPL body from a JSON/npz file
(``--body``: EasyMocap keys poses/shapes/Rh/Th, or AMASS keys global_orient/body_pose/transl/shapes). Marching cubes
of the raw density over the posed body's box, vertex colours from the colour head: by default coarse to fine inside
the body's occupancy (server/neural_body/mesh_coarse_to_fine.py), or on the dense grid (--renderer reference,
server/neural_body/mesh.py); both give the same surface.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from server.neural_body.config import DEFAULT_MARGIN, MESH_THRESHOLD, MESH_VOXEL_SIZE, RENDERERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("actor", type=Path, help="actor folder (holds actor.json)")
    pose = parser.add_mutually_exclusive_group(required=True)
    pose.add_argument("--frame", type=int, help="index of a captured frame of the actor's motion")
    pose.add_argument("--body", type=Path, help="SMPL body as JSON or npz (EasyMocap or AMASS keys)")
    parser.add_argument("--out", type=Path, required=True, help="output .ply path")
    parser.add_argument("--voxel-size", type=float, default=MESH_VOXEL_SIZE,
                        help=f"grid spacing in metres ({MESH_VOXEL_SIZE})")
    parser.add_argument("--threshold", type=float, default=MESH_THRESHOLD,
                        help=f"iso level of the raw density ({MESH_THRESHOLD:g})")
    parser.add_argument("--no-colors", action="store_true", help="skip the vertex colours")
    parser.add_argument("--appearance-frame", type=int, default=None,
                        help="per-frame appearance code (default: the frame's own, or the last trained one)")
    parser.add_argument("--body-model", type=Path, default=None,
                        help="body model file for --body (default: the actor's: the demo body, or its SMPL path)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--renderer", choices=RENDERERS, default="fast",
                        help="fast (default): density only inside the body's occupancy, coarse to fine, the same "
                             "surface; reference: the dense grid over the whole box (Neural Body's recipe)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help=f"fast: metres around the body that may hold density ({DEFAULT_MARGIN})")


def run(args: argparse.Namespace) -> int:
    from server.errors import NeuralHumanError
    from server.neural_body.actor import load_actor
    from server.neural_body.mesh import resolve_pose, write_ply
    from server.neural_body.render_settings import RenderSettings
    from server.neural_body.sparse_input import prepare_sparse_input
    from server.neural_body.train import resolve_device

    try:
        device = resolve_device(args.device)
        actor = load_actor(args.actor, device)
        pose = resolve_pose(actor, frame=args.frame, body_path=args.body, body_model_path=args.body_model,
                            appearance_frame=args.appearance_frame)
        sparse_input = prepare_sparse_input(pose.vertices, pose.Rh, pose.Th, device=device)
        start = time.perf_counter()
        settings = RenderSettings(args.renderer, args.margin)
        mesh = settings.mesh(actor.network, sparse_input, pose.latent_index, voxel_size=args.voxel_size,
                             threshold=args.threshold, colors=not args.no_colors)
        seconds = time.perf_counter() - start
    except (NeuralHumanError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if len(mesh.faces) == 0:
        print(f"error: no surface at threshold {args.threshold}: the density never reaches it in the box; "
              "try a lower --threshold", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_ply(args.out, mesh)
    print(f"wrote {args.out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces"
          f"{' with colours' if mesh.colors is not None else ''} in {seconds:.1f} s")
    return 0
