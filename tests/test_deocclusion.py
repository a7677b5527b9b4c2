"""The de-occlusion stage's numpy/OpenCV parts on numbers (inference/deocclusion.py):
silhouettes, fills, the background, the centre filter and the decision; and the tracker's
rule for a hand found behind another."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from handmocap.inference import deocclusion as de
from handmocap.inference.geometry import Roi
from handmocap.inference.hand_landmarks import HandLandmarks, roi_from_landmarks
from handmocap.inference.tracker import HandTracker, TrackerConfig
from handmocap.take import FrameFlag

CONFIG = de.DeocclusionConfig()


def _open_hand(wrist: tuple[float, float], palm_px: float = 80.0) -> np.ndarray:
    """(21, 2) keypoints of a flat open hand, fingers up, palm length ``palm_px``."""
    x0, y0 = wrist
    xy = np.zeros((21, 2))
    xy[0] = (x0, y0)
    bases = {1: -0.45, 5: -0.3, 9: -0.05, 13: 0.18, 17: 0.38}  # knuckle x, in palm lengths
    for base, dx in bases.items():
        knuckle = np.array([x0 + dx * palm_px, y0 - (0.6 if base == 1 else 1.0) * palm_px])
        for k in range(4):  # the knuckle, then three joints straight up, 0.3 palm apart
            xy[base + k] = knuckle + np.array([0.0, -0.3 * palm_px * k])
    xy[9] = (x0, y0 - palm_px)  # the middle knuckle defines the palm length exactly
    return xy


def test_the_silhouette_covers_the_hand_and_its_forearm_in_proportion():
    xy = _open_hand((200.0, 300.0), palm_px=80.0)
    mask = de.hand_mask(xy, (480, 400), CONFIG)
    assert de.palm_length(xy) == pytest.approx(80.0)
    ij = np.round(xy).astype(int)
    assert mask[ij[:, 1], ij[:, 0]].all()  # every keypoint inside
    # A finger is a capsule (0.30 + 0.08) x 80 = 30 px wide: across the middle finger's
    # middle joint, 30 +- 2 px of the row are hand (the neighbours are 20 px away).
    row = mask[int(xy[10, 1])]
    run = np.flatnonzero(row[int(xy[10, 0]) - 12 : int(xy[10, 0]) + 13])
    assert run.size >= 25
    # The forearm reaches 1.2 palm lengths (96 px) below the wrist, and no further.
    assert mask[300 + 90, 200] and not mask[300 + 96 + 40, 200]
    # Nothing far from the hand.
    assert not mask[20, 20] and not mask[300, 380]


def test_fill_uses_the_background_where_known_and_the_median_colour_elsewhere():
    frame = np.full((60, 80, 3), 200, np.uint8)
    frame[20:40, 30:50] = (10, 20, 30)  # the hand to remove
    background = de.Background()
    seen = np.full((60, 80, 3), 90, np.uint8)
    covered = np.zeros((60, 80), bool)
    covered[20:40, 30:40] = True  # the left half of the hand's place was never seen free
    background.update(seen, covered)
    box = (25, 15, 55, 45)
    paint = np.zeros((30, 30), bool)
    paint[5:25, 5:25] = True  # exactly the hand
    out = de.fill(frame, paint, box, background)
    assert (out[20:40, 40:50] == 90).all()  # known background
    assert (out[20:40, 30:40] == 200).all()  # unknown: the median of the box's other pixels
    untouched = np.ones((60, 80), bool)
    untouched[20:40, 30:50] = False
    assert np.array_equal(out[untouched], frame[untouched])
    assert (frame[20:40, 30:50] == (10, 20, 30)).all()  # the input is not modified


def test_fill_over_the_whole_frame_leaves_the_input_as_it_was():
    frame = np.full((30, 40, 3), 200, np.uint8)
    frame[10:20, 10:20] = (10, 20, 30)
    before = frame.copy()
    paint = np.zeros((30, 40), bool)
    paint[10:20, 10:20] = True
    for background in (None, de.Background()):
        out = de.fill(frame, paint, (0, 0, 40, 30), background)
        assert (out[10:20, 10:20] == 200).all() and np.array_equal(frame, before)


def test_the_background_keeps_what_a_hand_covers():
    background = de.Background()
    first = np.full((10, 10, 3), 50, np.uint8)
    background.update(first, np.zeros((10, 10), bool))
    second = np.full((10, 10, 3), 150, np.uint8)
    hand = np.zeros((10, 10), bool)
    hand[2:5, 2:5] = True
    background.update(second, hand)
    assert (background.image[2:5, 2:5] == 50).all() and (background.image[6:, 6:] == 150).all()
    assert background.known.all()


def test_crops_overlap_in_rotation_too():
    a = Roi(100.0, 100.0, 100.0, 0.0)
    assert de.crops_overlap(a, Roi(180.0, 100.0, 100.0, 0.0))  # 20 px shared
    assert not de.crops_overlap(a, Roi(210.0, 100.0, 100.0, 0.0))  # 10 px apart
    # Turned 45 degrees, a 100 px crop reaches 70.7 px left of its centre: it overlaps the
    # first one (x 50..150) while its centre is less than 220.7 px along.
    assert de.crops_overlap(a, Roi(219.0, 100.0, 100.0, np.pi / 4))
    assert not de.crops_overlap(a, Roi(222.0, 100.0, 100.0, np.pi / 4))


def test_the_centre_filter_carries_a_steady_hand_on_and_distrusts_a_jump_beside_another():
    xy = _open_hand((100.0, 200.0))
    motion = de.HandMotion.start(xy)
    for step in range(1, 6):  # 10 px a frame to the right
        motion = motion.follow(xy + np.array([10.0 * step, 0.0]), 1, overlapped=False)
    ahead = motion.expected(1) - (xy + np.array([60.0, 0.0]))
    assert np.abs(ahead).max() < 2.0  # within 2 px of where the hand will be
    # Beside another hand, a measurement 30 px off the prediction moves the centre by
    # 0.3 x 30 = 9 px (alpha), the velocity by 0.02 x 30 = 0.6 px/frame (beta).
    predicted = motion.centre + motion.velocity
    jumped = motion.follow(motion.expected(1) + np.array([30.0, 0.0]), 1, overlapped=True)
    assert np.allclose(jumped.centre - predicted, (9.0, 0.0), atol=1e-9)
    assert np.allclose(jumped.velocity - motion.velocity, (0.6, 0.0), atol=1e-9)
    clear = motion.follow(motion.expected(1) + np.array([30.0, 0.0]), 1, overlapped=False)
    assert np.allclose(clear.centre - predicted, (0.85 * 30.0, 0.0), atol=1e-9)
    # A hand lost for 4 frames is expected 5 steps on.
    assert np.allclose(motion.expected(5).mean(0), motion.centre + 5 * motion.velocity, atol=1e-9)


def test_disagreement_is_in_palm_lengths_and_the_decision_needs_a_margin():
    expected = _open_hand((100.0, 200.0), palm_px=80.0)
    assert de.disagreement(expected + np.array([8.0, 0.0]), expected) == pytest.approx(0.1)
    assert de.disagreement(expected + np.array([0.0, 40.0]), expected) == pytest.approx(0.5)
    assert de.choose([0.40, 0.36, 0.50], CONFIG) == 0  # 0.04 better: not enough (0.05)
    assert de.choose([0.40, 0.30, 0.32], CONFIG) == 1
    assert de.choose([float("inf"), 0.8, 0.9], CONFIG) == 1  # the first found no hand
    assert de.choose([0.2, float("inf"), float("inf")], CONFIG) == 0


def test_clean_crop_removes_the_other_hand_and_leaves_this_one():
    """Two flat hands drawn on a grey wall, the second 50 px to the right, overlapping:
    the removal variant paints the second hand's pixels outside the first's silhouette
    with the wall and keeps the first hand's pixels; the de-occlusion variant also
    paints the shared part."""
    own, other = _open_hand((200.0, 300.0)), _open_hand((250.0, 300.0))
    wall = np.full((480, 480, 3), 120, np.uint8)
    frame = wall.copy()
    own_mask = de.hand_mask(own, frame.shape[:2], CONFIG)
    other_mask = de.hand_mask(other, frame.shape[:2], CONFIG)
    frame[other_mask] = (200, 60, 60)  # the other hand behind
    frame[own_mask] = (60, 200, 60)  # this one in front
    background = de.Background()
    background.update(wall, np.zeros((480, 480), bool))
    roi = Roi(210.0, 230.0, 260.0, 0.0)
    cleaned = de.clean_crop(frame, roi, own, [other], CONFIG, background)
    assert cleaned is not None
    x0, y0, x1, y1 = cleaned.box
    inside = np.zeros((480, 480), bool)
    inside[y0:y1, x0:x1] = True
    only_other = other_mask & ~own_mask & inside
    assert only_other.sum() > 2000
    assert (cleaned.removal[only_other] == 120).all()
    assert (cleaned.removal[own_mask] == (60, 200, 60)).all()
    assert (cleaned.deocclusion[other_mask & inside] == 120).all()
    # A crop the other hand does not reach is left alone.
    far = Roi(60.0, 60.0, 60.0, 0.0)
    away = other + np.array([300.0, 0.0])
    assert de.clean_crop(frame, far, own, [away], CONFIG, background) is None


def test_a_covered_hands_removal_paints_the_other_hand_up_to_a_narrower_edge():
    """A hand known to lie under the other (``covered``): removal protects only its
    silhouette widened by ``covered_grow`` (0.03 palm lengths, 2.4 px on an 80 px palm),
    not ``grow`` (0.08, 6.4 px), so the other hand's pixels in that band of about 4 px
    around this hand's edge are painted too; everything inside the narrower silhouette
    is kept."""
    own, other = _open_hand((200.0, 300.0)), _open_hand((250.0, 300.0))
    wall = np.full((480, 480, 3), 120, np.uint8)
    frame = wall.copy()
    frame[de.hand_mask(other, frame.shape[:2], CONFIG)] = (200, 60, 60)  # on top: all of it
    background = de.Background()
    background.update(wall, np.zeros((480, 480), bool))
    roi = Roi(210.0, 230.0, 260.0, 0.0)
    wide = de.hand_mask(own, frame.shape[:2], CONFIG)
    narrow = de.draw_hand(np.zeros((480, 480), np.uint8), own, CONFIG, grow=CONFIG.covered_grow) > 0
    front = de.clean_crop(frame, roi, own, [other], CONFIG, background)
    under = de.clean_crop(frame, roi, own, [other], CONFIG, background, covered=True)
    x0, y0, x1, y1 = under.box
    inside = np.zeros((480, 480), bool)
    inside[y0:y1, x0:x1] = True
    band = wide & ~narrow & inside & (frame == (200, 60, 60)).all(axis=-1)
    assert band.sum() > 100
    assert (front.removal[band] == (200, 60, 60)).all()
    assert (under.removal[band] == 120).all()
    assert (under.removal[narrow] == frame[narrow]).all()
    np.testing.assert_array_equal(under.deocclusion, front.deocclusion)


def test_remove_hand_paints_the_whole_hand_inside_its_crop_only():
    """The search for a hidden hand paints the known hand's whole silhouette (fingers,
    palm, forearm) inside its crop with the background, and leaves everything else as it
    was: the crop's pixels outside the silhouette and the whole frame outside the crop."""
    xy = _open_hand((240.0, 330.0))
    wall = np.full((480, 480, 3), 120, np.uint8)
    frame = wall.copy()
    mask = de.hand_mask(xy, frame.shape[:2], CONFIG)
    frame[mask] = (200, 150, 120)
    frame[20:40, 20:40] = (0, 0, 255)  # something far from the hand
    background = de.Background()
    background.update(wall, np.zeros((480, 480), bool))
    roi = Roi(240.0, 260.0, 200.0, 0.0)  # the upper part of the hand; the forearm below
    out = de.remove_hand(frame, roi, xy, CONFIG, background)
    assert out is not None
    x0, y0, x1, y1 = de.roi_box(roi, frame.shape[:2])
    inside = np.zeros((480, 480), bool)
    inside[y0:y1, x0:x1] = True
    assert (mask & inside).sum() > 5000
    assert (out[mask & inside] == 120).all()
    assert np.array_equal(out[~inside], frame[~inside])  # the forearm below the crop stays
    assert (out[mask & ~inside] == (200, 150, 120)).all()
    assert (frame[mask] == (200, 150, 120)).all()  # the input is not modified
    off = Roi(-400.0, -400.0, 100.0, 0.0)
    assert de.remove_hand(frame, off, xy, CONFIG, background) is None


