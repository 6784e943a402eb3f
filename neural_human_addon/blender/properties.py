# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on properties: per-scene settings (saved with the .blend) and per-session status (window manager, not saved).

The actor list shown in the panel comes from the last successful connection (`connection_state`), so the enum never
calls the server while Blender draws.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from ..core.connection_state import STATE
from .actor_scene import is_actor_root


def _actor_items(_self, _context):
    # Blender keeps only references to the strings: the list lives in the connection state, not in this frame.
    return STATE.actor_enum_items


def _is_actor_root(_self, obj: bpy.types.Object) -> bool:
    return is_actor_root(obj)


class NeuralHumanBoneSlot(bpy.types.PropertyGroup):
    """One row of the bone-map editor: an SMPL joint and the rig bone it maps to."""

    joint: StringProperty(name="Joint")
    bone: StringProperty(name="Bone", description="The rig bone for this SMPL joint (empty: not mapped)")
    detected: StringProperty(name="Detected", description="What detection chose")
    required: BoolProperty(name="Required", default=False)


class NeuralHumanSceneSettings(bpy.types.PropertyGroup):
    actor: EnumProperty(name="Actor", description="Actor on the server", items=_actor_items)
    actor_root: PointerProperty(
        name="Actor Root", type=bpy.types.Object, poll=_is_actor_root,
        description="The actor root to render and mesh (its bound armature drives the pose)")
    output_dir: StringProperty(
        name="Output", subtype="DIR_PATH", default="//neural_human/",
        description="Folder for rendered frames and meshes (// = next to the .blend file)")
    voxel_size: FloatProperty(
        name="Voxel Size", default=0.01, min=0.002, max=0.2, precision=3, unit="LENGTH",
        description="Grid spacing of the marching-cubes mesh (5 mm is the full quality; coarser is much faster)")
    mesh_colors: BoolProperty(name="Vertex Colours", default=True, description="Colour the mesh from the actor")
    use_scene_range: BoolProperty(name="Scene Range", default=True, description="Use the scene's frame range")
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=24)
    bone_slots: CollectionProperty(type=NeuralHumanBoneSlot, name="Bone Map")
    bone_map_armature: StringProperty(name="Mapped Armature", description="The armature the bone map is for")
    bone_map_name: StringProperty(name="Map Name", default="my rig", description="Name to save the bone map under")
    bone_map_status: StringProperty(name="Detection", default="")
    composite: BoolProperty(
        name="Composite", default=True,
        description="After an animation, set up the compositor to put the actor over the scene's render "
                    "(depth-aware, so nearer objects hide it)")


class NeuralHumanStatus(bpy.types.PropertyGroup):
    """Session state shown in the panel; lives on the window manager so it is never saved into files."""

    connection: StringProperty(name="Connection", default="Not connected")
    connected: BoolProperty(default=False)
    busy: BoolProperty(default=False)
    job_text: StringProperty(default="")
    job_progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    last_error: StringProperty(default="")


CLASSES = (NeuralHumanBoneSlot, NeuralHumanSceneSettings, NeuralHumanStatus)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.neural_human = PointerProperty(type=NeuralHumanSceneSettings)
    bpy.types.WindowManager.neural_human = PointerProperty(type=NeuralHumanStatus)


def unregister() -> None:
    del bpy.types.WindowManager.neural_human
    del bpy.types.Scene.neural_human
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
