# SPDX-License-Identifier: GPL-3.0-or-later
"""Put a neural actor into the scene's render with the compositor: the actor's RGBA and depth images (or image
sequences) are combined with Blender's own render (Render Layers Image + Depth) by a per-pixel depth test and an
Alpha Over, so scene objects nearer to the camera than the actor hide it, and elsewhere the actor is
alpha-composited over the render.

Depth: the actor's ``depth_NNNNNN.exr`` holds planar camera z in metres (FAR_DEPTH = 1e4 where the actor is
transparent); Blender's Depth pass is planar camera z too (checked with a Cycles render of a plane at a known z at an
off-centre pixel, see tests/addon_blender/test_compositing.py), so the two compare directly, no conversion.

Where the compositor lives differs between the Blender versions users have; each difference is one small helper
below that tests the feature (never the version number), and the suites run on bpy 4.2, 4.5, 5.0 and 5.3:

- 4.x: ``scene.use_nodes`` + ``scene.node_tree`` with a Composite node; turning nodes on fills a new tree with
  Blender's defaults (Composite + Render Layers, on 4.5 also a Reroute and a Viewer), which :func:`_node_tree` clears
  down to the Composite so the setup's own Render Layers node is the only one and no Viewer dangles.
- 5.0-5.2: ``scene.compositing_node_group``, a 'CompositorNodeTree' group with a Group Output.
- 5.3+ (and 6.0, where ``compositing_node_group`` is gone): ``scene.compositor_effects``, whose items hold node
  groups; even ``hasattr(scene, "compositing_node_group")`` warns there, so the helpers look at ``bl_rna.properties``.
- The Math node: CompositorNodeMath where the compositor has its own (4.x), else ShaderNodeMath (5.0+); picked by
  type, not by trying (a failed ``nodes.new`` prints an error on 4.x).
- Alpha Over: Fac/Image/Image sockets (4.x) or named sockets (5.0+), see :func:`_link`.
"""

from __future__ import annotations

from typing import Any

import bpy

from ..core.errors import UserError
from .frame_images import set_sequence_user

__all__ = ["CompositingError", "remove_actor_compositing", "setup_actor_compositing"]

_TAG = "neural_human_compositing"  # node custom property holding the setup name: how a rebuild finds its nodes


class CompositingError(UserError, ValueError):
    """A compositor setup that cannot be built; the message says what is missing."""


def _has_rna_property(owner: Any, name: str) -> bool:
    """Whether ``owner`` has the RNA property ``name``, without touching it (a deprecated one warns on access)."""
    return name in owner.bl_rna.properties


def _uses_compositor_effects(scene: Any) -> bool:
    """5.3+: the compositor is a stack of effects (``Scene.compositor_effects``), each holding a node group."""
    return _has_rna_property(scene, "compositor_effects")


def _uses_compositing_node_group(scene: Any) -> bool:
    """5.0+: the compositor is a node group with a Group Output (assigned directly on 5.0-5.2, or as an effect)."""
    return _uses_compositor_effects(scene) or _has_rna_property(scene, "compositing_node_group")


def _new_group_tree(name: str) -> Any:
    tree = bpy.data.node_groups.new(name, "CompositorNodeTree")
    tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    return tree


def _effect_tree(scene: Any, name: str, create: bool) -> Any:
    """5.3+: the node group of the scene's active compositor effect (a new effect named ``name`` when none)."""
    effects = scene.compositor_effects
    effect = effects.active if effects.active is not None and effects.active.node_group is not None else None
    if effect is None:
        effect = next((e for e in effects if e.node_group is not None), None)
    if effect is None and create:
        effect = effects.new(name)
        effect.node_group = _new_group_tree(name)
        effects.active = effect
    return effect.node_group if effect is not None else None


def _existing_tree(scene: Any) -> Any:
    """The scene's compositor node tree, or None when it has none (nothing is created)."""
    if _uses_compositor_effects(scene):
        return _effect_tree(scene, "", create=False)
    if _uses_compositing_node_group(scene):
        return scene.compositing_node_group
    return scene.node_tree