def test_hands_touch_when_one_reaches_into_the_other_not_when_only_their_boxes_meet():
    left = _open_hand((100.0, 300.0), palm_px=80.0)  # fingers x 64..130, wrist at y 300
    # Side by side with 40 px between the nearest keypoints (0.5 palm): apart.
    apart = left + np.array([106.0, 0.0])
    assert not de.hands_touch(left, apart, margin=0.25)
    # 15 px apart (0.19 palm, under the 0.25 margin): touching.
    assert de.hands_touch(left, left + np.array([81.0, 0.0]), margin=0.25)
    # The same hand turned upside down, its middle fingertip in the middle of the first
    # one's palm, 36 px or more from any of its keypoints: inside the hull.
    over = 2.0 * (left[12] + np.array([100.0, 260.0])) / 2.0 - left
    assert np.allclose(over[12], (100.0, 260.0))
    assert de.hands_touch(left, over, margin=0.0)
    assert not de.hands_touch(left, left + np.array([300.0, 0.0]), margin=0.0)
    # Crops (about twice the hand) of two hands 0.5 palm apart do overlap: the reason a
    # crop test was not enough.
    assert de.crops_overlap(
        Roi(*left.mean(0), 2.0 * 90.0, 0.0), Roi(*apart.mean(0), 2.0 * 90.0, 0.0)
    )


