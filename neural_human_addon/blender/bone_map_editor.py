# SPDX-License-Identifier: GPL-3.0-or-later
"""The Retarget panel: a bone-map editor (24 SMPL joints, each with a searchable bone of the armature), detection,
saved user maps, motion files and the BVH 'ignore non-root positions' repair."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

from ..core.bone_maps import load_user_presets, missing_required, resolve_map, save_user_preset
from ..core.errors import UserError
from ..core.smpl_skeleton import REQUIRED_JOINTS, SMPL_JOINT_NAMES
from .motion_import import apply_motion_file
from .retarget_bpy import detect_armature, ignore_nonroot_positions, user_bone_map_dir

CATEGORY = "Neural Human"


# --- the editor's map ----------------------------------------------------------------------------------------------


def fill_editor(settings, armature, bone_map: Mapping[str, str | None], detected: Mapping | None = None,
                status: str = "") -> None:  # fmt: skip
    """Put a map into the editor for `armature` (one row per SMPL joint, in SMPL order)."""
    settings.bone_slots.clear()
    detected = detected if detected is not None else bone_map
    for j in SMPL_JOINT_NAMES:
        slot = settings.bone_slots.add()
        slot.joint, slot.bone = j, bone_map.get(j) or ""
        slot.detected, slot.required = detected.get(j) or "", j in REQUIRED_JOINTS
    settings.bone_map_armature = armature.name
    settings.bone_map_status = status


def editor_map(settings) -> dict[str, str | None]:
    """The editor's map {smpl_joint: bone or None}."""
    out = dict.fromkeys(SMPL_JOINT_NAMES)
    for slot in settings.bone_slots:
        if slot.joint in out:
            out[slot.joint] = slot.bone or None
    return out


def edited_map_for(settings, armature) -> dict[str, str | None] | None:
    """The editor's map when it was filled for this armature, else None (binding then auto-detects)."""
    if armature is None or settings.bone_map_armature != armature.name or not len(settings.bone_slots):
        return None
    return editor_map(settings)


def _active_armature(context):
    obj = context.active_object
    return obj if obj is not None and obj.type == "ARMATURE" else None


def _fail(op, err: BaseException) -> set[str]:
    op.report({"ERROR"}, str(err))
    return {"CANCELLED"}


def _user_preset_items(_self, _context):
    items = [(k, p.name, f"Saved bone map '{p.name}'") for k, p in load_user_presets(user_bone_map_dir()).items()]
    _user_preset_items.cache = items or [("", "(no saved maps)", "Save a bone map first")]
    return _user_preset_items.cache


class NEURALHUMAN_OT_detect_bone_map(bpy.types.Operator):
    bl_idname = "neural_human.detect_bone_map"
    bl_label = "Detect Bone Map"
    bl_description = "Fill the bone map from the active armature: a matching preset, else its hierarchy and rest pose"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _active_armature(context) is not None

    def execute(self, context):
        arm = _active_armature(context)
        det = detect_armature(arm)
        fill_editor(context.scene.neural_human, arm, det.bone_map, det.bone_map, det.message)
        self.report({"INFO"} if det.ok else {"WARNING"}, det.message)
        return {"FINISHED"}


class NEURALHUMAN_OT_save_bone_map(bpy.types.Operator):
    bl_idname = "neural_human.save_bone_map"
    bl_label = "Save Bone Map"
    bl_description = "Save the edited bone map as a named map in your Blender config folder (detection offers it)"

    name: StringProperty(name="Name", default="")

    @classmethod
    def poll(cls, context):
        return len(context.scene.neural_human.bone_slots) > 0

    def execute(self, context):
        settings = context.scene.neural_human
        name = self.name or settings.bone_map_name
        try:
            path = save_user_preset(user_bone_map_dir(create=True), name, editor_map(settings))
        except (UserError, OSError) as err:
            return _fail(self, err)
        settings.bone_map_name = name
        self.report({"INFO"}, f"Saved bone map '{name}' to {path}")
        return {"FINISHED"}


