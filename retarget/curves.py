"""Rotation curves over time: key reduction, smoothing, gap filling and resampling (numpy only).

Blender keys a quaternion rotation as four independent F-curves (w, x, y, z). Between two
LINEAR keys each component is interpolated linearly and the pose uses the normalised result
(nlerp), so everything here that decides which keys to write models exactly that. Because the
curves interpolate numbers, q and -q (one rotation) interpolate differently: the functions
that choose keys work on hemisphere-continuous quaternions (:func:`make_continuous`), and the
caller must write those continuous values.

Quaternions are (w, x, y, z); rotation vectors are ``axis * angle`` in radians; frames (or
times) are 1-D float arrays, increasing. Bad input raises :class:`CurveError` (a
HandmocapError and a ValueError) naming the array and what is wrong with it.
"""

from __future__ import annotations

import numpy as np

from handmocap.errors import CurveError
from handmocap.retarget.rotations import (
    angle_between,
    make_continuous,
    quat_conjugate,
    quat_exp,
    quat_log,
    quat_multiply,
    quat_slerp,
)

# Below this norm an interpolated quaternion has no direction (keys q and -q halfway).
_TINY = 1e-12


# -- validation -------------------------------------------------------------------------------


def _times(name: str, a: np.ndarray) -> np.ndarray:
    """(T,) finite, strictly increasing, T >= 1."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1 or len(a) == 0:
        raise CurveError(f"{name} must have shape (T,) with T >= 1, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise CurveError(f"{name} must be finite, but holds NaN or infinity")
    if np.any(np.diff(a) <= 0.0):
        raise CurveError(f"{name} must be strictly increasing")
    return a


def _query_times(name: str, a: np.ndarray) -> np.ndarray:
    """(U,) finite, any order."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1:
        raise CurveError(f"{name} must have shape (U,), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise CurveError(f"{name} must be finite, but holds NaN or infinity")
    return a


def _array(name: str, a: np.ndarray, shape: tuple[int | None, ...], spelled: str) -> np.ndarray:
    """Float array whose shape matches ``shape`` (None: any length); ``spelled`` names it."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != len(shape) or any(
        s is not None and s != n for s, n in zip(shape, a.shape, strict=True)
    ):
        raise CurveError(f"{name} must have shape {spelled}, got {a.shape}")
    return a


def _unit(q: np.ndarray, name: str) -> np.ndarray:
    """(..., 4) finite, nonzero quaternions -> normalised copies."""
    if not np.all(np.isfinite(q)):
        raise CurveError(f"{name} must be finite, but holds NaN or infinity")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < _TINY):
        raise CurveError(f"{name} contains a zero quaternion")
    return q / norm


def _mask(name: str, m: np.ndarray | None, t: int) -> np.ndarray | None:
    if m is None:
        return None
    m = np.asarray(m)
    if m.shape != (t,) or m.dtype != np.bool_:
        got = f"{m.dtype} {m.shape}"
        raise CurveError(f"{name} must be a boolean array of shape (T,) = ({t},), got {got}")
    return m


def _bracket(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (i0, i1) of the source samples around each dst time and the weight of i1,
    clamped to the ends: (U,) int, (U,) int, (U,) float in [0, 1]."""
    i0 = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, len(src) - 1)
    i1 = np.minimum(i0 + 1, len(src) - 1)
    span = src[i1] - src[i0]
    w = np.where(span > 0.0, (dst - src[i0]) / np.where(span > 0.0, span, 1.0), 0.0)
    return i0, i1, np.clip(w, 0.0, 1.0)


# -- 1. what Blender shows --------------------------------------------------------------------


