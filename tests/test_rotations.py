import numpy as np
import pytest

from handmocap.retarget.rotations import (
    angle_between,
    axis_angle_to_matrix,
    look_rotation,
    matrix_to_axis_angle,
    matrix_to_quat,
    orthonormalize,
    quat_to_matrix,
    rotation_about,
)


def test_quarter_turn_about_z_maps_x_to_y():
    r = axis_angle_to_matrix(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(r @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    q = matrix_to_quat(r)  # (w, x, y, z) of 90 deg about z
    np.testing.assert_allclose(q, [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)], atol=1e-12)


def test_round_trips_over_batches():
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(4, 5, 3))
    aa *= (rng.uniform(0, np.pi - 1e-3, size=(4, 5)) / np.linalg.norm(aa, axis=-1))[..., None]
    m = axis_angle_to_matrix(aa)
    assert m.shape == (4, 5, 3, 3)
    np.testing.assert_allclose(matrix_to_axis_angle(m), aa, atol=1e-9)
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(m)), m, atol=1e-12)


def test_angle_between_in_degrees():
    a = rotation_about(np.array([1.0, 0.0, 0.0]), np.radians(10.0))
    b = rotation_about(np.array([1.0, 0.0, 0.0]), np.radians(47.0))
    assert np.degrees(angle_between(a, b)) == pytest.approx(37.0, abs=1e-9)


def test_orthonormalize_repairs_a_noisy_rotation():
    r = axis_angle_to_matrix(np.array([0.3, -0.2, 0.9]))
    noisy = r + 1e-3 * np.random.default_rng(1).normal(size=(3, 3))
    fixed = orthonormalize(noisy)
    np.testing.assert_allclose(fixed @ fixed.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(fixed) == pytest.approx(1.0)
    assert np.degrees(angle_between(fixed, r)) < 0.2


def test_look_rotation_columns():
    r = look_rotation(np.array([0.0, 0.0, 2.0]), np.array([0.0, 1.0, 0.3]))
    np.testing.assert_allclose(r[:, 2], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(r[:, 1], [0, 1, 0], atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        axis_angle_to_matrix(np.zeros((2, 4)))


def test_numpy_conversions_agree_with_scipy():
    """retarget/ runs in Blender without scipy, so it has its own conversions: pin them to
    scipy's on random rotations, including angles near 0 and near pi."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(3)
    axes = rng.normal(size=(400, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate(
        [rng.uniform(0, np.pi, 340), np.full(30, 1e-10), np.pi - 1e-7 * rng.random(30)]
    )
    aa = axes * angles[:, None]
    ref = Rotation.from_rotvec(aa)
    np.testing.assert_allclose(axis_angle_to_matrix(aa), ref.as_matrix(), atol=1e-12)
    q = matrix_to_quat(ref.as_matrix())
    sp = ref.as_quat()[:, [3, 0, 1, 2]]
    sp *= np.where(sp[:, :1] < 0, -1.0, 1.0)
    same = np.abs(np.sum(q * sp, axis=1))  # q and -q are one rotation when w == 0
    np.testing.assert_allclose(same, 1.0, atol=1e-12)
    back = Rotation.from_rotvec(matrix_to_axis_angle(ref.as_matrix()))
    assert np.degrees((back * ref.inv()).magnitude()).max() < 1e-6
