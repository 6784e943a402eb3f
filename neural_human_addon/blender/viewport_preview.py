# SPDX-License-Identifier: GPL-3.0-or-later
"""Live neural preview in the 3D viewport (DESIGN.md §5b): the bpy shell over ``core.preview_scheduler`` and
``core.viewport_camera``.

Per actor root a toggle (``Object.neural_human_preview.enabled``, off by default) with its settings. While any
preview is on, :func:`tick` (a plain function; a persistent timer calls it every 50 ms in the UI, tests call it
directly because timers do not fire headless) reads what the picture depends on — the bound rig's pose, the actor
root, the frame, each 3D viewport's view and projection matrices and region size — into one key per viewport and
feeds the viewport's scheduler. A request it returns is built on the main thread (a snapshot of the rig *without*
``frame_set``, so unkeyed posing is not overwritten; the viewport camera in actor space) and sent from a worker
thread; :func:`drain` applies answers on the main thread: stale ones are dropped, fresh ones become the viewport's
frame. A ``SpaceView3D`` draw handler (POST_VIEW) draws each viewport's frame only while the view is the one it was
made for (so it is never misplaced when orbiting), as straight-alpha RGBA over the scene, with ``gl_FragDepth`` from
the returned depth tested against the viewport's depth (or alpha only). Turning the toggle off, loading a file,
disconnecting, an error (shown once) and disabling the add-on remove the handler and free its textures.

Headless (background) Blender has no GPU context until something makes one (a Workbench or EEVEE render does, through
EGL; Mesa's software EGL is enough): before that, textures, shaders and batches cannot be made (``SystemError: GPU
functions for drawing are not available in background mode``; no draw handler runs there either). After it,
:func:`draw_frame` draws into an offscreen buffer as it does into a viewport, which is how the tests check the
pixels (tests/addon/blender/test_viewport_preview_e2e.py).
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import bpy
import gpu
import numpy as np
from bpy.app.handlers import persistent
from bpy.props import BoolProperty, EnumProperty, FloatProperty, PointerProperty, StringProperty
from gpu_extras.batch import batch_for_shader

from ..core import preview_image
from ..core.actor_space import camera_in_actor_space
from ..core.errors import UserError
from ..core.preview_scheduler import PreviewRequest, PreviewScheduler
from ..core.retarget import RootOptions, armature_to_smpl
from ..core.viewport_camera import ORTHO_MESSAGE, is_perspective, preview_size, viewport_to_pinhole
from . import actor_scene
from .actor_scene import armature_bone_map, find_actor_roots, root_body
from .job_session import report_error
from .preferences import make_client

TICK_S = 0.05
DEBOUNCE_S = 0.15
OUTPUTS = ("rgba", "depth")

__all__ = ["ViewState", "disable_all", "drain", "gather_views", "tick", "upload_arrays"]


# --- settings -------------------------------------------------------------------------------------------------------


def _on_toggle(settings: Any, _context: Any) -> None:
    root = settings.id_data
    if not settings.enabled:
        stop_root(root.name)
    else:
        ensure_timer()


class NeuralHumanPreviewSettings(bpy.types.PropertyGroup):
    enabled: BoolProperty(
        name="Live Preview", default=False, update=_on_toggle,
        description="Draw the actor live in the 3D viewport as you pose the rig, scrub or orbit (asks the server "
                    "for small frames in the background)")
    resolution_scale: FloatProperty(
        name="Resolution", default=0.5, min=0.05, max=1.0, subtype="FACTOR",
        description="Size of the full preview frame relative to the viewport (a quarter of it comes first)")
    max_fps: FloatProperty(name="Max FPS", default=4.0, min=0.1, max=30.0,
                           description="At most this many preview requests per second")
    occlusion: EnumProperty(
        name="Occlusion", default="DEPTH",
        items=[("DEPTH", "With Depth", "Scene objects in front of the actor hide it (depth-tested)"),
               ("ALPHA", "Alpha Only", "Draw the actor over everything")])


# --- what the picture depends on --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ViewState:
    """One 3D viewport as the preview sees it: an id, RegionView3D's matrices and the region size in pixels."""

    viewport: str
    view_matrix: np.ndarray
    window_matrix: np.ndarray
    width: int
    height: int

    @property
    def fingerprint(self) -> str:
        data = np.concatenate([np.round(self.view_matrix, 6).ravel(), np.round(self.window_matrix, 6).ravel(),
                               [self.width, self.height]])
        return hashlib.sha1(data.astype(np.float64).tobytes()).hexdigest()


