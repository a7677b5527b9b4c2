"""Rotation curves: what Blender shows from LINEAR quaternion keys, key reduction, smoothing,
gap filling and resampling (handmocap.retarget.curves). Angles are measured with
rotations.angle_between, pinned to scipy in test_rotations."""

from __future__ import annotations

import numpy as np
import pytest

from handmocap.errors import CurveError, HandmocapError
from handmocap.retarget.curves import (
    fill_gap,
    nlerp_curve,
    reduce_bones,
    reduce_rotation_keys,
    resample_linear,
    resample_rotations,
    smooth_rotations,
    splice_keys,
    splice_rotation_keys,
)
from handmocap.retarget.rotations import (
    angle_between,
    axis_angle_to_matrix,
    make_continuous,
    matrix_to_quat,
    quat_to_matrix,
)

Z = np.array([0.0, 0.0, 1.0])
TILTED = np.array([1.0, 2.0, 2.0]) / 3.0


def quat(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors (radians) -> (..., 4) quaternions (w >= 0)."""
    return matrix_to_quat(axis_angle_to_matrix(np.asarray(rotvec, dtype=np.float64)))


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees between the rotations of quaternions a and b."""
    return np.degrees(angle_between(a, b))


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quaternion of the rotation matrix product a @ b."""
    return matrix_to_quat(quat_to_matrix(a) @ quat_to_matrix(b))


def spin(axis: np.ndarray, deg_per_frame: float, frames: np.ndarray) -> np.ndarray:
    """(T, 4) constant-velocity rotation about ``axis`` after a fixed offset rotation."""
    offset = quat(np.array([0.3, -0.2, 0.5]))
    turning = quat(np.radians(deg_per_frame) * frames[:, None] * axis)
    return compose(np.broadcast_to(offset, turning.shape), turning)


def smooth_motion(t: int = 600, bones: int = 4, seed: int = 1) -> np.ndarray:
    """(t, bones, 4): each axis a low-frequency sine of 10-60 degrees, with two holds."""
    rng = np.random.default_rng(seed)
    # Time warp with two held stretches: frames 150-249 and 400-469 stand still.
    warp = np.concatenate(
        [np.arange(150), np.full(100, 150), np.arange(151, 301), np.full(70, 300),
         np.arange(301, 301 + t - 470)]
    ).astype(np.float64)  # fmt: skip
    rv = np.empty((t, bones, 3))
    for b in range(bones):
        for a in range(3):
            amp = np.radians(rng.uniform(10.0, 60.0))
            period, phase = rng.uniform(90.0, 300.0), rng.uniform(0.0, 2 * np.pi)
            rv[:, b, a] = amp * np.sin(2 * np.pi * warp / period + phase)
    return quat(rv)


# -- nlerp_curve -----------------------------------------------------------------------------


def test_nlerp_curve_hits_keys_and_the_90_degree_midpoint():
    keys = np.array([0.0, 10.0, 30.0])
    q = quat(np.stack([0 * Z, np.radians(90.0) * Z, np.radians(90.0) * TILTED]))
    out = nlerp_curve(keys, q, np.array([-5.0, 0.0, 5.0, 10.0, 30.0, 40.0]))
    np.testing.assert_allclose(out[[0, 1, 3, 4, 5]], q[[0, 0, 1, 2, 2]], atol=1e-15)
    # Equal weights of 0 and 90 degrees about z: the normalised mean is exactly 45 degrees.
    np.testing.assert_allclose(out[2], [np.cos(np.pi / 8), 0.0, 0.0, np.sin(np.pi / 8)])


def test_nlerp_curve_interpolates_the_numbers_like_blender():
    q = quat(np.radians(90.0) * Z)
    out = nlerp_curve(np.array([0.0, 2.0]), np.stack([q, -q]), np.array([1.0]))
    # q and -q halfway: the sum is zero and Blender's normalize_qt gives (0, 1, 0, 0).
    np.testing.assert_array_equal(out, [[0.0, 1.0, 0.0, 0.0]])


# -- reduce_rotation_keys ------------------------------------------------------------------------


def reconstruction_error(frames: np.ndarray, q: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(T,) degrees between q and what Blender shows from the continuous keys in ``keep``."""
    qc = make_continuous(q)
    return angle_deg(nlerp_curve(frames[keep], qc[keep], frames), q)


def test_reduce_keeps_a_smooth_motion_within_tolerance_with_few_keys():
    q = smooth_motion()
    frames = np.arange(len(q), dtype=np.float64)
    masks = reduce_bones(frames, q, 1.0)
    assert len(masks) == q.shape[1]
    for b, keep in enumerate(masks):
        assert keep[0] and keep[-1]
        err = reconstruction_error(frames, q[:, b], keep)
        # 1e-9 deg: the two angle formulas differ by rounding only.
        assert err.max() <= 1.0 + 1e-9, f"bone {b}: {err.max():.4f} deg"
    removed = 1.0 - np.mean(masks)
    assert removed >= 0.6, f"only {removed:.1%} of the keys removed at 1 deg"


def test_reduce_with_zero_tolerance_keeps_a_noisy_signal():
    rng = np.random.default_rng(2)
    q = quat(np.radians(5.0) * rng.normal(size=(300, 3)))
    keep = reduce_rotation_keys(np.arange(300.0), q, 0.0)
    assert keep.mean() >= 0.99, f"{keep.mean():.1%} kept"


def test_reduce_constant_signal_to_two_keys():
    q = np.tile(quat(np.array([0.2, -0.4, 0.9])), (200, 1))
    keep = reduce_rotation_keys(np.arange(200.0), q, 1e-6)
    assert np.flatnonzero(keep).tolist() == [0, 199]


def test_reduce_sees_through_sign_flips():
    q = smooth_motion(bones=1)[:, 0]
    frames = np.arange(len(q), dtype=np.float64)
    flipped = q.copy()
    flipped[1::2] *= -1.0
    keep = reduce_rotation_keys(frames, flipped, 1.0)
    np.testing.assert_array_equal(keep, reduce_rotation_keys(frames, q, 1.0))
    assert reconstruction_error(frames, flipped, keep).max() <= 1.0 + 1e-9
    # Keying the raw values instead would spin through zero between opposite keys.
    raw = angle_deg(nlerp_curve(frames[keep], flipped[keep], frames), q)
    assert keep.sum() < 0.2 * len(q) and raw.max() > 10.0


def test_reduce_uneven_frames_and_locations():
    frames = np.cumsum(np.random.default_rng(3).uniform(0.5, 2.0, size=100))
    q = np.tile(quat(0.3 * TILTED), (100, 1))
    loc = np.zeros((100, 3))
    loc[:, 0] = np.minimum(frames, frames[40])  # moves, then stops at frame 40
    keep = reduce_rotation_keys(frames, q, 1.0, loc, 1e-6)
    assert np.flatnonzero(keep).tolist() == [0, 40, 99]
    loose = reduce_rotation_keys(frames, q, 1.0, loc, 1e3)
    assert np.flatnonzero(loose).tolist() == [0, 99]


# -- smooth_rotations --------------------------------------------------------------------------


def test_smooth_keeps_a_constant_rotation():
    q = np.tile(quat(np.array([0.5, 1.0, -0.3])), (50, 3, 1))
    q[::3] *= -1.0  # signs do not matter
    out = smooth_rotations(q, 3.0)
    np.testing.assert_allclose(out, q, atol=1e-9)


def test_smooth_reduces_noise_by_the_gaussian_factor():
    rng = np.random.default_rng(4)
    base = quat(np.array([0.4, 0.1, -0.7]))
    noise = quat(np.radians(2.0) * rng.normal(size=(3000, 2, 3)))
    q = compose(np.broadcast_to(base, noise.shape), noise)
    before = np.sqrt(np.mean(angle_deg(q, base) ** 2))
    after = np.sqrt(np.mean(angle_deg(smooth_rotations(q, 3.0), base) ** 2))
    # White noise through a Gaussian: std x sqrt(sum k^2) = 1 / sqrt(2 sqrt(pi) sigma) = 0.31.
    ratio = after / before
    assert 0.25 < ratio < 0.4, f"rms {before:.3f} -> {after:.3f} deg (ratio {ratio:.3f})"


def test_smooth_step_is_symmetric():
    a, b = quat(0.0 * TILTED), quat(np.radians(40.0) * TILTED)
    q = np.concatenate([np.tile(a, (30, 1, 1)), np.tile(b, (30, 1, 1))])
    ang = angle_deg(smooth_rotations(q, 2.5)[:, 0], a)
    np.testing.assert_allclose(ang[30:], 40.0 - ang[:30][::-1], atol=1e-9)
    assert 0.5 < ang[29] < 20.0 < ang[30] < 39.5  # actually smoothed, still monotone
    assert np.all(np.diff(ang) >= -1e-12)


def test_smooth_a_frame_range_leaves_the_rest_bit_identical():
    rng = np.random.default_rng(5)
    q = quat(np.radians(10.0) * rng.normal(size=(80, 2, 3)))
    mask = np.zeros(80, dtype=bool)
    mask[30:50] = True
    out = smooth_rotations(q, 4.0, mask)
    np.testing.assert_array_equal(out[~mask], q[~mask])
    # Inside, neighbours on both sides (outside the range too) are used.
    np.testing.assert_allclose(out[mask], smooth_rotations(q, 4.0)[mask], atol=1e-15)
    assert angle_deg(out[mask], q[mask]).min() > 0.1


def test_smooth_short_takes():
    q = quat(np.array([[[0.1, 0.2, 0.3]]]))
    np.testing.assert_allclose(smooth_rotations(q, 5.0), q, atol=1e-15)  # T = 1
    q3 = quat(np.radians(np.array([[[0.0, 0.0, 0.0]], [[0.0, 0.0, 10.0]], [[0.0, 0.0, 20.0]]])))
    out = smooth_rotations(q3, 5.0)  # kernel of 41 taps over 3 frames
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0)
    ang = angle_deg(out[:, 0], q3[0, 0])
    assert 0.0 < ang[0] < ang[1] < ang[2] < 20.0
    assert ang[1] == pytest.approx(10.0, abs=1e-9)  # the mirror is symmetric about the middle
    assert smooth_rotations(q3, 0.0) is not q3
    np.testing.assert_array_equal(smooth_rotations(q3, 0.0), q3)


