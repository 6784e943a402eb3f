"""Blender (bpy, Cycles CPU) scene of the synthetic dataset: the textured demo body, a fixed light rig, cameras.

The one module of the server's libraries that imports bpy (make-data, the only user, runs it in the bpy module).
Cameras are written and read back through the add-on core's field mapping (``read_blender_settings``), so ground
truth uses the project's one Blender -> OpenCV conversion. The world is Blender's Z-up. Renders are read back as
linear, premultiplied RGBA (OpenEXR), so compositing on the black background is the colour itself;
:func:`encode_srgb` then gives the stored 8-bit values.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bpy
import mathutils
import numpy as np

from neural_human_addon.core.camera import (
    BlenderCameraSettings,
    PinholeCamera,
    blender_to_pinhole,
    look_at_matrix_world,
    read_blender_settings,
    write_blender_settings,
)


@dataclass(frozen=True)
class RenderSettings:
    samples: int = 32
    denoise: bool = False  # OpenImageDenoise (when the Cycles build has it): ~2 s per image on 2 CPU cores
    threads: int = 0  # 0: Blender's automatic choice


def encode_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light in [0,1] -> sRGB-encoded [0,1] (IEC 61966-2-1; Blender's 'Standard' view transform)."""
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence what Blender's C code prints on file descriptor 1 (one 'Saved: ...' line per render)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (embedded runs): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _cycles_has_oidn() -> bool:
    try:
        import _cycles
    except ImportError:
        return False
    return bool(getattr(_cycles, "with_openimagedenoise", False))


def _body_material(name: str, texture: np.ndarray):
    """(material, image): a Principled BSDF whose base colour is the (H,W,3) uint8 sRGB texture (row 0 = bottom)."""
    h, w = texture.shape[:2]
    image = bpy.data.images.new(f"{name}_texture", width=w, height=h, alpha=False)
    image.colorspace_settings.name = "sRGB"
    rgba = np.ones((h, w, 4), dtype=np.float32)
    rgba[..., :3] = texture.astype(np.float32) / 255.0
    image.pixels.foreach_set(rgba.ravel())
    image.pack()  # keep the generated pixels with the datablock

    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5 creates materials without nodes
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Linear"
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = 0.6
    if "Specular IOR Level" in bsdf.inputs:
        bsdf.inputs["Specular IOR Level"].default_value = 0.3
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    return mat, image


def _area_light(scene, name: str, location: tuple[float, float, float], target: tuple[float, float, float],
                power: float, size: float, colour: tuple[float, float, float]):
    light = bpy.data.lights.new(name, type="AREA")
    light.energy, light.size, light.color = power, size, colour
    obj = bpy.data.objects.new(name, light)
    scene.collection.objects.link(obj)
    obj.matrix_world = mathutils.Matrix(look_at_matrix_world(location, target).tolist())  # emits along its -Z
    return obj