def gather_views(context: Any = None) -> list[ViewState]:
    """Every 3D viewport's main region in the open windows (none headless unless a screen has a VIEW_3D area)."""
    context = context or bpy.context
    views = []
    wm = getattr(context, "window_manager", None)
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type != "VIEW_3D":
                continue
            for region in area.regions:
                view = _region_view(region, area.spaces.active.region_3d)
                if view is not None:
                    views.append(view)
    return views


def _region_view(region: Any, fallback_rv3d: Any) -> ViewState | None:
    """The ViewState of a 3D viewport's WINDOW region (quad view: each quarter is its own viewport, ``region.data``
    its RegionView3D; background Blender leaves that None, then the space's main ``region_3d``), else None."""
    rv3d = getattr(region, "data", None) or fallback_rv3d
    if region.type != "WINDOW" or region.width < 1 or region.height < 1 or not hasattr(rv3d, "window_matrix"):
        return None
    return ViewState(str(region.as_pointer()), np.array(rv3d.view_matrix), np.array(rv3d.window_matrix),
                     int(region.width), int(region.height))


def _pose_fingerprint(root: Any, scene: Any) -> str:
    """Hash of the frame, the root's and rig's world matrices and the rig's evaluated pose."""
    parts = [np.array([scene.frame_current, scene.frame_subframe], dtype=np.float64),
             np.array(root.matrix_world, dtype=np.float64).ravel()]
    arm = actor_scene.bound_armature(root)
    if arm is not None:
        parts.append(np.array(arm.matrix_world, dtype=np.float64).ravel())
        parts.extend(np.array(pb.matrix, dtype=np.float64).ravel() for pb in arm.pose.bones)
    return hashlib.sha1(np.round(np.concatenate(parts), 6).tobytes()).hexdigest()


def current_body(root: Any, scene: Any) -> tuple[str, dict, str]:
    """(actor id, wire body of the bound rig as it is now, up axis), without ``frame_set`` (unkeyed posing stays)."""
    actor_id, up, rest_joints, shapes = root_body(root)
    arm = actor_scene._require_bound(root)
    skel, names = actor_scene._relative_rest(root, arm)
    to_root = np.linalg.inv(actor_scene._root_matrix(root)) @ np.array(arm.matrix_world)
    posed = np.array([[to_root @ np.array(arm.pose.bones[n].matrix) for n in names]])
    opts = RootOptions(fps=scene.render.fps / scene.render.fps_base)
    params, _ = armature_to_smpl(skel, posed, armature_bone_map(arm), rest_joints, actor_up=up.upper(), root=opts)
    body = {"poses": params.poses[0].tolist(), "shapes": np.asarray(shapes, dtype=np.float64).tolist(),
            "Rh": params.Rh[0].tolist(), "Th": params.Th[0].tolist()}
    return actor_id, body, up


# --- sessions: one per (actor root, viewport) -----------------------------------------------------------------------


@dataclass
class PreviewFrame:
    """An answer being shown: straight-alpha RGBA (H,W,4), depth (H,W), the view it was made for."""

    view_fingerprint: str
    window_matrix: np.ndarray
    rgba: np.ndarray
    depth: np.ndarray
    scale: float
    textures: Any = None  # (rgba GPUTexture, depth GPUTexture) once drawn


