"""Which physical hand each track is, decided over whole tracks after tracking.

The tracker keeps identities frame to frame; here the take's tracks are settled with the
whole clip in view (docs/architecture.md, "Two interacting hands"):

1. :func:`drop_phantoms`: short, weak tracks are false detections, not hands.
2. :func:`decide_sides`: each track's side from its whole handedness record; two tracks
   seen at the same time are never the same side of one person.
3. :func:`join_reappearing`: a hand lost and found again is one track.
4. :func:`move_strays`: rows that ran on with the other hand while it was lost go to it;
   :func:`swap_sections`: two tracks that each read the other's side over a stretch cut
   off by losses took up each other's hand: their rows swap back.
5. :func:`drop_slips`: a row that lies nearer the other hand than its own path goes;
   :func:`drop_pulled`: so does the last row before a loss that lies on the other hand.
6. :func:`keep_side`: a one-side capture keeps that side's tracks.

:func:`settle` runs steps 1-5 in order.

All functions take and return tuples of :class:`~handmocap.take.Track`, numpy only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np

from handmocap.sides import Side
from handmocap.take import OBSERVATION_FIELDS, FrameFlag, Track

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
# A row is checked against the other hand only where that hand was seen within this many
# seconds before and after it: a straight line over a longer gap says little of where
# a hand was.
SLIP_WINDOW_SECONDS = 0.5
# A row's place on its track's line is drawn between the track's rows at least this many
# frames away: at a crossing point the rows next to a slipped one are pulled too.
LINE_GAP = 2
# A hand moves at most this many palm lengths from one frame to the next (the tutting
# clip's fastest sweep is 0.4); a track that jumps further between adjacent frames has
# swapped hands on one side of the jump.
MAX_STEP = 1.0
# A track's rows before such a jump go to the other track only if they continue it
# this many times more closely (per frame) than the jump continues them.
STRAY_MARGIN = 3.0
# The last row before a loss is dropped where it lies within this many palm lengths of
# the other track's row that frame (:func:`drop_pulled`).
PULLED_NEAR = 0.7
# Two tracks' rows in a stretch cut off by losses swap only where each track's rows there
# read the other track's side at least this surely (mean right-hand probability, weighted
# as in side_evidence, beyond this or below 1 - this), over at least SWAP_MIN_ROWS rows of
# each track that has rows there (:func:`swap_sections`).
SWAP_SIDE = 0.75
SWAP_MIN_ROWS = 3


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


def drop_slips(tracks: tuple[Track, ...], window: int) -> tuple[Track, ...]:
    """The tracks without the rows that slipped onto the other hand: a row of one track
    that lies nearer another track's place than its own. A track's own place is the
    straight line between its nearest observed rows at least ``LINE_GAP`` frames before
    and after the frame (:func:`_line_places`), both within ``window`` video frames; the
    other track's place is its row on that frame where it has one, else its line
    (:func:`_places`); where either place is unknown the row is kept. Rows are compared by
    mean keypoint distance in pixels.

    Where the hands cross and one is lost, the other's crop can take in both hands for a
    frame: its estimate then lies between them, nearer the lost one (lines through the next
    rows: on the ten crossings of ``two_crossing``'s second render, three such rows were
    0.61-0.80 as far from the lost hand's line as from their own; every other row with its
    partner lost, 99 rows over the ``two_hands`` suite's clips and ten-pass clips with lines
    within 15 frames, was 1.54 times as far or more). Where both hands were seen, two
    estimates at a crossing point can lie together between the hands: on a fresh render of
    the first seed's ten crossings, rows 0.68 and 0.32 palm lengths from the other track's
    row that frame and 0.74 and 0.42 from their own lines. A slip there lasts a frame or
    two, and the rows next to it are pulled as well, so a line through them would vouch for
    it: hence ``LINE_GAP``. Over the ``two_hands`` suite's clips this drops nine rows with
    the partner seen, 0.41-0.73 palm lengths from their true hands (rows with the partner
    seen lie a median 0.06 from theirs). The tracker cannot tell in the moment, with neither
    hand's future in view. A dropped row becomes a gap that the motion prior fills. A
    track's first and last LINE_GAP rows are never dropped."""
    drop = {t.track_id: np.zeros(len(t), bool) for t in tracks}
    for a in tracks:
        for b in tracks:
            if b is a:
                continue
            rows = np.flatnonzero(_observed(a))
            frames = a.frames[rows]
            own, own_known = _line_places(a, frames, window)
            other, other_known = _places(b, frames, window)
            xy = a.keypoints_2d[rows]
            nearer = _mean_distance(xy, other) < _mean_distance(xy, own)
            slipped = own_known & other_known & nearer
            for row in rows[slipped]:
                log.info("dropped track %d's frame %d: it lies on track %d's hand",
                         a.track_id, a.frames[row], b.track_id)  # fmt: skip
            drop[a.track_id][rows[slipped]] = True
    return _without_rows(tracks, drop)