def test_the_filter_records_how_far_its_prediction_missed():
    xy = _open_hand((100.0, 200.0), palm_px=80.0)
    motion = de.HandMotion.start(xy)
    for step in range(1, 9):  # 10 px a frame, steady: soon predicted within 2 px
        motion = motion.follow(xy + np.array([10.0 * step, 0.0]), 1, overlapped=False)
    assert motion.miss < 0.025 and motion.trusted(CONFIG.trust)
    # Seen 0.5 palm (40 px) off where it should be: followed, but not trusted.
    off = motion.follow(motion.expected(1) + np.array([40.0, 0.0]), 1, overlapped=False)
    assert off.miss == pytest.approx(0.5) and not off.trusted(CONFIG.trust)
    assert off.velocity[0] == pytest.approx(motion.velocity[0] + 0.3 * 40.0)


def test_hold_keeps_a_faint_cleaned_estimate_only_where_the_hand_should_be():
    config = de.DeocclusionConfig()  # hold_presence 0.3, gate 0.3 palm lengths
    expected = np.zeros((21, 2))
    expected[9] = (0.0, -80.0)  # palm length 80 px
    expected[1:9, 0] = np.arange(1, 9) * 5.0
    roi = Roi(0.0, -40.0, 160.0, 0.0)

    def estimate(shift_px: float, presence: float) -> HandLandmarks:
        xyz = np.zeros((21, 3))
        xyz[:, :2] = expected + np.array([shift_px, 0.0])
        return HandLandmarks(xyz, np.zeros((21, 3)), presence, 0.5, roi)

    original = estimate(0.0, 0.9)
    near, far = 16.0, 40.0  # 0.2 and 0.5 palm lengths
    # Near at presence 0.42: kept. The original crop's estimate (index 0) never is: the
    # stage holds on cleaned crops only.
    assert de.hold([original, estimate(far, 0.45), estimate(near, 0.42)], expected, config) == 2
    assert de.hold([original, estimate(near, 0.42), estimate(near, 0.1)], expected, config) == 1
    # Too faint, or too far from where the hand should be: let go.
    assert de.hold([original, estimate(near, 0.25), estimate(near, 0.1)], expected, config) == 0
    assert de.hold([original, estimate(near, 0.1), estimate(far, 0.49)], expected, config) == 0
    assert de.hold([original], expected, config) == 0


