"""Motion prior: each whole track re-solved as one smooth motion, hidden frames filled.

The per-frame MANO fit (:mod:`.mano_fit`) decides every frame on its own, so its rotations
jitter from frame to frame, and a frame where the hand was hidden has no pose. This stage
treats a track as one motion (docs/architecture.md, "Data flow"): it finds the rotations
``X_t`` of the 16 MANO joints and the wrist translation ``p_t`` that minimise

    sum_t w_tj rho(|log(R_tj^-1 X_tj)|)                     the per-frame fit, robustly
  + lam_a sum_t |a_tj|^2 + lam_j sum_t |j_tj|^2             angular acceleration and jerk

(and the same in metres for ``p_t``), inside the anatomical joint limits (each step ends
projected onto them), where ``w_tj`` is the confidence of the keypoints
joint ``j`` moves on frame ``t`` (0 on a hidden frame), ``rho`` a Cauchy loss that lets
one wrong frame go instead of bending the motion towards it, and ``a``, ``j`` the second
and third differences of the angular velocity ``v_t = log(X_t^-1 X_t+1)`` on SO(3).

Minimising squared jerk between two known states gives the minimum-jerk trajectory, the
classic model of human point-to-point movement (Flash & Hogan 1985): that is what fills
a hidden run. The problem is solved by Gauss-Newton on the rotations' tangent spaces
(``X_t <- X_t exp(delta_t)``): each step is a banded linear system per joint (bandwidth
3, all frames at once), so 10,000 frames take milliseconds, and the same numpy code runs
whatever device the networks used. This is the batch form of a Rauch-Tung-Striebel
smoother on SO(3) with a constant-acceleration motion model.

**One knob.** ``smoothing`` S sets the weights as a cut-off: motion faster than
``cutoff_hz / S`` (3 Hz at S = 1, 1.5 Hz at S = 2) is treated as noise, at any frame rate;
S = 0 switches the stage off (the per-frame fit as it is).

**Hidden frames.** A run of at most ``max_gap_s`` seconds without observations inside a
track is filled (flag ``INFILLED``, confidence halved and falling towards the middle of
the run: they are guesses); a longer run splits the track into segments solved apart and
stays empty: beyond ~0.75 s the hand may have done a whole gesture that no interpolation
can guess (the ``prior`` benchmark measures infill error against run length).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg import solveh_banded

from handmocap.errors import HandmocapError
from handmocap.retarget.hand_skeleton import MANO21_FOR_MEDIAPIPE, WEBXR_FOR_MANO
from handmocap.retarget.joint_limits import angles_to_local_rotations, limits_array
from handmocap.retarget.rotations import (
    axis_angle_to_matrix,
    make_continuous,
    matrix_to_quat,
    mirror_rotations,
    quat_conjugate,
    quat_exp,
    quat_log,
    quat_multiply,
    quat_to_matrix,
)
from handmocap.sides import Side
from handmocap.take import OBSERVATION_FIELDS, FrameFlag, Take, Track
from handmocap.take.format import stored_dtype

MAX_SMOOTHING = 4.0
"""The knob's upper end: a 0.75 Hz cut-off, for slow, deliberate motion only; beyond it
fingers stop moving."""
DEFAULT_SMOOTHING = 1.0
"""A 3 Hz cut-off, chosen on the ``prior`` benchmark: the strongest setting at which every
rendered clip, the fast finger taps included, keeps PA-MPJPE and flexion-angle error at or
below the per-frame fit's (at 1.5 the taps' PA-MPJPE is worse than per-frame)."""
MIN_TRACK_FRAMES = 3
"""A track shorter than this has no motion to smooth (and capture drops such tracks)."""
INFILL_CONFIDENCE = 0.5
"""An infilled frame's confidence is at most this share of its neighbours' (a guess)."""


@dataclass(frozen=True)
class PriorConfig:
    """Settings of the motion prior. Times in seconds, angles in degrees, distances in metres.

    Attributes:
        smoothing: the strength S, 0..MAX_SMOOTHING; 0 = off.
        cutoff_hz: the cut-off frequency at S = 1 (it is ``cutoff_hz / S``).
        accel_share: the acceleration penalty's weight relative to the jerk penalty's, both
            scaled to the same cut-off (damps overshoot in long hidden runs).
        max_gap_s: the longest hidden run that is filled; longer runs stay empty.
        robust_deg, robust_m: the Cauchy scale of a rotation / translation residual.
        passes: Gauss-Newton steps (each a banded solve per joint, robust weights renewed).
        sweep_speed: how fast (radians per second) the wrist may sweep across the view
            before the translation's cut-off rises with its speed (:func:`sweep_factor`).
        sweep_cap: the most the translation's cut-off rises for a fast sweep (a factor).
        window_s, overlap_s: a segment longer than ``window_s`` is solved in windows of
            that length, each with ``overlap_s`` of the frames on both sides (memory flat on
            long videos). The smoother's reach grows with S: at S = 4 a cut moved the
            result by 0.024 degrees with 4 s of overlap, 0.0004 with 6 s and 0.00001 with
            8 s (tests/test_motion_prior.py; at S = 1, 1e-13 with any of them).
    """

    smoothing: float = DEFAULT_SMOOTHING
    cutoff_hz: float = 3.0
    accel_share: float = 0.5
    max_gap_s: float = 0.75
    robust_deg: float = 20.0
    robust_m: float = 0.03
    passes: int = 4
    sweep_speed: float = 1.0
    sweep_cap: float = 4.0
    window_s: float = 60.0
    overlap_s: float = 8.0

    def validated(self) -> PriorConfig:
        s = self.smoothing
        if not (isinstance(s, int | float) and np.isfinite(s) and 0.0 <= s <= MAX_SMOOTHING):
            raise HandmocapError(
                f"--smoothing must be a number from 0 (off) to {MAX_SMOOTHING:g}, got {s!r}"
            )
        if not (0.0 <= self.max_gap_s <= 10.0):
            raise HandmocapError(f"max_gap_s must be 0..10 seconds, got {self.max_gap_s}")
        if self.cutoff_hz <= 0 or self.passes < 1 or self.robust_deg <= 0 or self.robust_m <= 0:
            raise HandmocapError("cutoff_hz, passes, robust_deg and robust_m must be positive")
        if self.sweep_speed <= 0 or self.sweep_cap < 1:
            raise HandmocapError("sweep_speed must be positive and sweep_cap at least 1")
        if self.window_s <= 0 or self.overlap_s < 0:
            raise HandmocapError("window_s must be positive and overlap_s >= 0")
        return self

    @property
    def enabled(self) -> bool:
        return self.smoothing > 0.0

    def penalties(
        self, fps: float, raise_by: float | np.ndarray = 1.0
    ) -> tuple[float | np.ndarray, float | np.ndarray]:
        """(lam_a, lam_j): the acceleration and jerk weights that put the cut-off at
        ``raise_by * cutoff_hz / smoothing`` for a track sampled at ``fps`` (a frame's data
        weight is 1); floats, or arrays shaped like ``raise_by``. A sinusoid of angular
        frequency w (rad/frame) has jerk ``(2 sin(w/2))^3`` times its amplitude: the jerk
        penalty equals the data term at the cut-off."""
        w = np.minimum(np.pi, 2.0 * np.pi * self.cutoff_hz * raise_by / (self.smoothing * fps))
        gain = 2.0 * np.sin(w / 2.0)
        if np.ndim(gain) == 0:
            return self.accel_share * float(gain) ** -4, float(gain) ** -6
        return self.accel_share * gain**-4, gain**-6


# --- the banded least-squares core -----------------------------------------------------------
_ACCEL = np.array([1.0, -2.0, 1.0])
_JERK = np.array([-1.0, 3.0, -3.0, 1.0])
_BAND = 3  # half-bandwidth of D3^T D3


def _gram_band(stencil: np.ndarray, n: int, lam: float | np.ndarray = 1.0) -> np.ndarray:
    """The diagonals of ``D^T diag(lam) D`` for the difference operator ``D`` with
    ``stencil`` over ``n`` samples, ``lam`` a float or one weight per row of ``D``
    (n - len(stencil) + 1,): (_BAND + 1, n), row ``k`` the k-th superdiagonal,
    left-aligned."""
    out = np.zeros((_BAND + 1, n))
    rows = n - len(stencil) + 1
    if rows <= 0:
        return out
    for k in range(len(stencil)):
        for a in range(len(stencil) - k):
            out[k, a : a + rows] += lam * stencil[a] * stencil[a + k]
    return out


def _apply_transposed(stencil: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """``D^T x`` for ``x`` (n - len(stencil) + 1, ...) -> (n, ...)."""
    out = np.zeros((n, *x.shape[1:]))
    for a, s in enumerate(stencil):
        out[a : a + len(x)] += s * x
    return out


def _differences(stencil: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``D x`` along axis 0: (n, ...) -> (n - len(stencil) + 1, ...)."""
    m = len(x) - len(stencil) + 1
    if m <= 0:
        return np.zeros((0, *x.shape[1:]))
    return sum(s * x[a : a + m] for a, s in enumerate(stencil))


