"""Tracks settled over the whole clip (inference/hand_identity.py): a hand lost and found
again is one track (so the motion prior can fill the frames it was hidden), phantoms are
dropped, two hands at once are a left and a right, a row that slipped onto the other hand
goes, two tracks that took up each other's hand across a loss swap back, a one-side capture
keeps its side."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from handmocap.inference.hand_identity import (
    decide_sides,
    drop_phantoms,
    drop_pulled,
    drop_slips,
    join_reappearing,
    keep_side,
    move_strays,
    settle,
    side_evidence,
    swap_sections,
)
from handmocap.sides import Side
from handmocap.take import OBSERVATION_FIELDS, FrameFlag, Track


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


def test_with_two_hands_a_hand_back_after_any_gap_continues_its_track() -> None:
    """One person's right hand, behind the other arm for 3 s at 30 fps: still one track."""
    first, back = _track(0, 0, 40, 0.9), _track(3, 131, 160, 0.9)
    assert len(join_reappearing((first, back), max_gap=30)) == 2
    (joined,) = join_reappearing((first, back), max_gap=None)
    assert joined.track_id == 0 and len(joined) == 41 + 30


def _weak(track: Track, presence: float) -> Track:
    return replace(track, confidence=np.full_like(track.confidence, presence))


def test_short_weak_tracks_are_dropped_as_phantoms() -> None:
    """At 30 fps, PHANTOM_SECONDS = 0.5 s is 15 frames: a 6-frame track seen with presence
    0.6 is a phantom (as on the office clip); the same seen with 0.95 is a hand that
    briefly entered; 2 frames are never a hand; a long weak track stays."""
    phantom = _weak(_track(1, 10, 15, 0.9), 0.6)
    entered = _weak(_track(2, 20, 25, 0.9), 0.95)
    blip = _weak(_track(3, 30, 31, 0.9), 0.99)
    long_weak = _weak(_track(4, 40, 80, 0.9), 0.6)
    kept = drop_phantoms((phantom, entered, blip, long_weak), fps=30.0)
    assert [t.track_id for t in kept] == [2, 4]
    assert [t.track_id for t in drop_phantoms((phantom,), fps=10.0)] == [1]  # 5 frames at 10 fps


def test_two_hands_on_screen_at_once_are_a_left_and_a_right() -> None:
    """Both tracks read "right" (0.9 and 0.6, e.g. the back hand half hidden the whole
    time): the weaker one is the left hand. Not at the same time, both stay right."""
    sure, unsure = _track(0, 0, 40, 0.9), _track(1, 5, 40, 0.6)
    sides = {t.track_id: t.handedness for t in decide_sides((sure, unsure))}
    assert sides == {0: Side.RIGHT, 1: Side.LEFT}
    later = _track(2, 50, 90, 0.6)
    assert {t.handedness for t in decide_sides((sure, later))} == {Side.RIGHT}


def test_the_side_weighs_confident_frames_more() -> None:
    """10 clear frames at p(right) 0.9 and 20 unsure half-hidden ones at 0.3: the plain
    mean (0.5) cannot tell; weighted by keypoint confidence (0.95 vs 0.2) it is right."""
    track = _track(0, 0, 29, 0.9)
    right = np.r_[np.full(10, 0.9), np.full(20, 0.3)].astype(np.float32)
    conf = np.r_[np.full((10, 21), 0.95), np.full((20, 21), 0.2)].astype(np.float32)
    track = replace(track, right_prob=right, confidence=conf)
    assert side_evidence(track) == pytest.approx((10 * 0.95 * 0.9 + 20 * 0.2 * 0.3) / 13.5)
    assert decide_sides((track,))[0].handedness == Side.RIGHT


def test_a_one_side_capture_says_when_only_the_other_side_was_seen() -> None:
    right, left = _track(0, 0, 47, 0.9), _track(1, 0, 47, 0.1)
    assert keep_side((right, left), Side.LEFT) == ((left,), None)
    assert keep_side((right, left), None) == ((right, left), None)
    kept, warning = keep_side((right,), Side.LEFT)
    assert kept == () and warning == (
        "no left hand was found; a right hand was seen on 48 frames. Capture with --hands "
        "right (Hands: Right in Blender) or both"
    )
    assert keep_side((), Side.LEFT) == ((), None)  # no hands at all: nothing to say here


