"""Where the occluder goes: an opaque board that passes between the camera and the hands
(numpy only).

The board is an axis-aligned box, nearer to the camera than any keypoint of the clip and
taller than the image, that slides sideways across it. It is planned in normalised image
coordinates (u = x / z), where what it covers does not depend on depth: a point behind
the board's front face (depth ``z_f``) whose u lies between the face's edges
``x0 / z_f .. x1 / z_f`` is hidden, whatever its own depth.

Its edge crosses the hands in ``EDGE_FRAMES`` frames on the way in (partial occlusion),
then it drifts slowly while it covers them completely for ``spec.occluder_frames``
frames centred in the clip, and its other edge uncovers them in ``EDGE_FRAMES`` frames
on the way out; before and after it moves at its crossing speed, coming from and going
out of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .clip_spec import ClipSpec
from .ground_truth import Visibility
from .look import srgb_to_linear

EDGE_FRAMES = 4
# How far the skin reaches sideways beyond the keypoints (joint centres): a finger is
# ~2 cm thick, the palm's edge is ~2 cm beyond the index and pinky knuckles.
FLESH_MARGIN_M = 0.025
# The board's front face, as a share of the depth of the nearest keypoint of the clip.
DEPTH_SHARE = 0.6
THICKNESS_M = 0.01
# The board is this much wider than the hands (with their flesh margin) it covers.
WIDTH_FACTOR = 1.25
# Matte, clearly not skin: slate blue, teal, green, charcoal, light grey, dull purple.
COLOURS_SRGB: tuple[tuple[float, float, float], ...] = (
    (0.25, 0.33, 0.50), (0.16, 0.42, 0.42), (0.28, 0.45, 0.25),
    (0.18, 0.18, 0.20), (0.62, 0.64, 0.66), (0.35, 0.28, 0.45),
)  # fmt: skip


@dataclass(frozen=True)
class OccluderPlan:
    """The board over the clip's T frames.

    Attributes:
        centres: (T, 3) box centre per frame in camera space, metres.
        size: (3,) full box extents along camera x, y, z, metres.
        rgb: two linear-RGB shades of its faint noise texture.
        first_hidden, last_hidden: the frames it is planned to cover every hand fully
            (keypoints with ``FLESH_MARGIN_M`` around them), inclusive.
    """

    centres: np.ndarray
    size: np.ndarray
    rgb: tuple[tuple[float, float, float], tuple[float, float, float]]
    first_hidden: int
    last_hidden: int

    def covers(self, points: np.ndarray) -> np.ndarray:
        """(T, ...) bool: whether the segment from the camera to each camera-space point
        (T, ..., 3) passes through the box, i.e. the board hides the point."""
        centres = self.centres.reshape(len(self.centres), *([1] * (points.ndim - 2)), 3)
        lo, hi = centres - self.size / 2, centres + self.size / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            s_lo, s_hi = lo / points, hi / points  # where the segment s * p meets each slab
        along = points != 0
        enter = np.where(along, np.minimum(s_lo, s_hi), -np.inf)
        leave = np.where(along, np.maximum(s_lo, s_hi), np.inf)
        # A segment parallel to a slab is inside it everywhere or nowhere.
        outside = ~along & ((lo > 0) | (hi < 0))
        first = np.maximum(enter.max(axis=-1), 0.0)
        last = np.minimum(leave.min(axis=-1), 1.0)
        return (first <= last) & ~outside.any(axis=-1)


def plan_occluder(
    spec: ClipSpec, keypoints_cam: np.ndarray, intrinsics: np.ndarray
) -> OccluderPlan | None:
    """The board for ``spec`` (None when ``spec.occluder_frames`` is 0), given the clip's
    keypoints (T, H, 21, 3) in camera space and the (3, 3) camera matrix.

    Its direction and colour come from their own generator, so a clip's hands and look
    are the same with or without it.
    """
    n_hidden = spec.occluder_frames
    if n_hidden == 0:
        return None
    rng = np.random.default_rng(spec.seed + 2_000_003)
    direction = 1.0 if rng.uniform() < 0.5 else -1.0
    shade = srgb_to_linear(COLOURS_SRGB[int(rng.integers(len(COLOURS_SRGB)))])
    darker = shade * rng.uniform(0.75, 0.9)
    first = (spec.num_frames - n_hidden) // 2
    last = first + n_hidden - 1

    z = keypoints_cam[..., 2]
    u = direction * keypoints_cam[..., 0] / z  # mirrored so that the board moves to +u
    margin = FLESH_MARGIN_M / z
    a = float((u - margin)[first : last + 1].min())
    b = float((u + margin)[first : last + 1].max())
    half = 0.5 * WIDTH_FACTOR * (b - a)
    centre_u = _board_track(spec.num_frames, first, last, a, b, half)

    z_front = DEPTH_SHARE * float(z.min())
    fy, cy = intrinsics[1, 1], intrinsics[1, 2]
    # Centred on the optical axis and taller than the image (and than any keypoint's
    # reach), so nothing shows above or below it.
    reach_px = max(cy, spec.height - cy, float(np.abs(keypoints_cam[..., 1] / z).max() * fy))
    size = np.array([2.0 * half * z_front, 2.4 * reach_px / fy * z_front, THICKNESS_M])
    centres = np.stack(
        [
            direction * centre_u * z_front,
            np.zeros(spec.num_frames),
            np.full(spec.num_frames, z_front + THICKNESS_M / 2.0),
        ],
        axis=1,
    )
    rgb = (_rgb(shade), _rgb(darker))
    return OccluderPlan(centres, size, rgb, first, last)


def _board_track(
    n_frames: int, first: int, last: int, a: float, b: float, half: float
) -> np.ndarray:
    """(n_frames,) board centre in (mirrored) u: its leading edge crosses the hands' span
    ``a..b`` over the EDGE_FRAMES frames up to ``first``, its trailing edge over those
    after ``last``; in between it covers the span; outside it moves on at crossing speed."""
    if last > first:
        key_t = [first - EDGE_FRAMES, first, last, last + EDGE_FRAMES]
        key_u = [a - half, b - half, a + half, b + half]
    else:
        key_t = [first - EDGE_FRAMES, first, first + EDGE_FRAMES]
        key_u = [a - half, 0.5 * (a + b), b + half]
    speed = (b - a) / EDGE_FRAMES
    t = np.arange(n_frames, dtype=np.float64)
    track = np.interp(t, key_t, key_u)
    track = np.where(t < key_t[0], key_u[0] + speed * (t - key_t[0]), track)
    return np.where(t > key_t[-1], key_u[-1] + speed * (t - key_t[-1]), track)


def _rgb(c: np.ndarray) -> tuple[float, float, float]:
    return (float(c[0]), float(c[1]), float(c[2]))


def fully_hidden_run(visibility: np.ndarray) -> tuple[int | None, int | None]:
    """(first, last) frame of the longest run of frames on which no keypoint of any hand is
    visible, from visibility codes (T, H, 21); (None, None) if no frame is."""
    hidden = ~np.any(visibility == Visibility.VISIBLE, axis=(1, 2))
    best: tuple[int | None, int | None] = (None, None)
    best_len, start = 0, 0
    for t, h in enumerate([*hidden.tolist(), False]):
        if not h:
            if t - start > best_len:
                best, best_len = (start, t - 1), t - start
            start = t + 1
    return best