def _node_tree(scene: Any, name: str) -> Any:
    """The scene's compositor node tree, created (and assigned) when the scene has none."""
    if _uses_compositor_effects(scene):
        tree = _effect_tree(scene, name, create=True)
    elif _uses_compositing_node_group(scene):
        tree = scene.compositing_node_group
        if tree is None:
            tree = _new_group_tree(name)
            scene.compositing_node_group = tree
    else:
        return _node_tree_4x(scene)
    if not any(item.item_type == "SOCKET" and item.in_out == "OUTPUT" for item in tree.interface.items_tree):
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    return tree


def _node_tree_4x(scene: Any) -> Any:
    """4.x: turn the scene's nodes on; a tree Blender creates for that comes filled with its default nodes (Render
    Layers, and on 4.5 a Reroute and a Viewer wired to it): keep only the Composite, the setup adds its own input."""
    fresh = scene.node_tree is None
    scene.use_nodes = True
    tree = scene.node_tree
    if fresh:
        for node in [n for n in tree.nodes if n.bl_idname != "CompositorNodeComposite"]:
            tree.nodes.remove(node)
    return tree


def _output_node(scene: Any, tree: Any) -> Any:
    """The node whose first input is the compositor result: Group Output (5.0+) or Composite (4.x)."""
    kind = "NodeGroupOutput" if _uses_compositing_node_group(scene) else "CompositorNodeComposite"
    for node in tree.nodes:
        if node.bl_idname == kind and getattr(node, "is_active_output", True):
            return node
    node = tree.nodes.new(kind)
    node.location = (600, 0)
    return node


def _remove_nodes(tree: Any, name: str) -> None:
    for node in [n for n in tree.nodes if n.get(_TAG) == name]:
        tree.nodes.remove(node)


def remove_actor_compositing(scene: Any, name: str = "Neural Human") -> None:
    """Remove the nodes a :func:`setup_actor_compositing` call with this ``name`` added (other nodes stay)."""
    tree = _existing_tree(scene)
    if tree is not None:
        _remove_nodes(tree, name)


def setup_actor_compositing(scene: Any, rgba_image: Any, depth_image: Any, frame_start: int | None = None,
                            name: str = "Neural Human", frame_duration: int | None = None,
                            view_layer: str | None = None) -> Any:
    """Build (or rebuild in place: calling it again replaces the nodes it made) the compositor setup

        Render Layers ── Image ──────────────────────────────┐
                      └─ Depth ──┐                           ├─ Alpha Over (premultiplied) ─ output
        actor depth image ─ Red ─┴─ Less Than = actor nearer ┤ (factor)
        actor RGBA image ────────────────────────────────────┘ (foreground)

    i.e. out = render · (1 − m·α) + m · actor_premultiplied with m = [actor depth < render depth], and enable the
    view layer's Z pass and the render's compositing step. (Z Combine's 'Use Alpha' would multiply the already
    premultiplied actor by α a second time: semi-transparent edges came out too dark; see the tests.)

    ``rgba_image``/``depth_image`` are image datablocks (single images or sequences, see
    ``frame_images.load_image``). For sequences ``frame_start`` is the scene frame showing the datablock's file
    (default: that file's number, so file numbers equal scene frames) and ``frame_duration`` defaults to the
    contiguous run of files on disk; outside it the first/last frame holds. Returns the Alpha Over node.
    """
    for label, image in (("rgba_image", rgba_image), ("depth_image", depth_image)):
        if image is None or not isinstance(image, bpy.types.Image):
            raise CompositingError(f"{label} must be an image datablock (frame_images.load_image), got {image!r}")
    if depth_image.colorspace_settings.name != "Non-Color":
        depth_image.colorspace_settings.name = "Non-Color"  # metres, never colour-managed
    layer = _view_layer(scene, view_layer)
    layer.use_pass_z = True
    scene.render.use_compositing = True

    tree = _node_tree(scene, name)
    _remove_nodes(tree, name)
    out = _output_node(scene, tree)

    def add(kinds: tuple[str, ...], label: str, x: float, y: float) -> Any:
        return _add_node(tree, kinds, name, label, (out.location.x + x, out.location.y + y))

    render = add(("CompositorNodeRLayers",), "render", -900, 250)
    render.scene = scene
    render.layer = layer.name
    actor = add(("CompositorNodeImage",), "actor RGBA", -900, -100)
    actor.image = rgba_image
    depth = add(("CompositorNodeImage",), "actor depth", -900, -400)
    depth.image = depth_image
    for node, image in ((actor, rgba_image), (depth, depth_image)):
        if image.source == "SEQUENCE":
            set_sequence_user(node, image, frame_start, frame_duration)
    red = add(("CompositorNodeSeparateColor",), "actor depth value", -600, -400)  # depth is stored in R=G=B
    nearer = add(("CompositorNodeMath", "ShaderNodeMath"), "actor nearer", -300, -250)  # 4.x, 5.0+
    nearer.operation = "LESS_THAN"  # 1 where actor depth < render depth
    over = add(("CompositorNodeAlphaOver",), "actor over render", 0, 0)

    _link(tree, render, actor, depth, red, nearer, over, out)
    return over