# -- fill_gap ------------------------------------------------------------------------------------


def test_fill_gap_in_a_steady_spin():
    frames = np.arange(100.0)
    truth = spin(TILTED, 2.0, frames)[:, None]
    q = truth.copy()
    gap = np.zeros(100, dtype=bool)
    gap[40:60] = True
    q[gap] = np.nan  # never read
    out = fill_gap(frames, q, gap)
    err = angle_deg(out, truth)
    assert err.max() < 0.5, f"{err.max():.2e} deg"
    np.testing.assert_array_equal(out[~gap], truth[~gap])


def test_fill_gaps_in_a_changing_motion_match_the_velocity():
    frames = np.arange(200.0)
    w = 2 * np.pi / 120.0
    rv = np.stack(
        [np.radians(30.0) * np.sin(w * frames), np.radians(20.0) * np.sin(0.7 * w * frames + 1),
         np.full(200, 0.2)], axis=1)  # fmt: skip
    truth = quat(rv)[:, None]
    gap = np.zeros(200, dtype=bool)
    gap[20:32] = gap[60:70] = gap[75:80] = True  # three runs, two of them close together
    out = fill_gap(frames, truth, gap)
    err = angle_deg(out, truth)
    assert err.max() < 0.5, f"{err.max():.3f} deg"
    # Plain slerp across the first run (no velocity matching) is much worse (1.7 deg).
    slerp = resample_rotations(frames[[19, 32]], truth[[19, 32]], frames[20:32])
    assert err[20:32].max() < 0.5 * angle_deg(slerp, truth[20:32]).max()


