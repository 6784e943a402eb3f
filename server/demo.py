"""Run the end-to-end demo on the bundled demo body and write the results to --out (default demo_output/).

The demo runs every stage of the pipeline that exists and says plainly which stages do not exist yet, instead
of pretending. Stages: pose the demo body with real motion, render a synthetic multi-view dataset with Cycles,
read it back through the ZJU-MoCap reader, and (once they land) render and mesh the demo actor through the
server and drive it from a Blender rig with the add-on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from server.atomic_files import atomic_path, write_bytes_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent
MOTION_CLIP = REPO_ROOT / "server" / "data" / "assets" / "meshcapade_apose_to_handsFront_smplx.npz"  # MIT, bundled

# Stages of the full product that are not built yet: (name, what it will do). Printed, never faked.
MISSING_STAGES: list[tuple[str, str]] = [
    ("demo actor", "a Neural Body actor trained on the demo dataset, to render and mesh (needs a GPU to train)"),
    ("render through the server", "`python -m server serve` exists; it renders the demo actor once it exists"),
    ("Blender add-on", "drive the actor from a rig and a camera, import frames and meshes (issue: Blender extension)"),
    ("retargeting in Blender", "the CMU walk BVH on an SMPL rig: the pure core exists, the Blender layer does not"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")


def _stage(name: str, summary: dict, fn: Callable[[], dict]) -> bool:
    print(f"[demo] {name} ...", flush=True)
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # the demo reports every failure and carries on with the stages that can run
        seconds = time.perf_counter() - start
        summary["stages"].append({"stage": name, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                                  "seconds": round(seconds, 2)})
        print(f"[demo] {name}: FAILED after {seconds:.1f}s: {exc}", file=sys.stderr, flush=True)
        return False
    seconds = time.perf_counter() - start
    summary["stages"].append({"stage": name, "ok": True, "seconds": round(seconds, 2), **result})
    print(f"[demo] {name}: done in {seconds:.1f}s", flush=True)
    return True


def _pose_demo_body(out: Path) -> dict:
    import numpy as np
    import torch

    from server.body.model import load_body_model

    model = load_body_model()
    clip = np.load(MOTION_CLIP)
    poses = np.zeros((len(clip["poses"]), 72), np.float32)
    poses[:, :66] = clip["poses"][:, :66]
    body = {"global_orient": poses[:, :3], "body_pose": poses[:, 3:], "transl": clip["trans"].astype(np.float32),
            "shapes": np.zeros((len(poses), 10), np.float32)}
    with torch.no_grad():
        posed = model.pose(body)
    verts = posed.vertices.cpu().numpy()
    path = out / "demo_body_motion.npz"
    _save_npz(path, vertices=verts[:: max(1, len(verts) // 16)], faces=model.faces)
    return {"frames": len(verts), "vertices": int(model.num_vertices),
            "height_m": round(float(np.ptp(verts[0][:, 1])), 3), "file": path.name}


def _make_dataset(out: Path) -> dict:
    from server.data.make_data import generate

    root = out / "dataset"
    generate("tiny", root, force=True)
    return {"dataset": str(root.relative_to(out))}


def _read_dataset(out: Path) -> dict:
    import numpy as np
    from PIL import Image

    from server.data.zju_reader import ZjuMocapDataset

    dataset = ZjuMocapDataset(out / "dataset")
    problems = dataset.validate(deep=True)
    if problems:
        raise RuntimeError("the dataset just written is incomplete: " + "; ".join(problems[:5]))
    # contact sheet: one row per frame (up to 4), one column per view, image over mask
    rows = []
    for frame in range(min(4, dataset.num_frames)):
        tiles = []
        for view in range(dataset.num_views):
            image = dataset.image(frame, view)
            mask = (dataset.mask(frame, view) > 0).astype(np.float32)[..., None].repeat(3, axis=2)
            tiles.append(np.concatenate([image, mask], axis=0))
        rows.append(np.concatenate(tiles, axis=1))
    sheet = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8)
    path = out / "contact_sheet.png"
    with atomic_path(path, mode=0o644) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return {"frames": dataset.num_frames, "views": dataset.num_views, "contact_sheet": path.name,
            "summary": dataset.summary()}


def _save_npz(path: Path, **arrays) -> None:
    import numpy as np

    with atomic_path(path, mode=0o644) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "stages": [], "missing": []}
    start = time.perf_counter()
    ok = _stage("pose the demo body with real motion", summary, lambda: _pose_demo_body(out))
    if _stage("render a synthetic multi-view dataset with Cycles (tiny preset)", summary, lambda: _make_dataset(out)):
        ok &= _stage("read the dataset back and write a contact sheet", summary, lambda: _read_dataset(out))
    else:
        ok = False
    for name, what in MISSING_STAGES:
        summary["missing"].append({"stage": name, "what": what})
        print(f"[demo] not built yet: {name}: {what}", flush=True)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    path = out / "summary.json"
    write_bytes_atomic(path, json.dumps(summary, indent=2).encode(), mode=0o644)
    print(f"[demo] wrote {path}")
    return 0 if ok else 1