def nlerp_curve(key_frames: np.ndarray, key_quats: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The rotation Blender evaluates from LINEAR quaternion keys.

    Args:
        key_frames: (K,) key frames, strictly increasing.
        key_quats: (K, 4) keyed values (w, x, y, z), used as they are (no sign fixing:
            Blender interpolates the numbers).
        frames: (T,) frames to evaluate; outside the key range the end keys hold.

    Returns:
        (T, 4) the per-component linear interpolation, normalised. Where it is exactly zero
        (keys q and -q, halfway) the result is (0, 1, 0, 0), as Blender's ``normalize_qt``.
    """
    key_frames = _times("key_frames", key_frames)
    k = len(key_frames)
    key_quats = _array("key_quats", key_quats, (k, 4), f"(K, 4) = ({k}, 4)")
    frames = _query_times("frames", frames)
    i0, i1, w = _bracket(key_frames, frames)
    q = (1.0 - w)[:, None] * key_quats[i0] + w[:, None] * key_quats[i1]
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    zero = norm[:, 0] < _TINY
    q = q / np.where(zero[:, None], 1.0, norm)
    q[zero] = (0.0, 1.0, 0.0, 0.0)
    return q


# -- 2. key reduction -------------------------------------------------------------------------


def _segment_errors(
    frames: np.ndarray, quats: np.ndarray, locations: np.ndarray | None, i: int, j: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Errors of frames i+1 .. j-1 reconstructed from keys i and j: rotation (degrees, nlerp)
    and location (units, linear); shapes (j-i-1,)."""
    inner = slice(i + 1, j)
    w = ((frames[inner] - frames[i]) / (frames[j] - frames[i]))[:, None]
    p = (1.0 - w) * quats[i] + w * quats[j]
    rot = np.degrees(angle_between(p, quats[inner]))
    # A zero interpolant has no rotation at all: never acceptable.
    rot = np.where(np.linalg.norm(p, axis=1) < _TINY, 180.0, rot)
    if locations is None:
        return rot, None
    lin = (1.0 - w) * locations[i] + w * locations[j]
    return rot, np.linalg.norm(lin - locations[inner], axis=1)


def reduce_rotation_keys(
    frames: np.ndarray,
    quats: np.ndarray,
    tolerance_deg: float,
    locations: np.ndarray | None = None,
    tolerance_units: float = 0.0,
) -> np.ndarray:
    """Which frames to key so that LINEAR keys reproduce every frame within a tolerance.

    Douglas-Peucker on the curve Blender evaluates: start from the first and last frames; for
    each span between two kept keys, reconstruct the frames inside (nlerp for the rotation,
    linear for the location), and if any is off by more than the tolerance, keep the worst
    one and split there (an explicit stack, no recursion). The spans that remain satisfy the
    tolerance by construction, so the whole reconstruction does.

    The quaternions are made hemisphere-continuous (:func:`make_continuous`) before anything
    is measured, because q and -q interpolate differently: **the caller must key
    ``make_continuous(quats)`` at the kept frames**, not the raw input.

    Args:
        frames: (T,) frame numbers (strictly increasing, any spacing).
        quats: (T, 4) rotations (w, x, y, z), any nonzero norm.
        tolerance_deg: largest geodesic angle, degrees, between a frame and its
            reconstruction (>= 0).
        locations: (T, 3) optional locations, keyed at the same frames.
        tolerance_units: largest Euclidean distance, in the locations' units (>= 0).

    Returns:
        (T,) bool keep mask; first and last frames always kept.
    """
    frames = _times("frames", frames)
    t = len(frames)
    quats = _unit(_array("quats", quats, (t, 4), f"(T, 4) = ({t}, 4)"), "quats")
    if locations is not None:
        locations = _array("locations", locations, (t, 3), f"(T, 3) = ({t}, 3)")
    if not (tolerance_deg >= 0.0 and tolerance_units >= 0.0):
        raise CurveError(
            f"tolerances must be >= 0, got {tolerance_deg} deg and {tolerance_units} units"
        )
    q = make_continuous(quats)
    keep = np.zeros(t, dtype=bool)
    keep[[0, -1]] = True
    stack = [(0, t - 1)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        rot, loc = _segment_errors(frames, q, locations, i, j)
        bad = rot > tolerance_deg
        # Worst frame relative to its tolerance (a zero tolerance counts any error as huge).
        score = rot / max(tolerance_deg, _TINY)
        if loc is not None:
            bad |= loc > tolerance_units
            score = np.maximum(score, loc / max(tolerance_units, _TINY))
        if not np.any(bad):
            continue
        k = i + 1 + int(np.argmax(score))
        keep[k] = True
        stack += [(i, k), (k, j)]
    return keep


def reduce_bones(
    frames: np.ndarray,
    quats: np.ndarray,
    tolerance_deg: float,
    locations: np.ndarray | None = None,
    tolerance_units: float = 0.0,
) -> list[np.ndarray]:
    """:func:`reduce_rotation_keys` for each bone on its own (independent key sets).

    Args:
        frames: (T,) frames; quats: (T, B, 4); locations: (T, B, 3) or None.

    Returns:
        B boolean keep masks of shape (T,). Key ``make_continuous(quats)``, as above.
    """
    frames = _times("frames", frames)
    t = len(frames)
    quats = _array("quats", quats, (t, None, 4), f"(T, B, 4) with T = {t}")
    b = quats.shape[1]
    if locations is not None:
        locations = _array("locations", locations, (t, b, 3), f"(T, B, 3) = ({t}, {b}, 3)")
    return [
        reduce_rotation_keys(
            frames,
            quats[:, k],
            tolerance_deg,
            None if locations is None else locations[:, k],
            tolerance_units,
        )
        for k in range(b)
    ]


# -- 3. smoothing -----------------------------------------------------------------------------


def _gaussian_kernel(sigma_frames: float) -> np.ndarray:
    """(2r + 1,) normalised Gaussian taps at integer offsets, r = ceil(4 sigma)."""
    r = int(np.ceil(4.0 * sigma_frames))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_frames) ** 2)
    return k / k.sum()


