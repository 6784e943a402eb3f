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


@pytest.fixture(scope="session")
def gpu_context():
    """Background Blender's GPU backend, started by a 4x4 Workbench render (through EGL; Mesa's software EGL is
    enough): afterwards the gpu module makes textures, shaders and offscreen buffers. Skips where no EGL exists."""
    import gpu

    scene = bpy.data.scenes.new("nh_gpu_context")
    camera = bpy.data.objects.new("nh_gpu_context", bpy.data.cameras.new("nh_gpu_context"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = 4
    try:
        bpy.ops.render.render(scene=scene.name)
    finally:
        data = camera.data
        bpy.data.objects.remove(camera)
        bpy.data.cameras.remove(data)
        bpy.data.scenes.remove(scene)
    try:
        gpu.types.GPUTexture((1, 1), format="RGBA8")
    except SystemError as err:
        pytest.skip(f"no GPU context can be made here (no EGL?): {err}")
