"""Weak palms: detections scoring under ``min_detection``, tried while a hand is missing
and kept only where the landmark network sees a hand (docs/architecture.md, "Two
interacting hands"). Stand-in networks, no models."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from handmocap.inference import deocclusion as de
from handmocap.inference import palm_detection as pd
from handmocap.inference.geometry import Roi
from handmocap.inference.hand_landmarks import HandLandmarks, roi_from_landmarks
from handmocap.inference.palm_detection import Letterbox
from handmocap.inference.tracker import HandTracker, TrackerConfig
from handmocap.take import FrameFlag

IMAGE = np.full((480, 640, 3), 90, np.uint8)


def _palm(cx: float, score: float) -> pd.Palm:
    """A 60 px palm centred at (cx, 300), fingers up: its crop is 156 px wide."""
    kps = np.zeros((7, 2))
    kps[0], kps[2] = (cx, 330.0), (cx, 290.0)
    return pd.Palm(np.array([cx - 30.0, 270.0, cx + 30.0, 330.0]), kps, score)


class _Detector:
    backend = None

    def __init__(self, palms: list[pd.Palm]):
        self.palms = palms

    def detect(self, image, alone=True) -> list[pd.Palm]:
        return self.palms


class _Landmarks:
    """A hand in every crop, 60 px palm, at the crop's centre; presence by the crop's x
    (rounded to 10 px). Records how many crops each call with any saw."""

    def __init__(self, presence: dict[int, float]):
        self.presence = presence
        self.calls: list[int] = []
        self.network = SimpleNamespace(pool=None)

    def estimate(self, images, rois: list[Roi], alone=True) -> list[HandLandmarks]:
        if rois:
            self.calls.append(len(rois))
        out = []
        for roi in rois:
            xy = np.zeros((21, 2))
            xy[:, 0] = roi.cx + np.linspace(-25.0, 25.0, 21)
            xy[:, 1] = roi.cy + np.linspace(30.0, -60.0, 21)
            xy[9] = (roi.cx, roi.cy - 30.0)
            xyz = np.column_stack([xy, np.zeros(21)])
            presence = self.presence[round(roi.cx / 10.0) * 10]
            out.append(HandLandmarks(xyz, np.zeros((21, 3)), presence, 0.5, roi_from_landmarks(xy)))
        return out


def _tracker(palms: list[pd.Palm], presence: dict[int, float], **config) -> HandTracker:
    off = de.DeocclusionConfig(enabled=False)  # no stage: the policy alone
    return HandTracker(
        TrackerConfig(deocclusion=off, **config), palm=_Detector(palms),
        landmarker=_Landmarks(presence),
    )  # fmt: skip


def test_two_weak_palms_the_landmarks_see_as_hands_are_both_kept():
    """Two fists side by side, back to the camera, on the first frame of a render: palm
    scores 0.47 and 0.06, landmark presence 0.96 and 0.92. Both are hands, from frame 0,
    under ids 0 and 1."""
    tracker = _tracker([_palm(150.0, 0.47), _palm(450.0, 0.06)], {150: 0.96, 450: 0.92})
    seen = tracker.step(IMAGE)
    assert sorted(o.track_id for o in seen) == [0, 1]
    assert all(o.flag == FrameFlag.DETECTED for o in seen)
    assert tracker.landmarker.calls == [2]  # one batch for both


def test_a_weak_palm_the_landmarks_doubt_is_let_go_and_takes_no_id():
    """Weak palms off any hand reached a presence of 0.52 at most (every two-hand render,
    the real office clip): 0.6 is under the 0.8 that keeps one. A confident palm is a
    hand at any presence over ``min_presence``."""
    tracker = _tracker([_palm(150.0, 0.9), _palm(450.0, 0.3)], {150: 0.6, 450: 0.6})
    seen = tracker.step(IMAGE)
    assert [(o.track_id, o.hand.image_xyz[9, 0]) for o in seen] == [(0, 150.0)]
    assert tracker._next_id == 1


def test_weak_palms_are_not_looked_at_once_every_hand_is_found():
    """With ``max_hands`` hands found by confident palms, a weak palm costs nothing: the
    landmark network sees the confident crops only."""
    palms = [_palm(150.0, 0.9), _palm(450.0, 0.2)]
    tracker = _tracker(palms, {150: 0.95, 450: 0.95}, max_hands=1)
    assert [o.track_id for o in tracker.step(IMAGE)] == [0]
    assert tracker.landmarker.calls == [1]


def test_weak_detection_must_lie_under_the_confident_bar():
    from handmocap.errors import HandmocapError

    with pytest.raises(HandmocapError, match="weak_detection"):
        replace(TrackerConfig(), weak_detection=0.6).validated()
    with pytest.raises(HandmocapError, match="weak_detection"):
        replace(TrackerConfig(), weak_detection=0.0).validated()


def _scores_and_boxes() -> tuple[np.ndarray, np.ndarray, int]:
    """Network outputs with 40 px boxes everywhere: a confident palm, a weak one on the
    same cell (shifted 5 px), a faint one, and a weak one elsewhere (its anchor returned)."""
    raw = np.zeros((2016, 18))
    raw[:, 2:4] = 40.0
    scores = np.full(2016, -10.0)
    a = 1152 + 6 * (12 * 5 + 7)  # a stride-16 cell
    far = 1152 + 6 * (12 * 2 + 1)
    faint = 1152 + 6 * (12 * 9 + 10)
    scores[a] = 3.0  # 0.95
    raw[a + 1, 0] = 5.0
    scores[a + 1] = -1.0  # 0.27, on the confident palm
    scores[far] = -1.5  # 0.18
    scores[faint] = -4.0  # 0.018
    return raw, scores, far


def test_weak_palms_come_after_the_confident_ones_and_leave_them_as_they_were():
    raw, scores, far = _scores_and_boxes()
    lb = Letterbox(scale=1.0, pad_x=0.0, pad_y=0.0)
    alone = pd.postprocess(raw, scores, lb, pd.PalmConfig())
    both = pd.postprocess(raw, scores, lb, pd.PalmConfig(weak_score=0.05))
    assert len(alone) == 1 and len(both) == 2
    # The weak palm on the confident one's cell neither shows nor shifts it.
    np.testing.assert_array_equal(both[0].box, alone[0].box)
    assert both[0].score == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert both[1].score == pytest.approx(1 / (1 + np.exp(1.5)))
    np.testing.assert_allclose(both[1].box[:2] + 20.0, pd.ANCHORS[far] * 192)


def test_no_weak_palm_is_tried_while_a_lost_hand_is_hunted_for():
    """A weak palm while a track is lost is likely that hand coming back: the tracker's
    hunt and its confident palms bring it back under its id (weak palms taken then
    swapped the hands at crossings)."""
    tracker = _tracker([_palm(450.0, 0.3)], {450: 0.95})
    tracker._lost = {7: 3}
    rois, flags = {}, {}
    assert tracker._new_hands(IMAGE, tracker.palm.palms, rois, flags) == {}
    assert rois == {} and tracker.landmarker.calls == []
    tracker._lost = {}
    assert list(tracker._new_hands(IMAGE, tracker.palm.palms, rois, flags)) == [0]