def smooth_rotations(
    quats: np.ndarray, sigma_frames: float, frames_mask: np.ndarray | None = None
) -> np.ndarray:
    """Gaussian smoothing of each bone's rotation over time.

    The quaternions are made hemisphere-continuous, each component is convolved with a
    Gaussian of standard deviation ``sigma_frames`` and the result renormalised: the
    normalised weighted mean of nearby rotations, a good approximation of the rotational
    mean while their spread is small (tens of degrees). The ends are padded by mirror
    reflection (``np.pad(mode="reflect")``), so a constant signal stays constant and the
    ends are not pulled towards zero; a steady rotation still lags slightly at the very ends.

    Args:
        quats: (T, B, 4) rotations (w, x, y, z).
        sigma_frames: standard deviation in frames (>= 0; 0 returns the input unchanged).
        frames_mask: (T,) bool, the frames to replace (re-smoothing a range); the others keep
            their values bit for bit, while frames inside use neighbours on both sides,
            outside the range included. None replaces all.

    Returns:
        (T, B, 4) unit quaternions, each replaced one in the hemisphere of the input at that
        frame (so a continuous input stays continuous).
    """
    q = np.array(quats, dtype=np.float64)
    if q.ndim != 3 or q.shape[2] != 4:
        raise CurveError(f"quats must have shape (T, B, 4), got {q.shape}")
    t = len(q)
    mask = _mask("frames_mask", frames_mask, t)
    if not (np.isfinite(sigma_frames) and sigma_frames >= 0.0):
        raise CurveError(f"sigma_frames must be finite and >= 0, got {sigma_frames}")
    if sigma_frames == 0.0 or t == 0:
        return q
    unit = _unit(q, "quats")
    kernel = _gaussian_kernel(sigma_frames)
    r = len(kernel) // 2
    # reflect pads any width (numpy mirrors repeatedly) and repeats a single frame.
    padded = np.pad(make_continuous(unit), ((r, r), (0, 0), (0, 0)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, len(kernel), axis=0)
    idx = np.arange(t) if mask is None else np.flatnonzero(mask)
    smoothed = windows[idx] @ kernel  # (M, B, 4)
    norm = np.linalg.norm(smoothed, axis=-1, keepdims=True)
    # Rotations spread over half a turn inside one window can cancel out: keep the frame.
    degenerate = norm < 1e-6
    smoothed = np.where(degenerate, unit[idx], smoothed / np.where(degenerate, 1.0, norm))
    flip = np.sum(smoothed * q[idx], axis=-1, keepdims=True) < 0.0
    q[idx] = np.where(flip, -smoothed, smoothed)
    return q


# -- 4. gap filling ---------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(start, stop)) of the runs of True in a (T,) bool mask, in order."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()
    return list(zip(starts, stops, strict=True))


def _clamp_norm(v: np.ndarray, limit: float) -> np.ndarray:
    """(..., 3) vectors shortened to norm <= limit."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v * np.minimum(1.0, limit / np.maximum(n, _TINY))


def _slope(p_end: np.ndarray, c_inv: np.ndarray, q_other: np.ndarray, df: float) -> np.ndarray:
    """(B, 3) rate of change (radians per frame) of the tangent-space coordinates from a
    good frame ``q_other`` (B, 4) to the gap's end point ``p_end`` (B, 3), ``df`` frames
    apart (negative after the gap)."""
    return (p_end - quat_log(quat_multiply(c_inv, q_other))) / df


def fill_gap(
    frames: np.ndarray,
    quats: np.ndarray,
    gap: np.ndarray,
    velocity_frames: int = 2,
    max_excursion_deg: float = 90.0,
) -> np.ndarray:
    """Replace the frames in ``gap`` (any number of runs) by a smooth bridge between the good
    frames on both sides.

    Each interior run is bridged from ``q0`` (last good frame before) to ``q1`` (first good
    after) by a cubic Hermite spline in the tangent space of ``c``, the slerp midpoint of q0
    and q1: ``p = log(c^-1 q)`` for each rotation, ``q = c exp(p)``. The end values are
    exact, and the end slopes are the angular velocities of the good frames just outside,
    averaged over up to ``velocity_frames`` frames (a longer window resists jitter, a shorter
    one follows sudden changes); a side without good neighbours uses the chord's speed. With
    matching velocities the bridge is the plain slerp (exact for a steady spin about one
    axis); otherwise it eases out of and into the motion instead of kinking. Centring the
    tangent space on the midpoint keeps both end points within 90 degrees of it, where the
    log map distorts little.

    Extrapolated velocities get unreliable over long gaps, so the part of each end velocity
    (times the gap length) that departs from the chord is capped at ``max_excursion_deg``:
    the bridge never strays more than (8/27) * max_excursion_deg (27 degrees by default) from
    the slerp. A run touching the first or last frame holds the nearest good rotation.

    Args:
        frames: (T,) frame numbers (strictly increasing, any spacing).
        quats: (T, B, 4) rotations; the values inside the gap are ignored (may be NaN).
        gap: (T,) bool, True where the frame is to be replaced.
        velocity_frames: frames (>= 1) over which the end velocities are measured.
        max_excursion_deg: cap described above (>= 0).

    Returns:
        (T, B, 4); good frames unchanged, filled ones unit length and sign-continuous from
        the good frame before them.

    Raises:
        CurveError: bad shapes, or no good frame at all.
    """
    frames = _times("frames", frames)
    t = len(frames)
    quats = _array("quats", quats, (t, None, 4), f"(T, B, 4) with T = {t}")
    gap = _mask("gap", gap, t)
    if velocity_frames < 1:
        raise CurveError(f"velocity_frames must be >= 1, got {velocity_frames}")
    if not max_excursion_deg >= 0.0:
        raise CurveError(f"max_excursion_deg must be >= 0, got {max_excursion_deg}")
    if gap.all():
        raise CurveError("fill_gap needs at least one good frame; every frame is in the gap")
    out = quats.copy()
    q = out.copy()
    q[~gap] = _unit(quats[~gap], "quats (good frames)")
    runs = _runs(gap)
    limit = np.radians(max_excursion_deg)
    for n, (start, stop) in enumerate(runs):
        if start == 0:
            out[:stop] = quats[stop]
            continue
        if stop == t:
            out[start:] = quats[start - 1]
            continue
        i0, i1 = start - 1, stop
        # The good stretches around this run: [good_from, start) and [stop, good_to).
        good_from = runs[n - 1][1] if n > 0 else 0
        good_to = runs[n + 1][0] if n + 1 < len(runs) else t
        c = quat_slerp(q[i0], q[i1], 0.5)  # (B, 4)
        c_inv = quat_conjugate(c)
        p0, p1 = quat_log(quat_multiply(c_inv, q[i0])), quat_log(quat_multiply(c_inv, q[i1]))
        h = frames[i1] - frames[i0]
        chord = (p1 - p0) / h
        k0 = min(velocity_frames, i0 - good_from)
        k1 = min(velocity_frames, good_to - 1 - i1)
        m0 = chord if k0 == 0 else _slope(p0, c_inv, q[i0 - k0], frames[i0] - frames[i0 - k0])
        m1 = chord if k1 == 0 else _slope(p1, c_inv, q[i1 + k1], frames[i1] - frames[i1 + k1])
        # Hermite = chord + h10 * e0 + h11 * e1, e = (velocity - chord) * h (radians).
        e0 = _clamp_norm((m0 - chord) * h, limit)
        e1 = _clamp_norm((m1 - chord) * h, limit)
        s = ((frames[start:stop] - frames[i0]) / h)[:, None, None]  # (n, 1, 1)
        h10 = s**3 - 2.0 * s**2 + s
        h11 = s**3 - s**2
        p = p0 + s * (p1 - p0) + h10 * e0 + h11 * e1  # (n, B, 3)
        filled = quat_multiply(c, quat_exp(p))
        out[start:stop] = make_continuous(np.concatenate([quats[i0][None], filled]))[1:]
    return out


# -- 5. splicing new keys into a range ---------------------------------------------------------


def _boundary_keys(
    key_frames: np.ndarray, key_values: np.ndarray, start: float, end: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The keys kept before and after [start, end], each side closed by a boundary key.

    A boundary key sits on the last whole frame before ``start`` (the first after ``end``)
    and holds the old curve's raw per-channel linear interpolation there, so the segment
    between it and the nearest kept key evaluates exactly as before. It is added only where
    the side has kept keys and none of them is on the boundary frame or nearer the range.

    Returns (before_frames (B,), before_values (B, D), after_frames (A,), after_values (A, D)).
    """
    lo, hi = float(np.ceil(start) - 1.0), float(np.floor(end) + 1.0)
    before, after = key_frames < start, key_frames > end
    bf, bv = key_frames[before], key_values[before]
    af, av = key_frames[after], key_values[after]
    i0, i1, w = _bracket(key_frames, np.array([lo, hi]))
    edge = (1.0 - w)[:, None] * key_values[i0] + w[:, None] * key_values[i1]
    if len(bf) and bf[-1] < lo:
        bf, bv = np.append(bf, lo), np.concatenate([bv, edge[:1]])
    if len(af) and af[0] > hi:
        af, av = np.insert(af, 0, hi), np.concatenate([edge[1:], av])
    return bf, bv, af, av


def _splice_inputs(
    key_frames: np.ndarray, key_values: np.ndarray, start: float, end: float,
    new_frames: np.ndarray, new_values: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Validated float64 copies of :func:`splice_keys`'s arguments."""
    new_frames = _times("new_frames", new_frames)
    new_values = _array("new_values", new_values, (len(new_frames), None), "(N, D)")
    d = new_values.shape[1]
    key_frames = np.asarray(key_frames, dtype=np.float64)
    if len(key_frames):
        key_frames = _times("key_frames", key_frames)
    key_values = _array("key_values", key_values, (len(key_frames), d),
                        f"(K, D) = ({len(key_frames)}, {d})")  # fmt: skip
    if not (np.isfinite(start) and np.isfinite(end) and start <= end):
        raise CurveError(f"the range [{start}, {end}] is empty or not finite")
    if new_frames[0] < start or new_frames[-1] > end:
        raise CurveError(f"new_frames must lie inside [{start}, {end}]")
    return key_frames, key_values, new_frames, new_values


def splice_keys(
    key_frames: np.ndarray,
    key_values: np.ndarray,
    start: float,
    end: float,
    new_frames: np.ndarray,
    new_values: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the LINEAR keys of a curve on [start, end] by new ones, so that every whole
    frame outside the range evaluates exactly as before, whatever the key layout (a curve
    reduced to a few keys or one key per frame).

    Keys outside the range are kept; where the old curve interpolated across a range
    boundary, a boundary key holding the old curve's value is added (see
    :func:`_boundary_keys`). Frames before the curve's first key and after its last key
    (constant extrapolation) are not part of any kept segment and are not pinned.

    Args:
        key_frames: (K,) the curve's key frames, strictly increasing (K may be 0).
        key_values: (K, D) the keyed values, one column per channel.
        start, end: the range, in frames (start <= end).
        new_frames: (N,) frames of the new keys, strictly increasing, inside [start, end].
        new_values: (N, D) their values.

    Returns:
        (frames (M,), values (M, D)): the spliced keys, strictly increasing frames.
    """
    kf, kv, nf, nv = _splice_inputs(key_frames, key_values, start, end, new_frames, new_values)
    if not len(kf):
        return nf, nv
    bf, bv, af, av = _boundary_keys(kf, kv, start, end)
    return np.concatenate([bf, nf, af]), np.concatenate([bv, nv, av])


def splice_rotation_keys(
    key_frames: np.ndarray,
    key_quats: np.ndarray,
    start: float,
    end: float,
    new_frames: np.ndarray,
    new_quats: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`splice_keys` for quaternion curves (w, x, y, z), hemisphere-aware.

    The new keys are made sign-continuous with the kept key before them, and the kept keys
    after the range are negated as a block when that makes the seam continuous: negating
    every key of a stretch leaves what it shows unchanged, while a sign flip between two
    keys would spin the bone the long way round between them. Old keys are otherwise
    written as they were (even where the old curve itself had such a flip).

    Args / Returns: as :func:`splice_keys` with D = 4.
    """
    kf, kq, nf, nq = _splice_inputs(key_frames, key_quats, start, end, new_frames, new_quats)
    nq = make_continuous(nq)
    if not len(kf):
        return nf, nq
    bf, bq, af, aq = _boundary_keys(kf, kq, start, end)
    if len(bq) and np.dot(bq[-1], nq[0]) < 0.0:
        nq = -nq
    if len(aq) and np.dot(nq[-1], aq[0]) < 0.0:
        aq = -aq
    return np.concatenate([bf, nf, af]), np.concatenate([bq, nq, aq])


# -- 6. resampling ----------------------------------------------------------------------------


def resample_rotations(
    src_times: np.ndarray, quats: np.ndarray, dst_times: np.ndarray
) -> np.ndarray:
    """Slerp resampling of rotation tracks (e.g. the video's fps to the scene's).

    Args:
        src_times: (T,) sample times, strictly increasing (seconds or frames).
        quats: (T, B, 4) rotations at those times.
        dst_times: (U,) times to sample, same unit; outside the source range the end
            rotations hold.

    Returns:
        (U, B, 4) unit quaternions, the shorter arc between the two source samples around
        each time at constant angular speed; sign-continuous when dst_times increase.
    """
    src_times = _times("src_times", src_times)
    t = len(src_times)
    quats = _array("quats", quats, (t, None, 4), f"(T, B, 4) with T = {t}")
    dst_times = _query_times("dst_times", dst_times)
    q = make_continuous(_unit(quats, "quats"))
    i0, i1, w = _bracket(src_times, dst_times)
    return quat_slerp(q[i0], q[i1], np.broadcast_to(w[:, None], (len(w), q.shape[1])))


def resample_linear(src_times: np.ndarray, values: np.ndarray, dst_times: np.ndarray) -> np.ndarray:
    """Linear resampling of any per-sample values (locations, confidences).

    Args:
        src_times: (T,) strictly increasing; values: (T, ...); dst_times: (U,), clamped to
            the source range.

    Returns:
        (U, ...) float64.
    """
    src_times = _times("src_times", src_times)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim < 1 or len(values) != len(src_times):
        raise CurveError(
            f"values must have shape (T, ...) with T = {len(src_times)}, got {values.shape}"
        )
    dst_times = _query_times("dst_times", dst_times)
    i0, i1, w = _bracket(src_times, dst_times)
    w = w.reshape((-1,) + (1,) * (values.ndim - 1))
    return (1.0 - w) * values[i0] + w * values[i1]