@dataclass
class Session:
    root: str
    viewport: str
    scheduler: PreviewScheduler
    frame: PreviewFrame | None = None
    views: dict[int, ViewState] = field(default_factory=dict)  # request id -> the view it was asked for
    note: str = ""


SESSIONS: dict[tuple[str, str], Session] = {}
RESULTS: queue.Queue = queue.Queue()
_HANDLE: list[Any] = []  # the draw handler, when registered
_GPU: dict[str, Any] = {}  # shader and batch, made on first draw
SENT: list[PreviewRequest] = []  # every request sent (tests count them)


def enabled_roots(scene: Any) -> list[Any]:
    return [r for r in find_actor_roots(scene) if r.neural_human_preview.enabled]


def _session(root: Any, view: ViewState) -> Session:
    key = (root.name, view.viewport)
    s = SESSIONS.get(key)
    settings = root.neural_human_preview
    scales = (0.25 * float(settings.resolution_scale), float(settings.resolution_scale))
    if s is None:
        s = SESSIONS[key] = Session(root.name, view.viewport, PreviewScheduler(DEBOUNCE_S, settings.max_fps, scales))
    elif s.scheduler.scales != scales:  # the resolution setting changed: ask again from the first step
        s.scheduler.scales, s.scheduler.shown_key, s.scheduler.shown_step = scales, None, -1
    s.scheduler.max_fps = float(settings.max_fps)
    return s


def _send(session: Session, request: PreviewRequest, root: Any, view: ViewState, scene: Any, client: Any) -> None:
    """Build the request on the main thread, run it in a worker thread."""
    try:
        actor_id, body, up = current_body(root, scene)
        width, height = preview_size(view.width, view.height, request.scale)
        cam = viewport_to_pinhole(view.view_matrix, view.window_matrix, width, height)
        wire_cam = camera_in_actor_space(cam, actor_scene._root_matrix(root), up).to_wire()
    except Exception as err:  # noqa: BLE001 (unbound rig, bad root...: reported once by drain, like a server error)
        RESULTS.put((session.root, session.viewport, request.id, err, 0.0))
        return
    session.views[request.id] = view
    SENT.append(request)

    started = time.monotonic()

    def work() -> None:
        try:
            result: Any = client.render(actor_id, body, wire_cam, OUTPUTS)
        except Exception as err:  # noqa: BLE001 (every failure is reported on the main thread)
            result = err
        RESULTS.put((session.root, session.viewport, request.id, result, time.monotonic() - started))

    threading.Thread(target=work, name="neural-human preview", daemon=True).start()


def _make_client() -> Any:
    return make_client(bpy.context)


def tick(now: float | None = None, views: list[ViewState] | None = None, scene: Any = None,
         client: Any = None) -> list[PreviewRequest]:
    """One step of the preview: feed each (enabled root, viewport) scheduler its key, send what it asks for.
    Returns the requests sent. ``views`` default to the open 3D viewports; ``client`` to the preferences'."""
    now = time.monotonic() if now is None else now
    scene = scene or bpy.context.scene
    if client is None and not _connected():
        if SESSIONS:  # disconnected (or the connection failed): the preview goes, its handler and textures with it
            disable_all()
        return []
    views = gather_views() if views is None else views
    sent: list[PreviewRequest] = []
    roots = enabled_roots(scene)
    _prune({(root.name, view.viewport) for root in roots for view in views})
    for root in roots:
        pose_key = _pose_fingerprint(root, scene)
        for view in views:
            session = _session(root, view)
            if not is_perspective(view.window_matrix):
                session.note, session.frame = ORTHO_MESSAGE, _free(session.frame)
                continue
            session.note = ""
            session.scheduler.observe((pose_key, view.fingerprint), now)
            request = session.scheduler.tick(now)
            if request is None:
                continue
            if client is None:
                try:
                    client = _make_client()
                except UserError as err:
                    _report(session, request.id, err)
                    continue
            _send(session, request, root, view, scene, client)
            sent.append(request)
    _sync_handler()
    return sent