def test_fill_gap_at_the_ends_holds_the_nearest_good_rotation():
    frames = np.arange(30.0)
    q = spin(Z, 3.0, frames)[:, None].repeat(2, axis=1)
    gap = np.zeros(30, dtype=bool)
    gap[:5] = gap[25:] = True
    out = fill_gap(frames, q, gap)
    np.testing.assert_array_equal(out[:5], np.broadcast_to(q[5], (5, 2, 4)))
    np.testing.assert_array_equal(out[25:], np.broadcast_to(q[24], (5, 2, 4)))
    np.testing.assert_array_equal(out[5:25], q[5:25])


def test_fill_gap_caps_wild_extrapolation():
    frames = np.arange(60.0)
    q = spin(Z, 10.0, frames)[:, None]  # fast spin, then the hand stops
    q[30:] = q[29]
    q[35:] = spin(Z, -10.0, frames[35:] - 70.0)[:, None]  # and spins back
    gap = np.zeros(60, dtype=bool)
    gap[20:50] = True
    out = fill_gap(frames, q, gap)
    slerp = resample_rotations(frames[[19, 50]], q[[19, 50]], frames[20:50])
    # Within (8/27) * 90 degrees of the slerp (about one axis the bound is exact); uncapped,
    # the extrapolated velocities swing it 77 degrees away.
    assert angle_deg(out[20:50], slerp).max() <= 8 / 27 * 90.0 + 1e-9
    uncapped = fill_gap(frames, q, gap, max_excursion_deg=1e9)
    assert angle_deg(uncapped[20:50], slerp).max() > 60.0


