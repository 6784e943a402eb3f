"""The bundled demo body through the BodyModel interface: rest pose, transforms, anatomy, skinning, shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from server.body.model import (
    DEMO_BODY_PATH,
    SMPL_JOINT_NAMES,
    SMPL_MIRROR_PAIRS,
    SMPL_PARENTS,
    BodyModel,
    load_body_model,
)
from server.body.params import axis_angle_to_matrix

J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}


@pytest.fixture(scope="module")
def model() -> BodyModel:
    return load_body_model()


def zeros(model: BodyModel, batch: int = 1) -> dict[str, torch.Tensor]:
    return {"poses": torch.zeros(batch, 72), "shapes": torch.zeros(batch, model.num_betas),
            "Rh": torch.zeros(batch, 3), "Th": torch.zeros(batch, 3)}


def test_layout(model: BodyModel) -> None:
    assert DEMO_BODY_PATH.is_file()
    assert len(SMPL_JOINT_NAMES) == 24 and SMPL_PARENTS[0] == -1
    assert model.parents.tolist()[1:] == list(SMPL_PARENTS[1:])
    assert model.num_vertices == 13380 and model.num_betas == 10
    assert model.faces.dtype == np.int32 and model.faces.shape == (26756, 3)
    assert model.face_uvs is not None and model.face_uvs.shape == (26756, 3, 2)
    assert model.face_uvs.dtype == np.float32 and 0.0 <= model.face_uvs.min() and model.face_uvs.max() <= 1.0
    w = model.lbs_weights
    assert torch.allclose(w.sum(1), torch.ones(model.num_vertices), atol=1e-5)
    assert int((w > 0).sum(1).max()) <= 4
    parts = model.vertex_parts
    assert parts.shape == (model.num_vertices,) and set(np.unique(parts)) == set(range(24))


def test_faces_closed_and_outward(model: BodyModel) -> None:
    f = model.faces.astype(np.int64)
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    # closed and consistently oriented: every directed edge once, and its reverse once
    keys = directed[:, 0] * model.num_vertices + directed[:, 1]
    rev = directed[:, 1] * model.num_vertices + directed[:, 0]
    assert len(np.unique(keys)) == len(keys)
    assert np.array_equal(np.sort(keys), np.sort(rev))
    v = model.v_template.numpy().astype(np.float64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    assert 0.04 < volume < 0.12  # m^3, positive: outward normals; a 60-70 kg human is about 0.065 m^3


def test_zero_pose_is_template_and_rh_th_act_about_origin(model: BodyModel) -> None:
    p = zeros(model)
    out = model(**p)
    assert out.vertices.shape == (1, 13380, 3) and out.joints.shape == (1, 24, 3)
    assert torch.allclose(out.vertices[0], model.v_template, atol=1e-6)
    assert torch.allclose(out.joints[0], model.rest_joints(), atol=1e-6)
    rh, th = torch.tensor([[0.3, -1.1, 0.4]]), torch.tensor([[0.5, -0.2, 2.0]])
    moved = model(p["poses"], p["shapes"], rh, th)
    rot = torch.tensor(axis_angle_to_matrix(rh.numpy().astype(np.float64)), dtype=torch.float32)[0]
    assert torch.allclose(moved.vertices[0], model.v_template @ rot.T + th, atol=1e-5)
    assert torch.allclose(moved.joints[0], model.rest_joints() @ rot.T + th, atol=1e-5)


def test_rest_pose_anatomy(model: BodyModel) -> None:
    v = model.v_template.numpy()
    j = model.rest_joints().numpy()
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.6 < height < 1.9
    assert np.allclose(j[J["pelvis"]], [0.0, -0.23, 0.03], atol=0.03)
    # T-pose: arms horizontal and straight out to the sides
    for side in ("left", "right"):
        sh, el, wr = j[J[f"{side}_shoulder"]], j[J[f"{side}_elbow"]], j[J[f"{side}_wrist"]]
        assert abs(wr[1] - sh[1]) < 0.03 and abs(el[1] - sh[1]) < 0.03
        assert abs(wr[0]) - abs(sh[0]) > 0.4
    assert j[J["left_wrist"], 0] > 0 > j[J["right_wrist"], 0]  # SMPL: the body's left is +x
    # legs straight: ankles under the knees, knees about under the hips
    for side in ("left", "right"):
        hip, knee, ankle = j[J[f"{side}_hip"]], j[J[f"{side}_knee"]], j[J[f"{side}_ankle"]]
        assert hip[1] > knee[1] > ankle[1]
        assert np.linalg.norm((knee - ankle)[[0, 2]]) < 0.02 and np.linalg.norm((hip - knee)[[0, 2]]) < 0.05
    # facing +Z: toes ahead of heels, face ahead of the back of the head
    assert j[J["left_foot"], 2] > j[J["left_ankle"], 2] + 0.05
    foot = v[v[:, 1] < v[:, 1].min() + 0.05]
    ankle_z = j[J["left_ankle"], 2]
    assert foot[:, 2].max() - ankle_z > 2 * (ankle_z - foot[:, 2].min())
    head = v[v[:, 1] > j[J["head"], 1] + 0.05]
    head_centre_z = 0.5 * (head[:, 2].max() + head[:, 2].min())
    nose = head[np.argmax(head[:, 2])]
    assert nose[2] > head_centre_z + 0.08 and abs(nose[0]) < 0.01


def test_left_right_mirror(model: BodyModel) -> None:
    mirror = np.array([-1.0, 1.0, 1.0])
    for shapes in (np.zeros(10), np.array([1.5, -1.0, 2.0, 0.5, -0.5, 1.0, 0.0, -2.0, 1.0, 0.3])):
        j = model.rest_joints(torch.tensor(shapes, dtype=torch.float32)).numpy()
        for left, right in SMPL_MIRROR_PAIRS:
            assert np.linalg.norm(j[left] * mirror - j[right]) < 0.01, (SMPL_JOINT_NAMES[left], shapes)
        for centre in ("pelvis", "spine1", "spine2", "spine3", "neck", "head"):
            assert abs(j[J[centre], 0]) < 0.01


def test_elbow_rotation_bends_forearm(model: BodyModel) -> None:
    p = zeros(model)
    rest = model(**p)
    poses = p["poses"].clone()
    elbow = J["left_elbow"]
    poses[0, 3 * elbow: 3 * elbow + 3] = torch.tensor([0.0, -np.pi / 2, 0.0])  # about +y: forearm turns to +z
    bent = model(poses, p["shapes"], p["Rh"], p["Th"])
    j0, j1 = rest.joints[0].numpy(), bent.joints[0].numpy()
    e = j0[elbow]
    a, b = j0[J["left_wrist"]] - e, j1[J["left_wrist"]] - e
    angle = np.degrees(np.arccos(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)))
    assert abs(angle - 90) < 1
    assert b[2] > 0.2  # forearm now points forward
    assert np.allclose(j1[[J["left_shoulder"], elbow]], j0[[J["left_shoulder"], elbow]], atol=1e-5)
    # upper-arm vertices stay, hand vertices move by about the forearm length
    parts = model.vertex_parts
    moved = np.linalg.norm(bent.vertices[0].numpy() - rest.vertices[0].numpy(), axis=1)
    assert moved[parts == J["left_shoulder"]].max() < 0.05
    assert moved[parts == J["left_hand"]].min() > 0.2
    right_side = parts == J["right_elbow"]
    assert moved[right_side].max() < 1e-6


def test_first_shape_component_changes_height_monotonically(model: BodyModel) -> None:
    betas = np.linspace(-3, 3, 7)
    shapes = torch.zeros(len(betas), 10)
    shapes[:, 0] = torch.tensor(betas, dtype=torch.float32)
    z = torch.zeros(len(betas), 72)
    v = model(z, shapes, torch.zeros(len(betas), 3), torch.zeros(len(betas), 3)).vertices.numpy()
    heights = v[:, :, 1].max(1) - v[:, :, 1].min(1)
    assert np.all(np.diff(heights) > 0.02)
    assert 0.03 < (heights[4] - heights[3]) < 0.12  # one unit ~ one standard deviation of adult height
    # the other components change the body too, by less than height does
    rms = np.sqrt((model.shapedirs.numpy() ** 2).sum(1).mean(0))
    assert np.all(rms > 1e-3) and rms[0] == rms.max()


def test_batched_differentiable_and_shapes_move_joints(model: BodyModel) -> None:
    g = torch.Generator().manual_seed(0)
    poses = (0.2 * torch.randn(3, 72, generator=g)).requires_grad_(True)
    shapes = torch.randn(3, 10, generator=g).requires_grad_(True)
    out = model(poses, shapes, torch.zeros(3, 3), torch.zeros(3, 3))
    (out.vertices.square().sum() + out.joints.sum()).backward()
    assert poses.grad is not None and torch.isfinite(poses.grad).all() and poses.grad.abs().sum() > 0
    assert shapes.grad is not None and shapes.grad.abs().sum() > 0
    tall = model.rest_joints(torch.tensor([2.0] + [0.0] * 9))
    assert tall[J["head"], 1] - tall[J["left_ankle"], 1] > model.rest_joints()[J["head"], 1] - model.rest_joints()[
        J["left_ankle"], 1] + 0.05
    batch = model.rest_joints(torch.zeros(2, 10))
    assert batch.shape == (2, 24, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu(model: BodyModel) -> None:
    gpu = load_body_model(device="cuda")
    poses = 0.3 * torch.randn(2, 72)
    shapes = torch.randn(2, 10)
    rh, th = torch.randn(2, 3), torch.randn(2, 3)
    a = model(poses, shapes, rh, th)
    b = gpu(poses.cuda(), shapes.cuda(), rh.cuda(), th.cuda())
    assert b.vertices.is_cuda
    assert torch.allclose(a.vertices, b.vertices.cpu(), atol=1e-4)
