"""compositing with real bpy and Cycles: what Blender's Depth pass holds, and an actor RGBA/depth pair composited
into a tiny render with a cube in front of and a cube behind the actor, for single images and an animated sequence.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender

from neural_human_addon.blender import compositing, frame_images  # noqa: E402

W, H = 64, 48
LENS, SENSOR = 35.0, 36.0
FX = LENS * W / SENSOR  # pixels (square pixels, horizontal fit)
WORLD = 0.2  # linear grey of the world background
NEAR_Z, ACTOR_Z, FAR_Z = 3.0, 5.0, 8.0


def _srgb(linear: float | np.ndarray) -> float | np.ndarray:
    linear = np.asarray(linear, dtype=np.float64)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def _linear(srgb: float | np.ndarray) -> float | np.ndarray:
    srgb = np.asarray(srgb, dtype=np.float64)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _column_x(column: float, depth: float) -> float:
    """Camera x (metres, Blender camera at the origin looking down -Z) of a pixel column edge at ``depth``."""
    return (column - W / 2) * depth / FX


def _render_scene(scene, lens: float = LENS) -> None:
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    cam.data.lens, cam.data.sensor_width, cam.data.sensor_fit = lens, SENSOR, "HORIZONTAL"
    scene.collection.objects.link(cam)
    scene.camera = cam  # at the origin, looking down -Z
    scene.world = bpy.data.worlds.new("grey")
    scene.world.color = (WORLD, WORLD, WORLD)  # 4.x: new worlds have no nodes; 5.0: a Background node decides
    for node in scene.world.node_tree.nodes if scene.world.node_tree else ():
        if node.bl_idname == "ShaderNodeBackground":
            node.inputs["Color"].default_value = (WORLD, WORLD, WORLD, 1.0)


def _emissive_box(scene, name: str, x0: float, x1: float, z_front: float, color) -> None:
    """An emission-only box (its colour is exact in the render) whose front face is at camera depth z_front."""
    z0, z1 = -z_front, -z_front - 0.5
    verts = [(x, y, z) for z in (z0, z1) for y in (-5.0, 5.0) for x in (x0, x1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 2, 6, 4), (1, 5, 7, 3), (0, 4, 5, 1), (2, 3, 7, 6)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:
        mat.use_nodes = True
    nodes = mat.node_tree.nodes
    nodes.clear()
    emit = nodes.new("ShaderNodeEmission")
    emit.inputs["Color"].default_value = (*color, 1.0)
    out = nodes.new("ShaderNodeOutputMaterial")
    mat.node_tree.links.new(emit.outputs[0], out.inputs["Surface"])
    mesh.materials.append(mat)
    scene.collection.objects.link(bpy.data.objects.new(name, mesh))


def _render(scene, path: str) -> np.ndarray:
    """Render the current frame to ``path`` and read it back as float sRGB values, row 0 = top."""
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(path)
    try:
        px = np.empty(W * H * 4, np.float32)
        img.pixels.foreach_get(px)
    finally:
        bpy.data.images.remove(img)
    return px.reshape(H, W, 4)[::-1]


def test_depth_pass_is_planar_camera_z(blender_scene, tmp_path):
    """A plane at camera z = 5 m seen through a wide lens: the Depth pass reads 5 at the corners too, where the ray
    distance is ~1.7x larger. So Blender's depth and our z-depth compare without conversion."""
    scene = blender_scene
    _render_scene(scene, lens=15.0)
    _emissive_box(scene, "wall", -50.0, 50.0, 5.0, (0.5, 0.5, 0.5))
    scene.view_layers[0].use_pass_z = True
    tree = compositing._node_tree(scene, "depth check")
    out = compositing._output_node(scene, tree)
    layers = tree.nodes.new("CompositorNodeRLayers")
    layers.scene = scene
    tree.links.new(layers.outputs["Depth"], out.inputs[0])
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.image_settings.color_depth = "32"
    scene.render.filepath = str(tmp_path / "depth.exr")
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(scene.render.filepath)
    img.colorspace_settings.name = "Non-Color"
    px = np.empty(W * H * 4, np.float32)
    img.pixels.foreach_get(px)
    bpy.data.images.remove(img)
    depth = px.reshape(H, W, 4)[::-1, :, 0]
    fx = 15.0 * W / SENSOR
    for row, col in ((0, 0), (5, 50), (47, 63), (24, 32)):
        u, v = (col + 0.5 - W / 2) / fx, (row + 0.5 - H / 2) / fx
        ray = 5.0 * math.sqrt(1 + u * u + v * v)
        assert depth[row, col] == pytest.approx(5.0, abs=1e-3), (row, col, depth[row, col], ray)
    assert 5.0 * math.sqrt(1 + (31.5 / fx) ** 2 + (23.5 / fx) ** 2) > 8.0  # the corner would show it