def test_a_hand_that_appears_far_from_where_one_was_lost_is_another_hand() -> None:
    """Palm 80 px; the new right hand starts 400 px (5 palm lengths) from where the lost
    one was last seen: a third person's hand, not the same one back (JOIN_RADIUS 4)."""
    hand = np.zeros((21, 2), np.float32)
    hand[9] = (0.0, -80.0)
    lost, new = _track(0, 0, 20, 0.9), _track(1, 30, 50, 0.9)
    lost = replace(lost, keypoints_2d=np.broadcast_to(hand + 100.0, lost.keypoints_2d.shape))
    near = replace(new, keypoints_2d=np.broadcast_to(hand + 300.0, new.keypoints_2d.shape))
    away = hand + np.array([500.0, 100.0], np.float32)
    far = replace(new, keypoints_2d=np.broadcast_to(away, new.keypoints_2d.shape))
    assert len(join_reappearing((lost, near), max_gap=None)) == 1  # 2.5 palm lengths
    assert len(join_reappearing((lost, far), max_gap=None)) == 2


def _crossing(track_id: int, start_x: float, y: float, frames: np.ndarray) -> Track:
    """A hand (palm 80 px) moving 20 px a frame from ``start_x`` (frame 0) toward the
    other side, seen on ``frames``."""
    shape = np.random.default_rng(3).uniform(-40.0, 40.0, (21, 2))
    shape[0], shape[9] = (0.0, 40.0), (0.0, -40.0)
    step = 20.0 if start_x < 300 else -20.0
    centres = np.stack([start_x + step * frames, np.full(frames.size, y)], axis=1)
    track = _track(track_id, 0, frames.size - 1, 0.9 if track_id else 0.1)
    return replace(track, frames=frames, keypoints_2d=(centres[:, None] + shape).astype(np.float32))


def test_a_row_that_slipped_onto_the_lost_other_hand_is_dropped() -> None:
    """Hands crossing at frame 10 (A rightward at y 240, B leftward at y 260), B lost on
    frames 9-12. On frame 11 A's lines put A at x 320 and B at x 280; A's row there lies
    between them, 20 px from B's place and 25 px from its own: it goes, and nothing else.
    It stays where B's line has no row within the window, and where it lies on A."""
    frames = np.arange(21)
    a = _crossing(0, 100.0, 240.0, frames)
    b = _crossing(1, 500.0, 260.0, frames[~np.isin(frames, [9, 10, 11, 12])])
    slipped = a.keypoints_2d.copy()
    slipped[11] += np.array([298.0 - 320.0, 252.0 - 240.0], np.float32)
    a_slipped = replace(a, keypoints_2d=slipped)

    out_a, out_b = drop_slips((a_slipped, b), window=15)
    assert np.array_equal(out_a.frames, frames[frames != 11])
    np.testing.assert_array_equal(out_a.keypoints_2d, np.delete(slipped, 11, axis=0))
    assert out_b is b

    assert drop_slips((a_slipped, b), window=2)[0] is a_slipped  # B's last row: frame 8
    assert drop_slips((a, b), window=15)[0] is a


def test_a_row_nearer_the_other_hands_row_than_its_own_line_is_dropped() -> None:
    """The same crossing with B seen on every frame: on frame 11 B's row is at x 280,
    y 260, and A's row lies 19.7 px from it and 25.0 px from A's own line: one estimate
    between two hands that can be told from neither, so it goes. B's row there lies on
    its own line, 19.7 px from A's row: it stays, as does A's row where it lies on A."""
    frames = np.arange(21)
    a = _crossing(0, 100.0, 240.0, frames)
    b = _crossing(1, 500.0, 260.0, frames)
    slipped = a.keypoints_2d.copy()
    slipped[11] += np.array([298.0 - 320.0, 252.0 - 240.0], np.float32)

    out_a, out_b = drop_slips((replace(a, keypoints_2d=slipped), b), window=15)
    assert np.array_equal(out_a.frames, frames[frames != 11])
    assert out_b is b
    kept = drop_slips((a, b), window=15)
    assert kept[0] is a and kept[1] is b