class _Landmarks:
    """Stands in for the landmark network: every crop shows the hands given, in order."""

    def __init__(self, hands: list[HandLandmarks]):
        self.hands = hands

    def estimate(self, images, rois, alone=True) -> list[HandLandmarks]:
        return self.hands[: len(rois)]


def test_a_hand_found_behind_another_must_lie_clearly_apart_from_it():
    """The search paints the kept hand out of its crop and looks again; what it finds
    within 0.6 palm lengths of the kept hand (mean over keypoints) is what the paint left
    of that hand, not a hand underneath. 0.45 palm lengths is beyond the 0.3 that makes
    two estimates one hand elsewhere, so this needs the search's own bar."""
    palm = 80.0
    front_xy = _open_hand((320.0, 300.0), palm_px=palm)
    image = np.full((480, 640, 3), 90, np.uint8)

    def hand(xy: np.ndarray, presence: float) -> HandLandmarks:
        xyz = np.zeros((21, 3))
        xyz[:, :2] = xy
        return HandLandmarks(xyz, np.zeros((21, 3)), presence, 0.5, roi_from_landmarks(xy))

    for apart, joins in ((0.45, False), (0.8, True)):
        found = hand(front_xy + np.array([apart * palm, 0.0]), presence=0.9)
        tracker = HandTracker(
            TrackerConfig(), palm=SimpleNamespace(backend=None), landmarker=_Landmarks([found])
        )
        tracker._next_id = 1  # as after the kept hand's track was made
        kept, flags = {0: hand(front_xy, 0.95)}, {0: FrameFlag.TRACKED}
        tracker._search_hidden(image, kept, flags)
        assert (1 in kept) == joins, apart
        if joins:
            assert flags[1] == FrameFlag.DETECTED | FrameFlag.DEOCCLUDED
            assert kept[1] is found


