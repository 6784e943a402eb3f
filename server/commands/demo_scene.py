"""The Blender half of `make demo`: run in Blender's Python (the bpy module), never imported by the server.

It uses the add-on the way a user does, through its operators: enable the extension (from a local extension repo
holding a copy of ``neural_human_addon``), connect to the server that ``server/demo.py`` started, add the demo actor
to a scene, drive its SMPL rig with the bundled CMU walk (Blender's own BVH importer, then the add-on's retargeting),
follow it with a moving camera, render an animation through the server, import a mesh, composite the actor into the
scene's own Cycles render, and save the .blend. Progress goes to stdout; the result to ``--result`` as JSON.

    python -m server.commands.demo_scene --url URL --token TOKEN --out DIR --result DIR/scene.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CMU_WALK = REPO / "server" / "data" / "assets" / "cmu_mb_walk_delfem2.bvh"
CMU_UNIT = 0.056  # CMU "MotionBuilder-friendly" BVH units -> metres
REPO_MODULE = "neural_human_demo"  # the local extension repository the demo enables the add-on from
ADDON = f"bl_ext.{REPO_MODULE}.neural_human"


def log(message: str) -> None:
    print(f"[demo:blender] {message}", flush=True)


def enable_addon(profile: Path):
    """Stage the add-on like an installed extension (package + manifest) and enable it; returns its package."""
    import addon_utils
    import bpy

    stage = profile / "addon_repo"
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(REPO / "neural_human_addon", stage / "neural_human",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "blender_manifest.toml", stage / "neural_human" / "blender_manifest.toml")
    bpy.context.preferences.use_preferences_save = False
    bpy.context.preferences.extensions.repos.new(name=REPO_MODULE, module=REPO_MODULE, custom_directory=str(stage))
    addon_utils.enable(ADDON, default_set=True, handle_error=None)
    return sys.modules[ADDON]


def wait(addon, what: str, timeout_s: float) -> None:
    """Apply the add-on's worker results until it is idle (timers do not run in background Blender)."""
    import bpy

    session = sys.modules[f"{addon.__name__}.blender.job_session"]
    status = bpy.context.window_manager.neural_human
    deadline, last = time.monotonic() + timeout_s, ""
    while session.is_busy():
        if time.monotonic() > deadline:
            session.cancel_all()
            session.wait_idle(30)
            raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s")
        if not session.drain_all():
            time.sleep(0.05)
        if status.job_text and status.job_text != last:
            last = status.job_text
            log(last)
    if status.last_error:
        raise RuntimeError(f"{what}: {status.last_error}")


def call(op, what: str) -> None:
    result = op()
    if result != {"FINISHED"}:
        import bpy

        raise RuntimeError(f"{what} did not start: {bpy.context.window_manager.neural_human.last_error or result}")


def build_scene(frames: range, width: int, height: int):
    """Ground, a pillar the walker passes behind, light, world, render settings."""
    import bpy

    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = width, height, 100
    scene.render.fps = 30
    scene.frame_start, scene.frame_end = frames.start, frames.stop - 1
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 8
    scene.cycles.use_denoising = False
    scene.cycles.device = "CPU"
    scene.render.use_persistent_data = True  # keep the scene's BVH between the composited frames
    scene.view_settings.view_transform = "Standard"
    world = bpy.data.worlds.new("Demo world")
    world.color = (0.05, 0.06, 0.08)
    scene.world = world
    bpy.ops.mesh.primitive_plane_add(size=40.0, location=(0.0, 0.0, 0.0))
    bpy.context.active_object.name = "Ground"
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.0, 0.0, 1.0))
    pillar = bpy.context.active_object
    pillar.name = "Pillar"
    pillar.scale = (0.25, 0.25, 2.0)
    light = bpy.data.lights.new("Sun", "SUN")
    light.energy = 3.0
    sun = bpy.data.objects.new("Sun", light)
    sun.rotation_euler = (math.radians(50), 0.0, math.radians(30))
    scene.collection.objects.link(sun)
    return scene, pillar


def drive_with_walk(armature, frames: range) -> dict:
    """Import the CMU walk with Blender's BVH importer and retarget it onto the actor's SMPL armature."""
    import bpy

    retarget_bpy = sys.modules[f"{ADDON}.blender.retarget_bpy"]
    result = bpy.ops.import_anim.bvh(filepath=str(CMU_WALK), global_scale=CMU_UNIT, frame_start=1,
                                     use_fps_scale=True, rotate_mode="NATIVE", axis_forward="-Z", axis_up="Y")
    if result != {"FINISHED"}:
        raise RuntimeError(f"Blender's BVH importer failed on {CMU_WALK}")
    walk = bpy.context.view_layer.objects.active
    walk.name = "CMU walk (BVH)"
    options = sys.modules[f"{ADDON}.core.retarget"].RootOptions(keep_on_ground=True, fps=30.0)
    report = retarget_bpy.bake_retarget(walk, armature, (1, frames.stop - 1), root_options=options)
    walk.hide_set(True)
    walk.hide_render = True
    return {"bvh": CMU_WALK.name, "bvh_bones": len(walk.data.bones), "retarget_scale": round(report["scale"], 4)}