def smooth_solve(target: np.ndarray, weights: np.ndarray, lam_a: float | np.ndarray,
                 lam_j: float | np.ndarray, velocity: np.ndarray | None = None,
                 ) -> np.ndarray:  # fmt: skip
    """The correction ``d`` (T, G, C) minimising

        sum w_tg |d_tg - target_tg|^2 + lam_a |D2 (v + D1 d)|^2 + lam_j |D3' (v + D1 d)|^2

    per group ``g`` (its own weights ``weights`` (T, G)), where ``v`` (T - 1, G, C) is a
    reference velocity (zero if None): with ``v = 0`` this is a plain smoothing spline of
    ``target`` on a uniform grid. ``lam_a`` and ``lam_j`` are floats, or one weight per
    acceleration (T - 2,) and jerk (T - 3,) term. One banded Cholesky solve per group, all
    frames at once."""
    t, groups, _ = target.shape
    d2, d3 = _gram_band(_ACCEL, t, lam_a), _gram_band(_JERK, t, lam_j)
    rhs = weights[..., None] * target
    if velocity is not None and len(velocity) > 1:
        trailing = (1,) * (velocity.ndim - 1)  # a per-term weight broadcast over G, C
        a = np.diff(velocity, axis=0) * np.reshape(lam_a, (-1, *trailing))
        j = np.diff(velocity, n=2, axis=0) * np.reshape(lam_j, (-1, *trailing))
        rhs = rhs - _apply_transposed(_ACCEL, a, t) - _apply_transposed(_JERK, j, t)
    upper = np.zeros_like(d2)  # solveh_banded's upper form: diagonal k right-aligned in row -k
    for k in range(_BAND + 1):
        upper[_BAND - k, k:] = (d2[k] + d3[k])[: t - k]
    out = np.empty_like(target)
    for g in range(groups):
        band = upper.copy()
        band[_BAND] += weights[:, g] + 1e-9
        out[:, g] = solveh_banded(band, rhs[:, g], lower=False, check_finite=False)
    return out


