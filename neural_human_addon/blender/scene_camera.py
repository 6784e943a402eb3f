# SPDX-License-Identifier: GPL-3.0-or-later
"""Thin bpy layer over :mod:`camera`: read a Blender camera object + scene into plain settings, and build or
update a Blender camera from an OpenCV pinhole camera. All projection math lives in ``camera.py``."""

from __future__ import annotations

from typing import Any

import bpy
import mathutils
import numpy as np

from ..core.camera import (
    BlenderCameraSettings,
    CameraError,
    PinholeCamera,
    blender_to_pinhole,
    pinhole_to_blender,
    read_blender_settings,
    write_blender_settings,
)

__all__ = ["apply_camera_settings", "camera_settings", "new_camera_object", "scene_pinhole_camera"]


def _camera_object(scene: Any, camera_obj: Any | None) -> Any:
    obj = camera_obj if camera_obj is not None else scene.camera
    if obj is None:
        raise CameraError(f"scene {scene.name!r} has no active camera; add a camera and make it the scene camera")
    if obj.type != "CAMERA":
        raise CameraError(f"object {obj.name!r} is a {obj.type.lower()}, not a camera")
    return obj


def camera_settings(scene: Any, camera_obj: Any | None = None, depsgraph: Any | None = None) -> BlenderCameraSettings:
    """The projection-relevant settings of ``camera_obj`` (default: the scene camera) under ``scene``'s render
    settings, at the scene's current frame. With a depsgraph, the evaluated matrix (constraints, drivers) is used."""
    obj = _camera_object(scene, camera_obj)
    if depsgraph is not None:
        obj = obj.evaluated_get(depsgraph)
    return read_blender_settings(obj.data, scene.render, obj.matrix_world)


def scene_pinhole_camera(scene: Any, camera_obj: Any | None = None, depsgraph: Any | None = None) -> PinholeCamera:
    """OpenCV pinhole camera of ``camera_obj`` (default: the scene camera) as ``scene`` would render it."""
    obj = _camera_object(scene, camera_obj)
    try:
        return blender_to_pinhole(camera_settings(scene, obj, depsgraph))
    except CameraError as err:
        raise CameraError(f"camera {obj.name!r}: {err}") from None


def apply_camera_settings(camera_obj: Any, scene: Any, settings: BlenderCameraSettings) -> None:
    """Write settings into the camera data, ``scene.render`` (resolution, %, pixel aspect) and matrix_world."""
    if camera_obj.type != "CAMERA":
        raise CameraError(f"object {camera_obj.name!r} is a {camera_obj.type.lower()}, not a camera")
    write_blender_settings(settings, camera_obj.data, scene.render)
    camera_obj.matrix_world = mathutils.Matrix(np.asarray(settings.matrix_world, dtype=np.float64).tolist())


def new_camera_object(name: str, camera: PinholeCamera | BlenderCameraSettings, scene: Any,
                      collection: Any | None = None) -> Any:
    """A new camera object reproducing ``camera`` (scene render settings are set to match), linked to
    ``collection`` (default: the scene's master collection). Returns the object."""
    settings = camera if isinstance(camera, BlenderCameraSettings) else pinhole_to_blender(camera)
    data = bpy.data.cameras.new(name)
    obj = bpy.data.objects.new(name, data)
    (collection if collection is not None else scene.collection).objects.link(obj)
    apply_camera_settings(obj, scene, settings)
    return obj
