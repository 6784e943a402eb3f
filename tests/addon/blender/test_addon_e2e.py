"""The add-on end to end, as a user drives it: enabled as an extension in real Blender (bpy), talking to a real
`python -m server serve` on 127.0.0.1 that serves the bundled demo actor, through the add-on's own operators.

Timers do not fire in background Blender, so the tests apply worker results by calling the add-on's drain step
(`job_session.drain_all` / `wait_idle`), exactly what its timer does in the UI."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
from PIL import Image

from server.commands.demo_scene import ADDON, enable_addon
from server.inference.limits import BUNDLED_ACTORS_DIR
from tests.addon import demo_body
from tests.server.live_server import REPO, free_port, running_server, server_python

pytestmark = [pytest.mark.blender, pytest.mark.slow]
ACTOR = "demo"
WIDTH, HEIGHT = 40, 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("addon_e2e_server")
    with running_server(BUNDLED_ACTORS_DIR, root / "jobs", root / "config", root / "server.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def addon(server, tmp_path_factory: pytest.TempPathFactory):
    import addon_utils

    package = enable_addon(tmp_path_factory.mktemp("addon_e2e_profile"))
    yield package
    addon_utils.disable(ADDON, default_set=True)


def module(addon, name: str):
    return sys.modules[f"{addon.__name__}.{name}"]


@pytest.fixture
def scene(addon, server, blender_scene, tmp_path: Path):
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.server_url, prefs.token, prefs.request_timeout = server.url, server.token, 120.0
    blender_scene.neural_human.output_dir = str(tmp_path) + "/"
    blender_scene.render.resolution_x, blender_scene.render.resolution_y = WIDTH, HEIGHT
    blender_scene.render.resolution_percentage = 100
    status = bpy.context.window_manager.neural_human
    status.last_error, status.job_text = "", ""
    yield blender_scene
    module(addon, "blender.job_session").cancel_all()
    assert module(addon, "blender.job_session").wait_idle(60)


def wait(addon, timeout_s: float = 300.0) -> None:
    assert module(addon, "blender.job_session").wait_idle(timeout_s), "the add-on's work did not finish in time"


def add_actor(addon, scene) -> tuple[bpy.types.Object, bpy.types.Object]:
    assert bpy.ops.neural_human.connect() == {"FINISHED"}
    wait(addon, 60)
    status = bpy.context.window_manager.neural_human
    assert status.connected, status.connection
    scene.neural_human.actor = ACTOR
    assert bpy.ops.neural_human.add_actor() == {"FINISHED"}
    wait(addon, 60)
    root = scene.neural_human.actor_root
    assert root is not None and root["neural_human_actor"] == ACTOR
    return root, bpy.data.objects[root["neural_human_armature"]]


def looking_camera(scene, target: Vector, distance: float = 3.2) -> bpy.types.Object:
    data = bpy.data.cameras.new("e2e camera")
    data.lens = 50.0
    cam = bpy.data.objects.new("e2e camera", data)
    scene.collection.objects.link(cam)
    cam.location = target + Vector((0.4, -distance, 0.1))
    cam.rotation_euler = (target - cam.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    return cam


def pelvis_world(armature) -> Vector:
    bpy.context.view_layer.update()
    return armature.matrix_world @ armature.pose.bones["pelvis"].head


def projected_px(scene, cam, point: Vector) -> np.ndarray:
    """Pixel coordinates (x right, y down, pixel centres at integers) of a world point, by Blender's own projection."""
    ndc = world_to_camera_view(scene, cam, point)
    return np.array([ndc.x * WIDTH - 0.5, (1.0 - ndc.y) * HEIGHT - 0.5])


def newest_rgba(out_dir: Path) -> np.ndarray:
    files = sorted(out_dir.glob("*/rgba_*.png"), key=lambda p: p.stat().st_mtime)
    assert files, f"no rgba frames under {out_dir}"
    return np.asarray(Image.open(files[-1]), dtype=np.float32) / 255.0


def alpha_centroid(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3]
    ys, xs = np.mgrid[: alpha.shape[0], : alpha.shape[1]]
    return np.array([(xs * alpha).sum(), (ys * alpha).sum()]) / alpha.sum()


