"""Each test leaves bpy.data as it found it: objects, armatures and actions it created are removed.

bpy 4.2.23 segfaults after the interpreter has finalised (rc 139; no Python frame left, nothing of the add-on runs)
in any pytest session that collected this folder, even one empty test here: a bpy-as-a-module exit bug, not the
add-on's (4.5 and later exit cleanly). On 4.2 the session therefore ends with os._exit and pytest's own exit status
once pytest is done, so the suite's result is what its tests say."""

from __future__ import annotations

import os
import sys

import bpy
import pytest

_EXIT_STATUS = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _EXIT_STATUS
    _EXIT_STATUS = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if tuple(bpy.app.version[:2]) == (4, 2):  # the bpy 4.2 exit crash described above
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS)


@pytest.fixture(autouse=True)
def clean_bpy_data():
    collections = (bpy.data.objects, bpy.data.armatures, bpy.data.actions)
    before = [set(c.keys()) for c in collections]
    bpy.context.scene.frame_set(1)
    yield
    for coll, names in zip(collections, before, strict=True):
        for key in set(coll.keys()) - names:
            coll.remove(coll[key])
