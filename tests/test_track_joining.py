"""A hand lost and found again is one track (inference/hand_identity.join_reappearing), so the
motion prior can fill the frames it was hidden."""

from __future__ import annotations

import numpy as np

from handmocap.inference.hand_identity import join_reappearing
from handmocap.sides import Side
from handmocap.take import FrameFlag, Track


def _track(track_id: int, first: int, last: int, p_right: float) -> Track:
    n = last - first + 1
    return Track(
        track_id=track_id, handedness=Side.RIGHT if p_right > 0.5 else Side.LEFT,
        frames=np.arange(first, last + 1), keypoints_2d=np.full((n, 21, 2), 100.0, np.float32),
        keypoints_rel_depth=np.zeros((n, 21), np.float32),
        world_landmarks=np.zeros((n, 21, 3), np.float32),
        confidence=np.full((n, 21), 0.9, np.float32), right_prob=np.full(n, p_right, np.float32),
        flags=np.full(n, int(FrameFlag.TRACKED), np.uint8),
    )  # fmt: skip


def test_a_hand_back_within_the_hunt_window_continues_its_track() -> None:
    """Right hand lost at frame 25, back at 43 as a new id (the tracker read its first
    half-hidden frame as a left hand): one track with the first id and a gap of 17."""
    first, back = _track(0, 0, 25, 0.85), _track(2, 43, 71, 0.8)
    (joined,) = join_reappearing((first, back), max_gap=30)
    assert joined.track_id == 0 and joined.handedness == Side.RIGHT
    assert np.array_equal(joined.frames, np.r_[0:26, 43:72])
    assert np.array_equal(joined.right_prob, np.r_[first.right_prob, back.right_prob])


def test_tracks_that_must_stay_apart_do() -> None:
    """Another side, a gap beyond the window, overlapping tracks, and a second track of the
    same side seen in between: nothing is joined."""
    cases = [
        (_track(0, 0, 25, 0.9), _track(1, 40, 60, 0.1)),  # left and right
        (_track(0, 0, 25, 0.9), _track(1, 57, 80, 0.9)),  # 31 frames apart
        (_track(0, 0, 25, 0.9), _track(1, 20, 60, 0.9)),  # both on screen at once
    ]
    for tracks in cases:
        assert len(join_reappearing(tracks, max_gap=30)) == 2
    # two right-hand tracks: the one that reappears continues the latest of them only
    a, b, c = _track(0, 0, 10, 0.9), _track(1, 5, 20, 0.9), _track(2, 30, 40, 0.9)
    out = join_reappearing((a, b, c), max_gap=30)
    assert [len(t) for t in out] == [11, 16 + 11]
