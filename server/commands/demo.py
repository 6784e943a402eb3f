"""Run the end-to-end demo on the bundled demo actor and write the results to --out (default demo_output/).

Starts the inference server on the bundled actors (a free 127.0.0.1 port, a one-off token, jobs under --out), then
runs Blender headless (the bpy module) with the add-on enabled as an extension: the demo actor is added to a scene,
its SMPL rig is driven by the bundled CMU walk through the add-on's retargeting, a moving camera follows it, a short
animation is rendered through the server (one job; frames land on disk as they finish), a marching-cubes mesh is
imported, and the actor is composited into the scene's own Cycles render with depth-aware occlusion. Written to
--out: the frames (neural_human/<actor>_animation_*/: server npz, rgba PNG, depth EXR), composited/frame_*.png,
mesh.ply, demo.blend, contact_sheet.png and summary.json (what was done and how long each stage took).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from neural_human_addon.core.atomic_files import write_bytes_atomic
from neural_human_addon.core.wire import frame_file_name

REPO_ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("neural_human", "composited", "jobs", "demo.blend", "demo.blend1", "mesh.ply", "contact_sheet.png",
           "summary.json", "scene.json", "server.log")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from server.inference.limits import BUNDLED_ACTORS_DIR

    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")
    parser.add_argument("--actors", type=Path, default=BUNDLED_ACTORS_DIR,
                        help="actors folder (default: the bundled one, server/actors)")
    parser.add_argument("--actor", default="demo", help="actor id (default: demo)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="server device")
    parser.add_argument("--frames", type=int, default=10, help="animation length in frames (default 10)")
    parser.add_argument("--width", type=int, default=480, help="image width (default 480)")
    parser.add_argument("--height", type=int, default=270, help="image height (default 270)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed for each server job")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_health(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> dict:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=2) as reply:
                return json.loads(reply.read())
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {timeout_s:.0f} s; see {log}") from None
            time.sleep(0.3)


def _contact_sheet(rgba_files: list[str], composited: list[str], path: Path) -> None:
    """Row 1: the actor frames over grey (as the server sent them); row 2: composited into the scene."""
    import numpy as np
    from PIL import Image

    from server.data.image_ops import save_png

    def tile(file: str, over_grey: bool) -> np.ndarray:
        image = np.asarray(Image.open(file).convert("RGBA"), dtype=np.float32) / 255.0
        if over_grey:
            return image[..., :3] * image[..., 3:] + 0.35 * (1.0 - image[..., 3:])
        return image[..., :3]

    rows = [np.concatenate([tile(f, True) for f in rgba_files], axis=1)]
    if composited:
        rows.append(np.concatenate([tile(f, False) for f in composited[: len(rgba_files)]], axis=1))
        width = min(r.shape[1] for r in rows)
        rows = [r[:, :width] for r in rows]
    save_png(path, (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).astype(np.uint8))


def _mesh_ply(job_dir: Path, frame: int, path: Path) -> dict:
    import numpy as np

    from server.neural_body.mesh import Mesh, write_ply

    with np.load(job_dir / frame_file_name(frame), allow_pickle=False) as data:
        mesh = Mesh(data["vertices"], data["faces"], data["colors"] if "colors" in data.files else None)
    write_ply(path, mesh)
    lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    return {"file": path.name, "vertices": len(mesh.vertices), "faces": len(mesh.faces),
            "bounds_m": [lo.round(3).tolist(), hi.round(3).tolist()]}


def _clear_outputs(out: Path) -> None:
    """Remove the demo's own files from an earlier run (other files in --out stay)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _run_scene(args: argparse.Namespace, out: Path, summary: dict) -> Path | None:
    """Start the server, run the Blender half (demo_scene) against it, stop the server; the scene's result file,
    or None when the Blender half failed."""
    token, port = secrets.token_urlsafe(24), _free_port()
    url = f"http://127.0.0.1:{port}"
    log = out / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "server", "serve", "--actors", str(args.actors), "--port", str(port),
               "--token", token, "--jobs-dir", str(out / "jobs"), "--device", args.device]
    print(f"[demo] starting the server on {url} (actors: {args.actors}) ...", flush=True)
    with open(log, "w") as log_file:
        server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        t = time.perf_counter()
        health = _wait_for_health(url, server, log)
        summary["stages"]["start server"] = round(time.perf_counter() - t, 2)
        summary["server"] = {"device": health.get("device"), "version": health.get("server_version")}
        print(f"[demo] server up ({health['device']['type']}); running Blender headless ...", flush=True)
        result_path = out / "scene.json"
        blender = subprocess.run(
            [sys.executable, "-m", "server.commands.demo_scene", "--url", url, "--token", token, "--out", str(out),
             "--result", str(result_path), "--actor", args.actor, "--frames", str(args.frames),
             "--width", str(args.width), "--height", str(args.height), "--timeout", str(args.timeout)],
            cwd=REPO_ROOT, env=env, check=False)
        if blender.returncode != 0 or not result_path.is_file():
            print(f"error: the Blender part of the demo failed (exit {blender.returncode}); see the messages above "
                  f"and {log}", file=sys.stderr)
            return None
        return result_path
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def run(args: argparse.Namespace) -> int:
    out: Path = args.out.resolve()
    actor_dir = args.actors / args.actor
    if not (actor_dir / "actor.json").is_file():
        print(f"error: no actor '{args.actor}' in {args.actors} (expected {actor_dir}/actor.json). The demo actor "
              "ships in server/actors/demo; a clean checkout has it.", file=sys.stderr)
        return 2
    _clear_outputs(out)
    summary: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "actor": args.actor, "stages": {}}
    start = time.perf_counter()
    result_path = _run_scene(args, out, summary)
    if result_path is None:
        return 1

    scene = json.loads(result_path.read_text())
    summary["stages"].update(scene["timings_s"])
    summary["frames"] = {"range": scene["frames"], "size": scene["size"], "folder": scene["frames_dir"],
                         "rgba": len(scene["rgba"]), "composited": len(scene["composited"]), "status": scene["status"]}
    summary["walk"] = scene["walk"]
    summary["mesh"] = _mesh_ply(Path(scene["mesh"]["job_dir"]), scene["mesh"]["frame"], out / "mesh.ply")
    summary["mesh"]["blender_object"] = scene["mesh"]["object"]
    _contact_sheet(scene["rgba"], scene["composited"], out / "contact_sheet.png")
    summary["files"] = {"blend": "demo.blend", "contact_sheet": "contact_sheet.png", "mesh": "mesh.ply",
                        "composited": "composited/", "frames": str(Path(scene["frames_dir"]).relative_to(out))}
    summary["seconds"] = round(time.perf_counter() - start, 2)
    write_bytes_atomic(out / "summary.json", json.dumps(summary, indent=2).encode(), mode=0o644)
    print(f"[demo] done in {summary['seconds']:.0f} s: {len(scene['rgba'])} frames, {len(scene['composited'])} "
          f"composited, mesh {summary['mesh']['vertices']} vertices; see {out}/summary.json and contact_sheet.png")
    return 0