def drop_pulled(tracks: tuple[Track, ...]) -> tuple[Track, ...]:
    """The tracks without the last row before each loss that lies on the other hand: a
    row after which its track lost the hand (the next row is more than the track's
    smallest frame step later), within ``PULLED_NEAR`` palm lengths of another track's
    row on the same frame (mean keypoint distance over this row's palm length). A track's
    last row is kept; so are rows with no other track on their frame.

    A hand is lost where the other one covers it, and on the frame before, its crop holds
    both: the estimate is pulled onto the other hand. Over the ``two_hands`` suite's clips
    and ten-pass clips (de-occlusion on), the nine such rows within 0.6 palm lengths of the
    other hand's row lay 0.40-0.52 palm lengths from their own hand (a row with the other
    hand in view lies a median 0.06 from its own), those at 0.61-0.87 lay 0.14-0.44 from
    it; one of the nine made the only identity switches left on the suite (frame 352 of
    ``two_crossing``'s ten passes). A right row that close to the other hand goes too: a
    dropped row lengthens the gap the motion prior fills by one frame, and up to 0.7 that
    cost nothing measurable, where at 0.8 the ten-pass tutting clip's hidden keypoints came
    0.25 px worse (docs/architecture.md, "Two interacting hands")."""
    drop = {t.track_id: np.zeros(len(t), bool) for t in tracks}
    for a in tracks:
        if len(a) < 3:
            continue
        step = int(np.diff(a.frames).min())
        edge = np.flatnonzero(np.diff(a.frames) > step)  # the row before each loss
        for b in tracks:
            if b is a or not edge.size or not len(b):
                continue
            at = np.minimum(np.searchsorted(b.frames, a.frames[edge]), len(b) - 1)
            both = b.frames[at] == a.frames[edge]
            rows, other = edge[both], b.keypoints_2d[at[both]]
            palms = np.array([_palm(xy) for xy in a.keypoints_2d[rows]])
            near = _mean_distance(a.keypoints_2d[rows], other) < PULLED_NEAR * palms
            for row in rows[near]:
                log.info("dropped track %d's frame %d: lost next frame, on track %d's hand",
                         a.track_id, a.frames[row], b.track_id)  # fmt: skip
            drop[a.track_id][rows[near]] = True
    return _without_rows(tracks, drop)


def _without_rows(tracks: tuple[Track, ...], drop: dict[int, np.ndarray]) -> tuple[Track, ...]:
    """``tracks`` without the rows ``drop`` marks (per track id, (T,) bool); a track with
    none marked is returned as it is."""
    return tuple(
        replace(t, **{n: getattr(t, n)[~drop[t.track_id]] for n in OBSERVATION_FIELDS})
        if drop[t.track_id].any() else t
        for t in tracks
    )  # fmt: skip


def swap_sections(tracks: tuple[Track, ...]) -> tuple[tuple[Track, ...], int]:
    """The tracks with each swapped stretch swapped back, and how many rows moved.

    Two tracks ``a`` and ``b`` (seen together on ``SHARED_FRAMES`` or more frames, sides
    decided and different) are cut into *sections* wherever either of them is not seen
    on the next processed frame, and where a track's rows turn from reading one side
    surely to the other (:func:`_sections`): across a loss nothing ties a track's rows
    to its rows before, and a crop that slides from one hand onto the other over a frame
    or two does so while the other hand is lost, its reading turning as it goes. A
    section whose rows all read the other track's side surely (``SWAP_SIDE``; one
    track's rows where the other has none) is swapped; a run of such sections swaps back
    as a whole where each track has ``SWAP_MIN_ROWS`` rows or more in it (or none): two
    tracks that each read the other's side over the same stretch took up each other's
    hand. Sides must be decided first (:func:`decide_sides`); decide them again after.

    Where the hands meet and one is lost, the other's crop can slide onto it, and the lost
    track takes up the hand left behind; where the hands reverse while hidden (tutting, a
    clip played back and forth) both get the palm nearest where the other should be. On
    the held-out tutting render (scene seed 43) played ten times: three stretches of 13
    frames, each track's rows reading the other side at 0.85-0.95 and 0.04-0.40
    (docs/architecture.md, "Two interacting hands")."""
    out = list(tracks)
    moved = 0
    for ai in range(len(out)):
        for bi in range(ai + 1, len(out)):
            a, b = out[ai], out[bi]
            if a.handedness == b.handedness or _shared(a, b) < SHARED_FRAMES:
                continue
            swap_a, swap_b = _swapped_rows(a, b)
            if swap_a.any() or swap_b.any():
                a, b = _exchange(a, b, swap_a, swap_b)
                moved += int(swap_a.sum() + swap_b.sum())
            out[ai], out[bi] = a, b
    return tuple(out), moved


