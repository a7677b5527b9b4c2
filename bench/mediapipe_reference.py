"""MediaPipe's own hand solution as a reference, and scoring of 2D landmarks against truth.

The solution (``mp.solutions.hands``) is what our engine must match or beat. Its
handedness label assumes a mirrored selfie image: on an unmirrored video, "Right" means
a physical **left** hand. We convert to physical handedness here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from handmocap.errors import HandmocapError


@dataclass(frozen=True)
class HandDetection:
    """One hand found in one frame.

    Attributes:
        landmarks_px: (21, 2) MediaPipe-order landmarks in pixels.
        handedness: "left" / "right", the physical hand.
        score: handedness classification confidence in [0, 1].
    """

    landmarks_px: np.ndarray
    handedness: str
    score: float


@dataclass(frozen=True)
class ReferenceRun:
    """Per-frame detections of a whole video and the wall time it took (decode included)."""

    frames: tuple[tuple[HandDetection, ...], ...]
    seconds: float

    @property
    def fps(self) -> float:
        return len(self.frames) / self.seconds if self.seconds > 0 else float("nan")


def run_mediapipe_solution(video: Path, max_hands: int = 2, static: bool = False) -> ReferenceRun:
    """Run ``mp.solutions.hands`` (video mode unless ``static``) over every frame."""
    import mediapipe as mp

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise HandmocapError(f"cannot open the video {video}")
    frames: list[tuple[HandDetection, ...]] = []
    started = time.perf_counter()
    with mp.solutions.hands.Hands(
        static_image_mode=static,
        max_num_hands=max_hands,
        model_complexity=1,
        min_detection_confidence=0.5,
        min_tracking_confidence=0.5,
    ) as hands:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            h, w = bgr.shape[:2]
            result = hands.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            found = []
            for lms, cls in zip(
                result.multi_hand_landmarks or [], result.multi_handedness or [], strict=True
            ):
                pts = np.array([[lm.x * w, lm.y * h] for lm in lms.landmark])
                label = cls.classification[0]
                physical = "left" if label.label == "Right" else "right"
                found.append(HandDetection(pts, physical, float(label.score)))
            frames.append(tuple(found))
    cap.release()
    return ReferenceRun(tuple(frames), time.perf_counter() - started)


def detections_from_take(take, num_frames: int) -> tuple[tuple[HandDetection, ...], ...]:
    """Our take as per-frame detections (one per track present in the frame), so that
    :func:`score_2d` scores it exactly like MediaPipe's output."""
    frames: list[list[HandDetection]] = [[] for _ in range(num_frames)]
    for tr in take.tracks:
        for row, f in enumerate(tr.frames):
            if 0 <= f < num_frames:
                score = float(tr.confidence[row].mean())
                frames[int(f)].append(HandDetection(tr.keypoints_2d[row], tr.handedness, score))
    return tuple(tuple(f) for f in frames)


@dataclass(frozen=True)
class Landmark2DScore:
    """Agreement of detections with ground truth over a clip.

    Attributes:
        detection_rate: share of (frame, true hand) pairs with an in-image hand that got a
            matching detection.
        median_px: median keypoint distance over matched hands, all 21 keypoints.
        median_visible_px: the same over keypoints marked visible in the ground truth.
        p90_px: 90th percentile over all keypoints of matched hands.
        handedness_accuracy: share of matched hands whose physical handedness is right.
        errors_px: (N,) every keypoint distance that went into the medians.
    """

    detection_rate: float
    median_px: float
    median_visible_px: float
    p90_px: float
    handedness_accuracy: float
    errors_px: np.ndarray


def score_2d(
    frames: tuple[tuple[HandDetection, ...], ...],
    truth_px: np.ndarray,
    visibility: np.ndarray,
    handedness: tuple[str, ...],
    match_px: float,
) -> Landmark2DScore:
    """Match detections to true hands per frame (greedy on mean landmark distance, at most
    ``match_px`` apart) and score them.

    truth_px (T, H, 21, 2) pixels; visibility (T, H, 21) codes (0 = visible,
    3 = outside image); a true hand counts when at least half its keypoints are in image.
    """
    if len(frames) != truth_px.shape[0]:
        raise HandmocapError(f"{len(frames)} frames of detections for {truth_px.shape[0]} of truth")
    wanted = matched = right_side = 0
    errs: list[np.ndarray] = []
    errs_visible: list[np.ndarray] = []
    for t, found in enumerate(frames):
        pairs = []
        for h in range(truth_px.shape[1]):
            if np.mean(visibility[t, h] == 3) > 0.5:
                continue
            wanted += 1
            for d, det in enumerate(found):
                dist = float(np.linalg.norm(det.landmarks_px - truth_px[t, h], axis=1).mean())
                pairs.append((dist, h, d))
        used_h: set[int] = set()
        used_d: set[int] = set()
        for dist, h, d in sorted(pairs):
            if dist > match_px or h in used_h or d in used_d:
                continue
            used_h.add(h)
            used_d.add(d)
            matched += 1
            right_side += found[d].handedness == handedness[h]
            e = np.linalg.norm(found[d].landmarks_px - truth_px[t, h], axis=1)
            errs.append(e)
            errs_visible.append(e[visibility[t, h] == 0])
    all_e = np.concatenate(errs) if errs else np.zeros(0)
    vis_e = np.concatenate(errs_visible) if errs_visible else np.zeros(0)
    nan = float("nan")
    return Landmark2DScore(
        detection_rate=matched / wanted if wanted else nan,
        median_px=float(np.median(all_e)) if all_e.size else nan,
        median_visible_px=float(np.median(vis_e)) if vis_e.size else nan,
        p90_px=float(np.percentile(all_e, 90)) if all_e.size else nan,
        handedness_accuracy=right_side / matched if matched else nan,
        errors_px=all_e,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.mediapipe_reference VIDEO``: MediaPipe's solution over a whole
    video, as a user would run it (the ``profile`` suite times this process)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.mediapipe_reference VIDEO", file=sys.stderr)
        return 2
    run = run_mediapipe_solution(Path(args[0]))
    found = sum(len(f) for f in run.frames)
    print(f"{len(run.frames)} frames, {found} hands, {run.fps:.1f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
