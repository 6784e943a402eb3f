"""Procedural clothing texture of the synthetic dataset (server.data.synthetic_texture)."""

from __future__ import annotations

import numpy as np
import pytest

from server.data import synthetic_texture as st


def test_rasterize_interpolates_linearly_and_tiles_without_gaps():
    size = 16
    # two triangles covering the unit square; the value is a linear function of uv
    uvs = np.array([[[0, 0], [1, 0], [1, 1]], [[0, 0], [1, 1], [0, 1]]], dtype=np.float64)
    values = (2 * uvs[..., :1] + 3 * uvs[..., 1:])  # (F,3,1)
    out, owner = st.rasterize_uv(uvs, values, size)
    assert (owner >= 0).all()  # no texel missed along the shared diagonal
    centres = (np.arange(size) + 0.5) / size
    expected = 2 * centres[None, :] + 3 * centres[:, None]  # row = v, column = u
    np.testing.assert_allclose(out[..., 0], expected, atol=1e-12)
    below = centres[None, :] > centres[:, None]  # u > v: first triangle
    assert (owner[below] == 0).all() and (owner[~below & ~np.eye(size, dtype=bool)] == 1).all()


def test_rasterize_skips_degenerate_and_uncovered():
    uvs = np.array([[[0.1, 0.1], [0.4, 0.1], [0.1, 0.4]], [[0.5, 0.5], [0.5, 0.5], [0.6, 0.6]]])
    out, owner = st.rasterize_uv(uvs, np.ones((2, 3, 1)), 20)
    assert set(np.unique(owner)) == {-1, 0}
    assert 10 < (owner == 0).sum() < 40  # about half of a 6x6-texel square
    assert not out[owner < 0].any()


@pytest.fixture(scope="module")
def body():
    from server.body.model import load_body_model

    model = load_body_model()
    return model, model.v_template.numpy(), model.rest_joints().numpy()


def test_regions_follow_the_body(body):
    model, rest, joints = body
    marks = st.landmarks(rest, joints)
    regions = st.vertex_regions(rest, model.vertex_parts, marks)
    counts = np.bincount(regions, minlength=5)
    assert (counts > 100).all(), dict(zip(st.REGION_NAMES, counts.tolist(), strict=True))
    assert regions[np.argmin(rest[:, 1])] == st.SHOES  # lowest vertex: a sole
    assert regions[np.argmax(rest[:, 1])] == st.HAIR  # top of the head
    assert regions[np.argmax(rest[:, 0])] == st.SKIN  # fingertip of the T-pose
    chest = np.argmin(np.linalg.norm(rest - (joints[9] + [0, 0, 0.12]), axis=1))
    assert regions[chest] == st.SHIRT
    knee = np.argmin(np.linalg.norm(rest - joints[4], axis=1))
    assert regions[knee] == st.TROUSERS


def test_body_texture_is_deterministic_and_patterned(body):
    model, rest, joints = body
    args = (rest, joints, model.vertex_parts, model.faces, model.face_uvs)
    tex = st.body_texture(*args, size=256)
    assert tex.shape == (256, 256, 3) and tex.dtype == np.uint8
    np.testing.assert_array_equal(tex, st.body_texture(*args, size=256))
    assert len(np.unique(tex.reshape(-1, 3), axis=0)) >= 15  # the palette: stripes, checks, print, skin, hair
    assert tex.min(axis=2).max() > 200 and tex.max(axis=2).min() < 60  # near-white and near-black texels
    # high-frequency content: neighbouring texels differ strongly in many places
    assert (np.abs(np.diff(tex.astype(int), axis=0)).max(axis=2) > 80).mean() > 0.005


def test_paint_puts_the_stripes_in_rest_space(body):
    _, rest, joints = body
    marks = st.landmarks(rest, joints)
    y = np.linspace(0.0, 0.1, 50)
    points = np.stack([np.full_like(y, 0.1), y, np.full_like(y, -0.05)], axis=1)  # the shirt's side
    rgb = st.paint(points, np.full(len(y), st.SHIRT), marks)
    teal = np.all(np.abs(rgb - [0.06, 0.38, 0.46]) < 1e-9, axis=1)
    assert 0.3 < teal.mean() < 0.6 and np.count_nonzero(np.diff(teal.astype(int))) >= 3  # 5 cm period


def test_bad_uvs_are_refused(body):
    model, rest, joints = body
    with pytest.raises(ValueError, match="face_uvs must have shape"):
        st.body_texture(rest, joints, model.vertex_parts, model.faces, model.face_uvs[:10], size=32)
