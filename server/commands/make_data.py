"""Render a synthetic multi-view dataset of the demo body in the ZJU-MoCap layout (Blender Cycles on the CPU).

The textured demo body is posed with a captured SMPL-X clip and procedural motions and rendered from a ring of known
cameras: images, masks, cameras, SMPL parameters and the exact posed meshes, plus dataset.json with the splits
(server/data/make_data.py). The dataset is rendered beside --out and moved into place at the end, so an interrupted
or failed run leaves nothing behind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PRESET_NAMES = ("demo", "tiny")  # server.data.make_data.PRESETS (tests check that the two agree)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESET_NAMES, default="demo",
                        help="tiny: 4 views, 6 frames, 64x64 (seconds); demo: 8 views, 68 train + 16 novel-pose "
                             "frames, 384x384 (about 20 min on 2 CPU cores)")
    parser.add_argument("--out", required=True, help="dataset folder to create")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists and is not empty")
    parser.add_argument("--samples", type=int, default=None, help="Cycles samples per pixel (default: the preset's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from server.data.make_data import MakeDataError, generate

    try:
        meta = generate(args.preset, args.out, force=args.force, samples=args.samples, progress=not args.quiet)
    except MakeDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {meta['num_frames']} frames x {meta['num_views']} views ({meta['image_size'][0]}x"
          f"{meta['image_size'][1]}) to {Path(args.out)} in {meta['render_seconds']} s of rendering")
    return 0
