"""mesh_import with real bpy: geometry, colour bytes, material, parenting under a moved actor root, a Cycles render
showing the vertex colours, and a mesh sequence whose visibility follows the scene frame."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender

from mathutils import Matrix, Vector  # noqa: E402

from neural_human_addon.blender import mesh_import  # noqa: E402
from neural_human_addon.blender.mesh_import import COLOR_ATTRIBUTE, MATERIAL_NAME, MeshImportError  # noqa: E402


def _grid(n: int = 6, size: float = 1.0, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """An n x n vertex grid in the z plane, triangles facing +z."""
    xs = np.linspace(-size / 2, size / 2, n, dtype=np.float32)
    xx, yy = np.meshgrid(xs, xs)
    vertices = np.stack([xx.ravel(), yy.ravel(), np.full(n * n, z, np.float32)], axis=1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]).astype(np.int32)
    return vertices, faces


def test_mesh_object_geometry_colours_material_parenting(blender_scene):
    vertices, faces = _grid()
    colors = np.random.default_rng(0).integers(0, 256, (len(vertices), 3), dtype=np.uint8)
    root = bpy.data.objects.new("actor root", None)
    blender_scene.collection.objects.link(root)
    root.matrix_world = Matrix.Translation((1.0, -2.0, 0.5)) @ Matrix.Rotation(0.7, 4, "Z")
    y_up = Matrix.Rotation(math.pi / 2, 4, "X")  # actor Y-up -> root-local Z-up
    obj = mesh_import.mesh_object("nh mesh", vertices, faces, colors, parent=root, matrix_parent=np.array(y_up),
                                  actor_id="demo")
    bpy.context.view_layer.update()

    mesh = obj.data
    assert obj["neural_human_role"] == "mesh" and obj["neural_human_actor"] == "demo"
    assert obj.parent == root and obj.name in blender_scene.collection.objects
    assert (len(mesh.vertices), len(mesh.polygons)) == (len(vertices), len(faces))
    co = np.empty(len(vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    np.testing.assert_array_equal(co.reshape(-1, 3), vertices)
    corners = np.empty(len(faces) * 3, np.int32)
    mesh.polygons.foreach_get("vertices", corners)
    np.testing.assert_array_equal(corners.reshape(-1, 3), faces)
    normals = np.empty(len(faces) * 3, np.float32)
    mesh.polygons.foreach_get("normal", normals)
    np.testing.assert_allclose(normals.reshape(-1, 3), [[0, 0, 1]] * len(faces), atol=1e-6)  # winding kept
    assert all(p.use_smooth for p in mesh.polygons)

    attr = mesh.color_attributes[COLOR_ATTRIBUTE]
    assert (attr.domain, attr.data_type) == ("POINT", "BYTE_COLOR")
    srgb = np.empty(len(vertices) * 4, np.float32)
    attr.data.foreach_get("color_srgb", srgb)
    assert np.abs(np.round(srgb.reshape(-1, 4)[:, :3] * 255) - colors).max() <= 1

    mat = mesh.materials[0]
    assert mat.name == MATERIAL_NAME
    col_node = mat.node_tree.nodes["Neural Human colour"]
    assert col_node.layer_name == COLOR_ATTRIBUTE
    link = col_node.outputs["Color"].links[0]
    assert (link.to_node.bl_idname, link.to_socket.name) == ("ShaderNodeBsdfPrincipled", "Base Color")

    # actor-world vertex v lands at root.matrix_world @ matrix_parent @ v
    expected = root.matrix_world @ y_up @ Vector(vertices[7].tolist())
    got = obj.matrix_world @ mesh.vertices[7].co
    assert (got - expected).length < 1e-5

    second = mesh_import.mesh_object("nh mesh 2", vertices, faces)  # no colours, no parent: same shared material
    assert second.data.materials[0] == mat and COLOR_ATTRIBUTE not in second.data.color_attributes
    assert second.parent is None and second.matrix_world == Matrix.Identity(4)


def test_mesh_object_rejects_bad_arrays(blender_scene):
    vertices, faces = _grid(3)
    with pytest.raises(MeshImportError, match=r"'faces' must be integer indices in \[0, 9\)"):
        mesh_import.mesh_object("bad", vertices, faces + 5)
    with pytest.raises(MeshImportError, match=r"'vertices' must have shape \(N, 3\)"):
        mesh_import.mesh_object("bad", vertices[:, :2], faces)
    with pytest.raises(MeshImportError, match="'colors' must be uint8"):
        mesh_import.mesh_object("bad", vertices, faces, colors=np.zeros((9, 3), np.float32))
    with pytest.raises(MeshImportError, match="N = 9"):
        mesh_import.mesh_object("bad", vertices, faces, colors=np.zeros((4, 3), np.uint8))


def test_vertex_colours_show_in_a_cycles_render(blender_scene, tmp_path):
    """A plane facing the camera, left half red and right half blue vertex colours, lit by a white world."""
    vertices, faces = _grid(n=9, size=2.0)
    colors = np.where(vertices[:, :1] < 0, [[200, 20, 20]], [[20, 20, 200]]).astype(np.uint8)
    mesh_import.mesh_object("nh coloured", vertices, faces, colors)
    scene = blender_scene
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.location = (0.0, 0.0, 3.0)  # looks down -Z at the plane
    scene.camera = cam
    scene.world = bpy.data.worlds.new("white")
    scene.world.color = (1.0, 1.0, 1.0)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 4
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = 32, 24
    scene.view_settings.view_transform = "Standard"
    scene.render.filepath = str(tmp_path / "mesh.png")
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(scene.render.filepath)
    px = np.empty(32 * 24 * 4, np.float32)
    img.pixels.foreach_get(px)
    px = px.reshape(24, 32, 4)
    left, right = px[6:18, 4:12, :3].mean(axis=(0, 1)), px[6:18, 20:28, :3].mean(axis=(0, 1))
    assert left[0] > 2 * left[2] and right[2] > 2 * right[0], (left, right)
    assert os.path.isfile(scene.render.filepath)


def test_mesh_sequence_visibility_follows_the_frame(blender_scene):
    scene = blender_scene
    root = bpy.data.objects.new("actor root", None)
    scene.collection.objects.link(root)
    frames = [10, 12, 13]  # a gap at 11: mesh 10 holds
    meshes = []
    for i, frame in enumerate(frames):
        vertices, faces = _grid(3, z=0.1 * i)
        meshes.append((frame, {"vertices": vertices, "faces": faces,
                               "colors": np.full((len(vertices), 3), 40 * i, np.uint8)}))
    seq = mesh_import.mesh_sequence("nh seq", list(reversed(meshes)), parent=root, actor_id="demo")

    assert seq["neural_human_role"] == "mesh_sequence" and seq.parent == root and seq.type == "EMPTY"
    coll = bpy.data.collections["nh seq"]
    assert coll.name in scene.collection.children
    children = sorted(seq.children, key=lambda o: o["neural_human_frame"])
    assert [c["neural_human_frame"] for c in children] == frames
    assert all(c.name in coll.objects and c["neural_human_role"] == "mesh" for c in children)

    expected_frame = {8: 10, 9: 10, 10: 10, 11: 10, 12: 12, 13: 13, 14: 13, 20: 13}  # nearest end holds outside
    for f, shown in expected_frame.items():
        scene.frame_set(f)
        for child in children:
            visible = child["neural_human_frame"] == shown
            # hide_get() is the per-view-layer eye toggle (not animatable); visible_get() includes hide_viewport
            assert child.visible_get() is visible, (f, child.name)
            assert child.hide_viewport is not visible and child.hide_render is not visible, (f, child.name)
            assert child.hide_get() is False
    for child in children:
        curves = mesh_import._fcurves(child)
        assert {fc.data_path for fc in curves} == {"hide_viewport", "hide_render"}
        assert all(kp.interpolation == "CONSTANT" for fc in curves for kp in fc.keyframe_points)

    with pytest.raises(MeshImportError, match="repeat"):
        mesh_import.mesh_sequence("bad", meshes + meshes[:1])
