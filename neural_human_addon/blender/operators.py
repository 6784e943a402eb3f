# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators of the Neural Human panel. Each one snapshots what it needs on the main thread, hands the network work
to a worker (job_session), and reports failures as one actionable line (panel, report, console), never a traceback.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import bpy
from bpy.props import BoolProperty

from ..core.connection_state import STATE, describe_health
from ..core.errors import UserError
from ..core.job_runner import JobRunner
from ..core.server_client import ServerError
from . import actor_scene, job_session
from .actor_scene import ROLE_KEY, ROOT_ROLE, remember_skeleton, root_body
from .bone_map_editor import edited_map_for
from .job_results import MeshResults, RenderResults
from .preferences import addon_preferences, make_client

# How long "Start Local Server" waits for the server to answer: a server that compiles its point network before it
# listens (`serve --compile`) or imports torch on a busy machine takes a while; a start command that exits is reported
# at once, whatever this says.
SERVER_START_WAIT_S = 180.0



def _status(context: bpy.types.Context):
    return context.window_manager.neural_human


def _fail(op: bpy.types.Operator, context: bpy.types.Context, err: BaseException) -> set[str]:
    text = str(err)
    _status(context).last_error = text
    op.report({"ERROR"}, text)
    return {"CANCELLED"}


def actor_root(context: bpy.types.Context) -> bpy.types.Object:
    """The actor root to work on: the panel's choice, else the active object's root, else the scene's only root."""
    settings = context.scene.neural_human
    if settings.actor_root is not None and settings.actor_root.name in context.scene.objects:
        return settings.actor_root
    obj = context.active_object
    while obj is not None:
        if obj.get(ROLE_KEY) == ROOT_ROLE:
            return obj
        obj = obj.parent
    roots = actor_scene.find_actor_roots(context.scene)
    if len(roots) == 1:
        return roots[0]
    if not roots:
        raise UserError("No actor in the scene: connect, pick an actor and press Add to Scene")
    raise UserError("Several actors in the scene: pick one as Actor Root in the Neural Human panel")


def frame_range(context: bpy.types.Context) -> list[int]:
    settings, scene = context.scene.neural_human, context.scene
    if settings.use_scene_range:
        start, end, step = scene.frame_start, scene.frame_end, max(1, scene.frame_step)
    else:
        start, end, step = settings.frame_start, settings.frame_end, 1
    if end < start:
        raise UserError(f"The frame range {start}..{end} is empty: the end frame must not be before the start")
    return list(range(start, end + 1, step))


def output_folder(context: bpy.types.Context, kind: str, actor_id: str) -> Path:
    """A new folder for one job's files under the output setting (a temp folder while the .blend is unsaved)."""
    base = context.scene.neural_human.output_dir or "//neural_human/"
    if base.startswith("//") and not bpy.data.filepath:
        root = Path(tempfile.gettempdir()) / "neural_human"
    else:
        root = Path(bpy.path.abspath(base))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = root / f"{actor_id}_{kind}_{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = root / f"{actor_id}_{kind}_{stamp}_{n}"
    try:
        folder.mkdir(parents=True)
    except OSError as err:
        raise UserError(
            f"Cannot create the output folder {folder}: {err.strerror}; choose another Output folder") from None
    return folder


def _connected(result: tuple[dict, list]) -> None:
    health, actors = result
    STATE.health = health
    STATE.set_actors(actors)
    status = job_session.status()
    if status is not None:
        status.connected, status.last_error = True, ""
        status.connection = f"Connected: {describe_health(health)}, {len(actors)} actors"
    settings = bpy.context.scene.neural_human
    if actors and settings.actor not in {a["id"] for a in actors}:
        settings.actor = actors[0]["id"]


def _connect_failed(err: Exception) -> None:
    STATE.reset()
    status = job_session.status()
    if status is not None:
        status.connected, status.connection, status.last_error = False, str(err), str(err)




# --- poll() helpers: an operator's button is greyed out, with the reason as its tooltip, until it can run -----------


def _require(cls: type, ok: bool, reason: str) -> bool:
    if not ok:
        cls.poll_message_set(reason)
    return ok