def test_render_frame_places_actor_where_the_camera_sees_the_rig(addon, scene, tmp_path: Path) -> None:
    root, armature = add_actor(addon, scene)
    cam = looking_camera(scene, pelvis_world(armature))
    assert bpy.ops.neural_human.render_frame() == {"FINISHED"}
    wait(addon)
    status = bpy.context.window_manager.neural_human
    assert not status.last_error, status.last_error
    rgba = newest_rgba(tmp_path)
    assert rgba.shape == (HEIGHT, WIDTH, 4) and rgba[..., 3].max() > 0.9
    first = alpha_centroid(rgba)
    offset = first - projected_px(scene, cam, pelvis_world(armature))
    # The silhouette's centre of area sits on the pelvis sideways and a little above it (the T-posed arms and the
    # head outweigh the feet).
    assert abs(offset[0]) < 1.5 and -4.0 < offset[1] < 1.0, offset
    background = [s.image.name for s in cam.data.background_images if s.image is not None]
    assert any(ACTOR in name for name in background), background

    # Moving the actor root moves the actor: the centroid follows the projected pelvis.
    root.location.x += 0.35
    bpy.context.view_layer.update()
    assert bpy.ops.neural_human.render_frame() == {"FINISHED"}
    wait(addon)
    moved = alpha_centroid(newest_rgba(tmp_path))
    expected = projected_px(scene, cam, pelvis_world(armature)) + offset
    assert np.linalg.norm(moved - expected) < 1.0, (moved, expected)
    assert moved[0] - first[0] > 2.0


def test_imported_mesh_lies_on_the_posed_body(addon, scene) -> None:
    root, armature = add_actor(addon, scene)
    root.location = (1.0, -0.5, 0.0)
    root.rotation_euler = (0.0, 0.0, 0.6)
    armature.pose.bones["left_shoulder"].rotation_mode = "XYZ"
    armature.pose.bones["left_shoulder"].rotation_euler = (0.0, 0.0, 0.8)
    bpy.context.view_layer.update()
    scene.neural_human.voxel_size = 0.02
    assert bpy.ops.neural_human.import_mesh() == {"FINISHED"}
    wait(addon)
    meshes = [o for o in scene.objects if o.get("neural_human_role") == "mesh"]
    assert len(meshes) == 1 and meshes[0].parent == root
    mesh = meshes[0]
    bpy.context.view_layer.update()
    verts = np.array([mesh.matrix_world @ v.co for v in mesh.data.vertices])
    assert len(mesh.data.color_attributes) == 1

    # The body the add-on sent, posed by the body model and placed through the root: the ground truth.
    snap = module(addon, "blender.actor_scene").snapshot_bodies
    joints = np.asarray(root["neural_human_rest_joints"], np.float64).reshape(24, 3)
    body = snap(root, [scene.frame_current], joints, np.asarray(root["neural_human_shapes"]))[0]
    points = demo_body.pose(*(np.asarray(body[k], np.float64)[None] for k in ("poses", "Rh", "Th")),
                            shapes=body["shapes"])[1][0]
    to_world = module(addon, "core.actor_space").points_to_world
    truth = to_world(points, np.array(root.matrix_world), root["neural_human_up_axis"])
    assert np.abs(verts.min(0) - truth.min(0)).max() < 0.03, (verts.min(0), truth.min(0))
    assert np.abs(verts.max(0) - truth.max(0)).max() < 0.03, (verts.max(0), truth.max(0))


def test_animation_cancel_keeps_finished_frames(addon, scene, tmp_path: Path) -> None:
    root, armature = add_actor(addon, scene)
    looking_camera(scene, pelvis_world(armature))
    scene.frame_start, scene.frame_end = 1, 8
    scene.neural_human.composite = True
    assert bpy.ops.neural_human.render_animation() == {"FINISHED"}
    session = module(addon, "blender.job_session")
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("*/rgba_*.png")):
        assert time.monotonic() < deadline, "no frame arrived"
        if not session.drain_all():
            time.sleep(0.05)
    assert bpy.ops.neural_human.cancel() == {"FINISHED"}
    wait(addon)
    kept = sorted(tmp_path.glob("*/frame_*.npz"))
    pngs = sorted(tmp_path.glob("*/rgba_*.png"))
    assert 1 <= len(kept) < 8 and len(pngs) == len(kept)
    assert "cancelled" in bpy.context.window_manager.neural_human.job_text
    # The kept frames are loaded as a sequence and composited into the scene's render.
    sequences = [i for i in bpy.data.images if i.source == "SEQUENCE" and ACTOR in i.name]
    assert len(sequences) == 2
    tree = module(addon, "blender.compositing")._existing_tree(scene)  # wherever this Blender keeps the compositor
    assert any(n.get("neural_human_compositing") for n in tree.nodes)


def test_dead_server_gives_a_clear_message_and_no_hang(addon, scene) -> None:
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.server_url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    assert bpy.ops.neural_human.connect() == {"FINISHED"}  # returns at once: the call runs in a worker
    assert time.monotonic() - start < 1.0
    wait(addon, 30)
    status = bpy.context.window_manager.neural_human
    assert not status.connected
    assert "No Neural Human server" in status.connection and "python -m server serve" in status.connection