def moving_camera(scene, armature, frames: range):
    """A camera that follows the pelvis and swings 40 degrees around the walker over the shot, framed so that the
    walker fills most of the image height (4 m away, 40 mm lens: about 2 m of height in view at 16:9)."""
    import bpy

    data = bpy.data.cameras.new("Demo camera")
    data.lens = 40.0
    cam = bpy.data.objects.new("Demo camera", data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    track = cam.constraints.new("TRACK_TO")
    track.target, track.subtarget = armature, "pelvis"
    track.track_axis, track.up_axis = "TRACK_NEGATIVE_Z", "UP_Y"
    for i, frame in enumerate((frames.start, frames.stop - 1)):
        scene.frame_set(frame)
        pelvis = armature.matrix_world @ armature.pose.bones["pelvis"].head
        angle = math.radians(-70 + 40 * i)
        cam.location = (pelvis.x + 4.0 * math.cos(angle), pelvis.y + 4.0 * math.sin(angle), 1.3)
        cam.keyframe_insert("location", frame=frame)
    return cam


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--actor", default="demo")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--first-frame", type=int, default=30)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=270)
    parser.add_argument("--voxel-size", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=900.0)
    return parser.parse_args(argv)


def stage_actor(args: argparse.Namespace, addon: Any, frames: range) -> tuple[Any, Any, dict]:
    """Connect, add the actor to a new scene, drive its rig with the CMU walk and follow it with a camera behind a
    pillar; returns (scene, armature, walk summary)."""
    import bpy

    keys = sys.modules[f"{ADDON}.blender.actor_scene"]  # the add-on's custom-property keys
    call(bpy.ops.neural_human.connect, "Connect")
    wait(addon, "Connect", 60)
    log(bpy.context.window_manager.neural_human.connection)
    scene, pillar = build_scene(frames, args.width, args.height)
    scene.neural_human.actor = args.actor
    call(bpy.ops.neural_human.add_actor, "Add to Scene")
    wait(addon, "Add to Scene", 60)
    root = scene.neural_human.actor_root
    armature = bpy.data.objects[root[keys.ARMATURE_KEY]]
    walk = drive_with_walk(armature, range(1, frames.stop))
    scene.frame_start, scene.frame_end = frames.start, frames.stop - 1
    camera = moving_camera(scene, armature, frames)
    scene.frame_set(frames.start)
    # The pillar stands between the camera and the walker's path at the first frame: depth compositing shows it.
    pelvis = armature.matrix_world @ armature.pose.bones["pelvis"].head
    cam_loc = camera.matrix_world.translation
    pillar.location = (0.6 * pelvis.x + 0.4 * cam_loc.x + 0.3, 0.6 * pelvis.y + 0.4 * cam_loc.y, 1.0)
    return scene, armature, walk


def import_mesh(args: argparse.Namespace, addon: Any, scene: Any, frame: int) -> Any:
    """Import the actor's mesh at ``frame`` (hidden in renders: the composited frames show the rendered actor)."""
    import bpy

    keys = sys.modules[f"{ADDON}.blender.actor_scene"]
    scene.frame_set(frame)
    scene.neural_human.voxel_size = args.voxel_size
    call(bpy.ops.neural_human.import_mesh, "Import Mesh")
    wait(addon, "Import Mesh", args.timeout)
    mesh_obj = next(o for o in bpy.data.objects if o.get(keys.ROLE_KEY) == keys.MESH_ROLE)
    mesh_obj.hide_render = True
    return mesh_obj


def main(argv: list[str] | None = None) -> int:
    import bpy

    args = parse_args(argv)
    out = args.out.resolve()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    bpy.ops.wm.read_factory_settings(use_empty=True)
    profile = Path(tempfile.mkdtemp(prefix="nh-demo-profile-"))
    addon = enable_addon(profile)
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.server_url, prefs.token = args.url, args.token
    bpy.ops.wm.save_as_mainfile(filepath=str(out / "demo.blend"))  # so "//neural_human/" lands in --out
    timings["enable add-on"] = time.perf_counter() - t0

    t = time.perf_counter()
    frames = range(args.first_frame, args.first_frame + args.frames)
    scene, armature, walk = stage_actor(args, addon, frames)
    timings["build scene + retarget walk"] = time.perf_counter() - t
    log(f"scene: actor '{args.actor}', rig '{armature.name}' driven by the CMU walk, frames {frames.start}-"
        f"{frames.stop - 1}, {args.width}x{args.height}")

    t = time.perf_counter()
    call(bpy.ops.neural_human.render_animation, "Render Animation")
    wait(addon, "Render Animation", args.timeout)
    render_status = bpy.context.window_manager.neural_human.job_text
    timings["render animation through the server"] = time.perf_counter() - t

    t = time.perf_counter()
    mesh_frame = frames.start + len(frames) // 2
    mesh_obj = import_mesh(args, addon, scene, mesh_frame)
    timings["import mesh"] = time.perf_counter() - t

    t = time.perf_counter()
    scene.render.filepath = str(out / "composited" / "frame_")
    scene.render.image_settings.file_format = "PNG"
    bpy.ops.render.render(animation=True)
    timings["composite (Cycles + compositor)"] = time.perf_counter() - t
    bpy.ops.wm.save_mainfile()

    frames_dir = next(Path(p) for p in sorted((out / "neural_human").glob(f"{args.actor}_animation_*")))
    result = {
        "actor": args.actor, "frames": [frames.start, frames.stop - 1], "size": [args.width, args.height],
        "frames_dir": str(frames_dir), "rgba": sorted(str(p) for p in frames_dir.glob("rgba_*.png")),
        "composited": sorted(str(p) for p in (out / "composited").glob("frame_*.png")),
        "mesh": {"object": mesh_obj.name, "vertices": len(mesh_obj.data.vertices),
                 "faces": len(mesh_obj.data.polygons), "frame": mesh_frame,
                 "job_dir": str(next(Path(p) for p in sorted((out / "neural_human").glob(f"{args.actor}_mesh_*"))))},
        "walk": walk, "status": render_status, "blend": str(out / "demo.blend"),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    tmp = args.result.with_name(args.result.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.result)
    shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
