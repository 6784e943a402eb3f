import numpy as np

from neural_human_addon.core.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    orthonormalize,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    rotation_between,
    swing_twist,
    twist_angle,
)


def _random_aa(n: int, seed: int = 0, max_angle: float = np.pi - 1e-3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    return axis * rng.uniform(0, max_angle, size=(n, 1))


def test_round_trips() -> None:
    aa = _random_aa(2000)
    m = axis_angle_to_matrix(aa)
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(m), aa, atol=1e-9)
    q = matrix_to_quaternion(m)
    np.testing.assert_allclose(quaternion_to_matrix(q), m, atol=1e-12)
    np.testing.assert_allclose(quaternion_to_axis_angle(axis_angle_to_quaternion(aa)), aa, atol=1e-9)
    # q and -q are the same rotation
    np.testing.assert_allclose(quaternion_to_matrix(-q), m, atol=1e-12)


def test_quaternion_matches_rodrigues_about_z() -> None:
    q = matrix_to_quaternion(axis_angle_to_matrix(np.array([0.0, 0.0, np.pi / 2])))
    np.testing.assert_allclose(q, [np.sqrt(0.5), 0, 0, np.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(quaternion_to_matrix(q) @ [1.0, 0, 0], [0, 1.0, 0], atol=1e-12)


def test_near_pi_and_identity() -> None:
    aa = np.array([[np.pi, 0, 0], [0, 0, 0], [0, 1e-9, 0], [0, np.pi - 1e-7, 0]])
    back = axis_angle_to_matrix(matrix_to_axis_angle(axis_angle_to_matrix(aa)))
    np.testing.assert_allclose(back, axis_angle_to_matrix(aa), atol=1e-6)


def test_rotation_between_and_swing_twist() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(500, 3)), rng.normal(size=(500, 3))
    r = rotation_between(a, b)
    bn = b / np.linalg.norm(b, axis=-1, keepdims=True)
    an = a / np.linalg.norm(a, axis=-1, keepdims=True)
    np.testing.assert_allclose((r @ an[..., None])[..., 0], bn, atol=1e-9)
    opposite = rotation_between(np.array([0.0, 1, 0]), np.array([0.0, -1, 0]))
    np.testing.assert_allclose(opposite @ [0, 1.0, 0], [0, -1.0, 0], atol=1e-12)

    m = axis_angle_to_matrix(_random_aa(500, seed=4, max_angle=3.0))
    swing, twist = swing_twist(m, an)
    np.testing.assert_allclose(swing @ twist, m, atol=1e-9)
    np.testing.assert_allclose((twist @ an[..., None])[..., 0], an, atol=1e-9)  # twist keeps the axis
    # the swing has no component about the axis
    np.testing.assert_allclose(np.sum(matrix_to_axis_angle(swing) * an, axis=-1), 0.0, atol=1e-9)
    ang = twist_angle(axis_angle_to_matrix(an * 0.7), an)
    np.testing.assert_allclose(ang, 0.7, atol=1e-9)


def test_orthonormalize_removes_scale() -> None:
    m = axis_angle_to_matrix(_random_aa(50, seed=5))
    np.testing.assert_allclose(orthonormalize(100.0 * m), m, atol=1e-12)
