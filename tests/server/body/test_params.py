"""Body parameter conventions: EasyMocap vs AMASS vs SMPL-X, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.body.model import BodyModel, load_body_model
from server.body.params import BodyParamsError, to_easymocap


@pytest.fixture(scope="module")
def model() -> BodyModel:
    return load_body_model()


def random_body(seed: int, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"global_orient": rng.normal(0, 1.0, (batch, 3)), "body_pose": rng.normal(0, 0.3, (batch, 69)),
            "transl": rng.normal(0, 1.0, (batch, 3)), "betas": rng.normal(0, 1.0, (batch, 10))}


def test_amass_global_orient_equals_easymocap_rh_th(model: BodyModel) -> None:
    amass = random_body(1)
    a = model.pose(amass)
    # AMASS by definition: rotate about the rest pelvis J0, then translate
    j0 = model.rest_joints(torch.tensor(amass["betas"], dtype=torch.float32))[:, 0].numpy()
    p = to_easymocap(amass, model.pelvis_rest)
    assert p["poses"].shape == (2, 72) and np.all(p["poses"][:, :3] == 0)
    assert np.allclose(p["Rh"], amass["global_orient"], atol=1e-6)
    e = model.pose({"poses": p["poses"], "shapes": p["shapes"], "Rh": p["Rh"], "Th": p["Th"]})
    assert torch.allclose(a.vertices, e.vertices, atol=1e-5)
    # and the same pose through SMPL's own in-model root rotation (poses[:3] = global_orient, Rh = 0)
    poses = np.concatenate([amass["global_orient"], amass["body_pose"]], axis=1)
    inner = model.pose({"poses": poses, "shapes": amass["betas"], "Rh": np.zeros((2, 3)), "Th": amass["transl"]})
    assert torch.allclose(a.vertices, inner.vertices, atol=1e-5)
    # the pelvis ends at J0 + transl
    assert np.allclose(a.joints[:, 0].numpy(), j0 + amass["transl"], atol=1e-5)


def test_smplx_165_and_smplh_156_poses(model: BodyModel) -> None:
    rng = np.random.default_rng(2)
    poses = rng.normal(0, 0.3, (3, 165))
    trans = rng.normal(0, 0.5, (3, 3))
    betas = rng.normal(0, 1, 16)  # AMASS npz: 16 betas, one per sequence
    x = model.pose({"poses": poses, "trans": trans, "betas": betas})
    body_pose = np.concatenate([poses[:, 3:66], np.zeros((3, 6))], axis=1)  # SMPL hand joints 22, 23 zero
    ref = model.pose({"global_orient": poses[:, :3], "body_pose": body_pose, "transl": trans, "betas": betas[:10]})
    assert torch.allclose(x.vertices, ref.vertices, atol=1e-5)
    h = model.pose({"poses": poses[:, :156], "trans": trans, "betas": betas})
    assert torch.allclose(h.vertices, x.vertices, atol=1e-5)
    p = to_easymocap({"poses": poses[0], "Rh": [0, 0, 0], "Th": [0, 0, 0]}, model.pelvis_rest)
    assert p["poses"].shape == (1, 72) and np.all(p["poses"][0, 66:] == 0)
    assert np.allclose(p["poses"][0, :66], poses[0, :66], atol=1e-6)


def test_one_frame_fields_broadcast_and_output_types(model: BodyModel) -> None:
    p = to_easymocap({"poses": np.zeros((4, 72)), "shapes": [0.5] * 10, "Rh": [0, 0, 0], "Th": [[0, 0, 1]]},
                     model.pelvis_rest)
    assert {k: v.shape for k, v in p.items()} == {"poses": (4, 72), "shapes": (4, 10), "Rh": (4, 3), "Th": (4, 3)}
    assert all(v.dtype == np.float32 for v in p.values())
    assert np.all(p["shapes"] == 0.5) and np.all(p["Th"][:, 2] == 1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"poses": [0.0] * 71, "shapes": [0.0] * 10, "Rh": [0.0] * 3, "Th": [0.0] * 3}, "poses"),
        ({"poses": [0.0] * 72, "shapes": [0.0] * 10, "Rh": [0.0] * 3}, "Th"),
        ({"poses": [0.0] * 72, "shapes": [0.0] * 10, "Rh": [0.0, float("nan"), 0.0], "Th": [0.0] * 3}, "Rh"),
        ({"poses": [0.0] * 72, "shapes": [0.0] * 10, "Rh": [0.0] * 3, "Th": [0.0, float("inf"), 0.0]}, "Th"),
        ({"poses": [0.0] * 72, "shapes": "tall", "Rh": [0.0] * 3, "Th": [0.0] * 3}, "shapes"),
        ({"poses": [0.0] * 72, "shapes": [], "Rh": [0.0] * 3, "Th": [0.0] * 3}, "shapes"),
        ({"shapes": [0.0] * 10, "Rh": [0.0] * 3, "Th": [0.0] * 3}, "poses"),
        ({"global_orient": [0.0] * 3, "body_pose": [0.0] * 68, "transl": [0.0] * 3}, "body_pose"),
        ({"body_pose": [0.0] * 69, "transl": [0.0] * 3}, "global_orient"),
        ({"global_orient": [0.0] * 3, "body_pose": [0.0] * 69, "Th": [0.0] * 3}, "global_orient"),
        ({"poses": [0.0] * 72}, "Th"),
        ({"poses": np.zeros((3, 72)), "Rh": np.zeros((2, 3)), "Th": [0.0] * 3}, "Rh"),
        ({"poses": [[[0.0] * 72]], "Rh": [0.0] * 3, "Th": [0.0] * 3}, "poses"),
        ([0.0] * 72, "body"),
    ],
)
def test_bad_input_names_the_field(model: BodyModel, body: object, field: str) -> None:
    with pytest.raises(BodyParamsError) as err:
        model.pose(body)  # type: ignore[arg-type]
    assert err.value.field == field
    assert field in str(err.value)