def test_a_covered_hands_crop_is_widened_to_nine_tenths_of_the_other_hands():
    """The network sees a hand under another smaller than it is; its next crop is grown
    about its centre to 0.9 of the other hand's side (180 px beside a 200 px crop), and a
    crop that large already, or a hand with no other beside it, keeps its own."""
    small, other = Roi(300.0, 240.0, 120.0, 0.4), Roi(330.0, 250.0, 200.0, 0.0)
    grown = de.widen_covered(small, [other, Roi(0.0, 0.0, 150.0, 0.0)], 0.9)
    assert grown.size == pytest.approx(180.0)
    assert (grown.cx, grown.cy, grown.rotation) == (300.0, 240.0, 0.4)
    large = Roi(300.0, 240.0, 190.0, 0.4)
    assert de.widen_covered(large, [other], 0.9) == large
    assert de.widen_covered(small, [], 0.9) == small
    assert de.widen_covered(small, [other], 0.0) == small


def test_only_a_hand_never_seen_clear_of_the_other_gets_a_wider_crop():
    """The tracker widens the next crop of a hand estimated on a cleaned crop only while
    it has never been seen clear of the other hand (found under it): a hand once seen on
    its own keeps the crop its landmarks give, since hands that cross pass at different
    depths and sizes."""
    tracker = HandTracker(
        TrackerConfig(), palm=SimpleNamespace(backend=None), landmarker=_Landmarks([])
    )
    front, under = Roi(320.0, 300.0, 200.0, 0.0), Roi(330.0, 290.0, 110.0, 0.0)
    covered = FrameFlag.DETECTED | FrameFlag.DEOCCLUDED
    tracker._tracks = {0: front, 1: under}
    tracker._widen_covered({0: FrameFlag.TRACKED, 1: covered}, touching={0, 1})
    assert tracker._tracks[1].size == pytest.approx(180.0)
    assert tracker._tracks[0] == front
    # The same hand seen clear on one frame (cleaned crops no longer needed, apart).
    tracker._tracks = {0: front, 1: under}
    tracker._widen_covered({0: FrameFlag.TRACKED, 1: FrameFlag.TRACKED}, touching=set())
    tracker._tracks = {0: front, 1: under}
    tracker._widen_covered({0: FrameFlag.TRACKED, 1: FrameFlag.DEOCCLUDED}, touching={0, 1})
    assert tracker._tracks[1] == under


