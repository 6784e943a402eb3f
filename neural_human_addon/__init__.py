# SPDX-License-Identifier: GPL-3.0-or-later
"""Neural Human: drive neural human actors from Blender rigs and cameras.

The package root stays free of bpy imports so that its pure modules (``camera``, ...) can be imported by the
server's data tools and by plain-Python unit tests; the bpy layer is imported in ``register()``.
"""

# bpy modules with register()/unregister(), in registration order (properties before the operators that use them)
_BPY_MODULES: tuple[str, ...] = ("preferences", "properties", "job_session", "operators", "panel")


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
