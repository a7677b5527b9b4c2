"""Scores for two interacting hands against a rendered clip's truth (numpy only).

Identity is judged per track: each row of a track is matched to the true hand whose
keypoints it lies on (mean 2D distance under ``match_px``); a track that moves from one
true hand to the other is an identity switch, and a true hand that ends up in several
tracks is fragmented. See docs/architecture.md, "Two interacting hands".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from handmocap.retarget.camera import project
from handmocap.take import FrameFlag

from .synth.ground_truth import ClipGroundTruth, Visibility

MATCH_PX = 60.0
# The back hand counts as findable on a frame where at least this share of its keypoints
# is visible (issue 12's bar: found on 95% of those frames).
FINDABLE_VISIBLE_SHARE = 1.0 / 3.0


@dataclass(frozen=True)
class TwoHandScore:
    """What an animator sees of two hands in one take.

    Attributes:
        tracks_per_hand: (H,) how many tracks cover each true hand (1 is right).
        switches: rows where a track's matched true hand differs from its previous row's.
        wrong_side_rows: rows whose track side is not the matched true hand's side.
        found_findable: (H,) share of frames where the hand is findable (see
            ``FINDABLE_VISIBLE_SHARE``) on which some track lies on it.
        first_found: (H,) first frame on which the hand was found (-1 never).
        hidden_px: median 2D error (px) of keypoints hidden by the other hand, matched rows.
        hidden_keypoints: how many such keypoints that median is over.
        visible_px: median 2D error (px) of visible keypoints, matched rows.
        duplicates: frames where two tracks lie on the same true hand.
    """

    tracks_per_hand: tuple[int, ...]
    switches: int
    wrong_side_rows: int
    found_findable: tuple[float, ...]
    first_found: tuple[int, ...]
    hidden_px: float
    visible_px: float
    duplicates: int
    hidden_keypoints: int = 0


def match_rows(take, truth: ClipGroundTruth, match_px: float = MATCH_PX) -> dict[int, np.ndarray]:
    """Per track id, the (N,) true hand index each row lies on (-1: none within
    ``match_px``). Where two tracks lie on one hand in a frame, both keep that match (a
    duplicate, counted by :func:`score_two_hands`)."""
    out = {}
    for tr in take.tracks:
        hands = np.full(len(tr), -1, np.int64)
        for row, f in enumerate(tr.frames):
            if not 0 <= f < truth.num_frames:
                continue
            d = np.linalg.norm(truth.keypoints_px[f] - tr.keypoints_2d[row][None], axis=-1)
            mean = d.mean(axis=1)  # (H,)
            if mean.min() <= match_px:
                hands[row] = int(mean.argmin())
        out[tr.track_id] = hands
    return out


def score_two_hands(
    take, truth: ClipGroundTruth, match_px: float = MATCH_PX, infilled: bool = True
) -> TwoHandScore:
    """Score ``take`` against ``truth`` (any number of true hands). ``infilled`` False
    leaves out the rows the motion prior filled (``FrameFlag.INFILLED``): what the
    tracker and the de-occlusion stage saw, not what the prior guessed."""
    matches = match_rows(take, truth, match_px)
    if not infilled:
        for tr in take.tracks:
            flags = getattr(tr, "flags", None)
            if flags is not None:
                matches[tr.track_id][(flags & FrameFlag.INFILLED) > 0] = -1
    h_count, t_count = truth.num_hands, truth.num_frames
    covered = np.zeros((t_count, h_count), np.int64)
    tracks_per_hand = [set() for _ in range(h_count)]
    switches = wrong_side = 0
    hidden: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    for tr in take.tracks:
        hands = matches[tr.track_id]
        seen = hands[hands >= 0]
        switches += int(np.sum(seen[1:] != seen[:-1]))
        for row, (f, h) in enumerate(zip(tr.frames, hands, strict=True)):
            if h < 0:
                continue
            covered[f, h] += 1
            tracks_per_hand[h].add(tr.track_id)
            wrong_side += tr.handedness != truth.handedness[h]
            err = np.linalg.norm(tr.keypoints_2d[row] - truth.keypoints_px[f, h], axis=1)
            vis = truth.visibility[f, h]
            hidden.append(err[vis == Visibility.OCCLUDED_BY_OTHER_HAND])
            visible.append(err[vis == Visibility.VISIBLE])
    findable = np.mean(truth.visibility == Visibility.VISIBLE, axis=2) >= FINDABLE_VISIBLE_SHARE
    found = covered > 0
    rate = tuple(
        float(found[findable[:, h], h].mean()) if findable[:, h].any() else float("nan")
        for h in range(h_count)
    )
    first = tuple(int(np.argmax(found[:, h])) if found[:, h].any() else -1 for h in range(h_count))

    def median(parts: list[np.ndarray]) -> float:
        joined = np.concatenate(parts) if parts else np.zeros(0)
        return float(np.median(joined)) if joined.size else float("nan")

    return TwoHandScore(
        tracks_per_hand=tuple(len(s) for s in tracks_per_hand),
        switches=switches,
        wrong_side_rows=wrong_side,
        found_findable=rate,
        first_found=first,
        hidden_px=median(hidden),
        visible_px=median(visible),
        duplicates=int(np.sum(covered > 1)),
        hidden_keypoints=int(sum(h.size for h in hidden)),
    )


def hidden_error_grid(
    take, truth: ClipGroundTruth, match_px: float = MATCH_PX, infilled: bool = True
) -> np.ndarray:
    """(T, H, 21) px: each keypoint's 2D error on the frames a track of ``take`` lies on its
    true hand and the other hand hides it; nan elsewhere (a keypoint not hidden, a hand no
    track lies on). Where two tracks lie on one hand, the first in ``take`` counts.
    ``infilled`` False leaves out the rows the motion prior filled, as in
    :func:`score_two_hands`."""
    grid = np.full((truth.num_frames, truth.num_hands, 21), np.nan)
    claimed = np.zeros((truth.num_frames, truth.num_hands), bool)
    matches = match_rows(take, truth, match_px)
    for tr in take.tracks:
        hands = matches[tr.track_id]
        if not infilled:
            hands = np.where((tr.flags & FrameFlag.INFILLED) > 0, -1, hands)
        for row, (f, h) in enumerate(zip(tr.frames, hands, strict=True)):
            if h < 0 or claimed[f, h]:
                continue
            claimed[f, h] = True
            hidden = truth.visibility[f, h] == Visibility.OCCLUDED_BY_OTHER_HAND
            err = np.linalg.norm(tr.keypoints_2d[row] - truth.keypoints_px[f, h], axis=1)
            grid[f, h, hidden] = err[hidden]
    return grid


def paired_change(new: np.ndarray, old: np.ndarray) -> tuple[float, int]:
    """(median of ``new`` / median of ``old`` - 1, keypoints): two :func:`hidden_error_grid`
    compared on the keypoints both scored, so that a capture which finds a hand on more
    frames is not judged on a different set (negative = lower error). nan, 0 when they
    share none."""
    both = np.isfinite(new) & np.isfinite(old)
    if not both.any():
        return float("nan"), 0
    return float(np.median(new[both]) / np.median(old[both]) - 1.0), int(both.sum())


def acceleration_error_px(take, truth: ClipGroundTruth, match_px: float = MATCH_PX) -> float:
    """Mean 2D acceleration error (px/frame^2) of ``take``'s keypoints against the truth:
    on every three consecutive frames a track lies on one true hand, the second
    difference of its keypoints less the true hand's, mean over keypoints. Jitter raises
    it, and so does a lag that rounds off a fast turn; nan with no such frames."""
    matches = match_rows(take, truth, match_px)
    errors = []
    for tr in take.tracks:
        hand, frames = matches[tr.track_id], tr.frames
        i = np.flatnonzero((frames[2:] - frames[:-2] == 2) & (hand[:-2] >= 0)
                           & (hand[:-2] == hand[1:-1]) & (hand[1:-1] == hand[2:]))  # fmt: skip
        if not i.size:
            continue
        xy = tr.keypoints_2d.astype(np.float64)
        ours = xy[i] - 2 * xy[i + 1] + xy[i + 2]
        gt = truth.keypoints_px
        h = hand[i]
        true = gt[frames[i], h] - 2 * gt[frames[i + 1], h] + gt[frames[i + 2], h]
        errors.append(np.linalg.norm(ours - true, axis=-1).mean(axis=1))
    return float(np.mean(np.concatenate(errors))) if errors else float("nan")


def animated_keypoints(take):
    """``take`` with each fitted track's ``keypoints_2d`` replaced by its animated hand: the
    MANO keypoints after the fit and the motion prior (``keypoints_3d``, camera space)
    projected through the take's intrinsics. Scoring that scores what the animator keys,
    rather than the landmark network's observation on each frame. Tracks without a fit
    are left out."""
    k = np.asarray(take.header.intrinsics, np.float64)
    tracks = tuple(
        replace(tr, keypoints_2d=project(tr.keypoints_3d.astype(np.float64), k).astype(np.float32))
        for tr in take.tracks
        if tr.keypoints_3d is not None
    )
    return replace(take, tracks=tracks)