def _is_connected(context: bpy.types.Context) -> bool:
    return bool(context.window_manager.neural_human.connected)


def _has_actor_root(context: bpy.types.Context) -> bool:
    return context.scene.neural_human.actor_root is not None or any(
        actor_scene.is_actor_root(obj) for obj in context.scene.objects)


def _can_work_on_server_actor(cls: type, context: bpy.types.Context) -> bool:
    """Connected, with an actor of the server picked in the panel (add, unload)."""
    return (_require(cls, _is_connected(context), "Connect to the server first")
            and _require(cls, bool(context.scene.neural_human.actor), "Pick an actor first"))


def _can_work_on_actor(cls: type, context: bpy.types.Context) -> bool:
    """Connected, with an actor root in the scene (the server work of render, mesh and motion operators)."""
    return (_require(cls, _is_connected(context), "Connect to the server first")
            and _require(cls, _has_actor_root(context), "Add an actor to the scene first"))


class NEURALHUMAN_OT_connect(bpy.types.Operator):
    bl_idname = "neural_human.connect"
    bl_label = "Connect"
    bl_description = "Ask the server for its health and the actors it serves"

    def execute(self, context):
        st = _status(context)
        try:
            client = make_client(context)
        except UserError as err:
            st.connected, st.connection = False, str(err)
            return _fail(self, context, err)
        st.connection = f"Connecting to {client.url} ..."
        job_session.start_call(job_session.BackgroundCall(
            "connect", lambda: (client.health(), client.actors()), _connected, _connect_failed))
        return {"FINISHED"}


class NEURALHUMAN_OT_start_server(bpy.types.Operator):
    bl_idname = "neural_human.start_server"
    bl_label = "Start Local Server"
    bl_description = "Run the start command from the add-on preferences, then connect"

    @classmethod
    def poll(cls, context):
        try:
            return bool(addon_preferences(context).server_command.strip())
        except RuntimeError:
            return False

    def execute(self, context):
        prefs = addon_preferences(context)
        try:
            argv = shlex.split(prefs.server_command)
            workdir = bpy.path.abspath(prefs.server_workdir) if prefs.server_workdir else None
            process = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL,  # noqa: S603
                                       start_new_session=True)
            client = make_client(context)
        except (ValueError, OSError, ServerError) as err:
            return _fail(self, context, UserError(f"Could not start the server ({prefs.server_command!r}): {err}"))
        command = prefs.server_command

        def wait_for_server() -> tuple[dict, list]:
            deadline = time.monotonic() + SERVER_START_WAIT_S
            while True:
                try:
                    return client.health(), client.actors()
                except ServerError as err:
                    if err.kind not in ("unreachable", "timeout") or time.monotonic() > deadline:
                        raise
                code = process.poll()
                if code is not None:
                    raise UserError(f"The start command ({command!r}) exited with code {code} before the server "
                                    "answered; run it in a terminal to see why.")
                time.sleep(0.5)

        _status(context).connection = "Starting the local server ..."
        job_session.start_call(job_session.BackgroundCall("start server", wait_for_server, _connected,
                                                          _connect_failed))
        return {"FINISHED"}


class NEURALHUMAN_OT_add_actor(bpy.types.Operator):
    bl_idname = "neural_human.add_actor"
    bl_label = "Add to Scene"
    bl_description = "Create an actor root at the 3D cursor and an SMPL armature matching the actor's skeleton"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _can_work_on_server_actor(cls, context)

    def execute(self, context):
        actor_id = context.scene.neural_human.actor
        actor = STATE.actor(actor_id)
        if actor is None:
            return _fail(self, context, UserError(f"Actor '{actor_id}' is not known: press Connect first"))
        try:
            client = make_client(context)
        except UserError as err:
            return _fail(self, context, err)
        scene_name = context.scene.name
        location = tuple(context.scene.cursor.location)

        def done(skeleton: dict) -> None:
            scene = bpy.data.scenes.get(scene_name)
            if scene is None:
                return
            root, _armature = actor_scene.create_actor_root(actor, skeleton, location=location,
                                                            collection=scene.collection)
            remember_skeleton(root, actor, skeleton)
            STATE.skeletons[actor_id] = skeleton
            scene.neural_human.actor_root = root

        job_session.start_call(job_session.BackgroundCall(
            "add actor", lambda: client.skeleton(actor_id), done,
            lambda err: job_session.report_error(f"Add to Scene: {err}")))
        return {"FINISHED"}


