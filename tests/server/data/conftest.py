"""Synthetic datasets rendered once per test session (real bpy + Cycles), shared by the tests in tests/data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from neural_human_addon.core.camera import BlenderCameraSettings, look_at_matrix_world


def odd_camera_rig() -> list[BlenderCameraSettings]:
    """Test-only rig: a non-square image (320x224 at 50 % = 160x112) seen through a vertical sensor fit with shifts,
    a horizontal fit with stretched pixels, and an auto fit with a shift and a roll."""
    common = {"resolution_x": 320, "resolution_y": 224, "resolution_percentage": 50}
    return [
        BlenderCameraSettings(lens=24.0, sensor_height=24.0, sensor_fit="VERTICAL", shift_x=0.1, shift_y=-0.08,
                              matrix_world=look_at_matrix_world([0.5, -3.2, 1.4], [0.0, 0.0, 0.9]), **common),
        BlenderCameraSettings(lens=22.0, sensor_width=36.0, sensor_fit="HORIZONTAL", pixel_aspect_x=1.25,
                              matrix_world=look_at_matrix_world([3.0, 0.8, 1.0], [0.0, 0.0, 0.9]), **common),
        BlenderCameraSettings(lens=24.0, sensor_width=32.0, sensor_fit="AUTO", shift_y=0.06,
                              matrix_world=look_at_matrix_world([-2.2, 2.4, 2.0], [0.0, 0.0, 0.8], roll=0.2),
                              **common),
    ]


@pytest.fixture(scope="session")
def synthetic_tiny(tmp_path_factory) -> Path:
    """The 'tiny' preset (4 views, 6 frames, 64x64), rendered once per session."""
    pytest.importorskip("bpy")
    from server.data.make_data import generate

    out = tmp_path_factory.mktemp("synthetic") / "tiny"
    generate("tiny", out, progress=False)
    return out


@pytest.fixture(scope="session")
def synthetic_odd_rig(tmp_path_factory) -> Path:
    """Two frames of the tiny motion seen by :func:`odd_camera_rig` (vertical fit, shifts, pixel aspect)."""
    pytest.importorskip("bpy")
    from server.data.make_data import PRESETS, generate

    def motion():
        train, novel = PRESETS["tiny"].motion()
        return train.select([1]), novel.select([1])

    out = tmp_path_factory.mktemp("synthetic") / "odd_rig"
    generate(replace(PRESETS["tiny"], motion=motion), out, rig=odd_camera_rig(), train_views=[0, 1], progress=False)
    return out
