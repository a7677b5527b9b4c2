"""Hand detection + landmark tracking over a video, with stable track ids.

The "solution" that composes the two models, as MediaPipe's hand tracking does it: the
palm detector runs only when no hand is tracked, on every frame for ``hunt_frames``
frames after a track was lost (it is most likely still there, e.g. behind the other
hand), or every ``redetect_every`` frames while fewer than ``max_hands`` hands are tracked
(a new hand may have entered); otherwise each hand's next crop comes from its landmarks.
All crops of a frame go to the landmark network in one batched call.

Two hands, and where this departs from MediaPipe (docs/architecture.md, "Two interacting
hands"):

- A palm beside a tracked hand is run through the landmark network rather than thrown
  away; two estimates are one hand only when their keypoints nearly coincide.
- Each hand's centre follows an alpha-beta filter (:class:`.deocclusion.HandMotion`)
  that trusts its prediction more while the hands touch. A lost track is looked for
  where its hand should be; an estimate that lies on another track's expected place
  goes to that track. Each next crop still comes from the hand's landmarks.
- Where crops overlap and the filters predicted well, :mod:`.deocclusion` cleans each
  crop of the other hand.
- A hand found again near where a lost track of its side should be takes that id back;
  while a track is hunted for, a new hand elsewhere does not take its place.
- While fewer than ``max_hands`` are followed, on detector frames when a search is due
  (:meth:`HandTracker._search_due`), the known hands are painted out of their crops and
  the landmark network looks there for a hand hidden behind them (one palm on the back
  of the other: the detector cannot see the back palm). Until such a hand is seen clear
  of the other, its crops are kept as wide as 0.9 of the other hand's, and its first pass
  sees its crop cleaned the way that won the frame before (:meth:`HandTracker._lead_crops`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from handmocap.errors import HandmocapError
from handmocap.models.mediapipe_port import MediapipeModels, built_mediapipe_models
from handmocap.take import FrameFlag

from . import deocclusion as de
from . import hand_landmarks as lm
from . import palm_detection as pd
from .backend import Backend, choose_backend
from .geometry import Roi
from .threads import beside


@dataclass(frozen=True)
class TrackerConfig:
    """Engine settings for detection and tracking (probabilities in [0, 1])."""

    device: str = "auto"
    max_hands: int = 2
    min_detection: float = 0.5
    min_presence: float = 0.5
    redetect_every: int = 10
    hunt_frames: int = 30
    threads: int = 0  # 0 = every usable core (inference/threads.py)
    # A palm crop whose centre lies within this share of a tracked crop's side is that
    # hand again. The back hand at a crossing was measured 0.48 of a side away (81 px,
    # crops of 168 px), so the former bar of 0.5 threw it away (docs/architecture.md,
    # "Two interacting hands"); its landmarks now decide.
    same_crop: float = 0.25
    # Two hands touch when a keypoint of one lies inside the other's keypoint hull or
    # their nearest keypoints are closer than this share of the palm's length; while
    # touching, each one's motion filter trusts its prediction over estimates the other
    # hand may pull over. Overlapping crops were the former test: crops are twice the
    # hand, and on the tutting clip they overlapped on every frame, so the filter never
    # learnt how fast the hands set off.
    touch_margin: float = 0.5
    # While a hand is missing, palms the detector scores from weak_detection up to
    # min_detection are looked at too, and kept where the landmark network is this sure of
    # a hand (verified_presence). Two fists side by side, backs to the camera, scored 0.47
    # and 0.06 on the first frame of a render (landmark presence 0.96 and 0.92), 0.98 and
    # 0.03 on a smaller one; of the weak palms off any hand over every two-hand render,
    # 1 in 1162 reached 0.85 (docs/architecture.md, "Two interacting hands").
    weak_detection: float = 0.01
    verified_presence: float = 0.85
    deocclusion: de.DeocclusionConfig = field(default_factory=de.DeocclusionConfig)

    def validated(self) -> TrackerConfig:
        if not 1 <= self.max_hands <= 4:
            raise HandmocapError(f"--max-hands must be 1..4, got {self.max_hands}")
        if not 0.0 < self.weak_detection <= self.min_detection:
            raise HandmocapError(
                f"weak_detection must be in (0, min_detection], got {self.weak_detection}"
            )
        if self.redetect_every < 1:
            raise HandmocapError("redetect_every must be >= 1")
        if not 0 <= self.threads <= 256:
            raise HandmocapError(
                f"--threads must be 0 (every usable core) to 256, got {self.threads}"
            )
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
    palm_config = pd.PalmConfig(
        min_score=config.min_detection, max_palms=config.max_hands * 2,
        weak_score=config.weak_detection,
    )  # fmt: skip
    palm = pd.PalmDetector(files.palm_detection, backend, palm_config, config.threads)
    return palm, lm.HandLandmarker(files.hand_landmark, backend, config.threads)


# Landmarks closer than this share of the palm's length (mean over keypoints) are one hand.
SAME_HAND = 0.3
# An estimate nearer another track's expected place than this share of its distance to
# its own track's expected place lies on the other track's hand.
OWNER_MARGIN = 0.6
# A new hand takes a lost track's id only within this many palm lengths of where that
# track's hand should be (three hands in view: the third is not the one that was lost).
RETURN_RADIUS = 3.0
# A hand found behind a kept one (the kept hand painted out of its crop) must lie at least
# this share of a palm's length from it: the network can still find the painted hand in
# what the paint left of its edges (0.31 and 0.49 from it on the tutting clip's two
# encodes, on that hand's place or half on it), and a hand underneath lies further off
# (0.76 on the stacked clip, 1.05-1.22 on the others; docs/architecture.md, "Two
# interacting hands").
SEARCH_APART = 0.6
# A handedness beyond this (or below 1 - this) is a confident call of one side.
CONFIDENT_SIDE = 0.8
# A track's whole record of handedness beyond this (or below 1 - this) leans to one side.
RECORD_LEAN = 0.65


def _flipped(memory: float, right_prob: float) -> bool:
    """The landmarks confidently call the other side than a confident track memory."""
    lo = 1.0 - CONFIDENT_SIDE
    return (memory < lo and right_prob > CONFIDENT_SIDE) or (
        memory > CONFIDENT_SIDE and right_prob < lo
    )


def _confident(right_prob: float) -> bool:
    """A confident call of one side."""
    return right_prob > CONFIDENT_SIDE or right_prob < 1.0 - CONFIDENT_SIDE


def _turned(record: float, memory: float) -> bool:
    """A track's running handedness ``memory`` confidently calls the side its whole
    ``record`` leans against. The record need only lean, not be confident: the frames a
    track has run on the other hand count in it too. On a crossing of two fists (scene
    seed 41 of ``two_crossing``) the left hand's track slid onto the right hand, and by
    the time its running memory read 0.84 its record had drifted from 0.02 to 0.24; the
    left hand, in full view, was kept unfollowed until the palm detector lost it
    (docs/architecture.md, "Two interacting hands")."""
    leans = abs(record - 0.5) >= RECORD_LEAN - 0.5
    return leans and _confident(memory) and (record > 0.5) != (memory > 0.5)


def _same_crop(a: Roi, b: Roi, fraction: float) -> bool:
    """Two crops look at the same hand when their centres are closer than ``fraction`` of
    the smaller crop's side."""
    return float(np.hypot(a.cx - b.cx, a.cy - b.cy)) < fraction * min(a.size, b.size)


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean px between corresponding points of two (21, 2) landmark sets."""
    return float(np.linalg.norm(a - b, axis=1).mean())


def _same_hand(a: np.ndarray, b: np.ndarray, share: float = SAME_HAND) -> bool:
    """Two (21, 2) landmark sets are one hand when their keypoints lie within ``share`` of
    a palm's length of each other on average. Box overlap cannot tell: two hands pressed
    together have nearly the same box."""
    scale = max(de.palm_length(a), de.palm_length(b))
    return float(np.linalg.norm(a - b, axis=1).mean()) < share * scale


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
        # Frames since the last search for a hidden hand, and whether it saw a faint one
        # (True at first: the first detector frame searches).
        self._since_search = 0
        self._search_saw = True
        self._right_prob: dict[int, float] = {}  # running handedness per live or lost track
        # Per live or lost track, its whole record of handedness: (sum of presence x
        # right_prob, sum of presence) over every frame it was kept.
        self._side_record: dict[int, tuple[float, float]] = {}
        self._motion: dict[int, de.HandMotion] = {}  # live and lost tracks
        self._overlapping: set[int] = set()  # tracks whose crop overlaps another's this frame
        self._lost: dict[int, int] = {}  # id -> frames since lost
        self._seen_clear: set[int] = set()  # tracks seen on a frame not touching another
        # Tracks whose estimate came from a cleaned crop last frame, with the variant kept
        # (1 removal, 2 de-occlusion): this frame's first pass sees that variant.
        self._lead: dict[int, int] = {}
        self._frame = 0
        self.background = de.Background()
        self.detector_runs = 0
        self.deoccluded = 0  # hand-frames whose estimate came from a cleaned crop
        self.deocclusion_seconds = 0.0
        # Wall seconds in each network (the detector's overlap the landmarks' when it runs
        # beside them), for the take's timings.
        self.seconds = {"palm_detection": 0.0, "landmarks": 0.0}

    def step(self, image_rgb: np.ndarray) -> list[Observation]:
        cfg = self.config
        rois = dict(self._tracks)
        flags = dict.fromkeys(rois, FrameFlag.TRACKED)
        self._since_detect += 1
        self._since_search += 1
        missing = len(rois) < cfg.max_hands
        self._look_where_lost(rois, flags)
        due = self._hunt > 0 or self._since_detect >= cfg.redetect_every
        detect = not rois or (missing and due)
        led = self._lead_crops(image_rgb, rois) if cfg.deocclusion.enabled else {}
        self._lead = {}
        palms = None
        if detect:
            self._since_detect = 0
            self.detector_runs += 1
            # The detector runs beside the known hands' landmarks, one thread each; the
            # palms it finds are estimated after (docs/architecture.md, "Speed and threads").
            pool = self.landmarker.network.pool if rois else None
            palms = beside(pool, lambda: self._detect(image_rgb, alone=pool is None))
        first = {i: cleaned.variant(k) for i, (k, cleaned) in led.items()}
        hands = self._landmarks(image_rgb, rois, list(rois), alone=palms is None, images=first)
        if palms is not None:
            hands |= self._new_hands(image_rgb, palms.result(), rois, flags)
        overlaps = self._overlaps(rois)
        self._overlapping = {i for i, others in overlaps.items() if others}
        held = set()  # kept under min_presence (deocclusion.hold)
        if cfg.deocclusion.enabled and self._overlapping:
            held = self._deocclude(image_rgb, rois, overlaps, hands, flags, led)
        found = {i: h for i, h in hands.items() if h.presence >= cfg.min_presence or i in held}
        kept = self._assign(found, flags)
        searching = detect and cfg.deocclusion.enabled and 0 < len(kept) < cfg.max_hands
        if searching and self._search_due():
            self._search_hidden(image_rgb, kept, flags)
        touching = self._touching(kept)
        ahead = {i: 1 + self._lost.get(i, 0) for i in kept}
        self._age_lost(set(kept))
        self._remember_sides(kept, flags)
        for i, h in kept.items():
            xy = h.image_xyz[:, :2]
            motion = self._motion.get(i)
            self._motion[i] = (
                de.HandMotion.start(xy)
                if motion is None
                else motion.follow(xy, ahead[i], i in touching)
            )
        # Each hand's next crop comes from this frame's estimate, as in MediaPipe, even
        # beside the other hand: on the tutting clip (hands passing at 0.4 palm lengths a
        # frame) crops placed by the filter lagged onto the other hand's path and swapped
        # the two (docs/architecture.md, "Two interacting hands").
        self._tracks = {i: lm.roi_from_landmarks(h.image_xyz[:, :2]) for i, h in kept.items()}
        self._widen_covered(flags, touching)
        self._frame += 1
        if cfg.deocclusion.enabled and len(kept) > 1:  # only two hands can overlap
            self._refresh_background(image_rgb, kept)
        return [Observation(i, h, flags[i]) for i, h in kept.items()]

    def _new_hands(
        self, image_rgb: np.ndarray, palms: list[pd.Palm], rois: dict[int, Roi],
        flags: dict[int, FrameFlag],
    ) -> dict[int, lm.HandLandmarks]:  # fmt: skip
        """The landmarks of the detector's ``palms`` that are not tracked hands, added to
        ``rois`` and ``flags`` (``DETECTED``) under new ids. Palms scoring under
        ``min_detection`` are tried only while hands are missing and none is hunted for
        (a hand coming into view, not one coming back), the best first, and kept only
        where the landmark network sees a hand (``verified_presence``). At crossings they
        found the back hand coming out a few frames sooner, and the tracker's rules for
        who is who then swapped the hands on both preset renders of ``two_crossing``
        played ten times (docs/architecture.md, "Two interacting hands")."""
        cfg = self.config
        known = set(rois)
        weak: list[int] = []
        for palm in palms:
            confident = palm.score >= cfg.min_detection
            if not confident and (len(rois) >= cfg.max_hands or self._lost):
                break  # weak palms come after the confident ones
            roi = palm.roi()
            # A crop centred on a tracked one looks at that hand; a palm further off may
            # be a second hand beside or behind it, which only its landmarks can tell.
            if any(_same_crop(roi, other, cfg.same_crop) for other in rois.values()):
                continue
            i = -1 - len(weak) if not confident else self._next_id
            rois[i] = roi
            if confident:
                flags[i] = FrameFlag.DETECTED
                self._next_id += 1
            else:
                weak.append(i)
        hands = self._landmarks(image_rgb, rois, [i for i in rois if i not in known])
        for i in weak:
            roi, h = rois.pop(i), hands.pop(i)
            if h.presence >= cfg.verified_presence:
                rois[self._next_id], hands[self._next_id] = roi, h
                flags[self._next_id] = FrameFlag.DETECTED
                self._next_id += 1
        return hands

    def _remember_sides(self, kept: dict[int, lm.HandLandmarks],
                        flags: dict[int, FrameFlag]) -> None:  # fmt: skip
        """Each kept track's handedness memory (a slow running mean, never one frame's
        word) and whole record, from this frame's estimate. Estimates on cleaned crops
        (``DEOCCLUDED``) leave both as they were, but for a track they start: the
        network reads the side of a half-covered hand in a painted crop as either. On a
        held-out crossing (scene seed 71 of ``two_crossing``) the left hand's track,
        held on cleaned crops as it went under, read 0.48-0.97 there; lost, it then
        counted as a right hand, and the left hand back in view was turned away for
        nine frames (docs/architecture.md, "Two interacting hands")."""
        for i, h in kept.items():
            if i in self._right_prob and flags[i] & FrameFlag.DEOCCLUDED:
                continue
            memory = self._right_prob.get(i, h.right_prob)
            self._right_prob[i] = 0.8 * memory + 0.2 * h.right_prob
            total, weight = self._side_record.get(i, (0.0, 0.0))
            self._side_record[i] = (total + h.presence * h.right_prob, weight + h.presence)

    def _widen_covered(self, flags: dict[int, FrameFlag], touching: set[int]) -> None:
        """Give each covered hand a next crop of at least ``DeocclusionConfig.covered_crop``
        of the other hand's (:func:`.deocclusion.widen_covered`). Covered: estimated on a
        cleaned crop this frame and never seen clear of the other hand since its track
        began (found under it by the search, or touching it throughout). A hand once
        seen clear keeps the crops its own landmarks give: on the crossing clips the
        hands pass at different depths (0.81 of each other's size), and a floor for every
        touching hand cost identity switches there (docs/architecture.md, "Two
        interacting hands")."""
        self._seen_clear |= {
            i for i in self._tracks if not flags[i] & FrameFlag.DEOCCLUDED and i not in touching
        }
        share = self.config.deocclusion.covered_crop
        for i, roi in self._tracks.items():
            if flags[i] & FrameFlag.DEOCCLUDED and i not in self._seen_clear:
                others = [r for j, r in self._tracks.items() if j != i]
                self._tracks[i] = de.widen_covered(roi, others, share)

    def _landmarks(self, image_rgb: np.ndarray, rois: dict[int, Roi], ids: list[int],
                   alone: bool = True, images: dict[int, np.ndarray] | None = None,
                   ) -> dict[int, lm.HandLandmarks]:  # fmt: skip
        """The landmarks in the crops ``rois[i]`` of ``ids``, by id (timed); crop ``i``
        is cut from ``images[i]`` where given, else from the frame."""
        started = time.perf_counter()
        source = [images.get(i, image_rgb) for i in ids] if images else image_rgb
        estimates = self.landmarker.estimate(source, [rois[i] for i in ids], alone=alone)
        self.seconds["landmarks"] += time.perf_counter() - started
        return dict(zip(ids, estimates, strict=True))

    def _detect(self, image_rgb: np.ndarray, alone: bool) -> list[pd.Palm]:
        started = time.perf_counter()
        palms = self.palm.detect(image_rgb, alone=alone)
        self.seconds["palm_detection"] += time.perf_counter() - started
        return palms

    def _touching(self, kept: dict[int, lm.HandLandmarks]) -> set[int]:
        """The kept hands that touch another known hand this frame (its estimate, or
        where a lost one should be: a hand lost beside this one is likely behind it)."""
        places = {i: h.image_xyz[:, :2] for i, h in kept.items()}
        places |= {j: self._expected(j) for j in self._motion if j not in kept}
        margin = self.config.touch_margin
        return {
            i for i in kept
            if any(de.hands_touch(places[i], xy, margin) for j, xy in places.items() if j != i)
        }  # fmt: skip

    def _overlaps(self, rois: dict[int, Roi]) -> dict[int, list[int]]:
        """For each known hand's crop this frame (tracked, or looked for where it was
        lost), the other known hands whose crops overlap it."""
        live = [i for i in rois if i in self._motion]
        return {i: [j for j in live if j != i and de.crops_overlap(rois[i], rois[j])] for i in live}

    def _lead_crops(
        self, image_rgb: np.ndarray, rois: dict[int, Roi]
    ) -> dict[int, tuple[int, de.CleanedCrops]]:
        """For each hand estimated on a cleaned crop last frame whose crop still overlaps
        another's: the variant kept then and this frame's cleaned crops. The first pass
        sees that variant in place of the raw crop, so a hand the other one keeps
        covering costs one landmark run a frame, not three (docs/architecture.md, "Two
        interacting hands")."""
        if not self._lead:
            return {}
        started = time.perf_counter()
        led = {}
        overlaps = self._overlaps(rois)
        for i, variant in self._lead.items():
            if i in self._seen_clear:
                continue
            cleaned = self._cleaned(image_rgb, rois, i, overlaps.get(i, []))
            if cleaned is not None:
                led[i] = (variant, cleaned)
        self.deocclusion_seconds += time.perf_counter() - started
        return led

    def _cleaned(
        self, image_rgb: np.ndarray, rois: dict[int, Roi], i: int, others: list[int]
    ) -> de.CleanedCrops | None:
        """Hand ``i``'s crop cleaned of the ``others`` hands (:func:`.deocclusion.clean_crop`;
        covered while never seen clear of them), or None when there are none or they are
        not where the stage may trust them.

        The stage paints the other hands by where they should be: after a large miss (a
        hand that just set off, or came back) that place is a guess, and on the tutting
        clip cleaning by it handed one hand's crop to the other. This hand's own miss
        does not count: while the hands touch its filter leans on its prediction and lags
        an accelerating hand, and at the fourth of ten crossings that kept the stage off
        exactly when the crop slid onto the back hand (docs/architecture.md, "Two
        interacting hands")."""
        cfg = self.config.deocclusion
        if not others or not all(self._motion[j].trusted(cfg.trust) for j in others):
            return None
        others_xy = [self._expected(j) for j in others]
        covered = i not in self._seen_clear
        return de.clean_crop(image_rgb, rois[i], self._expected(i), others_xy, cfg,
                             self.background, covered)  # fmt: skip

    def _deocclude(
        self,
        image_rgb: np.ndarray,
        rois: dict[int, Roi],
        overlaps: dict[int, list[int]],
        hands: dict[int, lm.HandLandmarks],
        flags: dict[int, FrameFlag],
        led: dict[int, tuple[int, de.CleanedCrops]],
    ) -> set[int]:
        """Where known hands' crops overlap and a hand's estimate strays from where it
        should be (more than ``DeocclusionConfig.gate``), estimate it again on its crop
        cleaned of the other hands (:mod:`.deocclusion`) and keep the cleaned estimate
        where it agrees better; those frames are flagged ``DEOCCLUDED``. A hand whose
        first pass saw a cleaned crop (``led``, :meth:`_lead_crops`) keeps that estimate
        unless it strays; then the raw crop and the other variant are tried. A followed
        hand whose estimates all fail is held on a faint cleaned one that lies where it
        should be (:func:`.deocclusion.hold`); returns the ids held so. Costs nothing
        when no two crops overlap."""
        cfg = self.config.deocclusion
        started = time.perf_counter()
        expected = {i: self._expected(i) for i in overlaps}

        def score(i: int, h: lm.HandLandmarks) -> float:
            if h.presence < self.config.min_presence:
                return float("inf")
            return de.disagreement(h.image_xyz[:, :2], expected[i])

        # Per hand to repair, its three estimates (raw crop, removal, de-occlusion), None
        # where still to run; and the runs, as (hand, slot, image).
        options: dict[int, list[lm.HandLandmarks | None]] = {}
        runs: list[tuple[int, int, np.ndarray]] = []
        for i, others in overlaps.items():
            if i in led:
                variant, cleaned = led[i]
                if score(i, hands[i]) <= cfg.lead:
                    flags[i] |= FrameFlag.DEOCCLUDED
                    self.deoccluded += 1
                    self._lead[i] = variant
                    continue
                options[i] = [None, None, None]
                options[i][variant] = hands[i]
                other = 3 - variant
                runs += [(i, 0, image_rgb), (i, other, cleaned.variant(other))]
            elif score(i, hands[i]) > cfg.gate:
                cleaned = self._cleaned(image_rgb, rois, i, others)
                if cleaned is not None:
                    options[i] = [hands[i], None, None]
                    runs += [(i, 1, cleaned.removal), (i, 2, cleaned.deocclusion)]
        held: set[int] = set()
        if runs:
            again = self.landmarker.estimate([im for *_, im in runs], [rois[i] for i, *_ in runs])
            for (i, slot, _), h in zip(runs, again, strict=True):
                options[i][slot] = h
        for i, estimates in options.items():
            pick = de.choose([score(i, h) for h in estimates], cfg)
            if pick:
                self._lead[i] = pick
            elif score(i, estimates[0]) > cfg.gate and i in self._tracks:
                pick = de.hold(estimates, expected[i], cfg)
                if pick:
                    held.add(i)
            if pick:
                hands[i] = estimates[pick]
                flags[i] |= FrameFlag.DEOCCLUDED
                self.deoccluded += 1
            elif i in led:  # the raw crop's estimate replaces the stray cleaned one
                hands[i] = estimates[0]
        self.deocclusion_seconds += time.perf_counter() - started
        return held

    def _search_hidden(
        self, image_rgb: np.ndarray, kept: dict[int, lm.HandLandmarks],
        flags: dict[int, FrameFlag],
    ) -> None:  # fmt: skip
        """Look for a hand hidden behind each kept one: its crop with it painted out
        (:func:`.deocclusion.remove_hand`) goes through the landmark network, and a hand
        found there at ``DeocclusionConfig.search_presence`` or more, not the same hand
        as a kept one, joins ``kept`` (flagged ``DETECTED | DEOCCLUDED``): as the lost
        track whose hand should be within ``RETURN_RADIUS`` palm lengths, else as a new
        track while the lost ones leave room. Its side is not trusted here: the network
        reads a hand seen from the back as either side, and the whole-clip pass
        decides it (two hands at once are a left and a right). A false find is unlikely
        to last: its next crop is painted only where the stage cleans it, and a short,
        weak track is dropped as a phantom (``hand_identity.drop_phantoms``)."""
        cfg = self.config
        started = time.perf_counter()
        known = list(kept.values())
        todo = []
        for h in known:
            painted = de.remove_hand(image_rgb, h.roi, h.image_xyz[:, :2], cfg.deocclusion,
                                     self.background)  # fmt: skip
            if painted is not None:
                todo.append((painted, h.roi))
        found = self.landmarker.estimate([im for im, _ in todo], [roi for _, roi in todo])
        self._since_search = 0
        self._search_saw = any(h.presence >= cfg.deocclusion.hold_presence for h in found)
        for h in found:
            xy = h.image_xyz[:, :2]
            if len(kept) >= cfg.max_hands or h.presence < cfg.deocclusion.search_presence:
                continue
            if any(_same_hand(xy, o.image_xyz[:, :2], SEARCH_APART) for o in kept.values()):
                continue
            i = self._lost_near(xy)
            if i is not None:
                del self._lost[i]
            elif len(kept) + len(self._lost) < cfg.max_hands:
                i = self._next_id
                self._next_id += 1
            else:
                continue
            kept[i] = h
            flags[i] = FrameFlag.DETECTED | FrameFlag.DEOCCLUDED
            self.deoccluded += 1
        self.deocclusion_seconds += time.perf_counter() - started

    def _search_due(self) -> bool:
        """Whether a detector frame also looks for a hidden hand: while a track is hunted
        for, while the last search saw a faint hand (``hold_presence``), else once every
        ``search_every`` frames."""
        cfg = self.config.deocclusion
        return self._hunt > 0 or self._search_saw or self._since_search >= cfg.search_every

    def _lost_near(self, xy: np.ndarray) -> int | None:
        """The lost track whose hand should be nearest the (21, 2) keypoints ``xy``,
        within ``RETURN_RADIUS`` of its palm lengths, or None."""
        centre = xy.mean(axis=0)
        near = []
        for j in self._lost:
            expected = self._expected(j)
            gap = float(np.linalg.norm(centre - expected.mean(axis=0))) / de.palm_length(expected)
            if gap < RETURN_RADIUS:
                near.append((gap, j))
        return min(near)[1] if near else None

    def _refresh_background(self, image_rgb: np.ndarray, kept: dict[int, lm.HandLandmarks]) -> None:
        """Every ``background_every`` frames, the pixels no hand covers go into the
        background that fills removed hands."""
        cfg = self.config.deocclusion
        if self._frame % cfg.background_every:
            return
        started = time.perf_counter()
        covered = np.zeros(image_rgb.shape[:2], np.uint8)
        for h in kept.values():
            de.draw_hand(covered, h.image_xyz[:, :2], cfg)
        self.background.update(image_rgb, covered > 0)
        self.deocclusion_seconds += time.perf_counter() - started

    def _assign(
        self, found: dict[int, lm.HandLandmarks], flags: dict[int, FrameFlag]
    ) -> dict[int, lm.HandLandmarks]:
        """Which hand each track id holds this frame (docs/architecture.md, "Two interacting
        hands").

        1. Crops that converged on one hand (landmark boxes overlapping by half): the hand
           stays with the track whose last landmarks lie closest to it; new crops give way.
        2. A track's estimate that lies on another track's hand (clearly nearer that
           hand's expected place than its own: a crop that slid over at a crossing) goes
           to that track if it is free this frame, else is let go. Handedness does not
           decide this: the network misreads it on a hand half covered by the other.
           It only corroborates: an estimate nearer another track's place than its own,
           though not clearly, is let go when it confidently reads that track's side
           against its own track's confident memory (:meth:`_other_sides`).
        3. A new crop takes back the id of a lost track of the same side (the nearest lost
           one), unless a live track holds that side; the rest are new tracks.
        At most ``max_hands`` ids are kept, tracked ones first, then the most present.
        """
        cfg = self.config
        expected = {j: self._expected(j) for j in self._motion}
        order = sorted(found, key=lambda i: (i not in self._tracks, self._distance(i, found[i])))
        kept: dict[int, lm.HandLandmarks] = {}
        for i in order:
            h = found[i]
            if any(_same_hand(h.image_xyz[:, :2], o.image_xyz[:, :2]) for o in kept.values()):
                continue
            if i in self._motion:  # tracked, or looked for where it was lost
                owner = self._owner(i, h, expected)
                if owner is not None:
                    if owner in kept or owner in found:  # it holds its own hand: a duplicate
                        continue
                    flags[owner] = flags[i]
                    i = owner
                if i in self._lost and _flipped(self._right_prob.get(i, 0.5), h.right_prob):
                    continue
                if owner is None and self._other_sides(i, h, expected):
                    continue
            else:
                i = self._returning(i, h, kept, expected, flags)
                if i not in self._motion and len(kept) + len(self._lost) >= cfg.max_hands:
                    swapped = self._swap_back(h, kept, expected, flags)
                    if swapped is None:
                        continue  # a lost hand keeps its place while it is hunted for
                    flags[swapped] = flags[i]
                    i = swapped
            kept[i] = h
        if len(kept) > cfg.max_hands:
            ranked = sorted(kept, key=lambda i: (i not in self._motion, -kept[i].presence))
            kept = {i: kept[i] for i in ranked[: cfg.max_hands]}
        return kept

    def _swap_back(
        self, h: lm.HandLandmarks, kept: dict[int, lm.HandLandmarks],
        expected: dict[int, np.ndarray], flags: dict[int, FrameFlag],
    ) -> int | None:  # fmt: skip
        """The id for a new hand ``h`` that a lost track's hunt would turn away, where a
        followed track slid onto the lost one's hand at a crossing; else None.

        The signs: a followed track ``k`` whose whole record of handedness leans to one
        side and whose running memory of it now confidently says the other (both over many
        frames, never one frame's word), a lost track ``j`` of that other side whose
        hand should be within ``RETURN_RADIUS`` palm lengths of ``k``'s estimate, and
        ``h`` confidently of ``k``'s recorded side. Then ``k``'s hand is ``j``'s
        (``j`` is back, ``k``'s filter and memory go with it) and ``h`` is ``k``'s, which
        starts afresh. Without this, the hunt for ``j`` kept a fully visible hand
        unfollowed for 30 frames on the ten crossings of ``two_crossing``
        (docs/architecture.md, "Two interacting hands")."""
        if not _confident(h.right_prob):
            return None
        for k, held in kept.items():
            record = self._record_side(k)
            if k not in self._tracks or not _turned(record, self._right_prob.get(k, 0.5)):
                continue
            if (record > 0.5) != (h.right_prob > 0.5):
                continue
            for j in self._lost:
                if (self._record_side(j) > 0.5) == (record > 0.5):
                    continue
                gap = _mean_distance(held.image_xyz[:, :2], expected[j])
                if gap > RETURN_RADIUS * de.palm_length(expected[j]):
                    continue
                del self._lost[j]
                kept[j] = kept.pop(k)
                flags[j] = flags[k]
                self._motion[j] = self._motion.pop(k)
                self._right_prob[j] = self._right_prob.pop(k)
                self._right_prob[k] = h.right_prob
                for table in (self._lead, self._tracks):
                    if k in table:
                        table[j] = table.pop(k)
                self._seen_clear.discard(k)
                return k
        return None

    def _record_side(self, i: int) -> float:
        """Track ``i``'s whole record of handedness (presence-weighted mean right_prob)."""
        total, weight = self._side_record.get(i, (0.5, 1.0))
        return total / max(weight, 1e-6)

    def _expected(self, i: int) -> np.ndarray:
        """(21, 2) where track ``i``'s hand should be this frame (lost tracks: carried on
        over the frames since)."""
        return self._motion[i].expected(1 + self._lost.get(i, 0))

    def _look_where_lost(self, rois: dict[int, Roi], flags: dict[int, FrameFlag]) -> None:
        """A crop for each track lost within ``hunt_frames`` where its hand should be now,
        while fewer than ``max_hands`` are tracked: a hand that the other one covers is
        usually still there, and the palm detector misses a half-hidden palm."""
        for i in sorted(self._lost, key=self._lost.get):
            if len(rois) >= self.config.max_hands:
                return
            guess = lm.roi_from_landmarks(self._expected(i))
            if not any(_same_crop(guess, other, self.config.same_crop) for other in rois.values()):
                rois[i] = guess
                flags[i] = FrameFlag.TRACKED

    def _distance(self, i: int, h: lm.HandLandmarks) -> float:
        """Mean px between ``h`` and track ``i``'s last landmarks (inf for a new crop)."""
        if i not in self._tracks:
            return float("inf")
        return float(np.linalg.norm(h.image_xyz[:, :2] - self._motion[i].last, axis=1).mean())

    def _owner(self, i: int, h: lm.HandLandmarks, expected: dict[int, np.ndarray]) -> int | None:
        """The other track (live or lost) whose hand track ``i``'s estimate ``h`` lies on,
        or None. ``expected`` holds each track's expected (21, 2) place this frame."""
        xy = h.image_xyz[:, :2]
        own = _mean_distance(xy, expected[i])
        for j in self._motion:
            if j != i and _mean_distance(xy, expected[j]) < OWNER_MARGIN * own:
                return j
        return None

    def _other_sides(self, i: int, h: lm.HandLandmarks, expected: dict[int, np.ndarray]) -> bool:
        """Whether track ``i``'s estimate ``h`` is likely the other hand: it confidently
        reads the other side than the track's confident memory, and lies nearer the
        expected place of a track whose memory leans to that side than its own. Position
        alone lets such an estimate by unless it is clearly nearer the other place
        (``OWNER_MARGIN``): where two fists cross, the right hand's crop took in the left
        hand at each crossing, its estimate 0.67-0.94 as far from the left's place as
        from its own and reading left (0.00-0.02), and the tracks swapped there
        (docs/architecture.md, "Two interacting hands")."""
        if not _flipped(self._right_prob.get(i, 0.5), h.right_prob):
            return False
        xy = h.image_xyz[:, :2]
        own = _mean_distance(xy, expected[i])
        side = h.right_prob > 0.5
        return any(
            j != i
            and (self._right_prob.get(j, 0.5) > 0.5) == side
            and _mean_distance(xy, expected[j]) < own
            for j in self._motion
        )

    def _returning(
        self, i: int, h: lm.HandLandmarks, kept: dict[int, lm.HandLandmarks],
        expected: dict[int, np.ndarray], flags: dict[int, FrameFlag],
    ) -> int:  # fmt: skip
        """A new crop's id: a lost track of its side comes back (occlusion, motion blur)
        when the hand is within ``RETURN_RADIUS`` palm lengths of where that track's hand
        should be; a hand further off is another hand. A track followed last frame whose
        own crop lost its hand this frame counts as lost (age 0): otherwise a palm found
        on that hand on the same frame started a new track beside the one about to be
        hunted for, and the two could never be joined (docs/architecture.md, "Two
        interacting hands")."""
        side = h.right_prob > 0.5
        live_sides = {self._right_prob.get(j, 0.5) > 0.5 for j in kept if j in self._tracks}
        centre = h.image_xyz[:, :2].mean(axis=0)
        dropped = {j: 0 for j in self._tracks if j not in kept}
        same = [
            (age, j)
            for j, age in (self._lost | dropped).items()
            if (self._right_prob.get(j, 0.5) > 0.5) == side
            and j not in kept
            and np.linalg.norm(centre - expected[j].mean(axis=0))
            < RETURN_RADIUS * de.palm_length(expected[j])
        ]
        if not same or side in live_sides:
            return i
        _, old = min(same)
        self._lost.pop(old, None)
        flags[old] = flags[i]
        return old

    def _age_lost(self, alive: set[int]) -> None:
        """Tracks not seen this frame become lost; lost ones are forgotten after
        ``hunt_frames``, and the detector hunts while any track was just lost."""
        cfg = self.config
        newly_lost = set(self._tracks) - alive
        for i in newly_lost:
            self._lost[i] = 0
        self._lost = {i: age + 1 for i, age in self._lost.items()
                      if i not in alive and age + 1 <= cfg.hunt_frames}  # fmt: skip
        for i in set(self._motion) - alive - set(self._lost):
            del self._motion[i]
            self._right_prob.pop(i, None)
            self._side_record.pop(i, None)
        if newly_lost:
            self._hunt = cfg.hunt_frames
        elif self._hunt > 0:
            self._hunt -= 1