def _cauchy(residual: np.ndarray, scale: float) -> np.ndarray:
    return 1.0 / (1.0 + (residual / scale) ** 2)


# --- the anatomical joint limits --------------------------------------------------------------
@dataclass(frozen=True)
class JointLimits:
    """The 15 MANO finger joints' limits as the per-frame fit uses them (right hand; a left
    hand is mirrored in and out): anatomical joint ``frames`` (15, 3, 3) at rest, spread
    ``signs`` (15,), and ``lo``/``hi`` (15, 3) flex, spread, twist in degrees."""

    frames: np.ndarray
    signs: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @staticmethod
    def from_webxr_hand(rest_frames: np.ndarray, signs: np.ndarray) -> JointLimits:
        """From the right WebXR hand's (25, 3, 3) rest frames and (25,) spread signs."""
        mano = WEBXR_FOR_MANO[1:]
        lim = limits_array()[mano]
        return JointLimits(rest_frames[mano], signs[mano], lim[..., 0], lim[..., 1])

    def angles(self, local: np.ndarray) -> np.ndarray:
        """(..., 15, 3, 3) right-hand local rotations -> (..., 15, 3) flex, spread, twist
        in degrees (the inverse of ``angles_to_local_rotations``)."""
        f = self.frames
        a = np.swapaxes(f, -1, -2) @ local @ f
        beta = np.arcsin(np.clip(a[..., 0, 2], -1.0, 1.0))
        alpha = np.arctan2(-a[..., 1, 2], a[..., 2, 2])
        gamma = np.arctan2(-a[..., 0, 1], a[..., 0, 0])
        return np.degrees(np.stack([-alpha, beta * self.signs, -gamma], axis=-1))

    def clip(self, quats: np.ndarray, side: Side) -> np.ndarray:
        """(F, 16, 4) rotations with every finger joint brought inside its limits (joints
        already inside are returned untouched)."""
        local = quat_to_matrix(quats[:, 1:])
        if side == Side.LEFT:
            local = mirror_rotations(local)
        angles = self.angles(local)
        clipped = np.clip(angles, self.lo, self.hi)
        outside = np.any(np.abs(clipped - angles) > 1e-6, axis=-1)
        if not outside.any():
            return quats
        fixed = angles_to_local_rotations(clipped, self.frames, self.signs)
        if side == Side.LEFT:
            fixed = mirror_rotations(fixed)
        out = quats.copy()
        q = make_continuous_pairwise(quats[:, 1:][outside], matrix_to_quat(fixed[outside]))
        out[:, 1:][outside] = q
        return out


