"""The engine end to end: parity with MediaPipe's own solution (video mode) on the same
frames, and detection against the renderer's ground truth.

Bars hold on any machine (docs/testing.md): Cycles on another CPU renders slightly different
pixels, so every figure measured on a rendered clip has a margin taken from the spread that
``python3 build.py bench render_spread`` measures over Cycles noise seeds. Races against
MediaPipe ("at least its detection rate, to the frame") live in that benchmark as ratios.
"""

from pathlib import Path

import numpy as np
import pytest

from bench.mediapipe_reference import detections_from_take, run_mediapipe_solution, score_2d
from handmocap.inference.capture import CaptureConfig, capture
from handmocap.inference.tracker import TrackerConfig
from handmocap.take import FrameFlag, FrameRange

OFFICE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "one_hand_office.mp4"


def _agreement(take, reference):
    """Median px difference between our tracks and MediaPipe's hands on shared frames, and
    the number of frames each found a hand on."""
    ours = {}
    for tr in take.tracks:
        for f, kp in zip(tr.frames, tr.keypoints_2d, strict=True):
            ours.setdefault(int(f), []).append(kp)
    diffs = []
    for t, found in enumerate(reference.frames):
        for det in found:
            if t in ours:
                best = min(np.linalg.norm(det.landmarks_px - kp, axis=1).mean() for kp in ours[t])
                if best < 50:
                    match = min(
                        ours[t], key=lambda kp: np.linalg.norm(det.landmarks_px - kp, axis=1).mean()
                    )
                    diffs.append(np.linalg.norm(det.landmarks_px - match, axis=1))
    theirs_frames = sum(1 for f in reference.frames if f)
    return float(np.median(np.concatenate(diffs))), len(ours), theirs_frames


@pytest.mark.skipif(not OFFICE.is_file(), reason="../shared/data/real is not present")
def test_parity_with_mediapipe_on_real_video():
    result = capture(OFFICE)
    reference = run_mediapipe_solution(OFFICE, max_hands=2)
    median, ours, theirs = _agreement(result.take, reference)
    print(f"\noffice video: median {median:.2f} px from MediaPipe; frames with a hand: ours "
          f"{ours}, MediaPipe {theirs} of {result.frames}")  # fmt: skip
    assert median <= 2.0
    # One physical right hand, in view on every frame: one track from first frame to last
    # (found on every frame, so never on fewer than MediaPipe), a stable identity.
    assert len(result.take.tracks) == 1
    track = result.take.tracks[0]
    assert track.handedness == "right" and len(track) == result.frames


@pytest.mark.blender
@pytest.mark.render
def test_parity_and_accuracy_on_a_rendered_clip():
    from bench.synth.cache import cached_clip
    from bench.synth.ground_truth import load_ground_truth

    mp4, npz = cached_clip("demo")
    gt = load_ground_truth(npz)
    result = capture(mp4)
    reference = run_mediapipe_solution(mp4, max_hands=2)
    median, _, _ = _agreement(result.take, reference)
    ours_frames = detections_from_take(result.take, gt.num_frames)
    ours = score_2d(ours_frames, gt.keypoints_px, gt.visibility, gt.handedness, 60.0)
    theirs = score_2d(reference.frames, gt.keypoints_px, gt.visibility, gt.handedness, 60.0)
    print(
        f"\ndemo clip: {median:.2f} px from MediaPipe; vs truth ours {ours.median_px:.2f} px "
        f"({ours.detection_rate:.0%}), MediaPipe {theirs.median_px:.2f} px "
        f"({theirs.detection_rate:.0%})"
    )
    # Measured with Cycles seeds 0 and 1: 0.31 and 0.29 px from MediaPipe, the hand found
    # on 100% of the 48 frames (MediaPipe: 100%); the bars leave 6x and 2 frames of margin.
    assert median <= 2.0
    assert ours.detection_rate >= 0.95


@pytest.mark.skipif(not OFFICE.is_file(), reason="../shared/data/real is not present")
def test_the_detector_runs_only_when_needed():
    frames = FrameRange(0, 120)
    one = capture(OFFICE, CaptureConfig(tracker=TrackerConfig(max_hands=1), frames=frames))
    assert one.detector_runs == 1  # found once, then tracked: never lost on this clip
    two = capture(
        OFFICE, CaptureConfig(tracker=TrackerConfig(max_hands=2, redetect_every=10), frames=frames)
    )
    # A second hand may enter: look every 10th frame, no more.
    assert two.detector_runs == pytest.approx(120 / 10, abs=2)
    flags = two.take.tracks[0].flags
    assert flags[0] & FrameFlag.DETECTED and np.all(flags[1:] & FrameFlag.TRACKED)


def _crossing(noise_seed: int | None = None):
    """(take, truth, score against the truth) of the crossing clip; ``noise_seed`` None
    renders with the run's default seed (docs/testing.md)."""
    from bench.synth.cache import cached_clip
    from bench.synth.ground_truth import load_ground_truth

    extra = {} if noise_seed is None else {"noise_seed": noise_seed}
    mp4, npz = cached_clip("two_crossing", **extra)
    gt = load_ground_truth(npz)
    take = capture(mp4, CaptureConfig(fit_mano=False)).take
    frames = detections_from_take(take, gt.num_frames)
    return take, gt, score_2d(frames, gt.keypoints_px, gt.visibility, gt.handedness, 60.0)


@pytest.mark.blender
@pytest.mark.render
def test_two_crossing_hands_are_both_found():
    """The right hand passes in front of the left: both hands are found, on most frames.

    Measured with Cycles seeds 0 and 1: 93.8% and 92.7% of the 96 hand-frames since issue
    12 (76.0% and 90.6% before; MediaPipe 77.1% and 92.7%, see bench render_spread and
    two_hands). The bar leaves 5 hand-frames below the lower one."""
    take, _, ours = _crossing()
    print(f"\ncrossing: detected {ours.detection_rate:.1%}")
    assert {t.handedness for t in take.tracks} == {"left", "right"}
    assert ours.detection_rate >= 0.875


@pytest.mark.blender
@pytest.mark.render
def test_two_crossing_hands_keep_one_id_each_through_the_occlusion():
    """Each physical hand is one track through the crossing (one Action per hand for the
    animator), on two renders of the clip with different pixel noise; the back hand is
    followed while it is partly covered.

    Measured (Cycles seeds 0 and 1): 0 switches, one track per hand, every row on the
    right side; the back (left) hand found on 97.9% and 95.8% of the frames where a third
    of its keypoints show (76% of all frames before issue 12). The bar of 90% leaves 2 of
    those 48 frames of margin below the lower one."""
    from bench.two_hands_eval import score_two_hands

    for seed in (0, 1):
        take, truth, _ = _crossing(seed)
        assert sorted(t.handedness for t in take.tracks) == ["left", "right"], seed
        two = score_two_hands(take, truth)
        assert two.switches == 0 and two.tracks_per_hand == (1, 1), (seed, two)
        assert two.wrong_side_rows == 0 and two.duplicates == 0, (seed, two)
        back = truth.handedness.index("left")
        assert two.found_findable[back] >= 0.90, (seed, two)
