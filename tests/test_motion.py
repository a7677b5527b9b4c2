"""Synthetic motion: inside the limits, smooth, and determined by the seed."""

import numpy as np

from bench.synth.motion import (
    KEY_POSES,
    articulation_track,
    fast_finger_track,
    random_pose,
    wrist_track,
)
from handmocap.retarget.joint_limits import limits_array
from handmocap.retarget.rotations import angle_between

FPS = 24.0


def test_every_frame_is_inside_the_limits():
    lim = limits_array()
    track = articulation_track(np.random.default_rng(0), 400, FPS)
    assert track.shape == (400, 25, 3)
    assert np.all(track >= lim[..., 0] - 1e-9) and np.all(track <= lim[..., 1] + 1e-9)
    for pose in [*KEY_POSES.values(), random_pose(np.random.default_rng(1))]:
        assert np.all(pose >= lim[..., 0] - 1e-9) and np.all(pose <= lim[..., 1] + 1e-9)


def test_articulation_is_smooth_and_moves():
    track = articulation_track(np.random.default_rng(2), 480, FPS)
    step = np.abs(np.diff(track, axis=0)).max()
    # Fastest key-pose change is ~105 deg over 0.5 s with minimum-jerk peak speed 1.875x the
    # mean: ~16.4 deg/frame at 24 fps, plus jitter. Anything above 20 deg/frame is a jump.
    assert step < 20.0
    assert np.ptp(track[:, :, 0], axis=0).max() > 60.0  # fingers really flex


def test_same_seed_same_motion_other_seed_other_motion():
    a = articulation_track(np.random.default_rng(3), 100, FPS)
    b = articulation_track(np.random.default_rng(3), 100, FPS)
    c = articulation_track(np.random.default_rng(4), 100, FPS)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 10.0


def _peak_step(track: np.ndarray) -> np.ndarray:
    """(T - 1,) largest change of any anatomical angle from one frame to the next, degrees."""
    return np.abs(np.diff(track, axis=0)).max(axis=(1, 2))


def test_fast_fingers_stay_inside_the_limits_and_outrun_natural_motion():
    lim = limits_array()
    for seed in range(10, 16):
        fast = fast_finger_track(np.random.default_rng(seed), 240, FPS)
        natural = articulation_track(np.random.default_rng(seed), 240, FPS)
        assert fast.shape == (240, 25, 3)
        assert np.all(fast >= lim[..., 0] - 1e-9) and np.all(fast <= lim[..., 1] + 1e-9)
        # Fist <-> spread moves the PIPs ~100 deg in at most 0.3 s (7 frames): minimum-jerk
        # peak 1.875 x 100 / 7 = 27 deg/frame; natural motion peaks below 20 (see above).
        assert _peak_step(fast).max() >= 2.0 * _peak_step(natural).max(), seed
        # Not one burst: quick moves fill a good part of the clip.
        assert np.mean(_peak_step(fast) > 20.0) > 0.1, seed
        assert np.ptp(fast[:, :, 0], axis=0).max() > 60.0


def test_fast_fingers_are_determined_by_the_seed():
    a = fast_finger_track(np.random.default_rng(3), 100, FPS)
    np.testing.assert_array_equal(a, fast_finger_track(np.random.default_rng(3), 100, FPS))
    assert np.abs(a - fast_finger_track(np.random.default_rng(4), 100, FPS)).max() > 10.0


def test_wrist_track_wobbles_within_its_amplitude():
    base = np.eye(3)
    start, end = np.array([0.0, 0.08, 0.5]), np.array([0.05, 0.08, 0.55])
    w = wrist_track(
        np.random.default_rng(5), 240, FPS, base, start, end, rotation_amplitude_deg=30.0
    )
    np.testing.assert_allclose(
        w.rotations @ np.swapaxes(w.rotations, 1, 2),
        np.broadcast_to(np.eye(3), (240, 3, 3)),
        atol=1e-9,
    )
    off_base = np.degrees(angle_between(w.rotations, base))
    assert off_base.max() <= 30.0 * np.sqrt(3) + 1e-6
    assert off_base.max() > 5.0
    np.testing.assert_allclose(w.positions[0], start, atol=0.031)
    np.testing.assert_allclose(w.positions[-1], end, atol=0.031)
