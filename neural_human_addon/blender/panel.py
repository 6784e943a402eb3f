# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Neural Human" tab in the 3D view's sidebar: server, actor, render, mesh and motion sections."""

from __future__ import annotations

import bpy

from .actor_scene import ARMATURE_KEY

CATEGORY = "Neural Human"


class _SidebarPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY


class NEURALHUMAN_PT_server(_SidebarPanel, bpy.types.Panel):
    bl_idname = "NEURALHUMAN_PT_server"
    bl_label = "Server"

    def draw(self, context):
        layout, st = self.layout, context.window_manager.neural_human
        row = layout.row(align=True)
        row.operator("neural_human.connect", icon="LINKED" if st.connected else "UNLINKED")
        row.operator("neural_human.start_server", text="", icon="PLAY")
        box = layout.box()
        box.label(text=st.connection, icon="CHECKMARK" if st.connected else "INFO")
        if st.last_error:
            for i, line in enumerate(_wrap(st.last_error, 48)):
                box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")


class NEURALHUMAN_PT_actor(_SidebarPanel, bpy.types.Panel):
    bl_idname = "NEURALHUMAN_PT_actor"
    bl_label = "Actor"

    def draw(self, context):
        layout, settings = self.layout, context.scene.neural_human
        row = layout.row(align=True)
        row.prop(settings, "actor", text="")
        row.operator("neural_human.unload_actor", text="", icon="X")
        layout.operator("neural_human.add_actor", icon="OUTLINER_OB_ARMATURE")
        layout.prop(settings, "actor_root")
        root = settings.actor_root
        if root is not None:
            armature = root.get(ARMATURE_KEY)
            layout.label(text=f"Driven by: {armature or 'nothing bound'}", icon="ARMATURE_DATA")
        layout.operator("neural_human.bind_armature", icon="CONSTRAINT_BONE")
        layout.operator("neural_human.reanimate", icon="ACTION")


class NEURALHUMAN_PT_render(_SidebarPanel, bpy.types.Panel):
    bl_idname = "NEURALHUMAN_PT_render"
    bl_label = "Render"

    def draw(self, context):
        layout, settings, st = self.layout, context.scene.neural_human, context.window_manager.neural_human
        layout.prop(settings, "output_dir")
        row = layout.row(align=True)
        row.prop(settings, "use_scene_range")
        if not settings.use_scene_range:
            row.prop(settings, "frame_start")
            row.prop(settings, "frame_end")
        layout.prop(settings, "composite")
        row = layout.row(align=True)
        row.operator("neural_human.render_frame", icon="RENDER_STILL")
        row.operator("neural_human.render_animation", icon="RENDER_ANIMATION")
        if st.busy:
            layout.progress(factor=st.job_progress, type="BAR", text=st.job_text)
            layout.operator("neural_human.cancel", icon="CANCEL")
        elif st.job_text:
            layout.label(text=st.job_text)


class NEURALHUMAN_PT_mesh(_SidebarPanel, bpy.types.Panel):
    bl_idname = "NEURALHUMAN_PT_mesh"
    bl_label = "Mesh"

    def draw(self, context):
        layout, settings = self.layout, context.scene.neural_human
        row = layout.row(align=True)
        row.prop(settings, "voxel_size")
        row.prop(settings, "mesh_colors", text="", icon="COLOR")
        row = layout.row(align=True)
        row.operator("neural_human.import_mesh", icon="MESH_DATA")
        row.operator("neural_human.import_mesh_sequence", icon="SEQUENCE")


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return lines


CLASSES = (NEURALHUMAN_PT_server, NEURALHUMAN_PT_actor, NEURALHUMAN_PT_render, NEURALHUMAN_PT_mesh)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