def _swapped_rows(a: Track, b: Track) -> tuple[np.ndarray, np.ndarray]:
    """((len(a),) bool, (len(b),) bool): the rows of ``a`` and ``b`` in runs of sections
    that read each other's side (see :func:`swap_sections`)."""
    seen_a, seen_b = _observed(a), _observed(b)
    swap_a, swap_b = np.zeros(len(a), bool), np.zeros(len(b), bool)
    run: list[int] | None = None  # [first frame, end frame, a's rows, b's rows]
    for section in [*_sections(a, b), None]:
        if section is not None:
            ra = slice(*np.searchsorted(a.frames, section))
            rb = slice(*np.searchsorted(b.frames, section))
            na, nb = int(seen_a[ra].sum()), int(seen_b[rb].sum())
            if (na == 0 or _reads(a, ra, seen_a[ra]) == b.handedness) and (
                nb == 0 or _reads(b, rb, seen_b[rb]) == a.handedness
            ):
                run = [run[0] if run else section[0], section[1],
                       (run[2] if run else 0) + na, (run[3] if run else 0) + nb]  # fmt: skip
                continue
        if run and _enough(run[2], run[3]):
            ra = slice(*np.searchsorted(a.frames, run[:2]))
            rb = slice(*np.searchsorted(b.frames, run[:2]))
            swap_a[ra], swap_b[rb] = seen_a[ra], seen_b[rb]
            log.info("swapped tracks %d and %d on frames %d-%d: each reads the other's side "
                     "there", a.track_id, b.track_id, run[0], run[1] - 1)  # fmt: skip
        run = None
    return swap_a, swap_b


def _enough(rows_a: int, rows_b: int) -> bool:
    """Whether a run with these rows of each track is evidence enough to swap: some
    rows, and at least ``SWAP_MIN_ROWS`` of each track that has rows in it."""
    counts = (rows_a, rows_b)
    return max(counts) >= SWAP_MIN_ROWS and all(c == 0 or c >= SWAP_MIN_ROWS for c in counts)


def _sections(a: Track, b: Track) -> list[tuple[int, int]]:
    """[(first frame, end frame exclusive)]: the stretches of processed frames (those
    either track has a row on) between cuts: where either track is not seen on the next
    processed frame, no frame was processed in between, or a track's row reads the other
    side surely from its row before (see :func:`swap_sections`)."""
    frames = np.union1d(a.frames, b.frames)
    if frames.size < 2:
        return [(int(frames[0]), int(frames[0]) + 1)] if frames.size else []
    step = int(np.diff(frames).min())
    has_a, has_b = np.isin(frames, a.frames), np.isin(frames, b.frames)
    # Boundary k lies between frames[k - 1] and frames[k]; 0 and len are the ends.
    runs_on = np.zeros(frames.size + 1, bool)
    runs_on[1:-1] = ((np.diff(frames) == step) & (has_a[1:] == has_a[:-1])
                     & (has_b[1:] == has_b[:-1]))  # fmt: skip
    for track, has in ((a, has_a), (b, has_b)):
        sure = _sure_side(track.right_prob)[np.searchsorted(track.frames, frames[has])]
        flips = np.flatnonzero(sure[1:] * sure[:-1] < 0) + 1  # rows whose read turned
        runs_on[np.flatnonzero(has)[flips]] = False
    cuts = np.flatnonzero(~runs_on)
    return [(int(frames[lo]), int(frames[hi - 1]) + 1) for lo, hi in pairwise(cuts)]


def _sure_side(right_prob: np.ndarray) -> np.ndarray:
    """(T,) +1 where a row reads a right hand surely (``SWAP_SIDE``), -1 a left, 0 unsure."""
    p = np.asarray(right_prob, np.float64)
    return (p >= SWAP_SIDE).astype(np.int8) - (p <= 1.0 - SWAP_SIDE).astype(np.int8)