def test_the_last_row_before_a_loss_that_lies_on_the_other_hand_is_dropped() -> None:
    """Hands crossing at frame 10 (A rightward at y 240, B leftward at y 260, palms 80 px),
    A lost on frames 11-13 behind B. A's row on frame 10 pulled onto B's, 30 px from it
    (0.375 palm lengths): it goes, and nothing else. At 60 px (0.75) it stays; so it does
    where B has no row on frame 10, where frame 10 is A's last row, and where A was seen on
    every second frame only (no loss, just the stride)."""
    frames = np.arange(21)
    lost = np.isin(frames, [11, 12, 13])
    a = _crossing(0, 100.0, 240.0, frames[~lost])
    b = _crossing(1, 500.0, 260.0, frames)

    def pulled(track: Track, row: int, px: float) -> Track:
        xy = track.keypoints_2d.copy()
        target = b.keypoints_2d[np.flatnonzero(b.frames == track.frames[row])[0]]
        xy[row] = target + np.array([px, 0.0], np.float32)
        return replace(track, keypoints_2d=xy)

    out_a, out_b = drop_pulled((pulled(a, 10, 30.0), b))
    assert np.array_equal(out_a.frames, frames[~lost & (frames != 10)])
    assert out_b is b
    kept = pulled(a, 10, 60.0)
    assert drop_pulled((kept, b))[0] is kept
    near = pulled(a, 10, 30.0)
    b_away = replace(b, **{n: getattr(b, n)[b.frames != 10] for n in OBSERVATION_FIELDS})
    assert drop_pulled((near, b_away))[0] is near
    ends = _crossing(0, 100.0, 240.0, frames[:11])
    ends = pulled(ends, 10, 30.0)
    assert drop_pulled((ends, b))[0] is ends
    even = _crossing(0, 100.0, 240.0, frames[::2])
    even = pulled(even, 5, 30.0)  # frame 10, next row frame 12: the stride
    assert drop_pulled((even, b))[0] is even
    empty = replace(b, **{n: getattr(b, n)[:0] for n in OBSERVATION_FIELDS})
    out = drop_pulled((pulled(a, 10, 30.0), empty))  # no rows: nothing to compare with
    assert out[1] is empty and len(out[0]) == len(a)


def test_rows_that_ran_on_with_the_lost_hand_go_to_its_track() -> None:
    """Hands crossing at frame 10 (A rightward at y 240, B leftward at y 260, palms 80 px,
    20 px a frame). A slid onto B's hand on frames 11-16 while B was lost; on frame 17
    the tracker gave B its hand back and A its own, 240 px away: a jump no hand makes.
    Rows 11-16 continue B within 20 px a frame at both ends, so they move to B. A jump
    whose rows lie on A's own path, a jump of under a palm length, and a B not seen on
    the frame A jumped to move nothing."""
    frames = np.arange(21)
    lost = np.isin(frames, np.arange(11, 17))
    a = _crossing(0, 100.0, 240.0, frames)
    b_true = _crossing(1, 500.0, 260.0, frames)
    slid = a.keypoints_2d.copy()
    slid[lost] = b_true.keypoints_2d[lost]
    a_slid = replace(a, keypoints_2d=slid)
    b = _crossing(1, 500.0, 260.0, frames[~lost])

    (out_a, out_b), moved = move_strays((a_slid, b))
    assert moved == 6
    assert np.array_equal(out_a.frames, frames[~lost])
    np.testing.assert_array_equal(out_a.keypoints_2d, a.keypoints_2d[~lost])
    assert np.array_equal(out_b.frames, frames)
    np.testing.assert_array_equal(out_b.keypoints_2d, b_true.keypoints_2d)

    jumped = a.keypoints_2d.copy()  # on its own path, then thrown onto B's side at 17
    jumped[17] = b_true.keypoints_2d[17]
    assert move_strays((replace(a, keypoints_2d=jumped), b))[1] == 0
    near = slid.copy()  # the hands 50 px apart: a step of 0.6 palm lengths
    near[lost] = a.keypoints_2d[lost] + np.array([0.0, 50.0], np.float32)
    assert move_strays((replace(a, keypoints_2d=near), b))[1] == 0
    b_back_later = _crossing(1, 500.0, 260.0, frames[(frames <= 10) | (frames >= 18)])
    assert move_strays((a_slid, b_back_later))[1] == 0