def make_continuous_pairwise(reference: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``q`` (N, 4) with each sign flipped into ``reference``'s (N, 4) hemisphere."""
    return np.where(np.sum(reference * q, axis=-1, keepdims=True) < 0.0, -q, q)


def load_joint_limits() -> JointLimits:
    """The limits from the built WebXR hand (AssetError naming ``python3 build.py models``
    when it is missing)."""
    from handmocap.models.webxr_asset import built_webxr_hand
    from handmocap.models.webxr_hand import load_webxr_hand
    from handmocap.retarget.joint_limits import spread_signs

    hand = load_webxr_hand(built_webxr_hand().right, Side.RIGHT)
    return JointLimits.from_webxr_hand(
        hand.rest_frames, spread_signs(hand.rest_frames, hand.rest_positions)
    )


# --- one segment: frames on a uniform grid, some observed -------------------------------------
@dataclass(frozen=True)
class SegmentSolution:
    """A segment's motion on its grid of F frames: ``quats`` (F, 16, 4) unit, ``translation``
    (F, 3) metres, ``start_quats`` / ``start_translation`` the same before solving (the
    observations, hidden frames interpolated)."""

    quats: np.ndarray
    translation: np.ndarray
    start_quats: np.ndarray
    start_translation: np.ndarray


def interpolate_hidden(index: np.ndarray, quats: np.ndarray, translation: np.ndarray,
                       n: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Observations at grid positions ``index`` (K,) increasing -> all ``n`` grid frames:
    rotations (K, J, 4) by slerp and translations (K, 3) linearly between the observed
    frames around each hidden one."""
    grid = np.arange(n)
    after = np.clip(np.searchsorted(index, grid), 1, len(index) - 1) if len(index) > 1 else None
    if after is None:
        return np.repeat(quats, n, 0), np.repeat(translation, n, 0)
    before = after - 1
    s = ((grid - index[before]) / (index[after] - index[before])).clip(0.0, 1.0)
    a, b = quats[before], quats[after]
    rel = quat_log(quat_multiply(quat_conjugate(a), b))
    q = quat_multiply(a, quat_exp(rel * s[:, None, None]))
    p = translation[before] + s[:, None] * (translation[after] - translation[before])
    return q, p


def solve_segment(index: np.ndarray, quats: np.ndarray, translation: np.ndarray,
                  weights: np.ndarray, n: int, fps: float, config: PriorConfig,
                  limits: tuple[JointLimits, Side] | None = None) -> SegmentSolution:  # fmt: skip
    """Smooth one segment: observations at grid positions ``index`` (K,) of ``n`` frames,
    rotations ``quats`` (K, 16, 4), ``translation`` (K, 3) m, per-joint weights
    ``weights`` (K, 17) (16 joints, then the translation) in [0, 1]; ``limits`` (the joint
    limits and the hand's side), when given, bound every step."""
    q0, p0 = interpolate_hidden(index, quats, translation, n)
    w = np.zeros((n, 17))
    w[index] = weights
    q_obs = np.zeros((n, 16, 4))
    q_obs[index] = quats
    q_obs[w[:, :16] == 0] = q0[w[:, :16] == 0]  # unobserved: any unit rotation, weight 0
    lam_a, lam_j = config.penalties(fps)
    robust_rad = np.radians(config.robust_deg)
    q = q0
    w_rot = w[:, :16]
    for _ in range(config.passes):
        error = quat_log(quat_multiply(quat_conjugate(q), q_obs))  # (n, 16, 3)
        velocity = quat_log(quat_multiply(quat_conjugate(q[:-1]), q[1:]))
        w_eff = w_rot * _cauchy(np.linalg.norm(error, axis=-1), robust_rad)
        delta = smooth_solve(error, w_eff, lam_a, lam_j, velocity)
        q = quat_multiply(q, quat_exp(delta))
        q /= np.linalg.norm(q, axis=-1, keepdims=True)
        if limits is not None:
            q = limits[0].clip(q, limits[1])
    p_obs = np.zeros((n, 3))
    p_obs[index] = translation
    p = _smooth_translation(p0, p_obs, w[:, 16:], lam_a, lam_j, config)
    raise_by = sweep_factor(p, fps, config)
    if n >= len(_JERK) and np.any(raise_by > 1.0):
        # A fast sweep, seen on the smooth path: solved again with the cut-off raised
        # there, each penalty term by the fastest of the frames it spans.
        lam_a, _ = config.penalties(fps, _spanned_max(raise_by, len(_ACCEL)))
        _, lam_j = config.penalties(fps, _spanned_max(raise_by, len(_JERK)))
        p = _smooth_translation(p0, p_obs, w[:, 16:], lam_a, lam_j, config)
    return SegmentSolution(q, p, q0, p0)


def _smooth_translation(start: np.ndarray, observed: np.ndarray, weights: np.ndarray,
                        lam_a: float | np.ndarray, lam_j: float | np.ndarray,
                        config: PriorConfig) -> np.ndarray:  # fmt: skip
    """(n, 3) m: the ``observed`` (n, 3) translations (``weights`` (n, 1), 0 where hidden)
    smoothed from ``start`` (n, 3), the Cauchy weights renewed each pass."""
    p = start
    for _ in range(config.passes):
        residual = np.linalg.norm(observed - p, axis=-1)
        w_eff = weights * _cauchy(residual, config.robust_m)[:, None]
        p = smooth_solve(observed[:, None], w_eff, lam_a, lam_j)[:, 0]
    return p


def sweep_factor(translation: np.ndarray, fps: float, config: PriorConfig) -> np.ndarray:
    """(n,) how much to raise the translation's cut-off on each frame of a smooth (n, 3)
    wrist path in camera space (m): its speed across the view (radians per second, the
    change of ``(x/z, y/z)``) over ``config.sweep_speed``, from 1 to ``config.sweep_cap``.

    The per-frame fit places the hand across the view as precisely as the landmarks (a
    few pixels); its depth, from the hand's size, is what is noisy. A cut-off that
    quiets a slow hand bends a fast sweep: on the tutting clip played ten times (up to
    2 rad/s) the 3 Hz cut-off took the visible keypoints from 6.7 px off per frame to
    14.1 px (docs/architecture.md, "The animated hands lag a fast sweep"). Speed across
    the view, not in metres: the depth's noise would pass for speed."""
    n = len(translation)
    if n < 3:
        return np.ones(n)
    view = translation[:, :2] / np.maximum(translation[:, 2:], 1e-3)
    speed = np.empty(n)
    speed[1:-1] = np.linalg.norm(view[2:] - view[:-2], axis=1) * fps / 2.0
    speed[0], speed[-1] = speed[1], speed[-2]
    return np.clip(speed / config.sweep_speed, 1.0, config.sweep_cap)


def _spanned_max(x: np.ndarray, width: int) -> np.ndarray:
    """(n - width + 1,) the largest of each ``width`` consecutive values of (n,) ``x``."""
    return np.lib.stride_tricks.sliding_window_view(x, width).max(axis=1)


def solve_windowed(index: np.ndarray, quats: np.ndarray, translation: np.ndarray,
                   weights: np.ndarray, n: int, fps: float, config: PriorConfig,
                   limits: tuple[JointLimits, Side] | None = None,
                   ) -> Iterator[tuple[int, SegmentSolution]]:  # fmt: skip
    """:func:`solve_segment` (same arguments) in windows of ``config.window_s`` that each
    see ``config.overlap_s`` more on both sides, keeping each window's middle; one piece
    when the segment is that short. Yields (first grid frame, the solution from there on)
    in order, so that a caller can store each piece before the next is solved."""
    window = max(1, round(config.window_s * fps))
    overlap = round(config.overlap_s * fps)
    if n <= window + 2 * overlap:
        yield 0, solve_segment(index, quats, translation, weights, n, fps, config, limits)
        return
    for a in range(0, n, window):
        b = min(a + window, n)
        # Widen to observed frames, so that every window starts and ends on one.
        lo = int(index[max(0, np.searchsorted(index, a - overlap, side="right") - 1)])
        hi = int(index[min(len(index) - 1, np.searchsorted(index, b + overlap))]) + 1
        sel = (index >= lo) & (index < hi)
        sol = solve_segment(index[sel] - lo, quats[sel], translation[sel], weights[sel], hi - lo,
                            fps, config, limits)  # fmt: skip
        keep = slice(a - lo, b - lo)
        yield a, SegmentSolution(sol.quats[keep], sol.translation[keep], sol.start_quats[keep],
                                 sol.start_translation[keep])  # fmt: skip


# --- a whole track -----------------------------------------------------------------------------
# Each MANO joint is weighed by the confidence of the keypoint it sits on and the next one
# out along its finger (the bone it turns); the global rotation and the translation by all 21.
_KEYPOINT_OF_JOINT = np.array([np.flatnonzero(MANO21_FOR_MEDIAPIPE == j)[0] for j in range(16)])


def joint_weights(confidence: np.ndarray) -> np.ndarray:
    """(T, 21) keypoint confidence -> (T, 17) weights: 16 MANO joints, then translation."""
    mean = confidence.mean(axis=1, keepdims=True)
    k = _KEYPOINT_OF_JOINT[1:]
    fingers = 0.5 * (confidence[:, k] + confidence[:, k + 1])
    return np.concatenate([mean, fingers, mean], axis=1)


def side_agreement(track: Track) -> np.ndarray:
    """(T,) in [0, 1]: how far each frame's landmarks agree with the track's side. The
    landmark network's handedness turning against a side decided over the whole track
    marks an estimate gone wrong (a hand half hidden, or pulled to the other hand): 1 for
    probabilities >= 0.5 of the track's side, falling linearly to 0 at 0."""
    p_right = track.right_prob.astype(np.float64)
    p_side = p_right if track.handedness == Side.RIGHT else 1.0 - p_right
    return np.clip(2.0 * p_side, 0.0, 1.0)


@dataclass(frozen=True)
class PriorReport:
    """What the stage did to one take: frames filled, segments solved, seconds."""

    infilled_frames: int
    segments: int
    seconds: float


def check_track(track: Track) -> None:
    """Raises HandmocapError unless ``track`` can go through the prior (MANO fitted, at
    least MIN_TRACK_FRAMES observed frames)."""
    if track.mano_pose is None or track.rest_keypoints is None:
        raise HandmocapError(
            f"track {track.track_id} has no MANO fit; the motion prior smooths a MANO fit: "
            "capture without --skip-mano"
        )
    observed = int(np.sum((track.flags & FrameFlag.INFILLED) == 0))
    if observed < MIN_TRACK_FRAMES:
        raise HandmocapError(
            f"track {track.track_id} has {observed} observed frame(s); the motion prior needs "
            f"at least {MIN_TRACK_FRAMES}"
        )


def observed_rows(track: Track, keypoints: bool = True) -> Track:
    """The track as the per-frame fit left it: infilled rows dropped, the MANO fields
    back to ``frame_pose`` / ``frame_translation`` (when the take has them). With
    ``keypoints`` off, ``keypoints_3d`` is left as it was (for a caller that recomputes it)."""
    keep = (track.flags & FrameFlag.INFILLED) == 0
    rows = slice(None) if keep.all() else keep  # every row observed: no copies
    pose = track.frame_pose if track.frame_pose is not None else track.mano_pose
    transl = track.frame_translation if track.frame_translation is not None else track.translation
    fields = {name: getattr(track, name)[rows] for name in OBSERVATION_FIELDS}
    if pose is not None:
        fields.update(mano_pose=pose[rows], translation=transl[rows], frame_pose=pose[rows],
                      frame_translation=transl[rows])  # fmt: skip
        if keypoints:
            fields["keypoints_3d"] = hand_keypoints(track.rest_keypoints, pose[rows], transl[rows])
        elif track.keypoints_3d is not None:
            fields["keypoints_3d"] = track.keypoints_3d[rows]
    return replace(track, **fields)


# Per-frame maths over a whole track runs this many frames at a time, so that its
# temporaries (a few KB a frame) stay small on long videos.
BLOCK_FRAMES = 4096


def _blockwise(fn, *arrays: np.ndarray) -> np.ndarray:
    """``fn(*arrays)`` of per-frame arrays (T, ...), BLOCK_FRAMES frames at a time."""
    n = len(arrays[0])
    if n <= BLOCK_FRAMES:
        return fn(*arrays)
    return np.concatenate([fn(*(a[i : i + BLOCK_FRAMES] for a in arrays))
                           for i in range(0, n, BLOCK_FRAMES)])  # fmt: skip


def hand_keypoints(rest: np.ndarray, pose: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Camera-space keypoints (T, 21, 3) m of the skeleton ``rest`` (21, 3) (wrist at the
    origin) posed by ``pose`` (T, 16, 3) axis-angle, the wrist at ``translation`` (T, 3)."""
    return _blockwise(lambda p, t: _hand_keypoints(rest, p, t), pose, translation)


def _hand_keypoints(rest: np.ndarray, pose: np.ndarray, translation: np.ndarray) -> np.ndarray:
    from handmocap.retarget.hand_skeleton import MEDIAPIPE_21_PARENTS

    rots = axis_angle_to_matrix(pose)
    parents = np.array(MEDIAPIPE_21_PARENTS)
    joint = np.where(MANO21_FOR_MEDIAPIPE < 16, MANO21_FOR_MEDIAPIPE, -1)
    g = np.empty((len(pose), 21, 3, 3))
    p = np.empty((len(pose), 21, 3))
    g[:, 0] = rots[:, 0]
    p[:, 0] = translation
    for k in range(1, 21):  # over the 20 bones, parents first (not over frames)
        par = parents[k]
        p[:, k] = p[:, par] + np.einsum("tij,j->ti", g[:, par], rest[k] - rest[par])
        if joint[k] >= 0:
            g[:, k] = g[:, par] @ rots[:, joint[k]]
    return p


def smooth_track(track: Track, fps: float, stride: int, intrinsics: np.ndarray,
                 config: PriorConfig,
                 limits: JointLimits | None = None) -> tuple[Track, int, int]:  # fmt: skip
    """``track`` (MANO fitted; infilled rows of an earlier pass are re-solved) through the
    prior: (the smoothed track, frames infilled, segments). Frames are video indices
    ``stride`` apart; ``fps`` is the rate of the track's frames; ``limits`` bound the
    finger joints (None: unbounded).

    The output's rows are written segment by segment into columns of the file's dtypes
    (float32), so a long track holds one segment's solution at a time besides its input
    and output (docs/architecture.md, "Speed and threads")."""
    check_track(track)
    if not config.enabled:
        return observed_rows(track), 0, 1
    base = observed_rows(track, keypoints=False)
    step = (base.frames - base.frames[0]) // stride  # grid positions, 0-based
    gap_limit = round(config.max_gap_s * fps)
    breaks = np.flatnonzero(np.diff(step) - 1 > gap_limit) + 1
    segments = np.split(np.arange(len(base)), breaks)
    lengths = [int(step[rows[-1]] - step[rows[0]]) + 1 for rows in segments]
    out = _Columns(base, sum(lengths))
    # float32 like the pose they come from; each window's solve works in float64.
    quats = make_continuous(
        _blockwise(
            lambda p: matrix_to_quat(axis_angle_to_matrix(p)).astype(np.float32), base.mano_pose
        )
    )
    weights = joint_weights(base.confidence) * side_agreement(base)[:, None]
    bound = None if limits is None else (limits, base.handedness)
    at = 0
    for rows, n in zip(segments, lengths, strict=True):
        index = step[rows] - step[rows[0]]
        rows = slice(int(rows[0]), int(rows[-1]) + 1)  # a segment is consecutive rows: views
        pieces = solve_windowed(index, quats[rows], base.translation[rows], weights[rows], n,
                                fps, config, bound)  # fmt: skip
        for first, piece in pieces:
            out.fill_model(at + first, piece, intrinsics)
        out.fill_observations(at, rows, index, n, stride, gap_limit)
        at += n
    del quats, weights
    return out.track(), at - len(base), len(segments)


class _Columns:
    """The prior's output track, ``n`` grid rows, filled one segment at a time."""

    def __init__(self, base: Track, n: int):
        self.base = base
        self.right = float(np.mean(base.right_prob))
        self.cols = {
            name: np.empty((n, *np.shape(getattr(base, name))[1:]), stored_dtype(name))
            for name in (*OBSERVATION_FIELDS, "mano_pose", "translation", "keypoints_3d",
                         "frame_pose", "frame_translation")
        }  # fmt: skip

    def fill_model(self, at: int, sol: SegmentSolution, k: np.ndarray) -> None:
        """Rows ``at .. at + F`` from a solution ``sol`` on F grid frames: the motion, and
        the model's keypoints and their projection through intrinsics ``k`` (3, 3)."""
        from handmocap.retarget.rotations import matrix_to_axis_angle

        n = len(sol.quats)
        c = {name: col[at : at + n] for name, col in self.cols.items()}

        def axis_angle(q: np.ndarray) -> np.ndarray:
            return _blockwise(lambda block: matrix_to_axis_angle(quat_to_matrix(block)), q)

        c["mano_pose"][:] = axis_angle(sol.quats)
        c["translation"][:] = sol.translation
        c["frame_pose"][:] = axis_angle(sol.start_quats)
        c["frame_translation"][:] = sol.start_translation
        for a in range(0, n, BLOCK_FRAMES):
            b = min(a + BLOCK_FRAMES, n)
            pose = c["mano_pose"][a:b].astype(np.float64)
            kp3 = _hand_keypoints(self.base.rest_keypoints, pose, sol.translation[a:b])
            c["keypoints_3d"][a:b] = kp3
            proj = kp3 @ k.T
            c["keypoints_2d"][a:b] = proj[..., :2] / np.maximum(proj[..., 2:3], 1e-6)
            c["keypoints_rel_depth"][a:b] = ((kp3[..., 2] - kp3[:, :1, 2]) * k[0, 0]
                                            / np.maximum(kp3[:, :1, 2], 1e-6))  # fmt: skip
            c["world_landmarks"][a:b] = kp3 - kp3.mean(axis=1, keepdims=True)

    def fill_observations(self, at: int, rows: np.ndarray, index: np.ndarray, n: int,
                          stride: int, gap_limit: int) -> None:  # fmt: skip
        """Rows ``at .. at + n``, a segment of the base track's ``rows`` at grid positions
        ``index``: frame numbers, flags and confidence; observed rows keep their
        observations (over the model's, written first), infilled rows get a guessed
        confidence."""
        base = self.base
        c = {name: col[at : at + n] for name, col in self.cols.items()}
        c["frames"][:] = base.frames[rows][0] + stride * np.arange(n)
        c["confidence"][:] = _infill_confidence(index, base.confidence[rows], n, gap_limit)
        c["right_prob"][:] = self.right
        c["flags"][:] = int(FrameFlag.INFILLED)
        for name in ("keypoints_2d", "keypoints_rel_depth", "world_landmarks", "right_prob",
                     "flags", "frame_pose", "frame_translation"):  # fmt: skip
            c[name][index] = getattr(base, name)[rows]

    def track(self) -> Track:
        return replace(self.base, **self.cols)


def _infill_confidence(index: np.ndarray, conf: np.ndarray, n: int, gap_limit: int) -> np.ndarray:
    """(n, 21): the observed rows' confidence ``conf`` (K, 21) at ``index``; a hidden row
    gets INFILL_CONFIDENCE times the lower of its two observed neighbours', falling
    linearly with its distance to the nearer one (in units of ``gap_limit + 1``)."""
    grid = np.arange(n)
    after = np.clip(np.searchsorted(index, grid), 0, len(index) - 1)
    before = np.clip(after - 1, 0, None)
    after = np.where(index[after] < grid, before, after)
    edge = np.minimum(conf[before], conf[after])
    dist = np.minimum(np.abs(grid - index[before]), np.abs(index[after] - grid))
    falloff = (1.0 - dist / (gap_limit + 1.0)).astype(conf.dtype)
    guess = INFILL_CONFIDENCE * edge * falloff[:, None]
    out = guess.clip(0.0, 1.0)
    out[index] = conf
    return out


def smooth_tracks(tracks: tuple[Track, ...], fps: float, stride: int, intrinsics: np.ndarray,
                  config: PriorConfig, limits: JointLimits | None = None,
                  ) -> tuple[tuple[Track, ...], PriorReport]:  # fmt: skip
    """Every track of a take through :func:`smooth_track`; ``limits`` default to the built
    WebXR hand's (:func:`load_joint_limits`)."""
    config = config.validated()
    started = time.perf_counter()
    if limits is None and config.enabled:
        limits = load_joint_limits()
    out, infilled, segments = [], 0, 0
    for tr in tracks:
        smoothed, filled, parts = smooth_track(tr, fps, stride, intrinsics, config, limits)
        out.append(smoothed)
        infilled += filled
        segments += parts
    return tuple(out), PriorReport(infilled, segments, time.perf_counter() - started)


def prior_facts(config: PriorConfig, report: PriorReport | None) -> dict:
    """The stage's settings and, when it ran, what it did: a take header's
    ``stages["motion_prior"]``."""
    facts: dict = {"smoothing": config.smoothing, "max_gap_s": config.max_gap_s}
    if report is not None:
        facts.update(infilled_frames=report.infilled_frames, segments=report.segments,
                     seconds=round(report.seconds, 3))  # fmt: skip
    return facts


def resolve_take(take: Take, config: PriorConfig) -> tuple[Take, PriorReport]:
    """Re-solve a saved take's motion prior with ``config`` (``handmocap smooth``), from the
    per-frame fit and the observations it stores: no video, no networks.

    Raises HandmocapError, before any work, for a take without a MANO fit, one from an
    engine that did not store the per-frame fit (take format v1), or a track too short.
    """
    config = config.validated()
    if not take.tracks:
        raise HandmocapError("the take has no tracks: there is nothing to smooth")
    for tr in take.tracks:
        check_track(tr)
        if tr.frame_pose is None:
            raise HandmocapError(
                f"track {tr.track_id} has no per-frame fit stored: the take comes from an "
                "older engine (take format v1). Capture the video again to smooth it"
            )
    header = take.header
    stride = header.frame_range.stride if header.frame_range is not None else 1
    tracks, report = smooth_tracks(take.tracks, header.fps, stride, header.intrinsics, config)
    stages = dict(header.engine.stages or {})
    stages["motion_prior"] = prior_facts(config, report if config.enabled else None)
    engine = replace(header.engine, stages=stages)
    return Take(replace(header, engine=engine), tracks), report
