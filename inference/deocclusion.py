"""Two-hand de-occlusion and removal: clean each hand's crop of the other hand.

The idea is HDR's (ECCV 2022): where two hands' crops overlap, a landmark network trained
on single hands is pulled toward the other hand, so paint the other hand out of the target
hand's crop and run the ordinary single-hand network on the cleaned crop. HDR learns the
masks and the inpainting; here the masks come from the hands' own keypoints and the fill
from a background estimate, all numpy/OpenCV:

- **Masks.** A hand's amodal (whole-hand) silhouette is drawn from its 21 keypoints:
  the palm polygon, a capsule per finger bone and one up the forearm, widths in
  proportion to the palm's length. The keypoints used are the previous frames' landmarks
  carried on at their velocity (this frame's first pass is the estimate being repaired).
- **Two variants per hand**, since which hand is in front is not known before the
  landmarks are: *removal* paints the other hand's pixels that lie outside this hand's
  silhouette (right when this hand is in front), *de-occlusion* paints the other
  hand's whole silhouette (right when it is behind: the network then completes the
  hidden part as it does for any partly hidden hand).
- **Fill** from a running background (pixels last seen with no hand over them: a static
  camera shows what is behind the hands on other frames), else the median colour of the
  crop around the hands.
- **Decision.** Per hand, the landmark network's answers on the original crop and the
  variants are compared with where the hand should be (its last landmarks carried on at
  the velocity of their centre, :class:`HandMotion`); the cleaned answer is kept only
  when it is nearer by a margin (``DeocclusionConfig.prefer``), and cleaned crops are
  only tried when the first answer strays (``DeocclusionConfig.gate``).

Where it sits in the pipeline and why: docs/architecture.md, "Two interacting hands".
Every function takes and returns plain arrays; image coordinates are pixels, x right, y down.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .geometry import Roi

if TYPE_CHECKING:
    from .hand_landmarks import HandLandmarks

# MediaPipe keypoint order: 0 wrist, then 4 per finger (thumb, index, middle, ring, pinky).
PALM_POLYGON = (0, 1, 2, 5, 9, 13, 17)
FINGER_BONES = (
    *tuple((base + k, base + k + 1) for base in (1, 5, 9, 13, 17) for k in range(3)),
    (0, 1),
    (0, 5),
    (0, 17),
)


# Alpha-beta gains of a hand's centre filter (HandMotion.follow): clear of the other hand,
# and while their crops overlap.
GAINS = (0.85, 0.3)
OVERLAP_GAINS = (0.3, 0.02)


@dataclass(frozen=True)
class DeocclusionConfig:
    """Settings of the stage. Lengths are shares of the palm's length (wrist to middle
    knuckle in the image), so they hold at any hand size.

    ``finger_width`` and ``forearm_width`` are capsule diameters, ``forearm_length`` how
    far the forearm is drawn past the wrist; ``grow`` widens every silhouette (the
    keypoints sit on the bone axis and carry a few pixels of error); ``prefer`` is how
    much nearer (share of the palm's length, mean over keypoints) to the expected place a
    cleaned estimate must be to replace the original; ``gate``, in the same unit, how far
    a first estimate may stray before cleaned crops are tried at all (on the crossing
    clips a cleaned crop never won below 0.33, and trying costs two landmark runs);
    ``background_every`` is how often (frames) the running
    background takes in the pixels that no hand covers; ``trust`` is how far (palm
    lengths) the other hands' last predictions may have missed for the stage to clean a
    hand's crop at all (:meth:`HandMotion.trusted`): it paints them by their expected
    places. ``search_presence`` is how sure the landmark network must be of a hand found
    behind a known one (:func:`remove_hand`; the tracker's search for a hidden hand): the
    back hand of ``two_stacked`` came at 0.72, and on the real office clip (one hand, 63
    searches) the most was 0.50. ``hold_presence`` is the least presence at which a
    followed hand beside the other one is kept on a cleaned estimate (:func:`hold`): the
    stacked back hand came at 0.42 to 0.49 where it was dropped, and a hand the other one
    covers whole came under 0.2 on the tutting clip. Presence alone does not tell a hand
    (those office searches found nothing at up to 0.50), so the estimate must also lie
    within ``gate`` of where the followed hand should be. The search runs each time the
    detector does while a track is hunted for, or while the last search saw a hand at
    ``hold_presence`` or more; otherwise every ``search_every`` frames (30: 1 s at 30
    fps). On the office clip 61 of its 63 searches saw nothing at 0.3, and each costs a
    landmark run. ``covered_crop`` is the least side of a covered hand's next crop, as a
    share of the other hand's (:func:`widen_covered`; 0 turns it off). ``lead``: how near
    (palm lengths) to where it should be a covered hand's estimate on last frame's
    winning cleaning must lie to be kept without the raw crop and the other cleaning
    (:meth:`.tracker.HandTracker._lead_crops`). ``covered_grow`` widens a covered hand's
    own silhouette (the part *removal* leaves as it is) in place of ``grow``: the pixels
    within a few of its expected edge where the other hand lies too are the other hand's,
    which is on top, and on the stacked renders 0.03 held the back hand on more frames
    than 0.08 (docs/architecture.md, "Two interacting hands").
    """

    enabled: bool = True
    finger_width: float = 0.30
    forearm_width: float = 0.85
    forearm_length: float = 1.2
    grow: float = 0.08
    gate: float = 0.3
    prefer: float = 0.05
    background_every: int = 4
    trust: float = 0.2
    search_presence: float = 0.6
    hold_presence: float = 0.3
    search_every: int = 30
    covered_crop: float = 0.9
    lead: float = 0.1
    covered_grow: float = 0.03


def palm_length(xy: np.ndarray) -> float:
    """Pixels from the wrist to the middle finger's knuckle of (21, 2) keypoints."""
    return max(float(np.linalg.norm(xy[9] - xy[0])), 1.0)


def draw_hand(
    mask: np.ndarray,
    xy: np.ndarray,
    config: DeocclusionConfig,
    offset: tuple[int, int] = (0, 0),
    grow: float | None = None,
) -> np.ndarray:
    """Draw the amodal silhouette of the hand with (21, 2) image keypoints ``xy`` into the
    uint8 ``mask`` (set to 255), whose pixel (0, 0) is image pixel ``offset`` (x, y),
    widened by ``grow`` palm lengths (``config.grow`` unless given). Returns ``mask``."""
    pts = xy - np.asarray(offset, np.float64)
    scale = palm_length(xy)
    grow = (config.grow if grow is None else grow) * scale
    finger = max(round(config.finger_width * scale + grow), 1)
    poly = np.round(pts[list(PALM_POLYGON)]).astype(np.int32)
    cv2.fillConvexPoly(mask, cv2.convexHull(poly), 255)
    cv2.polylines(mask, [cv2.convexHull(poly)], True, 255, max(round(grow), 1))
    for a, b in FINGER_BONES:
        pa, pb = np.round(pts[a]).astype(int), np.round(pts[b]).astype(int)
        cv2.line(mask, tuple(pa.tolist()), tuple(pb.tolist()), 255, finger, cv2.LINE_8)
    along = (pts[0] - pts[9]) / scale  # unit vector from the knuckles down to the wrist
    elbow = pts[0] + along * config.forearm_length * scale
    forearm = max(round(config.forearm_width * scale + grow), 1)
    cv2.line(
        mask,
        tuple(np.round(pts[0]).astype(int).tolist()),
        tuple(np.round(elbow).astype(int).tolist()),
        255,
        forearm,
        cv2.LINE_8,
    )
    return mask


def hand_mask(xy: np.ndarray, shape: tuple[int, int], config: DeocclusionConfig) -> np.ndarray:
    """(H, W) bool amodal silhouette of the hand with (21, 2) keypoints ``xy`` in an image
    of ``shape`` (H, W)."""
    return draw_hand(np.zeros(shape, np.uint8), xy, config) > 0


def roi_box(roi: Roi, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Axis-aligned (x0, y0, x1, y1) pixel box (end exclusive) around a rotated crop,
    clipped to an image of ``shape`` (H, W); None when it lies outside the image."""
    c = roi.corners()
    x0, y0 = np.floor(c.min(axis=0)).astype(int)
    x1, y1 = np.ceil(c.max(axis=0)).astype(int) + 1
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, shape[1]), min(y1, shape[0])
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None


def hands_touch(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    """Whether two hands with (21, 2) px keypoints ``a`` and ``b`` meet in the image: a
    keypoint of one lies inside the other's keypoint hull, or the nearest keypoints of
    the two are closer than ``margin`` of the larger palm's length (keypoints lie on the
    bone axes, half a finger's width inside the skin). Overlapping crops or boxes are
    not enough: a crop is about twice the hand, and fast hands passing each other at a
    distance overlap as boxes long before either covers the other."""
    gap = np.linalg.norm(a[:, None] - b[None], axis=-1).min()
    if gap < margin * max(palm_length(a), palm_length(b)):
        return True
    for inside, hull_of in ((a, b), (b, a)):
        hull = cv2.convexHull(hull_of.astype(np.float32))
        if any(cv2.pointPolygonTest(hull, (float(x), float(y)), False) > 0 for x, y in inside):
            return True
    return False


def crops_overlap(a: Roi, b: Roi) -> bool:
    """Whether two rotated crops share any area."""
    area, _ = cv2.intersectConvexConvex(
        a.corners().astype(np.float32), b.corners().astype(np.float32)
    )
    return area > 0.0


def widen_covered(roi: Roi, others: list[Roi], share: float) -> Roi:
    """``roi`` grown about its centre to a side of at least ``share`` of the largest of
    the ``others`` crops' (the same crop when it is that large already, or with no
    others), for a hand that lies under another.

    The landmark network sees a covered hand smaller than it is (the stacked clip's back
    hand had its hidden wrist 30-75 px too near its fingers), and each next crop comes
    from that estimate, so the crop shrinks frame by frame and the hand is lost. The two
    hands of one person at about one distance are about one size."""
    if not others or share <= 0.0:
        return roi
    side = share * max(o.size for o in others)
    return replace(roi, size=side) if roi.size < side else roi


class Background:
    """A running estimate of what is behind the hands, for a static camera: each pixel
    holds its colour from the last refresh on which no hand covered it.

    ``image`` (H, W, 3) uint8 and ``known`` (H, W) bool once the first frame came in.
    """

    def __init__(self) -> None:
        self.image: np.ndarray | None = None
        self.known: np.ndarray | None = None

    def update(self, frame: np.ndarray, hands_mask: np.ndarray) -> None:
        """Take in ``frame`` (H, W, 3) uint8 where ``hands_mask`` (H, W) bool is False."""
        if self.image is None or self.image.shape != frame.shape:
            self.image = np.zeros_like(frame)
            self.known = np.zeros(frame.shape[:2], bool)
        free = np.logical_not(hands_mask)
        # OpenCV's masked copy: ~50x faster than numpy's broadcast ``where`` on a 640x480
        # frame (3.4 -> 0.06 ms), which ran every 4th frame of every two-hand capture.
        self.image = cv2.copyTo(np.ascontiguousarray(frame), free.view(np.uint8), self.image)
        self.known |= free


def fill(
    frame: np.ndarray,
    paint: np.ndarray,
    box: tuple[int, int, int, int],
    background: Background | None,
) -> np.ndarray:
    """A copy of ``frame`` (H, W, 3) uint8 with the pixels where ``paint`` (h, w) bool is
    True, inside ``box`` (x0, y0, x1, y1; ``paint`` covers exactly that box), replaced by
    the background where it is known and by the median colour of the box's unpainted
    pixels elsewhere."""
    x0, y0, x1, y1 = box
    # OpenCV's masked copy and integer indexing, not numpy's broadcast ``where`` and a
    # boolean gather: 2.5 -> 0.5 ms per call on a 320x320 box, two calls per hand-frame.
    region = frame[y0:y1, x0:x1].copy()  # a whole-frame box must not paint the input
    unknown = paint
    if background is not None and background.image is not None:
        known = background.known[y0:y1, x0:x1] & paint
        cv2.copyTo(background.image[y0:y1, x0:x1], known.view(np.uint8), region)
        unknown = paint & ~known
    if unknown.any():
        # a sample is enough for a median colour
        rest = np.take(region.reshape(-1, 3), np.flatnonzero(~paint)[::7], axis=0)
        flat = np.median(rest, axis=0) if rest.size else np.full(3, 127.0)
        # A plane per channel and a masked copy: numpy's boolean assignment of one colour
        # cost 0.7 ms on a 320x320 box, half of this function's time.
        colour = cv2.merge([np.full(paint.shape, v, np.uint8) for v in flat.astype(np.uint8)])
        cv2.copyTo(colour, np.ascontiguousarray(unknown).view(np.uint8), region)
    out = frame.copy()
    out[y0:y1, x0:x1] = region
    return out


def remove_hand(
    frame: np.ndarray,
    roi: Roi,
    xy: np.ndarray,
    config: DeocclusionConfig,
    background: Background | None,
) -> np.ndarray | None:
    """A copy of ``frame`` (H, W, 3) uint8 with the whole silhouette of the hand at
    (21, 2) keypoints ``xy`` painted out inside the crop ``roi`` (:func:`fill`), to look
    for a hand hidden behind it; None when the crop lies outside the image."""
    box = roi_box(roi, frame.shape[:2])
    if box is None:
        return None
    x0, y0, x1, y1 = box
    paint = draw_hand(np.zeros((y1 - y0, x1 - x0), np.uint8), xy, config, (x0, y0)) > 0
    return fill(frame, paint, box, background)


@dataclass(frozen=True, eq=False)
class CleanedCrops:
    """The two cleaned versions of ``frame`` (H, W, 3) uint8 for one hand's crop, painted
    only inside ``box`` (x0, y0, x1, y1): *removal* paints ``other & ~own``, *de-occlusion*
    all of ``other`` ((h, w) bool masks of the box). Each is filled (:func:`fill`) on first
    use, from ``background`` as it is then, so use them within the frame: a covered hand's
    first pass needs only one of the two."""

    frame: np.ndarray
    other: np.ndarray
    own: np.ndarray
    box: tuple[int, int, int, int]
    background: Background | None

    @cached_property
    def removal(self) -> np.ndarray:
        return fill(self.frame, self.other & ~self.own, self.box, self.background)

    @cached_property
    def deocclusion(self) -> np.ndarray:
        return fill(self.frame, self.other, self.box, self.background)

    def variant(self, k: int) -> np.ndarray:
        """The image of variant ``k``: 1 removal, 2 de-occlusion (the stage's order of
        estimates, after 0, the raw crop)."""
        return self.removal if k == 1 else self.deocclusion


def clean_crop(
    frame: np.ndarray,
    roi: Roi,
    own_xy: np.ndarray,
    others_xy: list[np.ndarray],
    config: DeocclusionConfig,
    background: Background | None,
    covered: bool = False,
) -> CleanedCrops | None:
    """Both cleaned versions of ``frame`` for the crop ``roi`` of the hand expected at
    ``own_xy`` (21, 2) with the other hands expected at ``others_xy`` (each (21, 2));
    None when no other hand's silhouette reaches into the crop. ``covered``: the hand is
    known to lie under the others, and its own silhouette is widened by
    ``config.covered_grow``, not ``config.grow``."""
    box = roi_box(roi, frame.shape[:2])
    if box is None:
        return None
    x0, y0, x1, y1 = box
    size = (y1 - y0, x1 - x0)
    canvas = np.zeros(size, np.uint8)
    for xy in others_xy:
        draw_hand(canvas, xy, config, (x0, y0))
    other = canvas > 0
    if not other.any():
        return None
    grow = config.covered_grow if covered else config.grow
    own = draw_hand(np.zeros(size, np.uint8), own_xy, config, (x0, y0), grow) > 0
    return CleanedCrops(frame, other, own, box, background)


@dataclass(frozen=True)
class HandMotion:
    """Where a tracked hand is going: its last landmarks ``last`` (21, 2) px, the filtered
    centre of its keypoints ``centre`` (2,) px, its ``velocity`` (2,) px per frame, and
    ``miss``, how far (palm lengths) the last prediction was from where the hand was
    seen: a large miss says the hand is accelerating or was lost, and then nothing
    should lean on where the filter expects it (:meth:`trusted`)."""

    last: np.ndarray
    centre: np.ndarray
    velocity: np.ndarray
    miss: float = 0.0

    @classmethod
    def start(cls, xy: np.ndarray) -> HandMotion:
        """A hand first seen at (21, 2) keypoints ``xy``, at rest."""
        return cls(xy, xy.mean(axis=0), np.zeros(2))

    def expected(self, ahead: int = 1) -> np.ndarray:
        """(21, 2) where the hand should be ``ahead`` frames on: the last landmarks'
        shape at the centre carried on at the velocity. The shape is not extrapolated:
        a finger's own motion carried on amplifies its noise."""
        return self.last + (self.centre + ahead * self.velocity - self.last.mean(axis=0))

    def trusted(self, limit: float) -> bool:
        """Whether the last prediction came within ``limit`` palm lengths."""
        return self.miss <= limit

    def follow(self, xy: np.ndarray, ahead: int, overlapped: bool) -> HandMotion:
        """The motion after seeing the hand at (21, 2) ``xy`` ``ahead`` frames after the
        last time (an alpha-beta filter on the centre). While it touches another hand, a
        measurement is as likely pulled toward that hand as right, so the filter trusts
        its own prediction far more (``OVERLAP_GAINS``)."""
        alpha, beta = OVERLAP_GAINS if overlapped else GAINS
        predicted = self.centre + ahead * self.velocity
        offset = xy.mean(axis=0) - predicted
        miss = float(np.linalg.norm(offset)) / palm_length(xy)
        return HandMotion(
            xy, predicted + alpha * offset, self.velocity + beta * offset / ahead, miss
        )


def disagreement(xy: np.ndarray, expected: np.ndarray) -> float:
    """How far an estimate (21, 2) px is from the hand's ``expected`` (21, 2) place: mean
    px over keypoints, in palm lengths. Handedness is left out: the network misreads it
    on a hand half covered by the other (a term for it made the crossing clips worse)."""
    return float(np.linalg.norm(xy - expected, axis=1).mean()) / palm_length(expected)


def choose(scores: list[float], config: DeocclusionConfig) -> int:
    """Index of the estimate to keep: 0 (the original crop's) unless a cleaned one
    (1, 2, ...) disagrees less by more than ``config.prefer``."""
    best = int(np.argmin(scores))
    return best if best > 0 and scores[best] < scores[0] - config.prefer else 0


def hold(options: list[HandLandmarks], expected: np.ndarray, config: DeocclusionConfig) -> int:
    """Index of the cleaned estimate (1, 2, ...) in ``options`` (index 0 is the original
    crop's) that keeps a followed hand beside the other one when its first estimate strayed
    and no cleaned one reached the tracker's ``min_presence``, or 0 (the hand is let go):
    the nearest to ``expected`` (21, 2) px among those with presence
    ``config.hold_presence`` or more, if within ``config.gate`` palm lengths of it.

    A hand covered by the other is still there, and the network's presence falls as less
    of it shows: the back hand of ``two_stacked`` came at 0.42 to 0.49, 0.2 palm lengths
    from its expected place, on frames where it was dropped."""
    near = [
        (disagreement(h.image_xyz[:, :2], expected), k)
        for k, h in enumerate(options)
        if k and h.presence >= config.hold_presence
    ]
    gap, best = min(near, default=(np.inf, 0))
    return best if gap <= config.gate else 0