def _prune(live: set[tuple[str, str]]) -> None:
    """Forget sessions of roots no longer previewed (deleted, turned off, another scene) and closed viewports."""
    for key in [k for k in SESSIONS if k not in live]:
        _free(SESSIONS.pop(key).frame)


def _sync_handler() -> None:
    """The draw handler exists while some preview can draw (a session that has not stopped on an error)."""
    if any(s.scheduler.error is None for s in SESSIONS.values()):
        _ensure_handler()
    else:
        _remove_handler()


def _connected() -> bool:
    wm = getattr(bpy.context, "window_manager", None)
    status = getattr(wm, "neural_human", None)
    return bool(getattr(status, "connected", False))


def drain(now: float | None = None) -> int:
    """Apply the worker threads' answers (main thread). Returns how many answers were taken."""
    taken = 0
    while True:
        try:
            root, viewport, request_id, result, round_trip_s = RESULTS.get_nowait()
        except queue.Empty:
            break
        taken += 1
        session = SESSIONS.get((root, viewport))
        if session is None:  # the preview was turned off meanwhile
            continue
        view = session.views.pop(request_id, None)
        if isinstance(result, Exception):
            _report(session, request_id, result)
            continue
        request = session.scheduler.in_flight
        answered_at = time.monotonic() if now is None else now
        if not session.scheduler.answer(request_id, answered_at, round_trip_s) or view is None:
            continue
        _free(session.frame)
        session.frame = PreviewFrame(view.fingerprint, view.window_matrix, np.asarray(result["rgba"], np.float32),
                                     np.asarray(result["depth"], np.float32), request.scale if request else 1.0)
    if taken:
        _update_status()
        _redraw()
    return taken


def _report(session: Session, request_id: int, err: Exception, drawing: bool = False) -> None:
    """A failed preview request: stop this preview, drop its frame, show the error once. From inside the draw
    handler (``drawing``) the handler is removed a moment later, not while Blender is calling it."""
    message = session.scheduler.fail(request_id, str(err))
    session.frame = _free(session.frame)
    if message is not None:
        report_error(f"Live preview of '{session.root}' stopped: {message}")
    if drawing:
        bpy.app.timers.register(_sync_handler, first_interval=0.0)
    else:
        _sync_handler()
    _update_status()


def _free(frame: PreviewFrame | None) -> None:
    if frame is not None:
        frame.textures = None  # GPUTextures are freed when the last reference goes


def stop_root(root_name: str) -> None:
    """Turn one root's preview off: forget its sessions and frames; remove the handler when none is left."""
    for key in [k for k in SESSIONS if k[0] == root_name]:
        _free(SESSIONS.pop(key).frame)
    _sync_handler()
    _update_status()
    _redraw()


def disable_all() -> None:
    """Forget every preview (file load, disconnect, add-on disable): handler removed, textures freed."""
    for session in SESSIONS.values():
        _free(session.frame)
    SESSIONS.clear()
    SENT.clear()
    while not RESULTS.empty():
        RESULTS.get_nowait()
    _remove_handler()
    _update_status()


def status_text(root_name: str | None = None) -> str:
    lines = [s.note or s.scheduler.status_text() for s in SESSIONS.values() if root_name in (None, s.root)]
    return lines[0] if lines else ""


def _update_status() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    if wm is not None and hasattr(wm, "neural_human_preview_status"):
        wm.neural_human_preview_status = status_text()


def _redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


# --- drawing ---------------------------------------------------------------------------------------------------------


def upload_arrays(frame: PreviewFrame, window_matrix: Any) -> tuple[np.ndarray, np.ndarray]:
    """What goes into the textures (:func:`core.preview_image.upload_arrays`)."""
    return preview_image.upload_arrays(frame.rgba, frame.depth, window_matrix)


