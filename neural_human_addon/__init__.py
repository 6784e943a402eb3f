# SPDX-License-Identifier: GPL-3.0-or-later
"""Neural Human: drive neural human actors from Blender rigs and cameras.

The package root stays free of bpy imports so that its pure modules (``camera``, ...) can be imported by the
server's data tools and by plain-Python unit tests; the bpy layer is imported in ``register()``.
"""

_BPY_MODULES: tuple[str, ...] = ()  # bpy modules with register()/unregister(), added as the UI lands


def register() -> None:
    import importlib

    for name in _BPY_MODULES:
        importlib.import_module(f"{__package__}.{name}").register()


def unregister() -> None:
    import importlib

    for name in reversed(_BPY_MODULES):
        importlib.import_module(f"{__package__}.{name}").unregister()
