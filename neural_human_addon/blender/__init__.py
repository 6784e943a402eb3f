# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's bpy shell: operators, panel, properties, preferences, the job session, and the scene work (actor
roots, retargeting on armatures, cameras, frame images, meshes, compositing) over ``core``."""

# The add-on's own package (``neural_human_addon``, or ``bl_ext.<repo>.neural_human`` when installed as an extension):
# the key of its preferences.
ADDON_PACKAGE = __package__.rpartition(".")[0]