ACTOR_ROWS, ACTOR_COLS = (10, 38), (20, 44)  # [start, stop)
HALF_ALPHA_ROWS = (30, 38)  # actor rows drawn with alpha 0.5


def _actor(color, depth_m: float) -> tuple[np.ndarray, np.ndarray]:
    rgba = np.zeros((H, W, 4), np.float32)
    depth = np.zeros((H, W), np.float32)
    rows, cols = slice(*ACTOR_ROWS), slice(*ACTOR_COLS)
    rgba[rows, cols, :3] = color
    rgba[rows, cols, 3] = 1.0
    rgba[slice(*HALF_ALPHA_ROWS), cols, 3] = 0.5
    depth[rows, cols] = depth_m
    return rgba, depth


@pytest.fixture
def composite_scene(blender_scene):
    """Near red box covering columns < 28 (in front of the actor), far blue box covering columns >= 36 (behind)."""
    scene = blender_scene
    _render_scene(scene)
    _emissive_box(scene, "near", -10.0, _column_x(28, NEAR_Z), NEAR_Z, (1.0, 0.0, 0.0))
    _emissive_box(scene, "far", _column_x(36, FAR_Z), 20.0, FAR_Z, (0.0, 0.0, 1.0))
    return scene


def _region(img: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    block = img[slice(*rows), slice(*cols), :3].reshape(-1, 3)
    assert np.ptp(block, axis=0).max() <= 2 / 255, "region not uniform: a test region crosses an edge"
    return block.mean(axis=0)


def _check(img: np.ndarray, actor_color, actor_in_front_of_near: bool) -> None:
    tol = 2.5 / 255
    red, blue, actor = np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), np.asarray(actor_color)
    background = _srgb(WORLD)
    mid = (14, 26)  # actor rows with alpha 1
    np.testing.assert_allclose(_region(img, mid, (4, 16)), red, atol=tol)  # near box alone
    np.testing.assert_allclose(_region(img, mid, (22, 26)), actor if actor_in_front_of_near else red, atol=tol)
    np.testing.assert_allclose(_region(img, mid, (30, 34)), actor, atol=tol)  # actor over the world
    np.testing.assert_allclose(_region(img, mid, (38, 42)), actor, atol=tol)  # actor in front of the far box
    np.testing.assert_allclose(_region(img, mid, (48, 60)), blue, atol=tol)  # far box alone
    np.testing.assert_allclose(_region(img, (2, 7), (30, 34)), [background] * 3, atol=tol)  # world alone
    # alpha 0.5 over the world: straight alpha, blended in linear light
    half = _srgb(0.5 * _linear(actor) + 0.5 * WORLD)
    np.testing.assert_allclose(_region(img, (32, 36), (30, 34)), half, atol=tol)
    assert (img[..., 3] == 1.0).all()