class NEURALHUMAN_OT_bind_armature(bpy.types.Operator):
    bl_idname = "neural_human.bind_armature"
    bl_label = "Bind Active Armature"
    bl_description = ("Drive the actor with the active armature (SMPL, Rigify, Mixamo, BVH... bones are matched "
                      "by the retargeting bone maps)")
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return (_require(cls, obj is not None and obj.type == "ARMATURE", "Select an armature to bind")
                and _require(cls, _has_actor_root(context), "Add an actor to the scene first"))

    def execute(self, context):
        try:
            root = actor_root(context)
            edited = edited_map_for(context.scene.neural_human, context.active_object)  # the panel's Bone Map
            actor_scene.bind_armature(root, context.active_object, edited)
        except UserError as err:
            return _fail(self, context, err)
        self.report({"INFO"}, f"'{context.active_object.name}' now drives '{root.name}'")
        return {"FINISHED"}


def _start_job(op, context, *, mesh: bool, single: bool) -> set[str]:
    """Snapshot the bound rig (and, for renders, the scene camera) over the frames, then hand them to a server job."""
    settings, scene = context.scene.neural_human, context.scene
    try:
        frames = [scene.frame_current] if single else frame_range(context)
        root = actor_root(context)
        actor_id, up_axis, rest_joints, shapes = root_body(root)
        if not mesh and scene.camera is None:
            raise UserError("The scene has no active camera: add one and make it the scene camera")
        wire = actor_scene.snapshot_frames(root, frames, rest_joints, shapes, with_camera=not mesh, scene=scene)
        client = make_client(context)
        kind = ("mesh" if single else "meshes") if mesh else ("frame" if single else "animation")
        out_dir = output_folder(context, kind, actor_id)
    except UserError as err:
        return _fail(op, context, err)
    if mesh:
        title = f"{'Mesh' if single else 'Mesh sequence'} ({actor_id})"
        handler = MeshResults(title, root.name, actor_id, up_axis, out_dir, frames, single=single)
        runner = JobRunner(client, actor_id, wire, ["mesh"], out_dir, voxel_size=settings.voxel_size,
                           colors=settings.mesh_colors)
    else:
        title = f"Render {kind} ({actor_id})"
        handler = RenderResults(title, scene.name, scene.camera.name, actor_id, out_dir, frames, single=single,
                                composite=settings.composite and not single)
        runner = JobRunner(client, actor_id, wire, ["rgba", "depth"], out_dir)
    job_session.start_job(runner, handler, len(frames))
    op.report({"INFO"}, f"{title}: {len(frames)} frame(s) queued, saving to {out_dir}")
    return {"FINISHED"}


class _ServerJobOperator:
    """Render or mesh the bound rig through one server job: the current frame (``single``) or the frame range."""

    mesh = False
    single = True

    @classmethod
    def poll(cls, context):
        if not _can_work_on_actor(cls, context):
            return False
        return cls.mesh or _require(cls, context.scene.camera is not None, "The scene needs an active camera")

    def execute(self, context):
        return _start_job(self, context, mesh=self.mesh, single=self.single)


class NEURALHUMAN_OT_render_frame(_ServerJobOperator, bpy.types.Operator):
    bl_idname = "neural_human.render_frame"
    bl_label = "Render Frame"
    bl_description = "Render the actor at the current frame from the scene camera; shown as the camera background"


class NEURALHUMAN_OT_render_animation(_ServerJobOperator, bpy.types.Operator):
    bl_idname = "neural_human.render_animation"
    bl_label = "Render Animation"
    bl_description = ("Render the frame range as one server job; frames are saved as they arrive and kept if "
                      "cancelled; then loaded as an image sequence and composited into the scene's render")
    single = False


