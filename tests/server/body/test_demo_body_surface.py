"""The demo body's surface: no self-intersections at rest (with a detector that does find real ones)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.body.model import SMPL_JOINT_NAMES, load_body_model
from server.body.surface import self_intersections


def test_detector_finds_crossing_triangles_and_ignores_neighbours() -> None:
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0],  # triangle 0 in z = 0
                  [0.2, 0.2, -0.5], [0.3, 0.2, 0.5], [0.2, 0.3, 0.5],  # triangle 1 pierces it
                  [1, 1, 0], [5, 5, 1], [5, 6, 1],  # triangle 3 is far away
                  [0.7, 0.0, -0.5], [0.7, 0.2, 0.5]], dtype=float)  # triangle 4 shares vertex 0 and dips through
    f = np.array([[0, 1, 2], [3, 4, 5], [1, 6, 2], [6, 7, 8], [0, 9, 10]])
    pairs = self_intersections(v, f, cell=0.5)
    assert pairs.tolist() == [[0, 1]]


@pytest.mark.slow
def test_rest_surface_has_no_self_intersections_but_a_crossed_arm_does() -> None:
    model = load_body_model()
    v = model.v_template.numpy()
    assert len(self_intersections(v, model.faces)) == 0
    # positive control: swing the left arm down and through the torso
    poses = torch.zeros(1, 72)
    s = SMPL_JOINT_NAMES.index("left_shoulder")
    poses[0, 3 * s: 3 * s + 3] = torch.tensor([0.0, 0.0, -2.2])
    e = SMPL_JOINT_NAMES.index("left_elbow")
    poses[0, 3 * e: 3 * e + 3] = torch.tensor([0.0, -2.0, 0.0])
    posed = model(poses, torch.zeros(1, 10), torch.zeros(1, 3), torch.zeros(1, 3)).vertices[0].numpy()
    assert len(self_intersections(posed, model.faces)) > 10
