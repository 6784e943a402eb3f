# SPDX-License-Identifier: GPL-3.0-or-later
"""Neural Human: drive neural human actors from Blender rigs and cameras.

``core/`` never imports bpy (the server and plain-Python tests import it); ``blender/`` is the bpy shell. This file
only registers the shell's modules, importing them in ``register()`` so the package root stays free of bpy.
"""

# bpy modules with register()/unregister(), in registration order (properties before the operators that use them)
_BPY_MODULES: tuple[str, ...] = (
    "blender.preferences", "blender.properties", "blender.job_session", "blender.operators", "blender.panel",
    "blender.bone_map_editor", "blender.viewport_preview",
)


def register() -> None:
    import importlib

    done = []
    try:
        for name in _BPY_MODULES:
            module = importlib.import_module(f"{__package__}.{name}")
            module.register()
            done.append(module)
    except Exception:
        for module in reversed(done):  # leave Blender as it was: no half-registered add-on
            module.unregister()
        raise


def unregister() -> None:
    import importlib

    for name in reversed(_BPY_MODULES):
        importlib.import_module(f"{__package__}.{name}").unregister()
