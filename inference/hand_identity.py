"""Which physical hand each track is, decided over whole tracks after tracking.

The tracker keeps identities frame to frame; here the take's tracks are settled with the
whole clip in view (docs/architecture.md, "Two interacting hands"):

1. :func:`drop_phantoms`: short, weak tracks are false detections, not hands.
2. :func:`decide_sides`: each track's side from its whole handedness record; two tracks
   seen at the same time are never the same side of one person.
3. :func:`join_reappearing`: a hand lost and found again is one track.
4. :func:`keep_side`: a one-side capture keeps that side's tracks.

All functions take and return tuples of :class:`~handmocap.take.Track`, numpy only.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from handmocap.sides import Side
from handmocap.take import OBSERVATION_FIELDS, Track

log = logging.getLogger(__name__)

# A track shorter than this many frames is a false detection, not a hand.
MIN_TRACK_FRAMES = 3
# A track shorter than PHANTOM_SECONDS whose median hand presence is below
# PHANTOM_PRESENCE is dropped too: a real hand that briefly enters is seen confidently.
PHANTOM_SECONDS = 0.5
PHANTOM_PRESENCE = 0.8
# Two tracks sharing at least this many frames are two hands at once.
SHARED_FRAMES = 3
# A track continues another only if it starts within this many palm lengths of where the
# other ended: a hand back from behind the other arm is near where it went; a third
# person's hand that enters elsewhere is not it.
JOIN_RADIUS = 4.0


def side_evidence(track: Track) -> float:
    """Mean probability (0..1) that ``track`` is a right hand, each frame weighted by its
    keypoints' mean confidence (a half-hidden, uncertain frame says less)."""
    weight = track.confidence.mean(axis=1).astype(np.float64) + 1e-6
    return float(np.average(track.right_prob, weights=weight))


def _side(p_right: float) -> Side:
    return Side.RIGHT if p_right > 0.5 else Side.LEFT


def drop_phantoms(tracks: tuple[Track, ...], fps: float) -> tuple[Track, ...]:
    """The tracks that are hands: at least ``MIN_TRACK_FRAMES`` long, and if shorter than
    ``PHANTOM_SECONDS`` at ``fps``, seen with a median presence of ``PHANTOM_PRESENCE``."""
    short = max(MIN_TRACK_FRAMES, round(PHANTOM_SECONDS * fps))
    out = []
    for t in tracks:
        presence = float(np.median(t.confidence.max(axis=1)))
        if len(t) < MIN_TRACK_FRAMES or (len(t) < short and presence < PHANTOM_PRESENCE):
            log.info("dropped track %d: %d frames, presence %.2f", t.track_id, len(t), presence)
            continue
        out.append(t)
    return tuple(out)


def decide_sides(tracks: tuple[Track, ...]) -> tuple[Track, ...]:
    """Each track's side from :func:`side_evidence` over the whole track (one odd frame
    never flips a hand). Where two tracks that share ``SHARED_FRAMES`` or more frames come
    out the same side, the one with the weaker evidence for it takes the other side: one
    person's two hands on screen at once are a left and a right."""
    p = {t.track_id: side_evidence(t) for t in tracks}
    side = {i: _side(v) for i, v in p.items()}
    ordered = sorted(tracks, key=lambda t: -abs(p[t.track_id] - 0.5))  # surest first
    for k, a in enumerate(ordered):
        for b in ordered[:k]:
            if side[a.track_id] == side[b.track_id] and _shared(a, b) >= SHARED_FRAMES:
                side[a.track_id] = Side.LEFT if side[b.track_id] == Side.RIGHT else Side.RIGHT
    return tuple(replace(t, handedness=side[t.track_id]) for t in tracks)


def _shared(a: Track, b: Track) -> int:
    return int(np.intersect1d(a.frames, b.frames, assume_unique=True).size)


def join_reappearing(tracks: tuple[Track, ...], max_gap: int | None) -> tuple[Track, ...]:
    """One track for a hand that was lost and came back as a new track: a track continues
    the latest earlier track of the same side that ended before it started, at most
    ``max_gap`` video frames before (None: whatever the gap, right for one person's two
    hands) and within ``JOIN_RADIUS`` palm lengths of where it ended, when no other
    track of that side was seen in between. The tracker itself
    re-identifies a hand within its hunt window, but only from the handedness of the
    first frame it sees again, which is often wrong while the hand is still half hidden.
    The sides must be decided first (:func:`decide_sides`)."""
    ordered = sorted(tracks, key=lambda t: int(t.frames[0]))
    joined: list[Track] = []
    for tr in ordered:
        start = int(tr.frames[0])
        same = [i for i, t in enumerate(joined) if t.handedness == tr.handedness]
        earlier = [i for i in same if int(joined[i].frames[-1]) < start]
        if earlier:
            i = max(earlier, key=lambda k: int(joined[k].frames[-1]))
            end = int(joined[i].frames[-1])
            between = any(int(joined[k].frames[-1]) > end for k in same if k != i)
            near = _distance_in_palms(joined[i], tr) < JOIN_RADIUS
            if (max_gap is None or start - end - 1 <= max_gap) and not between and near:
                joined[i] = _concatenate(joined[i], tr)
                continue
        joined.append(tr)
    return tuple(sorted(joined, key=lambda t: t.track_id))


def _distance_in_palms(first: Track, second: Track) -> float:
    """How far ``second``'s first keypoints' centre is from ``first``'s last, in the
    larger of the two palm lengths (wrist to middle knuckle, pixels)."""
    a, b = first.keypoints_2d[-1], second.keypoints_2d[0]
    palm = max(float(np.linalg.norm(a[9] - a[0])), float(np.linalg.norm(b[9] - b[0])), 1.0)
    return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0))) / palm


def _concatenate(first: Track, second: Track) -> Track:
    """``second``'s rows after ``first``'s, under ``first``'s id and side."""
    rows = {n: np.concatenate([getattr(first, n), getattr(second, n)]) for n in OBSERVATION_FIELDS}
    return replace(first, **rows)


def keep_side(tracks: tuple[Track, ...], side: Side | None) -> tuple[tuple[Track, ...], str | None]:
    """(the tracks of ``side``, or all for None; a warning when the other side was seen
    but not this one, else None)."""
    if side is None:
        return tracks, None
    kept = tuple(t for t in tracks if t.handedness == side)
    others = [t for t in tracks if t.handedness != side]
    if kept or not others:
        return kept, None
    other = others[0].handedness
    frames = len(np.unique(np.concatenate([t.frames for t in others])))
    return kept, (
        f"no {side} hand was found; a {other} hand was seen on {frames} frames. Capture "
        f"with --hands {other} (Hands: {str(other).title()} in Blender) or both"
    )
