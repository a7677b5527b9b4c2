"""Hand detection + landmark tracking over a video, with stable track ids.

The "solution" that composes the two models, as MediaPipe's hand tracking does it: the
palm detector runs only when no hand is tracked, on every frame for ``hunt_frames``
frames after a track was lost (it is most likely still there, e.g. behind the other
hand), or every ``redetect_every`` frames while fewer than ``max_hands`` hands are tracked
(a new hand may have entered); otherwise each hand's next crop comes from its landmarks.
All crops of a frame go to the landmark network in one batched call.

Identity: a hand found again within ``hunt_frames`` of losing a track of the same side
takes that track's id back, so occlusion does not split one physical hand into several.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handmocap.errors import HandmocapError
from handmocap.models.mediapipe_port import MediapipeModels, built_mediapipe_models
from handmocap.take import FrameFlag

from . import hand_landmarks as lm
from . import palm_detection as pd
from .backend import Backend, choose_backend
from .geometry import Roi


@dataclass(frozen=True)
class TrackerConfig:
    """Engine settings for detection and tracking (probabilities in [0, 1])."""

    device: str = "auto"
    max_hands: int = 2
    min_detection: float = 0.5
    min_presence: float = 0.5
    redetect_every: int = 10
    hunt_frames: int = 30
    threads: int = 0

    def validated(self) -> TrackerConfig:
        if not 1 <= self.max_hands <= 4:
            raise HandmocapError(f"--max-hands must be 1..4, got {self.max_hands}")
        if self.redetect_every < 1:
            raise HandmocapError("redetect_every must be >= 1")
        return self


@dataclass(frozen=True)
class Observation:
    """One tracked hand in one frame: its id, landmarks and how its crop was found."""

    track_id: int
    hand: lm.HandLandmarks
    flag: FrameFlag


def build_models(
    config: TrackerConfig, files: MediapipeModels | None = None
) -> tuple[pd.PalmDetector, lm.HandLandmarker]:
    """The two networks on the backend ``config.device`` chooses, from the built files
    (missing files fail fast, naming the command that builds them)."""
    backend = choose_backend(config.device)
    files = files or built_mediapipe_models()
    palm_config = pd.PalmConfig(min_score=config.min_detection, max_palms=config.max_hands * 2)
    palm = pd.PalmDetector(files.palm_detection, backend, palm_config, config.threads)
    return palm, lm.HandLandmarker(files.hand_landmark, backend, config.threads)


def _overlaps(a: Roi, b: Roi, fraction: float = 0.5) -> bool:
    """Two crops look at the same hand when their centres are closer than ``fraction`` of
    the smaller crop's side."""
    return float(np.hypot(a.cx - b.cx, a.cy - b.cy)) < fraction * min(a.size, b.size)


def _landmark_iou(a: np.ndarray, b: np.ndarray) -> float:
    lo_a, hi_a, lo_b, hi_b = a.min(0), a.max(0), b.min(0), b.max(0)
    inter = np.prod(np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None))
    union = np.prod(hi_a - lo_a) + np.prod(hi_b - lo_b) - inter
    return float(inter / union) if union > 0 else 0.0


class HandTracker:
    """Feed frames in order with :meth:`step`; it returns the hands seen in each.

    Composes the two networks (built from ``config`` unless given): ``palm`` finds hands,
    ``landmarker`` follows them; ``backend`` is where they run.
    """

    def __init__(self, config: TrackerConfig, palm: pd.PalmDetector | None = None,
                 landmarker: lm.HandLandmarker | None = None):  # fmt: skip
        self.config = config.validated()
        if palm is None or landmarker is None:
            built = build_models(self.config)
            palm, landmarker = palm or built[0], landmarker or built[1]
        self.palm = palm
        self.landmarker = landmarker
        self.backend: Backend = palm.backend
        self._tracks: dict[int, Roi] = {}
        self._next_id = 0
        self._since_detect = 0
        self._hunt = 0
        self._right_prob: dict[int, float] = {}  # running handedness per live track
        self._lost: dict[int, tuple[int, float]] = {}  # id -> (frames since lost, right prob)
        self.detector_runs = 0

    def step(self, image_rgb: np.ndarray) -> list[Observation]:
        cfg = self.config
        rois = dict(self._tracks)
        flags = dict.fromkeys(rois, FrameFlag.TRACKED)
        self._since_detect += 1
        missing = len(rois) < cfg.max_hands
        if not rois or (missing and (self._hunt > 0 or self._since_detect >= cfg.redetect_every)):
            self._since_detect = 0
            self.detector_runs += 1
            for palm in self.palm.detect(image_rgb):
                if len(rois) >= cfg.max_hands:
                    break
                roi = palm.roi()
                if any(_overlaps(roi, other) for other in rois.values()):
                    continue
                rois[self._next_id] = roi
                flags[self._next_id] = FrameFlag.DETECTED
                self._next_id += 1
        ids = list(rois)
        hands = self.landmarker.estimate(image_rgb, [rois[i] for i in ids])
        kept = [(i, h) for i, h in zip(ids, hands, strict=True) if h.presence >= cfg.min_presence]
        kept = self._drop_duplicates(kept)
        kept = self._reidentify(kept, set(self._tracks), flags)
        alive = {i for i, _ in kept}
        for i in set(self._tracks) - alive:
            self._lost[i] = (0, self._right_prob.pop(i, 0.5))
        self._lost = {i: (age + 1, p) for i, (age, p) in self._lost.items()
                      if i not in alive and age + 1 <= cfg.hunt_frames}  # fmt: skip
        if set(self._tracks) - alive:
            self._hunt = cfg.hunt_frames
        elif self._hunt > 0:
            self._hunt -= 1
        for i, h in kept:  # handedness memory: a slow running mean, never one frame's word
            self._right_prob[i] = 0.8 * self._right_prob.get(i, h.right_prob) + 0.2 * h.right_prob
        self._tracks = {i: lm.roi_from_landmarks(h.image_xyz[:, :2]) for i, h in kept}
        return [Observation(i, h, flags[i]) for i, h in kept]

    def _reidentify(
        self,
        kept: list[tuple[int, lm.HandLandmarks]],
        previous: set[int],
        flags: dict[int, FrameFlag],
    ) -> list[tuple[int, lm.HandLandmarks]]:
        """A hand found again soon after a track of the same side was lost (occlusion,
        motion blur) continues that track's id, unless a live track already has that side."""
        out = []
        for i, h in kept:
            if i not in previous and self._lost:
                side = h.right_prob > 0.5
                live_sides = {self._right_prob[j] > 0.5 for j, _ in kept if j in previous}
                same = [(age, j) for j, (age, p) in self._lost.items() if (p > 0.5) == side]
                if same and side not in live_sides:
                    _, old = min(same)
                    del self._lost[old]
                    flags[old] = flags[i]
                    i = old
            out.append((i, h))
        return out

    @staticmethod
    def _drop_duplicates(
        kept: list[tuple[int, lm.HandLandmarks]],
    ) -> list[tuple[int, lm.HandLandmarks]]:
        """Two crops that converged on one hand: keep the older track (lower id)."""
        out: list[tuple[int, lm.HandLandmarks]] = []
        for i, h in sorted(kept, key=lambda item: item[0]):
            if all(_landmark_iou(h.image_xyz[:, :2], o.image_xyz[:, :2]) < 0.5 for _, o in out):
                out.append((i, h))
        return out