def _reads(track: Track, rows: slice, seen: np.ndarray) -> Side | None:
    """The side ``track``'s ``rows`` where ``seen`` (bool over those rows) read surely
    (``SWAP_SIDE``), else None."""
    weight = track.confidence[rows][seen].mean(axis=1).astype(np.float64) + 1e-6
    p = float(np.average(track.right_prob[rows][seen], weights=weight))
    if p >= SWAP_SIDE:
        return Side.RIGHT
    return Side.LEFT if p <= 1.0 - SWAP_SIDE else None


def _exchange(a: Track, b: Track, rows_a: np.ndarray, rows_b: np.ndarray) -> tuple[Track, Track]:
    """``a`` and ``b`` with ``a``'s ``rows_a`` and ``b``'s ``rows_b`` (bool masks) traded,
    each in frame order."""

    def merged(keep: Track, kept: np.ndarray, give: Track, given: np.ndarray) -> Track:
        order = np.argsort(np.concatenate([keep.frames[kept], give.frames[given]]),
                           kind="stable")  # fmt: skip
        rows = {n: np.concatenate([getattr(keep, n)[kept], getattr(give, n)[given]])[order]
                for n in OBSERVATION_FIELDS}  # fmt: skip
        return replace(keep, **rows)

    return merged(a, ~rows_a, b, rows_b), merged(b, ~rows_b, a, rows_a)


def move_strays(tracks: tuple[Track, ...]) -> tuple[tuple[Track, ...], int]:
    """The tracks with each stray run moved to the track it belongs to, and how many rows
    moved. A stray run: track ``a``'s observed rows on consecutive video frames, ending
    where ``a`` jumps more than ``MAX_STEP`` palm lengths to its next frame's row, on
    frames where another track ``b`` has no observed row, between ``b``'s rows on the
    frame just before the run and on the frame after it. The run moves to ``b`` when
    both ends continue ``b`` within ``MAX_STEP`` palm lengths a frame and
    ``STRAY_MARGIN`` times more closely than ``a``'s jump.

    Where two hands cross, one track can slide onto the other hand while that hand's
    track is lost, and run on with it until the tracker sees the swap
    (:meth:`.tracker.HandTracker._swap_back`) and takes its own hand back: a jump no
    hand makes. On a render of ``two_crossing`` played ten times that left 14 rows of the
    right hand's track on the left hand (docs/architecture.md, "Two interacting
    hands")."""
    out = list(tracks)
    moved = 0
    for ai in range(len(out)):
        for bi in range(len(out)):
            if ai == bi:
                continue
            while (run := _stray_run(out[ai], out[bi])) is not None:
                out[ai], out[bi] = _move_rows(out[ai], out[bi], run)
                moved += int(run.sum())
    return tuple(out), moved


def _stray_run(a: Track, b: Track) -> np.ndarray | None:
    """(len(a),) bool: the first run of ``a``'s rows that strays onto ``b``'s hand (see
    :func:`move_strays`), or None."""
    seen_a, seen_b = _observed(a), _observed(b)
    rows = np.flatnonzero(seen_a)
    fa, fb = a.frames[rows], b.frames[seen_b]
    xa, xb = a.keypoints_2d[rows], b.keypoints_2d[seen_b]
    adjacent = np.flatnonzero(np.diff(fa) == 1)  # steps (rows[k], rows[k + 1]), one frame
    jumps = _mean_distance(xa[adjacent], xa[adjacent + 1])
    palms = np.maximum(np.linalg.norm(xa[adjacent, 9] - xa[adjacent, 0], axis=-1), 1.0)
    for k, jump, palm in zip(adjacent, jumps, palms, strict=True):
        if jump <= MAX_STEP * palm:
            continue
        last = rows[k]
        # b's rows just before the run and on the frame a jumped to.
        nb = int(np.searchsorted(fb, fa[k + 1]))
        if nb >= fb.size or fb[nb] != fa[k + 1] or nb == 0:
            continue
        before = int(fb[nb - 1])
        start = k
        while start > 0 and fa[start - 1] == fa[start] - 1 and fa[start - 1] > before:
            start -= 1
        if fa[start] != before + 1:
            continue  # a's run does not start right after b's last row
        first = rows[start]
        link = max(float(_mean_distance(xb[nb - 1], a.keypoints_2d[first])),
                   float(_mean_distance(a.keypoints_2d[last], xb[nb])))  # fmt: skip
        if link <= MAX_STEP * palm and STRAY_MARGIN * link < jump:
            run = np.zeros(len(a), bool)
            run[rows[start : k + 1]] = True
            return run
    return None


def _move_rows(a: Track, b: Track, rows: np.ndarray) -> tuple[Track, Track]:
    """``a`` without ``rows`` (bool mask), and ``b`` with them, in frame order."""
    log.info("moved track %d's frames %d-%d to track %d: they continue its hand",
             a.track_id, a.frames[rows][0], a.frames[rows][-1], b.track_id)  # fmt: skip
    return _exchange(a, b, rows, np.zeros(len(b), bool))