def test_start_server_reports_a_start_command_that_exits_at_once(addon, scene) -> None:
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.server_url = f"http://127.0.0.1:{free_port()}"
    prefs.server_command = f"{shlex.quote(sys.executable)} -c 'raise SystemExit(3)'"
    try:
        assert bpy.ops.neural_human.start_server() == {"FINISHED"}
        wait(addon, 30)  # at once, not after the minutes the add-on gives a server that is still starting
    finally:
        prefs.server_command = ""
    status = bpy.context.window_manager.neural_human
    assert not status.connected
    assert "exited with code 3" in status.connection and "run it in a terminal" in status.connection


def test_start_server_waits_for_a_server_that_compiles_before_it_listens(addon, scene, tmp_path: Path) -> None:
    """"Start Local Server" with `serve --compile` in the start command: the add-on waits while the server compiles
    its point network (it listens only then) and connects."""
    prefs = bpy.context.preferences.addons[ADDON].preferences
    port, token = free_port(), "start-server-token-0123456789"
    prefs.server_url, prefs.token = f"http://127.0.0.1:{port}", token
    prefs.server_workdir = str(REPO)
    prefs.server_command = shlex.join([server_python(), "-m", "server", "serve", "--port", str(port), "--device", "cpu",
                                       "--token", token, "--jobs-dir", str(tmp_path / "jobs"), "--compile"])
    try:
        assert bpy.ops.neural_human.start_server() == {"FINISHED"}
        wait(addon, 240)
        status = bpy.context.window_manager.neural_human
        assert status.connected, status.connection
        assert scene.neural_human.actor == ACTOR  # the bundled actors, listed
    finally:
        prefs.server_command, prefs.server_workdir = "", ""
        subprocess.run(["pkill", "-f", f"server serve --port {port} "], check=False)


def test_file_load_cancels_running_jobs(addon, server, tmp_path: Path) -> None:
    # Not on the `scene` fixture: loading a file replaces every scene, the fixture's included.
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.server_url, prefs.token = server.url, server.token
    scene = bpy.data.scenes.new("file load test")
    bpy.context.window.scene = scene
    scene.neural_human.output_dir = str(tmp_path) + "/"
    scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
    root, armature = add_actor(addon, scene)
    looking_camera(scene, pelvis_world(armature))
    scene.frame_start, scene.frame_end = 1, 30
    path = tmp_path / "before.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True)
    assert bpy.ops.neural_human.render_animation() == {"FINISHED"}
    session = module(addon, "blender.job_session")
    runner = session.JOBS[0].runner
    bpy.ops.wm.open_mainfile(filepath=str(path))
    assert session.JOBS == []
    runner.join(60)
    assert not runner.is_alive() and runner._cancel.is_set()  # loading a file cancelled the job
    assert len(list(tmp_path.glob("*/frame_*.npz"))) < 30  # stopped early; what finished stays on disk


def test_wrong_token_says_how_to_fix_it(addon, scene) -> None:
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.token = "x" * 32
    assert bpy.ops.neural_human.connect() == {"FINISHED"}
    wait(addon, 30)
    status = bpy.context.window_manager.neural_human
    assert not status.connected
    assert "token" in status.connection.lower() and "x" * 32 not in status.connection


def test_reanimate_keys_the_actors_captured_motion(addon, scene) -> None:
    root, armature = add_actor(addon, scene)
    scene.frame_set(5)
    assert bpy.ops.neural_human.reanimate() == {"FINISHED"}
    wait(addon, 60)
    status = bpy.context.window_manager.neural_human
    assert not status.last_error, status.last_error
    motion = module(addon, "core.server_client").ServerClient(
        bpy.context.preferences.addons[ADDON].preferences.server_url,
        bpy.context.preferences.addons[ADDON].preferences.token).motion(ACTOR)
    n = len(motion["poses"])
    assert (scene.frame_start, scene.frame_end) == (5, 5 + n - 1)
    assert armature.animation_data is not None and armature.animation_data.action is not None
    # The rig now carries the captured motion: snapshotting it gives the captured poses back.
    joints = np.asarray(root["neural_human_rest_joints"], np.float64).reshape(24, 3)
    frames = [5, 5 + n - 1]
    shapes = np.asarray(root["neural_human_shapes"])
    bodies = module(addon, "blender.actor_scene").snapshot_bodies(root, frames, joints, shapes)
    fk = module(addon, "core.retarget").smpl_forward_joints
    for body, k in zip(bodies, (0, n - 1), strict=True):
        got = fk(np.asarray(body["poses"])[None], np.asarray(body["Rh"])[None], np.asarray(body["Th"])[None], joints)
        want = fk(motion["poses"][k][None], motion["Rh"][k][None], motion["Th"][k][None], joints)
        assert np.abs(got - want).max() < 1e-3
