"""The live viewport preview in real Blender (bpy), with the add-on enabled as an extension and a stand-in client.

Timers do not fire in background Blender, so the tests drive the preview's own plain functions, exactly what its
timer calls: `tick(now, views)` (feeds the schedulers, sends requests from worker threads) and `drain()` (applies
answers on the main thread). Views are given explicitly (`ViewState`: RegionView3D's matrices and the region size)
so the tests decide when the view changes.

Drawing: background Blender has no GPU context until a render starts one (the `gpu_context` fixture: a tiny Workbench
render through EGL); the textures and shader are made here, the pixels are checked in test_viewport_preview_e2e.py."""

from __future__ import annotations

import sys
import threading
import time

import bpy
import numpy as np
import pytest

from neural_human_addon.core.camera import look_at_matrix_world
from neural_human_addon.core.viewport_camera import pinhole_to_projection, viewport_to_pinhole
from server.commands.demo_scene import ADDON, enable_addon
from tests.addon.blender.retarget_bpy.blender_rigs import demo_rest

pytestmark = pytest.mark.blender


class FakeClient:
    """Stands in for ServerClient.render: records requests; answers with an image of the asked size at once, or
    waits on a gate (to hold a request in flight), or raises."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.gate: threading.Event | None = None
        self.error: Exception | None = None

    def render(self, actor_id, body, camera, outputs=("rgba", "depth")):
        self.calls.append({"actor": actor_id, "body": body, "camera": camera})
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise self.error
        h, w = camera["height"], camera["width"]
        rgba = np.zeros((h, w, 4), np.float32)
        rgba[h // 4: h // 2, w // 4: w // 2] = (0.8, 0.5, 0.3, 1.0)
        depth = np.where(rgba[..., 3] > 0, 3.0, 0.0).astype(np.float32)
        return {"rgba": rgba, "depth": depth}


@pytest.fixture(scope="module")
def addon(tmp_path_factory: pytest.TempPathFactory):
    import addon_utils

    package = enable_addon(tmp_path_factory.mktemp("preview_profile"))
    yield package
    if ADDON in bpy.context.preferences.addons:
        addon_utils.disable(ADDON, default_set=True)


def mod(name: str):
    return sys.modules[f"{ADDON}.blender.{name}"]


@pytest.fixture
def root(addon, blender_scene):
    joints, _ = demo_rest()
    actor = {"id": "demo", "name": "demo", "up_axis": "z"}
    skeleton = {"joints": joints.tolist(), "shapes": [0.0] * 10, "up_axis": "z"}
    scene_mod = mod("actor_scene")
    root, _rig = scene_mod.create_actor_root(actor, skeleton, collection=blender_scene.collection)
    scene_mod.remember_skeleton(root, actor, skeleton)
    blender_scene.frame_set(1)
    yield root
    mod("viewport_preview").disable_all()


def a_view(name: str = "test", distance: float = 3.0, size: tuple[int, int] = (64, 48)):
    vp = mod("viewport_preview")
    c2w = look_at_matrix_world((0.3, -distance, 1.0), (0.0, 0.0, 0.9))
    window = np.array([[2.0, 0, 0, 0], [0, 2.0 * size[0] / size[1], 0, 0], [0, 0, -1.0002, -0.02], [0, 0, -1.0, 0]])
    return vp.ViewState(name, np.linalg.inv(c2w), window, size[0], size[1])


def settle(vp, timeout_s: float = 10.0) -> None:
    """Wait until every worker has answered, then apply the answers."""
    deadline = time.monotonic() + timeout_s
    while any(s.scheduler.busy for s in vp.SESSIONS.values()) and time.monotonic() < deadline:
        if not vp.drain():
            time.sleep(0.01)


def test_preview_is_off_by_default_and_handler_follows_the_toggle(root) -> None:
    vp = mod("viewport_preview")
    assert root.neural_human_preview.enabled is False
    client, view = FakeClient(), a_view()
    assert vp.tick(0.0, [view], client=client) == [] and not vp.handler_registered()
    root.neural_human_preview.enabled = True
    vp.tick(0.0, [view], client=client)
    assert vp.handler_registered()
    root.neural_human_preview.enabled = False
    assert not vp.handler_registered() and not vp.SESSIONS
    root.neural_human_preview.enabled = True
    vp.tick(0.0, [view], client=client)
    assert vp.handler_registered()


def test_one_request_after_the_debounce_for_pose_frame_and_root_changes(root, blender_scene) -> None:
    vp = mod("viewport_preview")
    client, view = FakeClient(), a_view()
    root.neural_human_preview.enabled = True
    root.neural_human_preview.max_fps = 30.0
    t = 100.0
    assert vp.tick(t, [view], client=client) == []  # debouncing
    first = vp.tick(t + vp.DEBOUNCE_S, [view], client=client)
    assert len(first) == 1 and first[0].step == 0
    settle(vp)
    t += 1.0
    full = vp.tick(t, [view], client=client)
    assert len(full) == 1 and full[0].step == 1  # still: the full-resolution frame follows
    settle(vp)
    assert vp.tick(t + 5, [view], client=client) == []  # nothing left to ask
    rig = bpy.data.objects[root["neural_human_armature"]]

    def change_pose():
        rig.pose.bones["left_elbow"].rotation_mode = "XYZ"
        rig.pose.bones["left_elbow"].rotation_euler = (0.0, 0.0, 1.2)
        bpy.context.view_layer.update()

    def change_root():
        root.location.x += 0.5
        bpy.context.view_layer.update()

    def change_frame():
        blender_scene.frame_set(blender_scene.frame_current + 3)

    for change in (change_pose, change_root, change_frame):
        t += 10.0
        change()
        sent = [r for dt in (0.0, 0.05, 0.1) for r in vp.tick(t + dt, [view], client=client)]
        assert sent == [], f"{change.__name__}: asked before the debounce"
        sent = [r for dt in (0.15, 0.2, 0.3) for r in vp.tick(t + dt, [view], client=client)]
        assert len(sent) == 1 and sent[0].step == 0, f"{change.__name__}: {sent}"
        settle(vp)
    session = next(iter(vp.SESSIONS.values()))
    assert session.frame is not None and session.frame.rgba.shape[:2] == (6, 8)  # 1/4 of 0.5 of 64x48
    assert vp.status_text(root.name).startswith("preview: ") and "1/8 res" in vp.status_text(root.name)
    # the pose change reached the wire body
    assert any(abs(v) > 0.1 for v in np.asarray(client.calls[-1]["body"]["poses"]))


def test_stale_answers_are_dropped_and_the_newest_view_wins(root) -> None:
    vp = mod("viewport_preview")
    client = FakeClient()
    client.gate = threading.Event()
    root.neural_human_preview.enabled = True
    root.neural_human_preview.max_fps = 30.0
    v1, v2, v3 = a_view(distance=3.0), a_view(distance=3.5), a_view(distance=4.0)
    vp.tick(0.0, [v1], client=client)
    assert len(vp.tick(0.2, [v1], client=client)) == 1
    vp.tick(0.3, [v2], client=client)  # orbiting while the first frame is out
    vp.tick(0.4, [v3], client=client)
    assert vp.tick(1.0, [v3], client=client) == []  # one in flight per viewport
    client.gate.set()
    settle(vp)
    session = next(iter(vp.SESSIONS.values()))
    assert session.frame is None and session.scheduler.dropped == 1  # the answer for v1 is never shown
    sent = vp.tick(1.1, [v3], client=client)
    assert len(sent) == 1 and sent[0].key[1] == v3.fingerprint  # v2 was never asked
    settle(vp)
    assert session.frame is not None and session.frame.view_fingerprint == v3.fingerprint


def test_camera_sent_is_the_viewports_in_actor_space(root) -> None:
    vp = mod("viewport_preview")
    client, view = FakeClient(), a_view(size=(80, 60))
    root.location = (1.0, 2.0, 0.0)
    bpy.context.view_layer.update()
    root.neural_human_preview.enabled = True
    vp.tick(0.0, [view], client=client)
    vp.tick(1.0, [view], client=client)
    settle(vp)
    cam = client.calls[0]["camera"]
    world = viewport_to_pinhole(view.view_matrix, view.window_matrix, 10, 8)  # 1/4 of 0.5 of 80x60 (rounded)
    np.testing.assert_allclose(np.array(cam["K"]), world.K, atol=1e-9)
    # actor world = root's frame here (Z-up actor): the actor's origin is the root's location
    x_cam = np.array(cam["R"]) @ np.zeros(3) + np.array(cam["T"])
    np.testing.assert_allclose(x_cam, world.R @ np.array([1.0, 2.0, 0.0]) + world.T, atol=1e-6)


def test_orthographic_view_gets_the_switch_to_perspective_note(root) -> None:
    vp = mod("viewport_preview")
    client = FakeClient()
    root.neural_human_preview.enabled = True
    ortho = vp.ViewState("ortho", np.eye(4), np.diag([0.2, 0.3, -0.01, 1.0]), 64, 48)
    assert vp.tick(0.0, [ortho], client=client) == [] and vp.tick(5.0, [ortho], client=client) == []
    assert "switch to perspective" in vp.status_text(root.name)
    assert client.calls == []


def test_server_error_is_shown_once_and_removes_the_frame(root, capsys) -> None:
    vp = mod("viewport_preview")
    client, view = FakeClient(), a_view()
    root.neural_human_preview.enabled = True
    vp.tick(0.0, [view], client=client)
    vp.tick(0.2, [view], client=client)
    settle(vp)
    assert next(iter(vp.SESSIONS.values())).frame is not None
    client.error = RuntimeError("server went away")
    view2 = a_view(distance=5.0)
    for t in (1.0, 1.2, 2.0, 3.0):
        vp.tick(t, [view2], client=client)
        settle(vp)
    out = capsys.readouterr().out
    assert out.count("server went away") == 1
    session = next(iter(vp.SESSIONS.values()))
    assert session.frame is None and "error" in vp.status_text(root.name)
    assert len(client.calls) == 2  # no retry storm after the error
    assert not vp.handler_registered()  # the error took the handler (and the frame's textures) away
    root.neural_human_preview.enabled = False  # off and on again: a fresh start
    root.neural_human_preview.enabled = True
    client.error = None
    vp.tick(10.0, [view2], client=client)
    assert len(vp.tick(10.2, [view2], client=client)) == 1 and vp.handler_registered()
    settle(vp)


def test_deleted_root_and_closed_viewport_are_forgotten(root) -> None:
    vp = mod("viewport_preview")
    client = FakeClient()
    root.neural_human_preview.enabled = True
    vp.tick(0.0, [a_view("left"), a_view("right")], client=client)
    assert {k[1] for k in vp.SESSIONS} == {"left", "right"}
    vp.tick(0.1, [a_view("left")], client=client)  # the right viewport was closed
    assert {k[1] for k in vp.SESSIONS} == {"left"}
    root.neural_human_preview.enabled = False
    assert not vp.SESSIONS and not vp.handler_registered()


def test_disconnect_and_file_load_remove_the_handler(root, tmp_path) -> None:
    vp = mod("viewport_preview")
    root.neural_human_preview.enabled = True
    vp.tick(0.0, [a_view()], client=FakeClient())
    assert vp.handler_registered()
    bpy.context.window_manager.neural_human.connected = False
    vp.tick(1.0, [a_view()])  # no client given: the add-on's own connection state decides
    assert not vp.handler_registered() and not vp.SESSIONS
    vp.tick(2.0, [a_view()], client=FakeClient())
    assert vp.handler_registered()
    vp._on_load_pre()  # what bpy.ops.wm.read_homefile / open_mainfile run first
    assert not vp.handler_registered() and not vp.SESSIONS
    assert vp._on_load_pre in bpy.app.handlers.load_pre


def test_upload_arrays_flip_rows_and_depth_goes_to_window_depth(root) -> None:
    vp = mod("viewport_preview")
    view = a_view()
    rgba = np.zeros((4, 6, 4), np.float32)
    rgba[0, 0] = (1, 0, 0, 1)  # top-left pixel
    depth = np.zeros((4, 6), np.float32)
    depth[0, 0] = 2.0
    frame = vp.PreviewFrame(view.fingerprint, view.window_matrix, rgba, depth, 1.0)
    up_rgba, up_depth = vp.upload_arrays(frame, view.window_matrix)
    assert up_rgba[3, 0, 0] == 1.0 and up_rgba[0, 0, 3] == 0.0  # row 0 of the upload is the image's bottom row
    p = view.window_matrix
    assert up_depth[3, 0] == pytest.approx(((p[2, 2] * -2.0 + p[2, 3]) / 2.0) * 0.5 + 0.5, rel=1e-6)
    assert up_depth[0, 0] == 1.0 and up_rgba.flags["C_CONTIGUOUS"] and up_rgba.dtype == np.float32


def test_shader_description_builds_without_a_gpu_context(root) -> None:
    """GPUShaderCreateInfo needs no GPU context: the preview shader's interface, samplers and sources are checked
    here even headless (compiling it is not possible without a context)."""
    vp = mod("viewport_preview")
    info = vp.shader_info()
    assert info is not None
    assert "gl_FragDepth" in vp._FRAGMENT and "srgbTarget" in vp._FRAGMENT


def test_textures_and_shader(root, gpu_context) -> None:
    """With a GPU context (see the gpu_context fixture) the frame's textures and the preview shader are made."""
    vp = mod("viewport_preview")
    view = a_view()
    frame = vp.PreviewFrame(view.fingerprint, view.window_matrix, np.ones((4, 6, 4), np.float32),
                            np.full((4, 6), 2.0, np.float32), 1.0)
    tex, dtex = vp._textures(frame, view.window_matrix)
    assert (tex.width, tex.height, dtex.width) == (6, 4, 6)
    shader, batch = vp._shader_and_batch()
    assert shader is not None and batch is not None