def test_fill_gap_without_good_frames_raises():
    with pytest.raises(ValueError, match="at least one good frame"):
        fill_gap(np.arange(5.0), np.zeros((5, 1, 4)), np.ones(5, dtype=bool))


# -- resampling ----------------------------------------------------------------------------------


def test_resample_30_to_24_fps_is_exact_for_a_steady_spin():
    src = np.arange(90) / 30.0
    dst = np.arange(72) / 24.0
    rate = 90.0  # deg/s about a tilted axis, after an offset
    q = np.stack([spin(TILTED, rate, src), spin(Z, -40.0, src)], axis=1)
    q[::2] *= -1.0  # sign flips in the source must not matter
    out = resample_rotations(src, q, dst)
    truth = np.stack([spin(TILTED, rate, dst), spin(Z, -40.0, dst)], axis=1)
    err = angle_deg(out, truth)
    assert err.max() < 1e-6, f"{err.max():.2e} deg"
    assert np.all(np.sum(out[1:] * out[:-1], axis=-1) > 0.0)  # sign-continuous
    # Clamped outside the source range.
    ends = resample_rotations(src, q, np.array([-1.0, 10.0]))
    assert angle_deg(ends, q[[0, -1]]).max() < 1e-6


def test_resample_linear():
    src = np.array([0.0, 1.0, 3.0])
    values = np.array([[0.0, 1.0], [2.0, 1.0], [6.0, -3.0]])
    out = resample_linear(src, values, np.array([-1.0, 0.5, 2.0, 3.0, 9.0]))
    np.testing.assert_allclose(out, [[0, 1], [1, 1], [4, -1], [6, -3], [6, -3]])


# -- splicing a range ------------------------------------------------------------------------


def _outside_drift_deg(kf, kq, f2, q2, start, end):
    """Largest angle (degrees) on the whole frames outside [start, end], within the old
    keys' span, between what the old and the spliced curves show."""
    frames = np.arange(kf[0], kf[-1] + 1.0)
    frames = frames[(frames < start) | (frames > end)]
    return float(angle_deg(nlerp_curve(kf, kq, frames), nlerp_curve(f2, q2, frames)).max())


@pytest.mark.parametrize(
    "key_frames",
    [
        np.arange(0.0, 61.0),  # one key per frame, as a fresh capture
        np.array([0.0, 12.0, 50.0, 60.0]),  # reduced to a few keys across the range
        np.array([0.0, 7.0, 29.0, 33.0, 41.0, 60.0]),  # keys right at the boundaries
        np.array([0.0, 20.0]),  # the curve ends before the range
        np.array([45.0, 60.0]),  # ... and starts after it
    ],
    ids=["dense", "sparse", "boundary", "ends_before", "starts_after"],
)
def test_splice_keeps_every_frame_outside_the_range(key_frames):
    rng = np.random.default_rng(5)
    kq = make_continuous(quat(rng.normal(0.0, 0.8, (len(key_frames), 3))))
    kq *= rng.uniform(0.9, 1.1, (len(kq), 1))  # keyed values need not be unit length
    new_frames = np.arange(30.0, 41.0)
    new_q = -quat(rng.normal(0.0, 0.8, (len(new_frames), 3)))  # the other hemisphere
    f2, q2 = splice_rotation_keys(key_frames, kq, 30, 40, new_frames, new_q)
    assert np.all(np.diff(f2) > 0)
    assert _outside_drift_deg(key_frames, kq, f2, q2, 30, 40) < 1e-9
    inside = (f2 >= 30) & (f2 <= 40)
    np.testing.assert_array_equal(f2[inside], new_frames)
    assert angle_deg(q2[inside], new_q).max() < 1e-9  # the new poses, up to sign
    assert np.all(np.sum(q2[1:] * q2[:-1], axis=1) > 0)  # no long-way spin at the seams


