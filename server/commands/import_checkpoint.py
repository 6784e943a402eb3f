"""Convert a checkpoint of the original Neural Body implementation (latest.pth) into a Neural Human actor folder.

The sparse-conv weights are permuted from spconv 1.x to spconv 2 layout and every key and shape is checked against
the network built for the checkpoint's vertex and frame counts. With --motion the training motion and the body's
world box are read from the dataset folder (ZJU-MoCap layout) the checkpoint was trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.body.skeleton import SMPL_VERTEX_COUNT
from server.neural_body.config import BATCHNORM_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint of the original implementation (latest.pth)")
    parser.add_argument("--out", type=Path, required=True, help="actor folder to write (replaced if it exists)")
    parser.add_argument("--name", help="actor name (default: the output folder's name)")
    parser.add_argument("--body-model", dest="body_model",
                        help="'demo' for the bundled demo body, or the path/name of the SMPL model the checkpoint "
                             f"was trained with (default for {SMPL_VERTEX_COUNT}-vertex checkpoints: smpl:neutral)")
    parser.add_argument("--motion", type=Path, help="dataset folder (ZJU-MoCap layout) the checkpoint was trained "
                        "on: stores its training motion and body box in the actor")
    parser.add_argument("--fps", type=float, help="frame rate of the motion (default: the dataset's, else 30)")
    parser.add_argument("--batchnorm", choices=BATCHNORM_MODES, default="batch_stats",
                        help="BatchNorm statistics at render time (default batch_stats, as the original's run.py)")


def run(args: argparse.Namespace) -> int:
    from server.errors import NeuralHumanError
    from server.neural_body.actor import read_manifest
    from server.neural_body.checkpoint_import import import_checkpoint

    try:
        out = import_checkpoint(args.checkpoint, args.out, name=args.name, body_model=args.body_model,
                                motion_dir=args.motion, fps=args.fps, batchnorm=args.batchnorm)
    except NeuralHumanError as err:
        print(f"import-checkpoint: {err}", file=sys.stderr)
        return 1
    manifest = read_manifest(out)
    print(json.dumps({"actor": str(out), "name": manifest.name, "vertex_count": manifest.vertex_count,
                      "frames_trained": manifest.frames_trained, "body_model": manifest.body_model,
                      "motion_frames": manifest.training_data.get("dataset") and
                      manifest.training_data["dataset"]["num_train_frames"],
                      "weight_layout": manifest.training_data["weight_layout"]}, indent=2))
    if args.motion is None:
        print("note: no --motion given; the actor has no training motion or body box (pass the dataset folder the "
              "checkpoint was trained on to include them)", file=sys.stderr)
    return 0