_VERTEX = "void main() { uv = pos * 0.5 + 0.5; gl_Position = vec4(pos, 0.0, 1.0); }"
# The texture holds sRGB-encoded colour. Blender sets the push constant ``srgbTarget`` of any shader that declares it
# (true when the framebuffer encodes sRGB on write, as the viewport's does): the colour is then decoded to linear, so
# the stored pixel is the colour sent; otherwise it is written as it is. (Blender's own
# blender_srgb_to_framebuffer_space does the same but is not available to shaders made from a GPUShaderCreateInfo.)
_FRAGMENT = """
vec3 nh_srgb_to_linear(vec3 c) {
  return mix(c / 12.92, pow((c + 0.055) / 1.055, vec3(2.4)), step(vec3(0.04045), c));
}
void main() {
  vec4 c = texture(image, uv);  /* premultiplied (filters cleanly); blended as straight alpha below */
  if (c.a <= 0.0) { discard; }
  gl_FragDepth = use_depth != 0 ? texture(depth_image, uv).r : 0.0;
  vec3 rgb = c.rgb / c.a;
  color = vec4(srgbTarget ? nh_srgb_to_linear(rgb) : rgb, c.a);
}
"""


def _shader_and_batch() -> tuple[Any, Any]:
    if "shader" not in _GPU:
        shader = gpu.shader.create_from_info(shader_info())
        quad = [(-1, -1), (1, -1), (1, 1), (-1, -1), (1, 1), (-1, 1)]
        _GPU["shader"] = shader
        _GPU["batch"] = batch_for_shader(shader, "TRIS", {"pos": quad})
    return _GPU["shader"], _GPU["batch"]


def shader_info() -> Any:
    """The preview shader's description (GPUShaderCreateInfo; building it needs no GPU context, compiling does)."""
    iface = gpu.types.GPUStageInterfaceInfo("neural_human_preview_iface")
    iface.smooth("VEC2", "uv")
    _GPU["iface"] = iface  # the create-info refers to it: keep it alive
    info = gpu.types.GPUShaderCreateInfo()
    info.vertex_in(0, "VEC2", "pos")
    info.vertex_out(iface)
    info.sampler(0, "FLOAT_2D", "image")
    info.sampler(1, "FLOAT_2D", "depth_image")
    info.push_constant("INT", "use_depth")
    info.push_constant("BOOL", "srgbTarget")  # set by Blender at bind (see _FRAGMENT)
    info.fragment_out(0, "VEC4", "color")
    if hasattr(info, "depth_write"):  # feature test: newer Blender wants gl_FragDepth declared
        info.depth_write("ANY")
    info.vertex_source(_VERTEX)
    info.fragment_source(_FRAGMENT)
    return info


def _textures(frame: PreviewFrame, window_matrix: Any) -> tuple[Any, Any]:
    if frame.textures is None:
        rgba, depth = upload_arrays(frame, window_matrix)
        h, w = depth.shape
        tex = gpu.types.GPUTexture((w, h), format="RGBA32F", data=gpu.types.Buffer("FLOAT", rgba.size, rgba.ravel()))
        dtex = gpu.types.GPUTexture((w, h), format="R32F", data=gpu.types.Buffer("FLOAT", depth.size, depth.ravel()))
        frame.textures = (tex, dtex)
    return frame.textures


def draw_frame(frame: PreviewFrame, use_depth: bool) -> None:
    """Draw one frame over the current region (inside a POST_VIEW draw handler)."""
    if not hasattr(gpu.types, "GPUShaderCreateInfo"):  # feature test (all supported versions have it)
        raise RuntimeError("this Blender's gpu module cannot build the preview shader")
    shader, batch = _shader_and_batch()
    tex, dtex = _textures(frame, frame.window_matrix)
    gpu.state.blend_set("ALPHA")  # straight alpha: src·a + dst·(1 − a)
    gpu.state.depth_test_set("LESS_EQUAL" if use_depth else "NONE")
    gpu.state.depth_mask_set(False)
    shader.bind()
    shader.uniform_sampler("image", tex)
    shader.uniform_sampler("depth_image", dtex)
    shader.uniform_int("use_depth", 1 if use_depth else 0)
    batch.draw(shader)
    gpu.state.blend_set("NONE")
    gpu.state.depth_test_set("NONE")