class _Recording:
    """Stands in for the landmark network: answers each call with the next list of
    hands queued, and records per call whether each crop was cut from the raw frame."""

    def __init__(self, frame: np.ndarray, answers: list[list[HandLandmarks]]):
        self.frame, self.answers, self.calls = frame, answers, []

    def estimate(self, images, rois, alone=True) -> list[HandLandmarks]:
        each = images if isinstance(images, list) else [self.frame] * len(rois)
        self.calls.append([im is self.frame for im in each])
        return self.answers.pop(0)[: len(rois)]


def test_a_covered_hand_is_estimated_on_last_frames_cleaning_and_checked_when_it_strays():
    """A hand that has never been seen clear of the other and was kept on a cleaned crop
    last frame: this frame's first pass cuts its crop from that cleaning instead of the
    raw frame, one landmark run for both hands. Kept while within ``lead`` (0.1 palm
    lengths) of where the hand should be; an estimate 0.2 palm lengths off (within the
    stage's gate, but the other cleaning may do better) sends the raw crop and the other
    cleaning through the network, and the nearest of the three wins. A hand once seen
    clear gets the raw crop first, as every hand did before."""
    palm = 80.0
    front_xy = _open_hand((320.0, 300.0), palm_px=palm)
    under_xy = _open_hand((360.0, 300.0), palm_px=palm)  # half a palm beside: crops overlap
    frame = np.full((480, 640, 3), 90, np.uint8)

    def hand(xy: np.ndarray) -> HandLandmarks:
        xyz = np.zeros((21, 3))
        xyz[:, :2] = xy
        return HandLandmarks(xyz, np.zeros((21, 3)), 0.9, 0.5, roi_from_landmarks(xy))

    def tracker(answers: list[list[HandLandmarks]], seen_clear: bool) -> HandTracker:
        t = HandTracker(TrackerConfig(), palm=SimpleNamespace(backend=None),
                        landmarker=_Recording(frame, answers))  # fmt: skip
        t._tracks = {0: roi_from_landmarks(front_xy), 1: roi_from_landmarks(under_xy)}
        t._motion = {0: de.HandMotion.start(front_xy), 1: de.HandMotion.start(under_xy)}
        t._right_prob, t._next_id, t._lead = {0: 0.9, 1: 0.1}, 2, {1: 2}
        t._seen_clear = {0, 1} if seen_clear else {0}
        return t

    near = under_xy + np.array([0.05 * palm, 0.0])
    t = tracker([[hand(front_xy), hand(near)]], seen_clear=False)
    seen = {o.track_id: o for o in t.step(frame)}
    assert t.landmarker.calls == [[True, False]]
    assert seen[1].flag & FrameFlag.DEOCCLUDED and t._lead == {1: 2}
    np.testing.assert_allclose(seen[1].hand.image_xyz[:, :2], near)

    astray = under_xy + np.array([0.2 * palm, 0.0])
    t = tracker([[hand(front_xy), hand(astray)], [hand(front_xy), hand(near)]], seen_clear=False)
    seen = {o.track_id: o for o in t.step(frame)}
    assert t.landmarker.calls == [[True, False], [True, False]]  # raw crop, then removal
    assert t._lead == {1: 1}  # removal won: it leads next frame
    np.testing.assert_allclose(seen[1].hand.image_xyz[:, :2], near)

    t = tracker([[hand(front_xy), hand(near)]], seen_clear=True)
    t.step(frame)
    assert t.landmarker.calls == [[True, True]]


