import numpy as np
import pytest

from handmocap.retarget.rotations import (
    MIRROR_X,
    angle_between,
    axis_angle_to_matrix,
    look_rotation,
    make_continuous,
    matrix_to_axis_angle,
    matrix_to_quat,
    mirror_axes,
    mirror_rotations,
    orthonormalize,
    quat_conjugate,
    quat_exp,
    quat_log,
    quat_multiply,
    quat_slerp,
    quat_to_matrix,
    rotation_about,
)

TILTED = np.array([1.0, 2.0, 2.0]) / 3.0


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


# -- the robust angle, quaternion algebra, hemisphere continuity, the mirror -----------------


def _arccos_of_trace_deg(a: np.ndarray, b: np.ndarray) -> float:
    """The naive form angle_between replaced, for contrast."""
    cos = (np.trace(a.T @ b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def test_angle_of_a_tiny_rotation_is_exact_where_arccos_is_not():
    """0.01 deg between two pose matrices, one 1e-6 away from orthonormal (as float32 pose
    matrices are): the angle comes out 0.01 deg within 1e-6 deg; arccos of the trace is off
    by more than 1e-3 deg."""
    r = axis_angle_to_matrix(np.array([0.3, -0.2, 0.9]))
    b = r @ rotation_about(TILTED, np.radians(0.01))
    stretch = np.eye(3) + 1e-6 * np.array([[1.0, 0.4, -0.2], [0.4, -0.5, 0.3], [-0.2, 0.3, 0.6]])
    noisy = b @ stretch  # a symmetric departure from orthonormality
    assert float(np.degrees(angle_between(r, noisy))) == pytest.approx(0.01, abs=1e-6)
    assert abs(_arccos_of_trace_deg(r, noisy) - 0.01) > 1e-3
    # Quaternions, and a matrix against a quaternion, give the same angle.
    qa, qb = matrix_to_quat(r), matrix_to_quat(b)
    assert float(np.degrees(angle_between(qa, qb))) == pytest.approx(0.01, abs=1e-9)
    assert float(np.degrees(angle_between(r, qb))) == pytest.approx(0.01, abs=1e-9)
    # Below 1e-8 rad arccos has no digits left at all; atan2 keeps them.
    tiny = rotation_about(TILTED, np.array(1e-9))
    assert float(angle_between(np.eye(3), tiny)) == pytest.approx(1e-9, rel=1e-6)
    assert _arccos_of_trace_deg(np.eye(3), tiny) == 0.0


def test_angle_between_quaternions_ignores_sign_and_norm_and_broadcasts():
    q = quat_exp(np.array([[0.0, 0.0, np.radians(30.0)], [np.radians(100.0), 0.0, 0.0]]))
    ident = np.array([1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(np.degrees(angle_between(ident, q)), [30.0, 100.0], atol=1e-12)
    np.testing.assert_allclose(np.degrees(angle_between(3.0 * ident, -q)), [30.0, 100.0],
                               atol=1e-12)  # fmt: skip
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\) or \(\.\.\., 4\)"):
        angle_between(np.zeros(3), ident)


def test_quaternion_algebra_agrees_with_scipy():
    """multiply, log, exp, slerp and the angle, pinned to scipy on random rotations."""
    from scipy.spatial.transform import Rotation, Slerp

    rng = np.random.default_rng(5)
    a, b = Rotation.random(200, random_state=rng), Rotation.random(200, random_state=rng)
    qa, qb = (r.as_quat()[:, [3, 0, 1, 2]] for r in (a, b))
    np.testing.assert_allclose(quat_to_matrix(quat_multiply(qa, qb)), (a * b).as_matrix(),
                               atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(quat_to_matrix(quat_conjugate(qa)), a.inv().as_matrix(), atol=1e-12)
    np.testing.assert_allclose(quat_log(qa), a.as_rotvec(), atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(quat_exp(a.as_rotvec())), a.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(angle_between(qa, qb), (a.inv() * b).magnitude(), atol=1e-12)
    s = rng.uniform(0.0, 1.0, 200)
    want = [Slerp([0.0, 1.0], Rotation.concatenate([a[i], b[i]]))(s[i]) for i in range(200)]
    got = quat_slerp(qa, qb, s)
    np.testing.assert_allclose(quat_to_matrix(got), [w.as_matrix() for w in want], atol=1e-12)


def test_slerp_midpoint_halves_the_angle_the_short_way():
    a = quat_exp(np.array([0.3, -0.2, 0.5]))
    b = quat_multiply(a, quat_exp(np.radians(120.0) * TILTED))
    for other in (b, -b):  # q and -q: the same rotation, the same shortest path
        mid = quat_slerp(a, other, 0.5)
        assert float(np.degrees(angle_between(a, mid))) == pytest.approx(60.0, abs=1e-10)
        assert float(np.degrees(angle_between(mid, b))) == pytest.approx(60.0, abs=1e-10)
        assert float(np.dot(mid, a)) > 0.0  # in a's hemisphere
    np.testing.assert_allclose(quat_slerp(a, b, np.array([0.0, 1.0]))[1], b, atol=1e-12)


def test_log_and_exp_round_trip_down_to_tiny_angles():
    rng = np.random.default_rng(8)
    axes = rng.normal(size=(300, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0.0, np.pi - 1e-6, 280), np.full(10, 1e-10),
                             np.zeros(10)])  # fmt: skip
    r = axes * angles[:, None]
    q = quat_exp(r)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-15)
    np.testing.assert_allclose(quat_log(q), r, atol=1e-12)
    np.testing.assert_allclose(quat_log(-q), r, atol=1e-12)  # q and -q: one rotation
    np.testing.assert_allclose(matrix_to_axis_angle(quat_to_matrix(q)), r, atol=1e-9)


def test_mirroring_twice_is_the_identity_and_keeps_angles_and_points():
    rng = np.random.default_rng(2)
    r = axis_angle_to_matrix(rng.normal(size=(50, 3)))
    np.testing.assert_array_equal(MIRROR_X @ MIRROR_X, np.eye(3))
    np.testing.assert_array_equal(mirror_rotations(mirror_rotations(r)), r)
    m = mirror_rotations(r)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)  # still rotations
    np.testing.assert_allclose(angle_between(m, np.eye(3)), angle_between(r, np.eye(3)),
                               atol=1e-12)  # fmt: skip
    # The mirror of a rotated point is the mirrored rotation of the mirrored point.
    p = rng.normal(size=(50, 3))
    np.testing.assert_allclose(np.einsum("nij,nj->ni", r, p) @ MIRROR_X,
                               np.einsum("nij,nj->ni", m, p @ MIRROR_X), atol=1e-12)  # fmt: skip
    # A turn by t about axis a mirrors to a turn by t about mirror_axes(a).
    axis, t = TILTED, np.radians(35.0)
    np.testing.assert_allclose(mirror_rotations(rotation_about(axis, np.array(t))),
                               rotation_about(mirror_axes(axis), np.array(t)),
                               atol=1e-12)  # fmt: skip
    np.testing.assert_array_equal(mirror_axes(mirror_axes(r[:, 0])), r[:, 0])


def test_make_continuous_removes_sign_flips_and_keeps_rotations():
    spin = quat_exp(np.radians(np.arange(0.0, 200.0, 10.0))[:, None] * TILTED)  # (20, 4)
    flips = np.where(np.random.default_rng(4).random(20) < 0.5, -1.0, 1.0)
    flips[0] = 1.0
    c = make_continuous(spin * flips[:, None])
    np.testing.assert_allclose(c, spin, atol=1e-15)  # the first sets the hemisphere
    two = make_continuous(np.stack([spin * flips[:, None], -spin], axis=1))  # (T, 2, 4)
    assert np.all(np.sum(two[1:] * two[:-1], axis=-1) > 0.0)
    np.testing.assert_allclose(two[:, 1], -spin, atol=1e-15)
    one = spin[:1] * -1.0
    np.testing.assert_array_equal(make_continuous(one), one)
