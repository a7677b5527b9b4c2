"""The two-hand benchmark's scoring helpers on numbers (bench/two_hands_eval.py)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from bench.synth.ground_truth import Visibility
from bench.two_hands_eval import (
    acceleration_error_px,
    animated_keypoints,
    hidden_error_grid,
    paired_change,
    score_two_hands,
)
from handmocap.take import EngineFacts, FrameFlag, Take, Track, make_header


def _track(track_id: int, keypoints_3d: np.ndarray | None) -> Track:
    t = 2
    return Track(
        track_id=track_id, handedness="right", frames=np.arange(t),
        keypoints_2d=np.full((t, 21, 2), 7.0), keypoints_rel_depth=np.zeros((t, 21)),
        world_landmarks=np.zeros((t, 21, 3)), confidence=np.full((t, 21), 0.9),
        right_prob=np.full(t, 0.9), flags=np.full(t, FrameFlag.TRACKED, np.uint8),
        keypoints_3d=keypoints_3d,
    )  # fmt: skip


def test_the_animated_hand_is_the_fitted_keypoints_projected_through_the_intrinsics():
    """f = 500 px, centre (320, 240): a keypoint 0.1 m right of the axis and 0.05 m up at
    2 m depth lands 25 px right and 12.5 px up of the centre; the landmark network's
    keypoints (7, 7) are not used, and a track without a fit is left out."""
    k = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    xyz = np.zeros((2, 21, 3))
    xyz[..., 2] = 2.0
    xyz[:, 4] = (0.1, -0.05, 2.0)
    header = make_header("clip.mp4", 30.0, 640, 480, k, "guess",
                         engine=EngineFacts(device="cpu", frames_read=2))  # fmt: skip
    take = Take(header, (_track(0, xyz), _track(1, None)))
    out = animated_keypoints(take)
    assert [t.track_id for t in out.tracks] == [0]
    xy = out.tracks[0].keypoints_2d
    assert xy.shape == (2, 21, 2)
    assert xy[0, 4] == pytest.approx((345.0, 227.5))
    assert xy[1, 0] == pytest.approx((320.0, 240.0))


def _right_hand_partly_hidden() -> SimpleNamespace:
    """Two frames of two hands: the right hand at the origin with its last three
    keypoints hidden by the other hand on both frames, the left hand far off."""
    truth_xy = np.zeros((2, 2, 21, 2))
    truth_xy[:, 1] = 300.0
    visibility = np.full((2, 2, 21), Visibility.VISIBLE, np.int8)
    visibility[:, 0, 18:] = Visibility.OCCLUDED_BY_OTHER_HAND
    return SimpleNamespace(keypoints_px=truth_xy, visibility=visibility, num_hands=2,
                           num_frames=2, handedness=("right", "left"))  # fmt: skip


def test_the_hidden_keypoints_error_says_how_many_keypoints_it_is_over():
    """One track on the right hand of a two-hand clip, 2 frames: its three keypoints
    hidden by the other hand are 10 px off on both frames, the rest 2 px off. The median
    hidden error is 10 px over 6 keypoints; with the second row filled by the prior and
    left out, over 3."""
    truth = _right_hand_partly_hidden()
    xy = np.zeros((2, 21, 2))
    xy[..., 0] = 2.0
    xy[:, 18:, 0] = 10.0
    flags = np.array([FrameFlag.TRACKED, FrameFlag.INFILLED], np.uint8)
    track = replace(_track(0, None), keypoints_2d=xy, flags=flags)
    header = make_header("clip.mp4", 30.0, 640, 480, np.eye(3), "guess",
                         engine=EngineFacts(device="cpu", frames_read=2))  # fmt: skip
    take = Take(header, (track,))
    score = score_two_hands(take, truth)
    assert (score.hidden_px, score.hidden_keypoints, score.visible_px) == (10.0, 6, 2.0)
    seen = score_two_hands(take, truth, infilled=False)
    assert (seen.hidden_px, seen.hidden_keypoints) == (10.0, 3)


def test_the_acceleration_error_counts_jitter_and_a_rounded_turn():
    """A true hand moving 10 px a frame to the right for 6 frames (4 triples of frames). A
    track on it with one keypoint 3 px off on frame 2 errs by 3, 6 and 3 px/frame^2 on
    that keypoint over the three triples around it and by 0 elsewhere: a mean of
    12 / (4 x 21). A track that follows the truth exactly scores 0; one far from every
    hand scores nothing (nan)."""
    n = 6
    truth_xy = np.zeros((n, 2, 21, 2))
    truth_xy[:, 0, :, 0] = 100.0 + 10.0 * np.arange(n)[:, None]
    truth_xy[:, 1] = 900.0  # the other hand, far off
    truth = SimpleNamespace(keypoints_px=truth_xy, num_hands=2, num_frames=n,
                            handedness=("right", "left"))  # fmt: skip

    def take_of(xy: np.ndarray) -> SimpleNamespace:
        track = replace(_track(0, None), frames=np.arange(n), keypoints_2d=xy,
                        keypoints_rel_depth=np.zeros((n, 21)),
                        world_landmarks=np.zeros((n, 21, 3)), confidence=np.full((n, 21), 0.9),
                        right_prob=np.full(n, 0.9),
                        flags=np.full(n, FrameFlag.TRACKED, np.uint8))  # fmt: skip
        return SimpleNamespace(tracks=(track,))

    exact = truth_xy[:, 0].copy()
    assert acceleration_error_px(take_of(exact), truth) == pytest.approx(0.0)
    jittered = exact.copy()
    jittered[2, 5, 1] += 3.0
    assert acceleration_error_px(take_of(jittered), truth) == pytest.approx(12.0 / 4 / 21)
    assert np.isnan(acceleration_error_px(take_of(exact + 500.0), truth))


def test_the_paired_change_compares_hidden_keypoints_both_captures_scored():
    """A two-frame clip, the right hand's three last keypoints hidden on both frames. One
    capture finds the hand on frame 0 only, 12 px off there; the other on both frames,
    6 px off on frame 0 and 30 px off on frame 1. Medians over each capture's own
    keypoints would say 12 px against 18 px (+50%); on the three keypoints both scored,
    6 against 12 px: -50%. A second track on the same hand does not count twice, and a
    row the prior filled is left out when asked."""
    truth = _right_hand_partly_hidden()
    header = make_header("clip.mp4", 30.0, 640, 480, np.eye(3), "guess",
                         engine=EngineFacts(device="cpu", frames_read=2))  # fmt: skip

    def take_of(*offsets: float, flags=(FrameFlag.TRACKED, FrameFlag.TRACKED)) -> Take:
        xy = np.zeros((2, 21, 2))
        for row, off in enumerate(offsets):
            xy[row, 18:, 1] = off
        rows = len(offsets)
        track = replace(_track(0, None), frames=np.arange(rows), keypoints_2d=xy[:rows],
                        keypoints_rel_depth=np.zeros((rows, 21)),
                        world_landmarks=np.zeros((rows, 21, 3)),
                        confidence=np.full((rows, 21), 0.9), right_prob=np.full(rows, 0.9),
                        flags=np.array(flags[:rows], np.uint8))  # fmt: skip
        return Take(header, (track, replace(track, track_id=1, keypoints_2d=xy[:rows] + 40.0)))

    one = hidden_error_grid(take_of(12.0), truth)
    both = hidden_error_grid(take_of(6.0, 30.0), truth)
    assert one.shape == (2, 2, 21)
    assert np.isfinite(one).sum() == 3 and np.isfinite(both).sum() == 6
    np.testing.assert_allclose(both[:, 0, 18:], [[6.0] * 3, [30.0] * 3])
    change, count = paired_change(both, one)
    assert (change, count) == (pytest.approx(-0.5), 3)
    filled = take_of(6.0, 30.0, flags=(FrameFlag.TRACKED, FrameFlag.INFILLED))
    assert np.isfinite(hidden_error_grid(filled, truth, infilled=False)).sum() == 3
    assert paired_change(one, np.full_like(one, np.nan)) == (pytest.approx(np.nan, nan_ok=True), 0)
