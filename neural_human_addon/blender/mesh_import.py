# SPDX-License-Identifier: GPL-3.0-or-later
"""Server meshes -> Blender objects: one mesh object per pose (vertices in actor-world metres, outward faces,
optional sRGB vertex colours, DESIGN §3), parented under the actor root; and mesh sequences, one child object per
frame whose visibility is keyed so that exactly the current frame's mesh shows.

Runs on Blender's main thread only (bpy). Works on Blender 4.2 .. 5.x: keys are set with ``keyframe_insert`` only
(4.x ``Action.fcurves`` vs 5.0 slotted actions are touched only to set the interpolation, through :func:`_fcurves`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import bpy
import numpy as np
from bpy_extras import anim_utils
from mathutils import Matrix

from ..core.errors import UserError
from .actor_scene import ACTOR_KEY, FRAME_KEY, MESH_ROLE, MESH_SEQUENCE_ROLE, ROLE_KEY

__all__ = [
    "COLOR_ATTRIBUTE",
    "MATERIAL_NAME",
    "MeshImportError",
    "mesh_object",
    "mesh_sequence",
    "show_vertex_colors_in_viewports",
    "vertex_color_material",
]

COLOR_ATTRIBUTE = "Color"  # the one colour attribute name every imported mesh uses (the shared material reads it)
MATERIAL_NAME = "Neural Human vertex colour"


class MeshImportError(UserError, ValueError):
    """Mesh arrays that cannot become a Blender mesh; the message names the array and what is wrong."""


def _check_arrays(name: str, vertices: Any, faces: Any, colors: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise MeshImportError(f"mesh {name!r}: 'vertices' must have shape (N, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise MeshImportError(f"mesh {name!r}: 'faces' must have shape (M, 3) (triangles), got {f.shape}")
    if not np.isfinite(v).all():
        raise MeshImportError(f"mesh {name!r}: 'vertices' holds NaN/inf values")
    if f.size and (not np.issubdtype(f.dtype, np.integer) or f.min() < 0 or f.max() >= len(v)):
        raise MeshImportError(f"mesh {name!r}: 'faces' must be integer indices in [0, {len(v)}), "
                              f"got dtype {f.dtype} range [{f.min()}, {f.max()}]")
    c = None
    if colors is not None:
        c = np.asarray(colors)
        if c.shape != (len(v), 3) and c.shape != (len(v), 4):
            raise MeshImportError(f"mesh {name!r}: 'colors' must have shape (N, 3) uint8 with N = {len(v)} "
                                  f"vertices, got {c.shape}")
        if c.dtype != np.uint8:
            raise MeshImportError(f"mesh {name!r}: 'colors' must be uint8 sRGB (0..255), got dtype {c.dtype}")
    return v.astype(np.float32, copy=False), f.astype(np.int32, copy=False), c


def _build_mesh(name: str, v: np.ndarray, f: np.ndarray, c: np.ndarray | None) -> Any:
    """A triangle mesh datablock built with foreach_set (no per-vertex Python loops)."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(v))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(v).ravel())
    mesh.loops.add(3 * len(f))
    mesh.loops.foreach_set("vertex_index", np.ascontiguousarray(f).ravel())
    mesh.polygons.add(len(f))
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * len(f), 3, dtype=np.int32))
    if not bpy.types.MeshPolygon.bl_rna.properties["loop_total"].is_readonly:  # derived from loop_start in 4.x+
        mesh.polygons.foreach_set("loop_total", np.full(len(f), 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    mesh.validate(verbose=False, clean_customdata=False)  # drops faces with repeated corners (marching cubes can)
    # Smooth shading: marching-cubes meshes sample a smooth surface at ~5 mm; flat shading would show every
    # facet, smooth normals interpolate the surface they approximate.
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
    if c is not None:
        attr = mesh.color_attributes.new(name=COLOR_ATTRIBUTE, type="BYTE_COLOR", domain="POINT")
        rgba = np.ones((len(c), 4), dtype=np.float32)
        rgba[:, : c.shape[1]] = c.astype(np.float32) / 255.0
        if len(attr.data) != len(rgba):
            raise MeshImportError(f"mesh {name!r}: Blender dropped vertices while validating; clean the mesh")
        attr.data.foreach_set("color_srgb", rgba.ravel())  # bytes stored as given: sRGB in, sRGB out
        mesh.color_attributes.active_color_name = COLOR_ATTRIBUTE
        if hasattr(mesh.color_attributes, "default_color_name"):
            mesh.color_attributes.default_color_name = COLOR_ATTRIBUTE  # the one renders use
    return mesh


def vertex_color_material() -> Any:
    """The shared material (created on first use): Color Attribute node (``COLOR_ATTRIBUTE``) -> Principled BSDF
    base colour, for Cycles and EEVEE. Solid-mode viewports show the attribute with colour type 'VERTEX' (see
    :func:`show_vertex_colors_in_viewports`)."""
    mat = bpy.data.materials.get(MATERIAL_NAME)
    if mat is not None and mat.node_tree is not None and mat.node_tree.nodes.get("Neural Human colour"):
        return mat
    if mat is None:
        mat = bpy.data.materials.new(MATERIAL_NAME)
    if mat.node_tree is None:  # 4.x: no node tree until use_nodes (deprecated, always on, in 5.0)
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (300, 0)
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.location = (0, 0)
    bsdf.inputs["Roughness"].default_value = 0.8
    col = nodes.new("ShaderNodeVertexColor")
    col.name = "Neural Human colour"
    col.layer_name = COLOR_ATTRIBUTE
    col.location = (-300, 0)
    links.new(col.outputs["Color"], bsdf.inputs["Base Color"])
    links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    mat.diffuse_color = (0.8, 0.8, 0.8, 1.0)  # solid-mode 'MATERIAL' colour for meshes without colours
    return mat


def show_vertex_colors_in_viewports(screens: Sequence[Any] | None = None, scene: Any | None = None) -> int:
    """Set solid-mode colour type 'VERTEX' in every 3D view of ``screens`` (default: all screens) and in the
    scene's Workbench render shading. Returns the number of 3D views changed. Call it from the import operator
    when the user asks for it; imports never change viewport settings on their own."""
    changed = 0
    for screen in (screens if screens is not None else bpy.data.screens):
        for area in screen.areas:
            if area.type == "VIEW_3D":
                for space in area.spaces:
                    if space.type == "VIEW_3D":
                        space.shading.color_type = "VERTEX"
                        changed += 1
    scene = scene if scene is not None else bpy.context.scene
    if scene is not None:
        scene.display.shading.color_type = "VERTEX"
    return changed


def _place(obj: Any, parent: Any | None, matrix_parent: Any | None) -> None:
    """Parent without an inverse correction: world = parent.matrix_world @ matrix_parent, so vertices given in
    actor-world coordinates land where the actor root puts the actor."""
    obj.parent = parent
    obj.matrix_parent_inverse = Matrix.Identity(4)
    if matrix_parent is None:
        obj.matrix_basis = Matrix.Identity(4)
    else:
        m = np.asarray(matrix_parent, dtype=np.float64)
        if m.shape != (4, 4):
            raise MeshImportError(f"matrix_parent must be 4x4 (actor -> root-local), got shape {m.shape}")
        obj.matrix_basis = Matrix(m.tolist())


def _collection(collection: Any | None) -> Any:
    return collection if collection is not None else bpy.context.scene.collection


def mesh_object(name: str, vertices: Any, faces: Any, colors: Any | None = None, parent: Any | None = None,
                collection: Any | None = None, matrix_parent: Any | None = None,
                actor_id: str | None = None) -> Any:
    """A new mesh object from wire-format arrays (vertices (N,3) actor-world metres, faces (M,3) int, colours (N,3)
    uint8 sRGB), smooth-shaded, with the shared vertex-colour material, linked to ``collection`` (default: the
    scene's master collection) and parented to ``parent`` with local matrix ``matrix_parent`` (actor ->
    root-local; default identity). Tags: ``neural_human_role = "mesh"`` and ``neural_human_actor`` when given."""
    v, f, c = _check_arrays(name, vertices, faces, colors)
    mesh = _build_mesh(name, v, f, c)
    mesh.materials.append(vertex_color_material())
    obj = bpy.data.objects.new(name, mesh)
    _collection(collection).objects.link(obj)
    _place(obj, parent, matrix_parent)
    obj[ROLE_KEY] = MESH_ROLE
    if actor_id is not None:
        obj[ACTOR_KEY] = actor_id
    return obj


def _fcurves(id_data: Any) -> list[Any]:
    """The F-curves animating ``id_data``: ``Action.fcurves`` on 4.x, the assigned slot's channelbag on 5.0."""
    ad = id_data.animation_data
    if ad is None or ad.action is None:
        return []
    action = ad.action
    if getattr(action, "is_action_layered", False) or not hasattr(action, "fcurves"):
        bag = anim_utils.action_get_channelbag_for_slot(action, ad.action_slot)
        return list(bag.fcurves) if bag is not None else []
    return list(action.fcurves)


def _key_visibility(obj: Any, keys: Sequence[tuple[int, bool]]) -> None:
    """Key hide_viewport and hide_render at (frame, visible) pairs, constant interpolation."""
    prefs = bpy.context.preferences.edit
    previous = prefs.keyframe_new_interpolation_type
    prefs.keyframe_new_interpolation_type = "CONSTANT"  # both APIs honour it; fcurves are fixed up below anyway
    try:
        for frame, visible in keys:
            obj.hide_viewport = not visible
            obj.hide_render = not visible
            obj.keyframe_insert("hide_viewport", frame=frame)
            obj.keyframe_insert("hide_render", frame=frame)
    finally:
        prefs.keyframe_new_interpolation_type = previous
    for fc in _fcurves(obj):
        if fc.data_path in {"hide_viewport", "hide_render"}:
            for kp in fc.keyframe_points:
                kp.interpolation = "CONSTANT"


def mesh_sequence(name: str, meshes: Sequence[tuple[int, Mapping[str, Any]]], parent: Any | None = None,
                  collection: Any | None = None, matrix_parent: Any | None = None,
                  actor_id: str | None = None) -> Any:
    """An Empty named ``name`` holding one child mesh object per frame (``meshes`` = [(scene frame, {"vertices",
    "faces", "colors"?}), ...]), all in a new collection ``name`` (inside ``collection``, default the scene's
    master collection). The Empty is parented like :func:`mesh_object`; children sit at identity under it.

    Visibility (hide_viewport + hide_render) is keyed with constant interpolation so that at frame f exactly the
    mesh of the latest frame <= f shows (a mesh holds until the next one). Outside the range the nearest end stays
    visible: the first mesh before the first frame, the last mesh after the last frame (as image sequences hold).
    Tags: Empty ``neural_human_role = "mesh_sequence"``, children ``"mesh"`` + ``neural_human_frame``.
    """
    if not meshes:
        raise MeshImportError(f"mesh sequence {name!r}: no meshes given")
    ordered = sorted(((int(frame), data) for frame, data in meshes), key=lambda item: item[0])
    frames = [frame for frame, _ in ordered]
    if len(set(frames)) != len(frames):
        raise MeshImportError(f"mesh sequence {name!r}: frame numbers repeat ({frames}); give one mesh per frame")
    for frame, data in ordered:
        if "vertices" not in data or "faces" not in data:
            raise MeshImportError(f"mesh sequence {name!r}: frame {frame} lacks 'vertices'/'faces' "
                                  f"(has {sorted(data)})")

    coll = bpy.data.collections.new(name)
    _collection(collection).children.link(coll)
    root = bpy.data.objects.new(name, None)
    root.empty_display_type = "PLAIN_AXES"
    coll.objects.link(root)
    _place(root, parent, matrix_parent)
    root[ROLE_KEY] = MESH_SEQUENCE_ROLE
    if actor_id is not None:
        root[ACTOR_KEY] = actor_id

    for i, (frame, data) in enumerate(ordered):
        child = mesh_object(f"{name}_{frame:06d}", data["vertices"], data["faces"], data.get("colors"),
                            parent=root, collection=coll, actor_id=actor_id)
        child[FRAME_KEY] = frame
        # Keys at the neighbours' frames suffice: constant curves hold a value until the next key and keep the
        # first/last key's value outside the keyed range (which gives the 'nearest end stays visible' rule).
        keys = [(frame, True)]
        if i > 0:
            keys.insert(0, (frames[i - 1], False))
        if i + 1 < len(frames):
            keys.append((frames[i + 1], False))
        _key_visibility(child, keys)
    return root