def test_camera_view_matches_blenders_own_camera_projection(addon, blender_scene) -> None:
    """In camera view the viewport's matrices are the camera's: Blender's calc_matrix_camera + the inverse world
    matrix, through the viewport conversion, give the scene camera module's K, R, T."""
    cam_data = bpy.data.cameras.new("preview cam")
    cam_data.lens, cam_data.shift_x, cam_data.shift_y, cam_data.sensor_fit = 35.0, 0.1, -0.05, "AUTO"
    cam = bpy.data.objects.new("preview cam", cam_data)
    blender_scene.collection.objects.link(cam)
    from mathutils import Matrix, Vector

    # (a nested list assigned to matrix_world is read as columns: build the Matrix explicitly)
    cam.matrix_world = Matrix(look_at_matrix_world((2.0, -3.0, 1.5), (0, 0, 1), roll=0.2).tolist())
    blender_scene.camera = cam
    blender_scene.render.resolution_x, blender_scene.render.resolution_y = 64, 40
    bpy.context.view_layer.update()
    scene_cam = mod("scene_camera").scene_pinhole_camera(blender_scene)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    window = np.array(cam.calc_matrix_camera(depsgraph, x=64, y=40))
    view_cam = viewport_to_pinhole(np.array(cam.matrix_world.inverted()), window, 64, 40)
    np.testing.assert_allclose(view_cam.K, scene_cam.K, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(view_cam.R, scene_cam.R, atol=1e-5)
    np.testing.assert_allclose(view_cam.T, scene_cam.T, atol=1e-5)
    # and Blender's own location_3d_to_region_2d agrees with the pinhole projection
    from bpy_extras.view3d_utils import location_3d_to_region_2d

    class Region:
        width, height = 64, 40

    class RV3D:
        perspective_matrix = Matrix(window.tolist()) @ cam.matrix_world.inverted()

    point = Vector((0.2, 0.1, 1.1))
    xy = location_3d_to_region_2d(Region, RV3D, point)
    uv = view_cam.K @ (view_cam.R @ np.array(point) + view_cam.T)
    np.testing.assert_allclose([xy.x - 0.5, 40 - xy.y - 0.5], uv[:2] / uv[2], atol=1e-3)
    assert pinhole_to_projection(view_cam).shape == (4, 4)


def test_real_viewports_are_gathered_and_asked_for(root) -> None:
    """Background Blender still has the default screen: its 3D viewport's region and RegionView3D are read."""
    vp = mod("viewport_preview")
    views = vp.gather_views()
    assert views, "the default screen has a 3D viewport"
    view = views[0]
    assert view.width > 0 and view.height > 0 and view.window_matrix[3, 2] == pytest.approx(-1.0)
    client = FakeClient()
    root.neural_human_preview.enabled = True
    assert vp.tick(0.0, client=client) == []
    assert len(vp.tick(1.0, client=client)) == len(views)
    settle(vp)
    cam = client.calls[0]["camera"]
    assert (cam["width"], cam["height"]) == vp.preview_size(view.width, view.height, 0.125)
    vp._draw_callback()  # no region in the context here: draws nothing, raises nothing


def test_changing_the_resolution_asks_again_from_the_first_step(root) -> None:
    vp = mod("viewport_preview")
    client, view = FakeClient(), a_view()
    root.neural_human_preview.enabled = True
    root.neural_human_preview.max_fps = 30.0
    vp.tick(0.0, [view], client=client)
    for t in (1.0, 2.0):
        vp.tick(t, [view], client=client)
        settle(vp)
    assert vp.tick(3.0, [view], client=client) == []
    root.neural_human_preview.resolution_scale = 1.0
    sent = vp.tick(4.0, [view], client=client)
    assert len(sent) == 1 and sent[0].step == 0 and sent[0].scale == 0.25


def test_addon_disable_removes_handler_timer_and_properties(root) -> None:
    """Last in this module: it disables the add-on."""
    import addon_utils

    vp = mod("viewport_preview")
    root.neural_human_preview.enabled = True
    vp.tick(0.0, [a_view()], client=FakeClient())
    assert vp.handler_registered() and bpy.app.timers.is_registered(vp._timer)
    addon_utils.disable(ADDON, default_set=True)
    assert not vp.handler_registered() and not bpy.app.timers.is_registered(vp._timer)
    assert not hasattr(bpy.types.Object, "neural_human_preview")
    assert vp._on_load_pre not in bpy.app.handlers.load_pre