def test_a_track_that_slid_onto_the_lost_hand_gives_it_back_when_its_own_hand_shows():
    """At a crossing, track 1 (right on its whole record) slid onto the left hand while
    track 0 (left) was lost, and its running handedness now says left (0.1). A clearly
    right hand found elsewhere is not turned away while track 0 is hunted for: the hand
    track 1 holds is track 0's again (its filter goes with it), and the new hand is
    track 1's. Track 1's record need only lean right (0.7): the frames it ran on the left
    hand count in it too. A new hand that reads left, a track 1 whose record leans to
    neither side (0.6) or to the left (0.3), or one whose running handedness has not
    turned, leave the hunt as it was."""
    left_xy, right_xy = _open_hand((300.0, 300.0)), _open_hand((520.0, 300.0))

    def hand(xy: np.ndarray, right_prob: float) -> HandLandmarks:
        xyz = np.zeros((21, 3))
        xyz[:, :2] = xy
        return HandLandmarks(xyz, np.zeros((21, 3)), 0.95, right_prob, roi_from_landmarks(xy))

    def assign(record: float, memory: float, new_right: float):
        t = HandTracker(
            TrackerConfig(), palm=SimpleNamespace(backend=None), landmarker=_Landmarks([])
        )
        t._tracks = {1: roi_from_landmarks(left_xy)}
        slid = de.HandMotion.start(left_xy)
        t._motion = {0: de.HandMotion.start(left_xy + np.array([10.0, 0.0])), 1: slid}
        t._lost = {0: 5}
        t._right_prob = {0: 0.1, 1: memory}
        t._side_record = {0: (0.1 * 90.0, 90.0), 1: (record * 100.0, 100.0)}
        on_left, new = hand(left_xy, 0.02), hand(right_xy, new_right)
        flags = {1: FrameFlag.TRACKED, 7: FrameFlag.DETECTED}
        kept = t._assign({1: on_left, 7: new}, flags)
        return t, kept, flags, on_left, new, slid

    for record in (0.95, 0.7):
        t, kept, flags, on_left, new, slid = assign(record, memory=0.1, new_right=0.97)
        assert sorted(kept) == [0, 1] and kept[0] is on_left and kept[1] is new
        assert flags[0] == FrameFlag.TRACKED and flags[1] == FrameFlag.DETECTED
        assert t._lost == {} and list(t._motion) == [0] and t._motion[0] is slid  # afresh
        assert t._right_prob[0] == pytest.approx(0.1)
        assert t._right_prob[1] == pytest.approx(0.97)

    for record, memory, new_right in ((0.95, 0.1, 0.1), (0.6, 0.1, 0.97), (0.3, 0.1, 0.97),
                                      (0.95, 0.5, 0.97)):  # fmt: skip
        t, kept, *_ = assign(record, memory, new_right)
        assert list(kept) == [1] and t._lost == {0: 5}, (record, memory, new_right)


def test_a_hand_estimated_on_a_cleaned_crop_keeps_its_side():
    """Handedness read on a cleaned crop is not evidence: a left hand's track (memory 0.1,
    record 0.1 over 20 frames) kept on cleaned crops that read 0.97 keeps both memory and
    record; a frame on its raw crop counts again. A track found on a cleaned crop (the
    search for a hand under the other) starts its memory from that frame."""
    xy = _open_hand((300.0, 300.0))
    hand = HandLandmarks(np.c_[xy, np.zeros(21)], np.zeros((21, 3)), 0.9, 0.97,
                         roi_from_landmarks(xy))  # fmt: skip
    t = HandTracker(TrackerConfig(), palm=SimpleNamespace(backend=None), landmarker=_Landmarks([]))
    t._right_prob, t._side_record = {0: 0.1}, {0: (0.1 * 20.0, 20.0)}
    cleaned = FrameFlag.TRACKED | FrameFlag.DEOCCLUDED
    for _ in range(5):
        t._remember_sides({0: hand}, {0: cleaned})
    assert t._right_prob[0] == pytest.approx(0.1) and t._record_side(0) == pytest.approx(0.1)
    t._remember_sides({0: hand}, {0: FrameFlag.TRACKED})
    assert t._right_prob[0] == pytest.approx(0.8 * 0.1 + 0.2 * 0.97)
    assert t._record_side(0) == pytest.approx((2.0 + 0.9 * 0.97) / 20.9)
    t._remember_sides({3: hand}, {3: FrameFlag.DETECTED | FrameFlag.DEOCCLUDED})
    assert t._right_prob[3] == pytest.approx(0.97) and t._record_side(3) == pytest.approx(0.97)