class NEURALHUMAN_OT_load_bone_map(bpy.types.Operator):
    bl_idname = "neural_human.load_bone_map"
    bl_label = "Load Bone Map"
    bl_description = "Load a saved bone map into the editor for the active armature"
    bl_options = {"REGISTER", "UNDO"}

    preset: EnumProperty(name="Map", items=_user_preset_items)

    @classmethod
    def poll(cls, context):
        return _active_armature(context) is not None

    def invoke(self, context, _event):
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context):
        arm = _active_armature(context)
        presets = load_user_presets(user_bone_map_dir())
        if self.preset not in presets:
            return _fail(self, UserError("no saved bone map chosen; save one with Save Bone Map first"))
        p = presets[self.preset]
        resolved, _ = resolve_map(p.joints, [b.name for b in arm.data.bones])
        missing = missing_required(resolved)
        status = f"Loaded '{p.name}'." + (f" Not on this armature: {', '.join(missing)}." if missing else "")
        fill_editor(context.scene.neural_human, arm, resolved, None, status)
        context.scene.neural_human.bone_map_name = p.name
        return {"FINISHED"}


class NEURALHUMAN_OT_ignore_nonroot_positions(bpy.types.Operator):
    bl_idname = "neural_human.ignore_nonroot_positions"
    bl_label = "Ignore Non-root Positions"
    bl_description = ("Remove the location keys of every bone but the root (BVH files that write 0 in non-root "
                      "position channels collapse bones onto their parents)")
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _active_armature(context) is not None

    def execute(self, context):
        removed = ignore_nonroot_positions(_active_armature(context))
        self.report({"INFO"}, f"Removed location keys from {len(removed)} bones")
        return {"FINISHED"}


class NEURALHUMAN_OT_load_motion_file(bpy.types.Operator):
    bl_idname = "neural_human.load_motion_file"
    bl_label = "Load Motion File"
    bl_description = ("Key an AMASS .npz, a Meshcapade .smpl or an EasyMocap params folder onto the active armature "
                      "(or the actor's rig), resampled to the scene's frame rate, from the current frame")
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH")
    directory: StringProperty(subtype="DIR_PATH")
    filter_glob: StringProperty(default="*.npz;*.smpl;*.json", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return _active_armature(context) is not None or context.scene.neural_human.actor_root is not None

    def invoke(self, context, _event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        path = Path(bpy.path.abspath(self.filepath)) if self.filepath else Path(bpy.path.abspath(self.directory))
        if path.suffix.lower() == ".json":  # a file picked inside an EasyMocap params folder: the folder
            path = path.parent
        target = _active_armature(context) or context.scene.neural_human.actor_root
        try:
            report = apply_motion_file(target, path, scene=context.scene)
        except UserError as err:
            return _fail(self, err)
        first, last = report["frames"]
        note = " (the file stores no frame rate: assumed)" if report["fps_assumed"] else ""
        self.report({"INFO"}, f"Keyed {report['source']} on frames {first}-{last} at {report['fps']:g} fps from "
                              f"{report['source_fps']:g} fps{note}")  # fmt: skip
        return {"FINISHED"}


class NEURALHUMAN_PT_retarget(bpy.types.Panel):
    bl_idname = "NEURALHUMAN_PT_retarget"
    bl_label = "Retarget"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY

    def draw(self, context):
        layout, settings = self.layout, context.scene.neural_human
        arm = _active_armature(context)
        layout.operator("neural_human.load_motion_file", icon="FILE_MOVIE")
        layout.operator("neural_human.ignore_nonroot_positions", icon="CON_LOCLIKE")
        box = layout.box()
        box.label(text="Bone Map", icon="BONE_DATA")
        box.operator("neural_human.detect_bone_map", icon="VIEWZOOM")
        row = box.row(align=True)
        row.prop(settings, "bone_map_name", text="")
        row.operator("neural_human.save_bone_map", text="", icon="FILE_TICK")
        row.operator("neural_human.load_bone_map", text="", icon="FILEBROWSER")
        if settings.bone_map_status:
            box.label(text=settings.bone_map_status[:120], icon="INFO")
        if arm is None or settings.bone_map_armature != arm.name:
            box.label(text="Select an armature and Detect to edit its map", icon="INFO")
            return
        for slot in settings.bone_slots:
            row = box.row(align=True)
            row.label(text=f"{slot.joint}{' *' if slot.required else ''}",
                      icon="ERROR" if slot.required and not slot.bone else "NONE")  # fmt: skip
            row.prop_search(slot, "bone", arm.data, "bones", text="")
            if slot.detected and slot.detected != slot.bone:
                row.label(text=f"(detected {slot.detected})")


CLASSES = (
    NEURALHUMAN_OT_detect_bone_map,
    NEURALHUMAN_OT_save_bone_map,
    NEURALHUMAN_OT_load_bone_map,
    NEURALHUMAN_OT_ignore_nonroot_positions,
    NEURALHUMAN_OT_load_motion_file,
    NEURALHUMAN_PT_retarget,
)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