class SyntheticScene:
    """One Blender scene: body mesh (positions updated per frame), light rig, one camera reused for every view.

    The scene is new and made the window's scene; :meth:`close` removes it and everything it created and gives
    the window its previous scene back, so other bpy users in the same process keep their state.
    """

    def __init__(self, faces: np.ndarray, face_uvs: np.ndarray, rest_vertices: np.ndarray, texture: np.ndarray,
                 render: RenderSettings, work_dir: Path):
        window = bpy.context.window
        if window is None:
            raise RuntimeError("bpy has no window to render from; run make-data with the bpy module or blender -b")
        self._window, self._previous_scene = window, window.scene
        self._created: list = []
        self.scene = self._keep(bpy.data.scenes.new("neural_human_synthetic"))
        window.scene = self.scene
        self.work_dir = Path(work_dir)
        try:
            self._setup_render(render)
            self._build_body(faces, face_uvs, rest_vertices, texture)
            self._build_lights()
            cam_data = self._keep(bpy.data.cameras.new("view"))
            cam_data.clip_start, cam_data.clip_end = 0.05, 100.0
            self.camera = self._keep(bpy.data.objects.new("view", cam_data))
            self.scene.collection.objects.link(self.camera)
            self.scene.camera = self.camera
        except BaseException:
            self.close()
            raise

    def _keep(self, datablock):
        self._created.append(datablock)
        return datablock

    def close(self) -> None:
        """Remove the scene and its datablocks; restore the window's previous scene."""
        if self._previous_scene is not None and self._previous_scene.name in bpy.data.scenes:
            self._window.scene = self._previous_scene
        try:
            bpy.data.batch_remove(self._created)
        except ReferenceError:  # already freed (e.g. by a factory reset): nothing left to remove
            pass
        self._created.clear()

    def _setup_render(self, render: RenderSettings) -> None:
        scene = self.scene
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = int(render.samples)
        scene.cycles.use_adaptive_sampling = False  # same noise level in every image
        scene.cycles.seed = 0
        # box filter one pixel wide: a pixel is the average over its area and alpha its coverage (mask = coverage > ½)
        scene.cycles.pixel_filter_type = "BOX"
        scene.cycles.filter_width = 1.0
        denoise = render.denoise and _cycles_has_oidn()
        scene.cycles.use_denoising = denoise
        if denoise:
            scene.cycles.denoiser = "OPENIMAGEDENOISE"
        scene.cycles.max_bounces, scene.cycles.diffuse_bounces, scene.cycles.glossy_bounces = 3, 2, 1
        scene.cycles.transmission_bounces, scene.cycles.transparent_max_bounces = 0, 2
        scene.cycles.caustics_reflective = scene.cycles.caustics_refractive = False
        scene.render.film_transparent = True
        scene.render.use_persistent_data = True  # keep shaders/textures between renders
        if render.threads > 0:
            scene.render.threads_mode, scene.render.threads = "FIXED", int(render.threads)
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        scene.view_settings.exposure, scene.view_settings.gamma = 0.0, 1.0
        settings = scene.render.image_settings
        settings.file_format = "OPEN_EXR"
        settings.color_mode = "RGBA"
        settings.color_depth = "32"
        world = self._keep(bpy.data.worlds.new("ambient"))
        scene.world = world
        if world.node_tree is None:
            world.use_nodes = True
        background = world.node_tree.nodes.get("Background")
        if background is not None:
            background.inputs["Color"].default_value = (0.05, 0.05, 0.055, 1.0)
            background.inputs["Strength"].default_value = 1.0
        world.color = (0.05, 0.05, 0.055)

    def _build_body(self, faces: np.ndarray, face_uvs: np.ndarray, rest_vertices: np.ndarray,
                    texture: np.ndarray) -> None:
        mesh = self._keep(bpy.data.meshes.new("body"))
        mesh.from_pydata(rest_vertices.astype(np.float64).tolist(), [], faces.astype(np.int64).tolist())
        uv = mesh.uv_layers.new(name="UVMap")
        uv.data.foreach_set("uv", np.ascontiguousarray(face_uvs, dtype=np.float32).ravel())  # loops follow corners
        mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), dtype=bool))
        material, image = _body_material("body", texture)
        self._keep(image)
        mesh.materials.append(self._keep(material))
        mesh.update()
        self.mesh = mesh
        self.body = self._keep(bpy.data.objects.new("body", mesh))
        self.scene.collection.objects.link(self.body)

    def _build_lights(self) -> None:
        # key (front-left, warm), fill (front-right, cool), rim (behind, above): fixed in the world
        for obj in (
            _area_light(self.scene, "key", (2.2, -2.6, 2.8), (0, 0, 1.0), 200.0, 1.5, (1.0, 0.95, 0.88)),
            _area_light(self.scene, "fill", (-2.8, -1.6, 1.6), (0, 0, 0.9), 80.0, 2.0, (0.85, 0.9, 1.0)),
            _area_light(self.scene, "rim", (0.3, 3.0, 2.6), (0, 0, 1.2), 150.0, 1.0, (1.0, 1.0, 1.0)),
            _area_light(self.scene, "bounce", (0.0, -0.8, -1.5), (0, 0, 1.0), 30.0, 3.0, (1.0, 1.0, 1.0)),
        ):
            self._keep(obj.data)
            self._keep(obj)

    def set_vertices(self, vertices: np.ndarray) -> None:
        """Move the body to world vertices (V,3) metres."""
        self.mesh.vertices.foreach_set("co", np.ascontiguousarray(vertices, dtype=np.float32).ravel())
        self.mesh.update()

    def set_camera(self, settings: BlenderCameraSettings) -> PinholeCamera:
        """Point the scene camera + render settings at one view; returns the camera as Blender will render it,
        read back from the evaluated scene through the add-on core's conversion (the project's one conversion)."""
        write_blender_settings(settings, self.camera.data, self.scene.render)
        self.camera.matrix_world = mathutils.Matrix(np.asarray(settings.matrix_world, dtype=np.float64).tolist())
        view_layer = self.scene.view_layers[0]
        view_layer.update()
        evaluated = self.camera.evaluated_get(view_layer.depsgraph)
        return blender_to_pinhole(read_blender_settings(evaluated.data, self.scene.render, evaluated.matrix_world))

    def render(self) -> np.ndarray:
        """Render the current view: (H,W,4) float32 linear premultiplied RGBA, row 0 = top."""
        fd, path = tempfile.mkstemp(suffix=".exr", dir=self.work_dir)
        os.close(fd)
        try:
            self.scene.render.filepath = path
            with _quiet_stdout():
                bpy.ops.render.render(write_still=True)
            image = bpy.data.images.load(path)
            try:
                w, h = image.size
                pixels = np.empty(w * h * 4, dtype=np.float32)
                image.pixels.foreach_get(pixels)
            finally:
                bpy.data.images.remove(image)
        finally:
            Path(path).unlink(missing_ok=True)
        return pixels.reshape(h, w, 4)[::-1].copy()