def _observed(track: Track) -> np.ndarray:
    """(T,) bool: rows the tracker saw (not filled in)."""
    return (track.flags & FrameFlag.INFILLED) == 0


def _places(track: Track, frames: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Where ``track``'s hand was on each of the (N,) video ``frames``: its observed row
    where it has one, else its place on :func:`_line_places`; (N, 21, 2) px and (N,) bool,
    whether the place is known."""
    xy, known = _line_places(track, frames, window)
    seen = np.flatnonzero(_observed(track))
    if not seen.size:
        return xy, known
    at = np.clip(np.searchsorted(track.frames[seen], frames), 0, seen.size - 1)
    here = track.frames[seen[at]] == frames
    xy[here] = track.keypoints_2d[seen[at[here]]]
    return xy, known | here


def _line_places(track: Track, frames: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Where ``track``'s hand was on each of the (N,) video ``frames``: (N, 21, 2) px on the
    straight line between its nearest observed rows at least ``LINE_GAP`` frames before
    and after the frame (the rows nearer it are left out), and (N,) bool, whether both
    lie within ``window`` frames (elsewhere the place means nothing)."""
    seen = _observed(track)
    known, xy = track.frames[seen], track.keypoints_2d[seen].astype(np.float64)
    if not known.size:
        return np.zeros((frames.size, 21, 2)), np.zeros(frames.size, bool)
    i = np.searchsorted(known, frames - LINE_GAP, side="right") - 1
    j = np.searchsorted(known, frames + LINE_GAP, side="left")
    ok = (i >= 0) & (j < known.size)
    i, j = np.clip(i, 0, known.size - 1), np.clip(j, 0, known.size - 1)
    ok &= (frames - known[i] <= window) & (known[j] - frames <= window)
    w = ((frames - known[i]) / np.maximum(known[j] - known[i], 1))[:, None, None]
    return (1.0 - w) * xy[i] + w * xy[j], ok


def _mean_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(...,) mean distance over keypoints of (..., 21, 2) keypoints."""
    return np.linalg.norm(a - b, axis=-1).mean(axis=-1)


def _distance_in_palms(first: Track, second: Track) -> float:
    """How far ``second``'s first keypoints' centre is from ``first``'s last, in the
    larger of the two palm lengths (wrist to middle knuckle, pixels)."""
    a, b = first.keypoints_2d[-1], second.keypoints_2d[0]
    return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0))) / max(_palm(a), _palm(b))


def _palm(xy: np.ndarray) -> float:
    """Pixels from the wrist to the middle knuckle of (21, 2) keypoints (at least 1)."""
    return max(float(np.linalg.norm(xy[9] - xy[0])), 1.0)


def _concatenate(first: Track, second: Track) -> Track:
    """``second``'s rows after ``first``'s, under ``first``'s id and side."""
    rows = {n: np.concatenate([getattr(first, n), getattr(second, n)]) for n in OBSERVATION_FIELDS}
    return replace(first, **rows)


@dataclass(frozen=True)
class Settled:
    """The tracks after :func:`settle`, and what it did: rows dropped as slips (or pulled
    onto the other hand), stray rows moved to the other track, rows swapped back."""

    tracks: tuple[Track, ...]
    slipped: int
    moved: int
    swapped: int


def settle(tracks: tuple[Track, ...], fps: float, max_gap: int | None, slip_window: int) -> Settled:
    """Steps 1-5 of this module on the tracker's tracks, in order: phantoms dropped at
    ``fps`` (processed frames a second), sides decided, hands that came back joined
    (``max_gap`` as in :func:`join_reappearing`), strays moved, swapped stretches swapped
    back before slips are judged (against their own hand's line) and again after (a
    dropped slip leaves the loss that cuts a swapped stretch off), slips and pulled rows
    dropped (``slip_window`` video frames, :func:`drop_slips`), sides decided again."""
    tracks = decide_sides(drop_phantoms(tracks, fps))
    tracks = join_reappearing(tracks, max_gap)
    tracks, moved = move_strays(tracks)
    tracks, swapped = swap_sections(tracks)
    rows = sum(len(t) for t in tracks)
    tracks = drop_pulled(drop_slips(tracks, slip_window))
    slipped = rows - sum(len(t) for t in tracks)
    tracks, swapped_after = swap_sections(tracks)
    return Settled(decide_sides(tracks), slipped, moved, swapped + swapped_after)


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