def _view_layer(scene: Any, view_layer: str | None) -> Any:
    """The named view layer, else the context's when it belongs to ``scene``, else the scene's first."""
    layer = scene.view_layers.get(view_layer) if view_layer else None
    if view_layer and layer is None:
        raise CompositingError(f"scene {scene.name!r} has no view layer {view_layer!r}")
    if layer is None:
        context_layer = bpy.context.view_layer
        layer = context_layer if bpy.context.scene == scene and context_layer.name in scene.view_layers \
            else scene.view_layers[0]
    return layer


def _add_node(tree: Any, kinds: tuple[str, ...], name: str, label: str, location: tuple[float, float]) -> Any:
    """A new node of the first of ``kinds`` this Blender has (node types were renamed between 4.x and 5.0),
    tagged with the setup ``name``."""
    kind = _node_type(kinds)
    node = tree.nodes.new(kind)
    node.name = node.label = f"{name}: {label}"
    node[_TAG] = name
    node.location = location
    return node


def _node_type(kinds: tuple[str, ...]) -> str:
    """The first of ``kinds`` that is a node type of this Blender. Looked up, not tried: a failed ``nodes.new``
    prints "Error: Cannot add node of type ..." on 4.x even when the RuntimeError is caught."""
    for kind in kinds:
        if getattr(bpy.types, kind, None) is not None:
            return kind
    raise CompositingError(f"this Blender has none of the compositor node types {kinds}")


def _link(tree: Any, render: Any, actor: Any, depth: Any, red: Any, nearer: Any, over: Any, out: Any) -> None:
    """Wire the setup's nodes (see setup_actor_compositing's picture)."""
    links = tree.links
    links.new(depth.outputs["Image"], red.inputs[0])
    links.new(red.outputs["Red"], nearer.inputs[0])
    links.new(render.outputs["Depth"], nearer.inputs[1])
    if "Background" in over.inputs:  # 5.0: named sockets, premultiplied unless 'Straight Alpha'
        background, foreground, factor = over.inputs["Background"], over.inputs["Foreground"], over.inputs["Factor"]
        over.inputs["Straight Alpha"].default_value = False
    else:  # 4.x: Fac, Image (background), Image (foreground); use_premultiply off = premultiplied foreground
        factor, background, foreground = over.inputs[0], over.inputs[1], over.inputs[2]
        over.use_premultiply = False
    links.new(render.outputs["Image"], background)
    links.new(actor.outputs["Image"], foreground)
    links.new(nearer.outputs[0], factor)
    links.new(over.outputs[0], out.inputs[0])
