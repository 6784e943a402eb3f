# SPDX-License-Identifier: GPL-3.0-or-later
"""What render and mesh jobs do with their frames in the scene (main thread; called by `job_session.drain_all`).

Objects are looked up by name each time (never kept across undo or file load): a result whose camera, scene or actor
root was deleted meanwhile is still on disk and the summary says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from ..core.actor_space import actor_to_root
from . import compositing, frame_images, mesh_import
from .actor_scene import FRAME_KEY


def _frames_text(done: int, total: int) -> str:
    return f"{done}/{total} frame{'s' if total != 1 else ''}"


def _ended(title: str, state: str, done: int, total: int, where: Path, errors: dict[int, str],
           message: str | None) -> str:
    if state == "done" and not errors:
        text = f"{title}: {_frames_text(done, total)} done"
    elif state == "cancelled":
        text = f"{title} cancelled: {_frames_text(done, total)} kept"
    else:
        text = f"{title} {state}: {_frames_text(done, total)} finished"
    if errors:
        first = min(errors)
        text += f"; {len(errors)} failed (frame {first}: {errors[first]})"
    if message and state != "done":
        text += f" ({message})"
    return f"{text}, in {where}" if done else text


@dataclass
class RenderResults:
    """Frames of a render job -> rgba PNG + depth EXR files, the camera's background, and the compositor."""

    title: str
    scene_name: str
    camera_name: str
    actor_id: str
    out_dir: Path
    frames: list[int]
    single: bool = False
    composite: bool = True
    saved: dict[int, dict[str, str]] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)

    def frame_saved(self, frame: int, path: str) -> None:
        self.saved[frame] = frame_images.write_frame_files(path)
        if self.single:
            image = frame_images.load_image(self.saved[frame]["rgba"], name=f"NH {self.actor_id} frame {frame}")
            self.images.append(image.name)
            camera = bpy.data.objects.get(self.camera_name)
            if camera is not None:
                frame_images.set_camera_background(camera, image)

    def finished(self, state: str, errors: dict[int, str], message: str | None) -> str:
        if self.saved and not self.single:
            first = min(self.saved)
            rgba = frame_images.load_image(self.saved[first]["rgba"], name=f"NH {self.actor_id} rgba", sequence=True,
                                           frame_start=first)
            depth = frame_images.load_image(self.saved[first]["depth"], name=f"NH {self.actor_id} depth",
                                            sequence=True, frame_start=first, colorspace="Non-Color")
            self.images += [rgba.name, depth.name]
            duration = max(self.saved) - first + 1
            camera = bpy.data.objects.get(self.camera_name)
            if camera is not None:
                frame_images.set_camera_background(camera, rgba, frame_start=first, frame_duration=duration)
            scene = bpy.data.scenes.get(self.scene_name)
            if self.composite and scene is not None:
                compositing.setup_actor_compositing(scene, rgba, depth, frame_start=first, frame_duration=duration)
        return _ended(self.title, state, len(self.saved), len(self.frames), self.out_dir, errors, message)


@dataclass
class MeshResults:
    """Frames of a mesh job -> one mesh object (single) or a mesh sequence under the actor root."""

    title: str
    root_name: str
    actor_id: str
    up_axis: str
    out_dir: Path
    frames: list[int]
    single: bool = True
    saved: dict[int, str] = field(default_factory=dict)
    objects: list[str] = field(default_factory=list)

    def _parent(self):
        return bpy.data.objects.get(self.root_name)

    def frame_saved(self, frame: int, path: str) -> None:
        self.saved[frame] = path
        if self.single:
            with np.load(path, allow_pickle=False) as data:
                mesh = {k: data[k] for k in data.files}
            obj = mesh_import.mesh_object(
                f"NH {self.actor_id} mesh {frame}", mesh["vertices"], mesh["faces"], mesh.get("colors"),
                parent=self._parent(), matrix_parent=actor_to_root(self.up_axis), actor_id=self.actor_id)
            obj[FRAME_KEY] = frame
            self.objects.append(obj.name)

    def finished(self, state: str, errors: dict[int, str], message: str | None) -> str:
        if self.saved and not self.single:
            meshes = []
            for frame in sorted(self.saved):
                with np.load(self.saved[frame], allow_pickle=False) as data:
                    meshes.append((frame, {k: data[k] for k in data.files}))
            obj = mesh_import.mesh_sequence(f"NH {self.actor_id} mesh sequence", meshes, parent=self._parent(),
                                            matrix_parent=actor_to_root(self.up_axis), actor_id=self.actor_id)
            self.objects.append(obj.name)
        return _ended(self.title, state, len(self.saved), len(self.frames), self.out_dir, errors, message)
