"""Build the openly licensed demo body model (SMPL layout) from the CC0 MakeHuman assets.

Reposes MakeHuman's base mesh to SMPL's T-pose, folds its bones onto SMPL's 24 joints, regresses the joints from the
surface and derives 10 shape components (server/body/demo_body_build.py). Output: an .npz in SMPL's layout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from server.body.skeleton import DEMO_BODY_PATH


def default_source() -> Path:
    """../shared/data/makehuman beside the checkout (where the project keeps the MakeHuman assets)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "makehuman"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", type=Path, default=default_source(), help="folder with the MakeHuman assets")
    parser.add_argument("--out", type=Path, default=DEMO_BODY_PATH, help="output .npz")


def run(args: argparse.Namespace) -> int:
    from server.body.demo_body_build import build, save

    source = Path(args.source)
    missing = [n for n in ("base.obj", "default.mhskel", "default_weights.mhw", "targets_young_subset.npz")
               if not (source / n).is_file()]
    if missing:
        print(f"error: {source} lacks {', '.join(missing)}; pass --source with the MakeHuman assets folder")
        return 2
    body = build(source)
    save(body, Path(args.out))
    for k, v in body.report.items():
        print(f"{k}: {v:.4f}")
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")
    return 0