def test_splice_adds_a_key_only_where_a_kept_segment_crosses_the_boundary():
    kf = np.array([0.0, 12.0, 50.0, 60.0])
    kv = np.array([[0.0], [12.0], [50.0], [60.0]])  # value == frame: a straight line
    f, v = splice_keys(kf, kv, 30, 40, np.array([30.0, 35.0, 40.0]), np.full((3, 1), -1.0))
    np.testing.assert_array_equal(f, [0, 12, 29, 30, 35, 40, 41, 50, 60])
    np.testing.assert_allclose(v[:, 0], [0, 12, 29, -1, -1, -1, 41, 50, 60])
    # Keys already on the boundary frames: nothing to add.
    kf = np.array([0.0, 29.0, 41.0, 60.0])
    f, _ = splice_keys(kf, kf[:, None], 30, 40, np.array([35.0]), np.zeros((1, 1)))
    np.testing.assert_array_equal(f, [0, 29, 35, 41, 60])
    # No old keys at all: the new keys alone.
    f, v = splice_keys(np.zeros(0), np.zeros((0, 1)), 30, 40, np.array([35.0]), np.ones((1, 1)))
    np.testing.assert_array_equal(f, [35])


def test_splice_refuses_new_keys_outside_the_range():
    with pytest.raises(ValueError, match="inside"):
        splice_keys(np.arange(5.0), np.zeros((5, 1)), 1, 2, np.array([3.0]), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="empty"):
        splice_keys(np.arange(5.0), np.zeros((5, 1)), 3, 2, np.array([3.0]), np.zeros((1, 1)))


# -- shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: nlerp_curve(np.arange(3.0), np.zeros((3, 3)), np.arange(2.0)), r"\(K, 4\)"),
        (lambda: reduce_rotation_keys(np.arange(4.0), np.ones((5, 4)), 1.0), r"\(T, 4\)"),
        (
            lambda: reduce_rotation_keys(np.arange(4.0), np.ones((4, 4)), 1.0, np.ones((4, 2))),
            r"\(T, 3\)",
        ),
        (lambda: reduce_bones(np.arange(4.0), np.ones((4, 4)), 1.0), r"\(T, B, 4\)"),
        (lambda: smooth_rotations(np.ones((4, 4)), 1.0), r"\(T, B, 4\)"),
        (lambda: smooth_rotations(np.ones((4, 1, 4)), 1.0, np.ones(3, bool)), r"\(T,\)"),
        (lambda: fill_gap(np.arange(4.0), np.ones((4, 4)), np.ones(4, bool)), r"\(T, B, 4\)"),
        (lambda: fill_gap(np.arange(4.0), np.ones((4, 1, 4)), np.ones((4, 1), bool)), r"\(T,\)"),
        (lambda: resample_rotations(np.arange(4.0), np.ones((3, 1, 4)), [0.5]), r"\(T, B, 4\)"),
        (lambda: resample_linear(np.arange(4.0), np.ones((3, 2)), [0.5]), r"\(T, \.\.\.\)"),
        (lambda: resample_linear(np.ones((4, 1)), np.ones((4, 2)), [0.5]), r"\(T,\)"),
        (
            lambda: reduce_rotation_keys(np.array([0.0, 2.0, 1.0]), np.ones((3, 4)), 1.0),
            "increasing",
        ),
    ],
)
def test_bad_shapes_raise_value_error(call, expected):
    with pytest.raises(ValueError, match=expected):
        call()


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        # what the cleanup tools meet in an edited action: a NaN typed into a key
        (lambda: smooth_rotations(np.full((4, 1, 4), np.nan), 1.0), "NaN"),
        (lambda: reduce_rotation_keys(np.arange(3.0), np.zeros((3, 4)), 1.0), "zero quaternion"),
        (lambda: fill_gap(np.arange(5.0), np.zeros((5, 1, 4)), np.ones(5, bool)), "good frame"),
        (lambda: splice_keys(np.arange(3.0), np.zeros((3, 1)), 2, 1, [1.0], [[0.0]]), "empty"),
        (lambda: nlerp_curve(np.array([0.0, 0.0]), np.ones((2, 4)), [0.0]), "increasing"),
        (lambda: resample_linear(np.arange(4.0), np.ones((3, 2)), [0.5]), r"\(T, \.\.\.\)"),
    ],
)
def test_refusals_are_handmocap_errors_the_addon_reports_as_one_line(call, expected):
    """The add-on's operators report a HandmocapError as one line; any other exception
    reaches the user as a bug with a traceback. Every refusal of the curve maths is a
    CurveError: a HandmocapError naming the array, and still a ValueError."""
    with pytest.raises(HandmocapError, match=expected) as raised:
        call()
    assert isinstance(raised.value, CurveError) and isinstance(raised.value, ValueError)