def test_rows_next_to_a_slip_do_not_vouch_for_it() -> None:
    """A crossing where A slipped onto B's hand for two frames (rows 10 and 11, 14 and 2 px
    from B's true place), was lost on 12-16, and B's own estimate on frame 11 was pulled
    30 px toward A. A row's own line is drawn between its track's rows at least LINE_GAP
    (2) frames away, so A's line on frame 11 runs from row 9 to row 17 on A's true path,
    42.5 px from the slipped row and 30.1 px from B's: the three estimates that are off
    go, and B's true row on frame 10 stays. Drawn from the next rows (row 10 itself
    slipped), A's line passed 26.2 px from it and both slipped rows stayed while B's true
    row on frame 10 went."""
    frames = np.arange(21)
    a = _crossing(0, 100.0, 240.0, frames[(frames < 12) | (frames > 16)])
    b = _crossing(1, 500.0, 260.0, frames)
    ka, kb = a.keypoints_2d.copy(), b.keypoints_2d.copy()
    ka[10] += np.array([286.0 - 300.0, 258.0 - 240.0], np.float32)  # A's row index = frame
    ka[11] += np.array([282.0 - 320.0, 259.0 - 240.0], np.float32)
    kb[11] += np.array([310.0 - 280.0, 248.0 - 260.0], np.float32)

    out_a, out_b = drop_slips((replace(a, keypoints_2d=ka), replace(b, keypoints_2d=kb)), 15)
    assert np.array_equal(np.setdiff1d(a.frames, out_a.frames), [10, 11])
    assert np.array_equal(np.setdiff1d(b.frames, out_b.frames), [11])


def _seen(track: Track, frames: np.ndarray, reads: dict[int, float] | None = None) -> Track:
    """``track``'s rows on ``frames`` only, with the right-hand probabilities ``reads``
    (frame -> probability) where given."""
    keep = np.isin(track.frames, frames)
    rows = {n: getattr(track, n)[keep] for n in OBSERVATION_FIELDS}
    p_right = rows["right_prob"].copy()
    for frame, p in (reads or {}).items():
        p_right[np.flatnonzero(rows["frames"] == frame)] = p
    return replace(track, **{**rows, "right_prob": p_right})


def test_two_tracks_that_took_up_each_others_hand_across_a_loss_swap_back() -> None:
    """The held-out tutting sweep played back and forth: the hands meet and both are lost
    (A on frames 12-13, B on 12-15); A's crop came back on the right hand (rows 14-26
    read it at 0.9), B's on the left (rows 16-26 at 0.1); both lost again on frame 27 and
    taken up the right way round after. Rows 14-26 of A go to B and rows 16-26 of B to A
    (24 rows): each track then reads its own side on every row."""
    frames = np.arange(41)
    a = _seen(
        _track(0, 0, 40, 0.1),
        frames[(frames < 12) | (frames > 27) | ((frames > 13) & (frames < 27))],
        {f: 0.9 for f in range(14, 27)},
    )
    b = _seen(
        _track(1, 0, 40, 0.9),
        frames[(frames < 12) | (frames > 27) | ((frames > 15) & (frames < 27))],
        {f: 0.1 for f in range(16, 27)},
    )

    (out_a, out_b), moved = swap_sections((a, b))
    assert moved == 13 + 11
    assert np.array_equal(out_a.frames, np.r_[0:12, 16:27, 28:41])
    assert np.array_equal(out_b.frames, np.r_[0:12, 14:27, 28:41])
    assert np.all(out_a.right_prob < 0.5) and np.all(out_b.right_prob > 0.5)
    assert (out_a.handedness, out_b.handedness) == (Side.LEFT, Side.RIGHT)


def test_rows_of_the_other_side_where_that_track_was_lost_go_to_it() -> None:
    """A held-out crossing played ten times: B (right) lost on frames 18-24, and A, lost
    on 18-19 and 24, had its crop on the right hand on frames 20-23 (read at 0.93-0.97):
    those four rows go to B, which had none there. Where A runs on without a loss, its
    rows are cut where their reading turns from one side to the other."""
    frames = np.arange(41)
    a = _seen(
        _track(0, 0, 40, 0.1),
        frames[(frames < 18) | (frames > 24) | ((frames > 19) & (frames < 24))],
        {20: 0.93, 21: 0.97, 22: 0.97, 23: 0.96},
    )
    b = _seen(_track(1, 0, 40, 0.95), frames[(frames < 18) | (frames > 24)])

    (out_a, out_b), moved = swap_sections((a, b))
    assert moved == 4
    assert np.array_equal(out_a.frames, np.r_[0:18, 25:41])
    assert np.array_equal(out_b.frames, np.r_[0:18, 20:24, 25:41])

    # A seen throughout: its rows read its own side on 18-19 and turn on 20 (the crop slid
    # over): only the eight rows from the turn go.
    slid = _seen(_track(0, 0, 40, 0.1), frames, {f: 0.95 for f in range(20, 28)})
    b_lost = _seen(_track(1, 0, 40, 0.95), frames[(frames < 18) | (frames > 27)])
    (out_a, out_b), moved = swap_sections((slid, b_lost))
    assert moved == 8
    assert np.array_equal(out_b.frames, np.r_[0:18, 20:41])


