"""Each test leaves bpy.data as it found it: objects, armatures and actions it created are removed."""

from __future__ import annotations

import bpy
import pytest


@pytest.fixture(autouse=True)
def clean_bpy_data():
    collections = (bpy.data.objects, bpy.data.armatures, bpy.data.actions)
    before = [set(c.keys()) for c in collections]
    bpy.context.scene.frame_set(1)
    yield
    for coll, names in zip(collections, before, strict=True):
        for key in set(coll.keys()) - names:
            coll.remove(coll[key])
