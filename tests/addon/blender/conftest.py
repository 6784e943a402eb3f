"""Generic cleanup for the add-on's real-bpy tests: a fresh scene as the window's scene, and afterwards every
datablock the test created is removed again (no factory reset, so other bpy tests in the session keep their state)."""

from __future__ import annotations

import bpy
import pytest

_DATA_KINDS = ("objects", "meshes", "materials", "cameras", "lights", "images", "collections", "actions",
               "node_groups", "worlds", "scenes")


@pytest.fixture
def blender_scene():
    """A new empty scene made the window's scene (so operators and frame_set act on it); cleaned up afterwards."""
    window = bpy.context.window
    before = {kind: set(getattr(bpy.data, kind)) for kind in _DATA_KINDS}
    previous = window.scene
    window.scene = bpy.data.scenes.new("addon_test")
    yield window.scene
    window.scene = previous
    created = [d for kind in _DATA_KINDS for d in getattr(bpy.data, kind) if d not in before[kind]]
    bpy.data.batch_remove(created)
