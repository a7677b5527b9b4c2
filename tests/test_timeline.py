"""The take's clock on the scene's, without Blender (handmocap.retarget.timeline): where video
frames land, the whole scene frames a hand is keyed on, the solved poses resampled onto them
(checked against slerp computed by hand, in degrees), the scene range behind a re-capture,
and a re-captured range spliced into the keys it replaces."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from handmocap.errors import HandmocapError
from handmocap.retarget.curves import nlerp_curve
from handmocap.retarget.timeline import (
    BLENDER_MAX_FRAME,
    FrameMap,
    TakeTiming,
    check_finite_keys,
    check_rate,
    check_scene_frames,
    hand_series,
    merge_confidence_keys,
    merge_rotation_keys,
    on_scene_frames,
    scene_grid,
    segments,
    take_timing,
)
from handmocap.sides import Side
from handmocap.take import FrameFlag, FrameRange, Take, Track, make_header

STRIDED = FrameRange(10, None, 2)


def _header(fps: float = 15.0, frame_range: FrameRange | None = STRIDED):
    """By default a 30 fps video captured every 2nd frame from frame 10: the take samples at
    15 fps."""
    return make_header("clip.mp4", fps, 640, 480, np.eye(3), "guess", frame_range=frame_range)


def _track(track_id: int, side: str, frames, conf: float, pose: float, mano: bool = True):
    """A track whose MANO pose is ``pose`` everywhere and whose confidence is ``conf``."""
    frames = np.asarray(frames, dtype=np.int64)
    t = len(frames)
    mano_fields = {}
    if mano:
        mano_fields = {
            "mano_pose": np.full((t, 16, 3), pose), "mano_betas": np.zeros(10),
            "translation": np.tile([0.0, 0.0, pose], (t, 1)),
            "rest_keypoints": np.full((21, 3), float(track_id)),
        }  # fmt: skip
    return Track(
        track_id=track_id, handedness=side, frames=frames,
        keypoints_2d=np.zeros((t, 21, 2)), keypoints_rel_depth=np.zeros((t, 21)),
        world_landmarks=np.zeros((t, 21, 3)), confidence=np.full((t, 21), conf),
        right_prob=np.full(t, float(side == "right")),
        flags=np.full(t, FrameFlag.TRACKED, np.uint8), **mano_fields,
    )  # fmt: skip


def _angle_deg(q: np.ndarray) -> np.ndarray:
    """(N,) degrees each unit quaternion (N, 4) turns, by hand: 2 atan2(|xyz|, |w|)."""
    return np.degrees(2.0 * np.arctan2(np.linalg.norm(q[:, 1:], axis=1), np.abs(q[:, 0])))


def _about_z(deg: float) -> np.ndarray:
    half = math.radians(deg) / 2.0
    return np.array([math.cos(half), 0.0, 0.0, math.sin(half)])


# -- the take's clock -------------------------------------------------------------------------
def test_the_clock_of_a_strided_take():
    timing = take_timing(_header())
    assert timing == TakeTiming(fps=15.0, stride=2, first=10)
    assert timing.video_fps == 30.0
    assert take_timing(_header(24.0, None)) == TakeTiming(24.0, 1, 0)  # no range: all, stride 1


def test_a_stride_of_zero_is_refused_not_read_as_one():
    """A header built in memory skips the reader: its stride 0 is named, not taken for 1."""
    with pytest.raises(HandmocapError, match="the take's frame stride is 0; it must be at least 1"):
        take_timing(_header(frame_range=FrameRange(0, None, 0)))


def test_scene_frames_of_a_30_fps_video_with_stride_2_in_a_24_fps_scene():
    """Video frame 10 (the range's first) on scene frame 100; a video frame lasts 24/30 of a
    scene frame, so video frames 12, 14, 20 land on 101.6, 103.2, 108."""
    frame_map = FrameMap.of_take(take_timing(_header()), scene_fps=24.0, scene_start=100)
    assert frame_map == FrameMap(scene_start=100, scene_fps=24.0, video_start=10, video_fps=30.0)
    times = frame_map.to_scene(np.array([10, 12, 14, 20]))
    np.testing.assert_allclose(times, [100.0, 101.6, 103.2, 108.0], atol=1e-12)


def test_the_recapture_range_maps_back_to_the_video_frames_behind_it():
    """Scene frames 100..108 are video frames 10..20 (end exclusive: 21); mapped forward
    again, the range's ends land on its first and last scene frames."""
    frame_map = FrameMap(scene_start=100, scene_fps=24.0, video_start=10, video_fps=30.0)
    start, end = frame_map.video_range(100, 108)
    assert (start, end) == (10, 21)
    np.testing.assert_allclose(frame_map.to_scene(np.array([start, end - 1])), [100.0, 108.0])
    # a range inside: each end the nearest video frame (101 -> 11.25 -> 11, 103 -> 13.75 -> 14)
    assert frame_map.video_range(101, 103) == (11, 15)
    with pytest.raises(HandmocapError, match=r"frames 80-85 are outside the capture"):
        frame_map.video_range(80, 85)  # video frames -15..-9


def test_a_rate_that_spreads_a_video_frame_too_far_is_refused():
    check_rate(TakeTiming(6.0, 1, 0), 24.0)  # 4 scene frames per video frame: the limit
    message = ("the take's frame rate is 5 fps, one sample every 2 frames: each video frame "
               "would spread over 5 scene frames at 24 fps (at most 4 are keyed)")  # fmt: skip
    with pytest.raises(HandmocapError, match=re.escape(message)):
        check_rate(TakeTiming(2.5, 2, 0), 24.0)


def test_frames_blender_cannot_hold_are_refused():
    check_scene_frames(Side.LEFT, np.array([-BLENDER_MAX_FRAME, BLENDER_MAX_FRAME], float))
    with pytest.raises(HandmocapError, match="the take's left hand would land on scene frames "
                       "1 to 1048575, outside the frames Blender can key"):  # fmt: skip
        check_scene_frames(Side.LEFT, np.array([1.0, BLENDER_MAX_FRAME + 1.0]))


# -- one hand over the take -------------------------------------------------------------------
def test_a_hands_tracks_merge_by_frame_the_more_confident_winning():
    take = Take(_header(), (
        _track(0, "right", [10, 12, 14], conf=0.9, pose=0.1),
        _track(1, "right", [14, 16, 18, 20], conf=0.5, pose=0.2),  # loses frame 14
        _track(2, "left", [10, 12], conf=1.0, pose=0.3),
        _track(3, "right", [22], conf=1.0, pose=0.4, mano=False),  # no MANO: not a sample
    ))  # fmt: skip
    series = hand_series(take, Side.RIGHT)
    assert series.side is Side.RIGHT
    np.testing.assert_array_equal(series.frames, [10, 12, 14, 16, 18, 20])
    np.testing.assert_allclose(series.pose[:, 0, 0], [0.1, 0.1, 0.1, 0.2, 0.2, 0.2])
    np.testing.assert_allclose(series.translation[:, 2], [0.1, 0.1, 0.1, 0.2, 0.2, 0.2])
    np.testing.assert_allclose(series.confidence, [0.9, 0.9, 0.9, 0.5, 0.5, 0.5])
    assert series.rest_keypoints[0, 0] == 1.0  # of the longest track
    assert hand_series(Take(_header(), take.tracks[3:]), Side.RIGHT) is None


# -- onto the scene's whole frames ------------------------------------------------------------
def test_segments_split_where_the_hand_was_lost():
    assert segments(np.array([1.0, 2.0, 3.0, 7.0, 8.0]), 1.0) == [slice(0, 3), slice(3, 5)]
    assert segments(np.array([1.0, 2.4]), 1.0) == [slice(0, 2)]  # 1.4 steps: one run
    assert segments(np.array([]), 1.0) == []


def test_the_grid_of_a_strided_take_in_a_slower_scene():
    """The samples of the scene-frames test, 1.6 scene frames apart, with video frames
    16 and 18 lost: frames 100..103 and 108 are keyed, in two segments."""
    times = np.array([100.0, 101.6, 103.2, 108.0])
    grid = scene_grid(times, 24.0 / 15.0)
    assert not grid.integral and grid.key_count == 5
    (seg_a, dst_a), (seg_b, dst_b) = grid.segments
    assert (seg_a, seg_b) == (slice(0, 3), slice(3, 4))
    np.testing.assert_array_equal(dst_a, [100.0, 101.0, 102.0, 103.0])
    np.testing.assert_array_equal(dst_b, [108.0])
    whole = scene_grid(np.array([5.0, 6.0, 7.0]), 1.0)  # same rate: keyed as they are
    assert whole.integral and [d.tolist() for _, d in whole.segments] == [[5.0, 6.0, 7.0]]


def test_rotations_resampled_onto_whole_frames_are_the_slerp():
    """Two samples at scene times 0.5 and 2.5, a bone turning 0 -> 90 degrees about z: the
    keys at frames 1 and 2 are a quarter and three quarters of the way, 22.5 and 67.5
    degrees about z; the location and the confidence are linear, and the confidence drops
    to 0 one frame outside."""
    times = np.array([0.5, 2.5])
    rotations = np.stack([_about_z(0.0), _about_z(90.0)])[:, None]  # (T, B=1, 4)
    locations = np.array([[[0.0, 0.0, 0.0]], [[2.0, 0.0, 0.0]]])
    keys = on_scene_frames(times, rotations, locations, np.array([0.4, 0.8]),
                           scene_grid(times, 2.0))  # fmt: skip
    np.testing.assert_array_equal(keys.frames, [1.0, 2.0])
    q = keys.rotations[:, 0]
    np.testing.assert_allclose(_angle_deg(q), [22.5, 67.5], atol=1e-9)
    np.testing.assert_allclose(q, [_about_z(22.5), _about_z(67.5)], atol=1e-12)
    np.testing.assert_allclose(keys.locations[:, 0, 0], [0.5, 1.5], atol=1e-12)
    np.testing.assert_array_equal(keys.conf_frames, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(keys.conf_values, [0.0, 0.5, 0.7, 0.0], atol=1e-12)


def test_touching_segments_share_their_confidence_keys():
    """A hand lost for one video frame (scene frame 3): the 0 after the first segment and
    the 0 before the second fall on frame 3, keyed once."""
    times = np.array([1.0, 2.0, 4.0, 5.0])
    grid = scene_grid(times, 1.0)
    assert grid.integral and len(grid.segments) == 2
    rotations = np.tile(_about_z(10.0), (4, 1, 1))
    keys = on_scene_frames(times, rotations, None, np.full(4, 0.6), grid)
    assert keys.locations is None
    np.testing.assert_array_equal(keys.frames, [1.0, 2.0, 4.0, 5.0])
    np.testing.assert_array_equal(keys.conf_frames, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    np.testing.assert_allclose(keys.conf_values, [0.0, 0.6, 0.6, 0.0, 0.6, 0.6, 0.0])


def test_a_non_finite_key_is_named():
    values = np.zeros((3, 2, 4))
    values[2, 1, 0] = np.nan
    with pytest.raises(
        HandmocapError,
        match=re.escape(
            "the right hand's rotations are not finite (bone 'index1.R', scene frame 12)"
        ),
    ):
        check_finite_keys(Side.RIGHT, "rotations", values, ("wrist.R", "index1.R"),
                          np.array([10.0, 11.0, 12.0]))  # fmt: skip


# -- re-capturing a range ---------------------------------------------------------------------
def test_a_recaptured_range_replaces_the_keys_there_and_nowhere_else():
    """An earlier curve resting at 0 degrees on frames 0..10, a new one at 90 degrees about
    z on 3..7: merging frames 4..5 shows 90 degrees there, the old pose on every whole frame
    outside (nlerp between the keys, as Blender plays them)."""
    old_f = np.arange(0.0, 11.0)
    old_q = np.tile(_about_z(0.0), (11, 1))
    new_f = np.arange(3.0, 8.0)
    new_q = np.tile(_about_z(90.0), (5, 1))
    frames, quats = merge_rotation_keys(old_f, old_q, new_f, new_q, np.array([4.0, 5.0]))
    shown = nlerp_curve(frames, quats, np.arange(0.0, 11.0))
    np.testing.assert_allclose(_angle_deg(shown), [0, 0, 0, 0, 90, 90, 0, 0, 0, 0, 0],
                               atol=1e-9)  # fmt: skip


def test_a_recaptured_confidence_replaces_the_old_one_in_the_range():
    old_f, old_v = np.arange(0.0, 11.0), np.full(11, 0.9)
    new_f, new_v = np.arange(3.0, 8.0), np.full(5, 0.2)
    frames, values = merge_confidence_keys(old_f, old_v, new_f, new_v, np.array([4.0, 5.0]))
    shown = np.interp(np.arange(0.0, 11.0), frames, values)
    np.testing.assert_allclose(shown, [0.9, 0.9, 0.9, 0.9, 0.2, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9])
    assert merge_confidence_keys(old_f, old_v, new_f, new_v, np.array([8.0, 9.0])) is None