class NEURALHUMAN_OT_import_mesh(_ServerJobOperator, bpy.types.Operator):
    bl_idname = "neural_human.import_mesh"
    bl_label = "Import Mesh"
    bl_description = "Marching-cubes mesh of the actor in the current pose, with vertex colours, under the actor root"
    mesh = True


class NEURALHUMAN_OT_import_mesh_sequence(_ServerJobOperator, bpy.types.Operator):
    bl_idname = "neural_human.import_mesh_sequence"
    bl_label = "Import Mesh Sequence"
    bl_description = "One mesh per frame of the range, shown in turn as the timeline plays"
    mesh, single = True, False


class NEURALHUMAN_OT_cancel(bpy.types.Operator):
    bl_idname = "neural_human.cancel"
    bl_label = "Cancel"
    bl_description = "Stop the running jobs between frames; finished frames are kept"

    @classmethod
    def poll(cls, context):
        return bool(job_session.JOBS)

    def execute(self, context):
        n = job_session.cancel_all()
        self.report({"INFO"}, f"Cancelling {n} job(s); finished frames are kept")
        return {"FINISHED"}


class NEURALHUMAN_OT_reanimate(bpy.types.Operator):
    bl_idname = "neural_human.reanimate"
    bl_label = "Apply Captured Motion"
    bl_description = "Key the bound armature with the motion the actor was captured with, from the current frame"
    bl_options = {"REGISTER", "UNDO"}

    set_range: BoolProperty(name="Set Frame Range", default=True,
                            description="Set the scene's frame range to the motion")

    @classmethod
    def poll(cls, context):
        return _can_work_on_actor(cls, context)

    def execute(self, context):
        try:
            root = actor_root(context)
            actor_id, _up, rest_joints, _shapes = root_body(root)
            client = make_client(context)
        except UserError as err:
            return _fail(self, context, err)
        root_name, scene_name = root.name, context.scene.name
        start, set_range = context.scene.frame_current, self.set_range

        def done(motion: dict) -> None:
            scene, root_obj = bpy.data.scenes.get(scene_name), bpy.data.objects.get(root_name)
            if scene is None or root_obj is None:
                return
            if len(motion["poses"]) == 0:
                job_session.report_error(f"Actor '{actor_id}' has no captured motion (imported without its dataset)")
                return
            try:
                actor_scene.apply_actor_motion(root_obj, motion, rest_joints, frame_start=start)
            except UserError as err:
                job_session.report_error(f"Apply Captured Motion: {err}")
                return
            if set_range:
                scene.frame_start, scene.frame_end = start, start + len(motion["poses"]) - 1
                scene.render.fps = max(1, int(round(float(motion.get("fps") or scene.render.fps))))

        job_session.start_call(job_session.BackgroundCall(
            "motion", lambda: client.motion(actor_id), done,
            lambda err: job_session.report_error(f"Apply Captured Motion: {err}")))
        return {"FINISHED"}


class NEURALHUMAN_OT_unload_actor(bpy.types.Operator):
    bl_idname = "neural_human.unload_actor"
    bl_label = "Unload"
    bl_description = "Free the actor's memory on the server (it loads again on next use)"

    @classmethod
    def poll(cls, context):
        return _can_work_on_server_actor(cls, context)

    def execute(self, context):
        actor_id = context.scene.neural_human.actor
        try:
            client = make_client(context)
        except UserError as err:
            return _fail(self, context, err)
        job_session.start_call(job_session.BackgroundCall(
            "unload", lambda: client.unload(actor_id), lambda _r: None,
            lambda err: job_session.report_error(f"Unload: {err}")))
        return {"FINISHED"}


CLASSES = (
    NEURALHUMAN_OT_connect,
    NEURALHUMAN_OT_start_server,
    NEURALHUMAN_OT_add_actor,
    NEURALHUMAN_OT_bind_armature,
    NEURALHUMAN_OT_render_frame,
    NEURALHUMAN_OT_render_animation,
    NEURALHUMAN_OT_import_mesh,
    NEURALHUMAN_OT_import_mesh_sequence,
    NEURALHUMAN_OT_cancel,
    NEURALHUMAN_OT_reanimate,
    NEURALHUMAN_OT_unload_actor,
)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