def _draw_callback() -> None:
    """The draw handler: this region's frames, only for the view they were made for."""
    region = bpy.context.region
    view = _region_view(region, bpy.context.region_data) if region is not None else None
    if view is None:
        return
    for session in list(SESSIONS.values()):
        frame = session.frame
        if session.viewport != view.viewport or frame is None or frame.view_fingerprint != view.fingerprint:
            continue
        root = bpy.data.objects.get(session.root)
        use_depth = root is None or root.neural_human_preview.occlusion == "DEPTH"
        try:
            draw_frame(frame, use_depth)
        except Exception as err:  # noqa: BLE001 (a draw handler that raises would raise on every redraw)
            _report(session, session.scheduler.in_flight.id if session.scheduler.in_flight else 0, err, drawing=True)


def _ensure_handler() -> None:
    if not _HANDLE:
        _HANDLE.append(bpy.types.SpaceView3D.draw_handler_add(_draw_callback, (), "WINDOW", "POST_VIEW"))


def _remove_handler() -> None:
    while _HANDLE:
        bpy.types.SpaceView3D.draw_handler_remove(_HANDLE.pop(), "WINDOW")


def handler_registered() -> bool:
    return bool(_HANDLE)


# --- timer, file load, panel ---------------------------------------------------------------------------------------


def _timer() -> float | None:
    try:
        drain()
        tick()
    except Exception as err:  # noqa: BLE001 (a timer that raises is unregistered by Blender)
        print(f"Neural Human: live preview: {err}")
    scene = getattr(bpy.context, "scene", None)
    return TICK_S if scene is not None and (SESSIONS or enabled_roots(scene)) else None


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=TICK_S, persistent=True)


@persistent
def _on_load_pre(*_args: Any) -> None:
    disable_all()


@persistent
def _on_load_post(*_args: Any) -> None:
    scene = getattr(bpy.context, "scene", None)
    if scene is not None and enabled_roots(scene):  # a file saved with the preview on
        ensure_timer()


class NEURALHUMAN_PT_preview(bpy.types.Panel):
    bl_idname = "NEURALHUMAN_PT_preview"
    bl_label = "Live Preview"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural Human"

    def draw(self, context):
        layout, root = self.layout, context.scene.neural_human.actor_root
        if root is None:
            layout.label(text="Choose an actor root in the Actor panel")
            return
        settings = root.neural_human_preview
        layout.prop(settings, "enabled", toggle=True, icon="HIDE_OFF" if settings.enabled else "HIDE_ON")
        col = layout.column(align=True)
        col.prop(settings, "resolution_scale")
        col.prop(settings, "max_fps")
        layout.prop(settings, "occlusion", expand=True)
        text = status_text(root.name)
        if settings.enabled and not _connected():
            text = "preview: connect to the server first"
        if settings.enabled and text:
            layout.label(text=text, icon="INFO")


CLASSES = (NeuralHumanPreviewSettings, NEURALHUMAN_PT_preview)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Object.neural_human_preview = PointerProperty(type=NeuralHumanPreviewSettings)
    bpy.types.WindowManager.neural_human_preview_status = StringProperty(name="Preview Status", default="")
    bpy.app.handlers.load_pre.append(_on_load_pre)
    bpy.app.handlers.load_post.append(_on_load_post)


def unregister() -> None:
    disable_all()
    _GPU.clear()  # shader, batch: GPU resources go with the add-on
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    for handlers, fn in ((bpy.app.handlers.load_pre, _on_load_pre), (bpy.app.handlers.load_post, _on_load_post)):
        if fn in handlers:
            handlers.remove(fn)
    del bpy.types.WindowManager.neural_human_preview_status
    del bpy.types.Object.neural_human_preview
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
