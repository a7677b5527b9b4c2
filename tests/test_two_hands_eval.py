"""The two-hand benchmark's scoring helpers on numbers (bench/two_hands_eval.py)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from bench.synth.ground_truth import Visibility
from bench.two_hands_eval import animated_keypoints, score_two_hands
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


def test_the_hidden_keypoints_error_says_how_many_keypoints_it_is_over():
    """One track on the right hand of a two-hand clip, 2 frames: its three keypoints
    hidden by the other hand are 10 px off on both frames, the rest 2 px off. The median
    hidden error is 10 px over 6 keypoints; with the second row filled by the prior and
    left out, over 3."""
    truth_xy = np.zeros((2, 2, 21, 2))
    truth_xy[:, 1] = 300.0  # the left hand, far off
    visibility = np.full((2, 2, 21), Visibility.VISIBLE, np.int8)
    visibility[:, 0, 18:] = Visibility.OCCLUDED_BY_OTHER_HAND
    truth = SimpleNamespace(keypoints_px=truth_xy, visibility=visibility, num_hands=2,
                            num_frames=2, handedness=("right", "left"))  # fmt: skip
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
