"""The live viewport preview end to end: the add-on enabled as an extension in real Blender, a real
`python -m server serve` with the bundled demo actor, a tiny 32x24 viewport. The preview's own tick/drain functions
are called as its timer would (timers do not fire headless); the viewport is given as RegionView3D matrices."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

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
