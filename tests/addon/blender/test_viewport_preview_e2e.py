"""The live viewport preview end to end: the add-on enabled as an extension in real Blender, a real
`python -m server serve` with the bundled demo actor, a tiny 32x24 viewport. The preview's own tick/drain functions
are called as its timer would (timers do not fire headless); the viewport is given as RegionView3D matrices."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from mathutils import Matrix
from PIL import Image

from neural_human_addon.core.camera import look_at_matrix_world
from neural_human_addon.core.viewport_camera import project_to_region
from tests.addon.blender.test_addon_e2e import (  # noqa: F401 (pytest fixtures)
    add_actor,
    addon,
    alpha_centroid,
    pelvis_world,
    scene,
    server,
)

pytestmark = [pytest.mark.blender, pytest.mark.slow]
REGION_W, REGION_H = 32, 24


def _view(vp, target: np.ndarray, distance: float = 3.2):
    c2w = look_at_matrix_world(target + np.array([0.4, -distance, 0.1]), target)
    a = 2 * 50.0 / 36.0  # a 50 mm lens on a 36 mm sensor, as Blender's viewport builds it
    window = np.array([[a, 0, 0, 0], [0, a * REGION_W / REGION_H, 0, 0], [0, 0, -1.0002, -0.02], [0, 0, -1.0, 0]])
    return vp.ViewState("e2e", np.linalg.inv(c2w), window, REGION_W, REGION_H)


def _answer(vp, view, t: float, timeout_s: float = 300.0):
    """Tick until a request goes out, wait for its answer and apply it; returns (request, session)."""
    sent = vp.tick(t, [view])
    assert len(sent) == 1, f"expected one preview request, got {sent} ({vp.status_text()})"
    session = vp.SESSIONS[next(iter(vp.SESSIONS))]
    deadline = time.monotonic() + timeout_s
    while session.scheduler.busy and time.monotonic() < deadline:
        if not vp.drain():
            time.sleep(0.02)
    assert not session.scheduler.busy, "the preview request did not come back in time"
    return sent[0], session


def test_preview_frame_lands_where_the_body_projects(addon, scene) -> None:  # noqa: F811
    vp = sys.modules[f"{addon.__name__}.blender.viewport_preview"]
    root, rig = add_actor(addon, scene)
    pelvis = np.array(pelvis_world(rig))
    view = _view(vp, pelvis)
    settings = root.neural_human_preview
    settings.resolution_scale, settings.max_fps = 1.0, 30.0
    settings.enabled = True
    try:
        assert vp.tick(0.0, [view]) == []  # debounce
        quarter, session = _answer(vp, view, vp.DEBOUNCE_S)
        assert quarter.step == 0 and session.frame is not None and session.frame.rgba.shape == (6, 8, 4)
        quarter_s = session.scheduler.last_duration_s
        full, session = _answer(vp, view, vp.DEBOUNCE_S + 1.0)
        assert full.step == 1 and session.frame.rgba.shape == (REGION_H, REGION_W, 4)
        full_s = session.scheduler.last_duration_s
        status = vp.status_text(root.name)
        assert status.startswith("preview: ") and "full res" in status
        frame = session.frame
        moved = _view(vp, pelvis, distance=3.3)  # orbit a little: a warm quarter frame (the first one loaded the actor)
        vp.tick(10.0, [moved])
        again, session = _answer(vp, moved, 10.0 + vp.DEBOUNCE_S)
        assert again.step == 0
        print(f"\npreview round trips on this machine: first 1/4 res (actor load included) {quarter_s:.2f} s, "
              f"full {REGION_W}x{REGION_H} {full_s:.2f} s, warm 1/4 res {session.scheduler.last_duration_s:.2f} s "
              f"({status})")
        session.frame = frame
        rgba = session.frame.rgba
        assert rgba[..., 3].max() > 0.5, "the preview frame is empty"
        xy = project_to_region(pelvis[None], view.view_matrix, view.window_matrix, REGION_W, REGION_H)[0]
        expected = np.array([xy[0] - 0.5, REGION_H - xy[1] - 0.5])  # row 0 on top, integer pixel centres
        centroid = alpha_centroid(rgba)
        assert np.linalg.norm(centroid - expected) < 2.5, (centroid, expected)
        # the depth that comes back is the body's distance along the view axis
        z = -(view.view_matrix @ np.append(pelvis, 1.0))[2]
        solid = rgba[..., 3] > 0.9
        assert abs(float(np.median(session.frame.depth[solid])) - z) < 0.3
        # the arrays that would be uploaded: straight alpha kept, window depth in (0, 1) where the body is
        _, up_depth = vp.upload_arrays(session.frame, view.window_matrix)
        assert 0.0 < float(up_depth[::-1][solid].max()) < 1.0
    finally:
        settings.enabled = False
    assert not vp.handler_registered()


def _quad_in_view(view, x0: float, x1: float, distance: float) -> np.ndarray:
    """World corners (two triangles) of a rectangle facing the viewer ``distance`` m in front of it, covering the
    horizontal NDC span [x0, x1] and the whole height."""
    a, b = view.window_matrix[0, 0], view.window_matrix[1, 1]
    xs = np.array([x0, x1]) * distance / a
    y = 1.05 * distance / b
    corners = [(xs[0], -y), (xs[1], -y), (xs[1], y), (xs[0], -y), (xs[1], y), (xs[0], y)]
    cam = np.array([[cx, cy, -distance, 1.0] for cx, cy in corners])
    return (cam @ np.linalg.inv(view.view_matrix).T)[:, :3]


def _draw_scene(view, quads, frame, use_depth: bool, vp) -> np.ndarray:
    """An offscreen 'viewport': grey background, opaque coloured quads drawn with depth, then the preview frame as
    the draw handler draws it. Returns the colour buffer (H,W,4), row 0 on top."""
    import gpu
    from gpu_extras.batch import batch_for_shader

    offscreen = gpu.types.GPUOffScreen(view.width, view.height)
    try:
        with offscreen.bind():
            fb = gpu.state.active_framebuffer_get()
            fb.clear(color=(0.2, 0.2, 0.2, 1.0), depth=1.0)
            with gpu.matrix.push_pop(), gpu.matrix.push_pop_projection():
                gpu.matrix.load_matrix(Matrix(view.view_matrix.tolist()))
                gpu.matrix.load_projection_matrix(Matrix(view.window_matrix.tolist()))
                shader = gpu.shader.from_builtin("UNIFORM_COLOR")
                gpu.state.depth_test_set("LESS_EQUAL")
                gpu.state.depth_mask_set(True)
                for corners, colour in quads:
                    batch = batch_for_shader(shader, "TRIS", {"pos": [tuple(c) for c in corners]})
                    shader.bind()
                    shader.uniform_float("color", colour)
                    batch.draw(shader)
                gpu.state.depth_mask_set(False)
                vp.draw_frame(frame, use_depth)
            pixels = np.array(fb.read_color(0, 0, view.width, view.height, 4, 0, "FLOAT").to_list(), np.float32)
    finally:
        offscreen.free()
    return pixels.reshape(view.height, view.width, 4)[::-1]


def test_preview_is_drawn_where_the_body_is_and_nearer_objects_hide_it(addon, scene, gpu_context,  # noqa: F811
                                                                       tmp_path) -> None:
    """The real draw path (textures, shader, depth test) into an offscreen buffer of the viewport's size and
    matrices, with the demo actor's answer: the actor's pixels land where the body projects, a plane in front of
    it hides it, a plane behind it is hidden by it, and 'alpha only' draws over both."""
    vp = sys.modules[f"{addon.__name__}.blender.viewport_preview"]
    root, rig = add_actor(addon, scene)
    pelvis = np.array(pelvis_world(rig))
    width, height = 64, 48
    c2w = look_at_matrix_world(pelvis + np.array([0.4, -3.2, 0.1]), pelvis)
    a = 2 * 50.0 / 36.0
    window = np.array([[a, 0, 0, 0], [0, a * width / height, 0, 0], [0, 0, -1.0002, -0.02], [0, 0, -1.0, 0]])
    view = vp.ViewState("offscreen", np.linalg.inv(c2w), window, width, height)
    settings = root.neural_human_preview
    settings.resolution_scale, settings.max_fps = 1.0, 30.0
    settings.enabled = True
    try:
        vp.tick(0.0, [view])
        _answer(vp, view, vp.DEBOUNCE_S)
        _, session = _answer(vp, view, vp.DEBOUNCE_S + 1.0)
        frame = session.frame
        assert frame.rgba.shape == (height, width, 4)
        body_distance = -(view.view_matrix @ np.append(pelvis, 1.0))[2]
        near = (_quad_in_view(view, -1.0, -0.1, body_distance - 1.0), (0.0, 0.0, 1.0, 1.0))  # left: in front
        far = (_quad_in_view(view, 0.1, 1.0, body_distance + 1.0), (0.0, 1.0, 0.0, 1.0))  # right: behind
        drawn = _draw_scene(view, [near, far], frame, True, vp)
        over = _draw_scene(view, [near, far], frame, False, vp)
    finally:
        settings.enabled = False
    image = Image.fromarray((np.clip(drawn[..., :3], 0, 1) * 255).astype(np.uint8))
    image.resize((4 * width, 4 * height), Image.NEAREST).save(tmp_path / "viewport_preview_offscreen.png")
    alpha = frame.rgba[..., 3]
    xs = (np.arange(width) + 0.5) / width * 2 - 1  # NDC x of each pixel column
    body = alpha > 0.95
    left, right, middle = body & (xs < -0.12), body & (xs > 0.12), body & (np.abs(xs) < 0.08)
    assert left.sum() > 10 and right.sum() > 10 and middle.sum() > 10, (left.sum(), right.sum(), middle.sum())
    blue, green = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    # the plane in front hides the actor
    assert np.abs(drawn[left][:, :3] - blue).max() < 0.02
    # behind the actor's pixels the far plane is hidden; in the gap between the planes the actor is drawn as sent
    assert np.abs(drawn[right][:, :3] - green).max(axis=1).min() > 0.2
    expected = frame.rgba[..., :3]
    assert np.median(np.abs(drawn[middle][:, :3] - expected[middle]).max(axis=1)) < 0.1
    # empty preview pixels leave the scene untouched
    empty = (alpha == 0) & (np.abs(xs) < 0.08)
    assert np.abs(drawn[empty][:, :3] - 0.2).max() < 0.02
    # alpha only: the actor over everything
    assert np.median(np.abs(over[left][:, :3] - expected[left]).max(axis=1)) < 0.1
