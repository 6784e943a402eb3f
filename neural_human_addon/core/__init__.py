# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's pure core: never imports bpy (stdlib + numpy only). Camera conversion, SMPL skeleton, rotations,
actor space, retargeting and bone maps, the HTTP client and job worker, wire formats. The only part of the add-on
that the server imports."""