def test_a_palm_on_a_hand_whose_own_crop_just_lost_it_continues_that_track():
    """Two fists crossing: track 1 (right) followed last frame, its crop's estimate fell
    under ``min_presence`` this frame, and the detector found a palm on its hand on the
    same frame. That hand is track 1's, not a new track beside the one about to be hunted
    for (it was: the new track then ran on, track 1 came back elsewhere for two frames,
    and the two could never be joined). A palm of the other side there, or one more than
    ``RETURN_RADIUS`` palm lengths off, is another hand."""
    right_xy = _open_hand((400.0, 300.0))

    def hand(xy: np.ndarray, right_prob: float) -> HandLandmarks:
        xyz = np.zeros((21, 3))
        xyz[:, :2] = xy
        return HandLandmarks(xyz, np.zeros((21, 3)), 0.83, right_prob, roi_from_landmarks(xy))

    def assign(shift: float, right_prob: float) -> dict[int, HandLandmarks]:
        t = HandTracker(
            TrackerConfig(), palm=SimpleNamespace(backend=None), landmarker=_Landmarks([])
        )
        t._tracks = {1: roi_from_landmarks(right_xy)}
        t._motion = {1: de.HandMotion.start(right_xy)}
        t._right_prob = {1: 0.7}
        t._next_id = 14
        new = hand(right_xy + np.array([shift, 0.0]), right_prob)
        return t._assign({14: new}, {14: FrameFlag.DETECTED})

    assert list(assign(10.0, 0.97)) == [1]
    assert list(assign(10.0, 0.1)) == [14]
    assert list(assign(3.5 * 80.0, 0.97)) == [14]  # palm length 80 px


def test_an_estimate_nearer_the_other_hand_that_reads_its_side_is_let_go():
    """Track 1 (a right hand, memory 0.95) and track 0 (left, 0.05), their hands 200 px
    apart. Track 1's estimate 0.55 of the way over to the left hand's place (0.82 as far
    from it as from its own: not clearly nearer, the 0.6 of ``OWNER_MARGIN``) that
    reads left (0.02) is the left hand taken in by the right hand's crop: let go, and
    track 1 is hunted for. The same estimate reading right, or one still nearer its own
    place, or a track whose memory of its side is not confident, keeps it."""
    left_xy, right_xy = _open_hand((300.0, 300.0)), _open_hand((500.0, 300.0))

    def assign(share: float, right_prob: float, memory: float = 0.95) -> list[int]:
        t = HandTracker(
            TrackerConfig(), palm=SimpleNamespace(backend=None), landmarker=_Landmarks([])
        )
        t._tracks = {0: roi_from_landmarks(left_xy), 1: roi_from_landmarks(right_xy)}
        t._motion = {0: de.HandMotion.start(left_xy), 1: de.HandMotion.start(right_xy)}
        t._right_prob = {0: 0.05, 1: memory}
        xy = right_xy + share * (left_xy - right_xy)
        estimate = HandLandmarks(np.c_[xy, np.zeros(21)], np.zeros((21, 3)), 0.9, right_prob,
                                 roi_from_landmarks(xy))  # fmt: skip
        return sorted(t._assign({1: estimate}, {1: FrameFlag.TRACKED}))

    assert assign(0.55, right_prob=0.02) == []
    assert assign(0.55, right_prob=0.9) == [1]
    assert assign(0.45, right_prob=0.02) == [1]
    assert assign(0.55, right_prob=0.02, memory=0.7) == [1]
    # Clearly nearer the left's place (0.43 as far): position alone hands it over.
    assert assign(0.7, right_prob=0.9) == [0]