def test_a_misread_side_alone_swaps_nothing() -> None:
    """What does not show a swap: B's rows reading its own side unsurely (0.6) while A's
    read the other side across the same loss (a half-covered hand's handedness is often
    wrong); A running on the other side's rows for only two frames; A reading the other
    side for 13 frames with no loss around them (both seen on every frame); two tracks
    of one side; and two tracks never on screen together."""
    frames = np.arange(41)
    lost = (frames < 12) | (frames > 27) | ((frames > 13) & (frames < 27))
    a = _seen(_track(0, 0, 40, 0.1), frames[lost], {f: 0.9 for f in range(14, 27)})
    b_unsure = _seen(_track(1, 0, 40, 0.9), frames[lost], {f: 0.6 for f in range(14, 27)})
    assert swap_sections((a, b_unsure))[1] == 0

    b_lost = _seen(_track(1, 0, 40, 0.95), frames[(frames < 18) | (frames > 24)])
    a_two = _seen(
        _track(0, 0, 40, 0.1),
        frames[(frames < 18) | (frames > 24) | (frames == 22) | (frames == 23)],
        {22: 0.95, 23: 0.95},
    )
    assert swap_sections((a_two, b_lost))[1] == 0

    a_no_loss = _seen(_track(0, 0, 40, 0.1), frames, {f: 0.9 for f in range(14, 27)})
    assert swap_sections((a_no_loss, _track(1, 0, 40, 0.9)))[1] == 0

    right_a = replace(a, handedness=Side.RIGHT)
    assert swap_sections((right_a, b_unsure))[1] == 0
    assert swap_sections((_track(0, 0, 10, 0.9), _track(1, 20, 30, 0.1)))[1] == 0


def test_settle_swaps_a_swapped_stretch_back_and_counts_it() -> None:
    """The whole-clip pass in capture's order (:func:`settle`) on the tutting case above,
    with the hands in place (left at y 240 moving right, right at y 420 moving left, palms
    80 px): every row of each track ends on its own hand, each track keeps its side, and
    the swapped rows are counted (whatever rows the slip rules drop at the stretch's
    edges)."""
    frames = np.arange(41)
    left, right = _crossing(0, 100.0, 240.0, frames), _crossing(1, 500.0, 420.0, frames)
    stretch_a, stretch_b = (frames >= 14) & (frames <= 26), (frames >= 16) & (frames <= 26)
    ka, kb = left.keypoints_2d.copy(), right.keypoints_2d.copy()
    ka[stretch_a], kb[stretch_b] = right.keypoints_2d[stretch_a], left.keypoints_2d[stretch_b]
    pa = np.where(stretch_a, 0.9, 0.1).astype(np.float32)
    pb = np.where(stretch_b, 0.1, 0.9).astype(np.float32)
    a = replace(left, keypoints_2d=ka, right_prob=pa)
    b = replace(right, keypoints_2d=kb, right_prob=pb)
    a = _seen(a, frames[(frames < 12) | (frames > 27) | ((frames > 13) & (frames < 27))])
    b = _seen(b, frames[(frames < 12) | (frames > 27) | ((frames > 15) & (frames < 27))])

    settled = settle((a, b), fps=24.0, max_gap=None, slip_window=12)
    out_a, out_b = sorted(settled.tracks, key=lambda t: t.track_id)
    assert (out_a.handedness, out_b.handedness) == (Side.LEFT, Side.RIGHT)
    assert settled.swapped >= 20
    np.testing.assert_array_equal(out_a.keypoints_2d, left.keypoints_2d[out_a.frames])
    np.testing.assert_array_equal(out_b.keypoints_2d, right.keypoints_2d[out_b.frames])