def test_single_frame_composite_respects_depth(composite_scene, tmp_path):
    scene = composite_scene
    color = (0.1, 0.8, 0.3)
    np.savez(tmp_path / "frame_000001.npz", **dict(zip(("rgba", "depth"), _actor(color, ACTOR_Z), strict=True)))
    paths = frame_images.write_frame_files(str(tmp_path / "frame_000001.npz"))
    rgba_img = frame_images.load_image(paths["rgba"])
    depth_img = frame_images.load_image(paths["depth"])
    compositing.setup_actor_compositing(scene, rgba_img, depth_img)
    compositing.setup_actor_compositing(scene, rgba_img, depth_img)  # idempotent: rebuilt in place
    tree = compositing._node_tree(scene, "unused")
    ours = [n for n in tree.nodes if n.get(compositing._TAG) == "Neural Human"]
    assert len(ours) == 6 and len(tree.nodes) == 7  # + the output node
    out = compositing._output_node(scene, tree)
    assert len(out.inputs[0].links) == 1 and out.inputs[0].links[0].from_node.bl_idname == "CompositorNodeAlphaOver"
    assert scene.view_layers[0].use_pass_z

    _check(_render(scene, str(tmp_path / "out.png")), color, actor_in_front_of_near=False)

    compositing.remove_actor_compositing(scene)
    assert not [n for n in tree.nodes if n.get(compositing._TAG)]


def test_setup_leaves_one_render_layers_node_and_no_viewer(blender_scene, tmp_path, capfd):
    """On 4.x turning the compositor on fills a new tree with Blender's defaults (Render Layers; 4.5 also a Reroute
    and a Viewer wired to it): the setup keeps only the output, so its own Render Layers node is the only one. The
    Math node is picked without the "Cannot add node" error 4.x prints for a ShaderNodeMath tried and refused."""
    rgba, depth = _actor((0.1, 0.8, 0.3), ACTOR_Z)
    np.savez(tmp_path / "frame_000001.npz", rgba=rgba, depth=depth)
    paths = frame_images.write_frame_files(str(tmp_path / "frame_000001.npz"))
    compositing.setup_actor_compositing(blender_scene, frame_images.load_image(paths["rgba"]),
                                        frame_images.load_image(paths["depth"]))
    tree = compositing._existing_tree(blender_scene)
    kinds = sorted(n.bl_idname for n in tree.nodes)
    assert kinds.count("CompositorNodeRLayers") == 1, kinds
    assert "CompositorNodeViewer" not in kinds and "NodeReroute" not in kinds, kinds
    assert all(n.get(compositing._TAG) for n in tree.nodes if n != compositing._output_node(blender_scene, tree))
    assert "Cannot add node" not in "".join(capfd.readouterr())


def test_sequence_frame_follows_scene_frame(composite_scene, tmp_path):
    """Files numbered 3 and 4 = scene frames 3 and 4. Frame 4's actor is nearer (2 m) than the near box and has
    another colour; after the last frame the last image holds."""
    scene = composite_scene
    frames = {3: ((0.1, 0.8, 0.3), ACTOR_Z), 4: ((0.9, 0.6, 0.1), 2.0)}
    for frame, (color, depth_m) in frames.items():
        rgba, depth = _actor(color, depth_m)
        np.savez(tmp_path / f"frame_{frame:06d}.npz", rgba=rgba, depth=depth)
        frame_images.write_frame_files(str(tmp_path / f"frame_{frame:06d}.npz"))
    rgba_seq = frame_images.load_image(str(tmp_path / "rgba_######.png"), sequence=True)
    depth_seq = frame_images.load_image(str(tmp_path / "depth_######.exr"), sequence=True)
    assert rgba_seq.source == depth_seq.source == "SEQUENCE"
    compositing.setup_actor_compositing(scene, rgba_seq, depth_seq)

    for frame, expect in ((3, 3), (4, 4), (6, 4)):
        scene.frame_set(frame)
        img = _render(scene, str(tmp_path / f"out_{frame}.png"))
        color, depth_m = frames[expect]
        _check(img, color, actor_in_front_of_near=depth_m < NEAR_Z)
