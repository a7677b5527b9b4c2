"""Two hands in contact: the motion of the interaction layouts (numpy and scipy only).

Each layout places the two hands in a *pair frame* (the camera's axes turned by a base
rotation), moves the pair as one (a shared smooth wobble, drift and travel) with a small
wobble of each hand on top, then slides the hands along a *contact direction*, frame by
frame, until their surfaces (``hand_surface``: the skinned mesh and the forearm, as
Blender places them) are ``gap_m`` apart along it. Sliding along the direction does not
change what lies behind what seen along it, so the gap changes by exactly the slide:
one measurement per frame suffices.

- ``two_touching``: loose fists side by side, leaning into each other (forearms apart),
  touching from the first frame; they part by 2-3.5 cm over the last third.
- ``two_stacked``: the right palm on the back of the left hand (both backs to the
  camera), the right forearm tilted towards the camera; the left hand is mostly hidden.
- ``two_tutting``: the right hand, tilted 25-45 degrees, sweeps in front of the left
  one and back (two crossings of ~0.35 s each), gliding a few millimetres off it.
- ``two_fingertips``: a steeple, palms facing, fingertips touching, the pair turned to
  the camera. Interlaced fingers are left out: they would pass through each other.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np

from handmocap.models.webxr_hand import WebXRHand
from handmocap.retarget.rotations import axis_angle_to_matrix, rotation_about

from .clip_spec import ClipSpec, facing_rotation
from .hand_surface import SurfaceSamples, posed_surface, surface_samples
from .motion import (
    CONTACT_POSES,
    KEY_POSES,
    HandMotion,
    articulation_track,
    min_jerk,
    pose_sequence_track,
    smooth_noise,
)

# The cage is 0.3 mm apart at the contact; the rendered subdivision surface lies another
# ~0.4 mm inside it at convex parts, so touching hands show a gap of about a pixel.
TOUCH_GAP_M = 0.0003
# The tutting hand glides this far off the other one where they overlap.
GLIDE_GAP_M = 0.004
# Surface samples in the same or neighbouring cells of this size (across the contact
# direction) are compared; the closest such pair may be ~2 cells apart sideways, so the
# hands end up to ~2 mm further apart than ``gap_m`` on curved parts.
CONTACT_CELL_M = 0.002

_X, _Y, _Z = np.eye(3)


@dataclass(frozen=True)
class Contact:
    """How the two hands of a layout meet.

    Attributes:
        direction: (3,) unit vector in the pair frame from hand ``a`` towards hand ``b``.
        a, b: the sides ("left" / "right") on either side of the contact.
        share_b: share of each slide that moves ``b``; ``a`` moves by the rest.
        gap_m: the surfaces' distance along ``direction`` where they are closest.
        mode: "touch": slid together or apart to ``gap_m`` on every frame (frames on
            which they do not overlap seen along the direction take the slide
            interpolated from their neighbours); "glide": at a constant offset (the
            median slide of the frames on which they overlap), pushed apart further
            only where a frame needs it.
    """

    direction: np.ndarray
    a: str
    b: str
    share_b: float
    gap_m: float
    mode: Literal["touch", "glide"]


@dataclass(frozen=True)
class PlannedHand:
    """One hand before the contact slide: angles (T, 25, 3) degrees, camera-from-hand
    rotations (T, 3, 3), wrist positions (T, 3) metres."""

    side: str
    angles: np.ndarray
    rotations: np.ndarray
    positions: np.ndarray


@dataclass(frozen=True)
class PairMotion:
    """The pair's shared motion: rotations (T, 3, 3) pair-frame-to-camera (base rotation
    included) and centres (T, 3) in camera space, metres."""

    rotations: np.ndarray
    centres: np.ndarray

    def place(
        self,
        rng: np.random.Generator,
        fps: float,
        side: str,
        angles: np.ndarray,
        rotation: np.ndarray,
        offsets: np.ndarray,
        wobble_deg: float,
    ) -> PlannedHand:
        """A hand whose pair-frame rotation (3, 3) and wrist offsets (T, 3) from the pair
        centre ride on the pair's motion, with its own wobble of ``wobble_deg``."""
        n = len(angles)
        own = axis_angle_to_matrix(smooth_noise(rng, n, (3,), fps, np.radians(wobble_deg), 0.5))
        rotations = self.rotations @ own @ rotation
        positions = self.centres + np.einsum("tij,tj->ti", self.rotations, offsets)
        return PlannedHand(side, angles, rotations, positions)


def pair_motion(
    rng: np.random.Generator,
    n_frames: int,
    fps: float,
    base: np.ndarray,
    centre: np.ndarray,
    travel: np.ndarray,
    wobble_deg: float,
    drift_m: float,
) -> PairMotion:
    """The pair turned by ``base`` (3, 3), wobbling by up to ``wobble_deg`` about its
    centre, which travels from ``centre`` by ``travel`` (3,) and drifts by ``drift_m``."""
    wobble = smooth_noise(rng, n_frames, (3,), fps, np.radians(wobble_deg), 0.5)
    s = min_jerk(np.linspace(0.0, 1.0, n_frames))[:, None]
    drift = smooth_noise(rng, n_frames, (3,), fps, drift_m, 0.6)
    return PairMotion(axis_angle_to_matrix(wobble) @ base, centre + s * travel + drift)


def keyed_path(n_frames: int, keys: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """(n_frames, 3) positions through ``keys`` (clip fraction 0..1, (3,) position), with
    minimum-jerk moves between consecutive keys and holds where two keys are equal."""
    t = np.linspace(0.0, 1.0, n_frames)
    out = np.empty((n_frames, 3))
    for (t0, p0), (t1, p1) in itertools.pairwise(keys):
        inside = (t >= t0) & (t <= t1)
        s = min_jerk((t[inside] - t0) / max(t1 - t0, 1e-9))[:, None]
        out[inside] = p0 + s * (p1 - p0)
    return out


def orient(hand: WebXRHand, fingers: np.ndarray, palm: np.ndarray) -> np.ndarray:
    """(3, 3) rotation taking the hand's finger direction to ``fingers`` (3,) and its palm
    normal to ``palm`` (3,) made perpendicular to ``fingers``."""
    up = hand.finger_direction()
    normal = hand.palm_normal() - (hand.palm_normal() @ up) * up
    normal /= np.linalg.norm(normal)
    src = np.stack([up, normal, np.cross(up, normal)], axis=1)
    f = fingers / np.linalg.norm(fingers)
    q = palm - (palm @ f) * f
    q /= np.linalg.norm(q)
    return np.stack([f, q, np.cross(f, q)], axis=1) @ src.T


def directional_gap(
    a: np.ndarray, b: np.ndarray, direction: np.ndarray, cell_m: float = CONTACT_CELL_M
) -> float:
    """How far the points ``b`` (N, 3) lie beyond the points ``a`` (M, 3) along the unit
    ``direction``, where they overlap seen along it: the least ``(q - p) . direction`` over
    pairs p of a and q of b in the same or neighbouring ``cell_m`` cells of the plane
    across the direction. Negative when they interpenetrate; inf when nothing overlaps."""
    e1 = np.cross(direction, _X if abs(direction[0]) < 0.9 else _Y)
    e1 /= np.linalg.norm(e1)
    basis = np.stack([e1, np.cross(direction, e1)])
    ua, ub = a @ basis.T, b @ basis.T
    lo = np.maximum(ua.min(axis=0), ub.min(axis=0)) - 2 * cell_m
    hi = np.minimum(ua.max(axis=0), ub.max(axis=0)) + 2 * cell_m
    if np.any(hi <= lo):
        return float("inf")
    shape = tuple(np.ceil((hi - lo) / cell_m).astype(int) + 3)
    top = _cell_extreme(ua, a @ direction, lo, hi, cell_m, shape, np.maximum, -np.inf)
    low = _cell_extreme(ub, b @ direction, lo, hi, cell_m, shape, np.minimum, np.inf)
    near = top.copy()
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            shifted = top[1 + di : shape[0] - 1 + di, 1 + dj : shape[1] - 1 + dj]
            np.maximum(near[1:-1, 1:-1], shifted, out=near[1:-1, 1:-1])
    with np.errstate(invalid="ignore"):
        diff = low - near
    diff = diff[np.isfinite(diff)]
    return float(diff.min()) if diff.size else float("inf")


def _cell_extreme(uv, height, lo, hi, cell_m, shape, reduce, empty) -> np.ndarray:
    """Per-cell max or min (``reduce``) of ``height`` (N,) over the points ``uv`` (N, 2)
    inside lo..hi; ``empty`` where a cell holds none. Cells are offset by one for padding."""
    keep = np.flatnonzero(np.all((uv >= lo) & (uv <= hi), axis=1))
    ij = ((uv[keep] - lo) / cell_m).astype(int) + 1
    flat = ij[:, 0] * shape[1] + ij[:, 1]
    order = np.argsort(flat)
    flat, h = flat[order], height[keep][order]
    grid = np.full(shape[0] * shape[1], empty)
    if len(flat):
        starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
        grid[flat[starts]] = reduce.reduceat(h, starts)
    return grid.reshape(shape)


def contact_slides(
    surfaces: dict[str, list[np.ndarray]], directions: np.ndarray, contact: Contact
) -> np.ndarray:
    """(T,) how far to slide ``b`` away from ``a`` along ``directions`` (T, 3) so that the
    contact holds; ``surfaces[side][t]`` are that hand's surface points (N, 3) on frame t."""
    n = len(directions)
    gaps = np.array(
        [
            directional_gap(surfaces[contact.a][t], surfaces[contact.b][t], directions[t])
            for t in range(n)
        ]
    )
    need = contact.gap_m - gaps  # -inf where they do not overlap
    overlap = np.isfinite(need)
    if not overlap.any():
        return np.zeros(n)
    if contact.mode == "touch":
        frames = np.arange(n)
        return np.interp(frames, frames[overlap], need[overlap])
    base = float(np.median(need[overlap]))
    return base + np.maximum(need - base, 0.0)


def _surfaces(hand: WebXRHand, samples: SurfaceSamples, motion: HandMotion) -> list[np.ndarray]:
    """The hand's surface points (N, 3) per frame."""
    return [
        posed_surface(
            hand, samples, motion.g_hand[t], motion.p_hand[t],
            motion.root_rotation[t], motion.root_position[t],
        ).points
        for t in range(len(motion.root_position))
    ]  # fmt: skip


def settle(
    hands: dict[str, WebXRHand],
    planned: dict[str, PlannedHand],
    pair: PairMotion,
    contact: Contact,
    extra_m: np.ndarray | None = None,
) -> dict[str, HandMotion]:
    """Slide the planned hands along the contact direction until they meet as ``contact``
    says, then apart by ``extra_m`` (T,) more; the final motion of each hand."""
    motions = {
        s: HandMotion(hands[s], p.angles, p.rotations, p.positions) for s, p in planned.items()
    }
    surfaces = {s: _surfaces(hands[s], surface_samples(hands[s]), m) for s, m in motions.items()}
    directions = pair.rotations @ contact.direction  # (T, 3)
    slide = contact_slides(surfaces, directions, contact)
    if extra_m is not None:
        slide = slide + extra_m
    moves = {
        contact.a: -(1.0 - contact.share_b) * slide[:, None] * directions,
        contact.b: contact.share_b * slide[:, None] * directions,
    }
    return {
        s: HandMotion(hands[s], p.angles, p.rotations, p.positions + moves[s])
        for s, p in planned.items()
    }


def ramp(n_frames: int, start: float, end: float, value: float) -> np.ndarray:
    """(n_frames,) 0 up to clip fraction ``start``, a minimum-jerk rise to ``value`` by
    ``end``, then ``value``."""
    t = np.linspace(0.0, 1.0, n_frames)
    return value * min_jerk(np.clip((t - start) / (end - start), 0.0, 1.0))


# What a layout plans: the hands before the slide, the pair's motion, how they meet, and
# how much further apart (T,) metres they move after meeting (None: not at all).
Placement = tuple[dict[str, PlannedHand], PairMotion, Contact, np.ndarray | None]


def _touching(spec: ClipSpec, hands: dict[str, WebXRHand], rng: np.random.Generator) -> Placement:
    n, fps = spec.num_frames, spec.fps
    palm = bool(rng.uniform() < 0.5)
    lean = rng.uniform(8.0, 18.0)  # each fist leans towards the other: forearms apart
    yaw = rng.uniform(-10.0, 10.0)
    base = rotation_about(_Y, np.radians(rng.uniform(-20.0, 20.0)))
    centre = np.array([0.0, 0.07, rng.uniform(0.38, 0.44)])
    travel = rng.uniform([-0.03, -0.02, -0.02], [0.03, 0.02, 0.03])
    pair = pair_motion(rng, n, fps, base, centre, travel, wobble_deg=10.0, drift_m=0.015)
    fists = (KEY_POSES["fist"], CONTACT_POSES["loose_fist"], KEY_POSES["grasp"])
    planned = {}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        angles = pose_sequence_track(rng, n, fps, fists, (0.6, 1.2), (0.1, 0.5), 2.0)
        rot = facing_rotation(hands[side], palm, -sign * yaw + rng.uniform(-5, 5), -sign * lean)
        offsets = np.broadcast_to([sign * 0.045, 0.0, 0.0], (n, 3))
        planned[side] = pair.place(rng, fps, side, angles, rot, offsets, wobble_deg=4.0)
    part = ramp(n, 0.65, 0.95, rng.uniform(0.02, 0.035))
    return planned, pair, Contact(_X, "right", "left", 0.5, TOUCH_GAP_M, "touch"), part


def _stacked(spec: ClipSpec, hands: dict[str, WebXRHand], rng: np.random.Generator) -> Placement:
    n, fps = spec.num_frames, spec.fps
    base = rotation_about(_Y, np.radians(rng.uniform(-15.0, 15.0)))
    centre = np.array([0.0, 0.08, rng.uniform(0.42, 0.48)])
    travel = rng.uniform([-0.04, -0.02, -0.03], [0.04, 0.02, 0.03])
    pair = pair_motion(rng, n, fps, base, centre, travel, wobble_deg=10.0, drift_m=0.02)
    roll = rng.uniform(-15.0, 15.0)
    turn = rng.choice([-1.0, 1.0]) * rng.uniform(10.0, 25.0)
    # The top hand's forearm comes towards the camera, its fingers lie on the other's.
    pitch = rotation_about(_X, np.radians(-rng.uniform(10.0, 20.0)))
    bottom = facing_rotation(hands["left"], False, rng.uniform(-10, 10), roll)
    top = pitch @ facing_rotation(hands["right"], False, rng.uniform(-10, 10), roll + turn)
    lying = (KEY_POSES["flat"], KEY_POSES["relaxed"], KEY_POSES["spread"])
    top_angles = pose_sequence_track(rng, n, fps, lying, (0.5, 1.0), (0.0, 0.4), 3.0)
    bottom_angles = articulation_track(rng, n, fps)
    shift = np.array([rng.uniform(-0.015, 0.015), rng.uniform(-0.02, 0.0), -0.03])
    planned = {
        "left": pair.place(rng, fps, "left", bottom_angles, bottom, np.zeros((n, 3)), 3.0),
        "right": pair.place(rng, fps, "right", top_angles, top, np.tile(shift, (n, 1)), 3.0),
    }
    return planned, pair, Contact(_Z, "right", "left", 0.0, TOUCH_GAP_M, "touch"), None


def _tutting(spec: ClipSpec, hands: dict[str, WebXRHand], rng: np.random.Generator) -> Placement:
    n, fps = spec.num_frames, spec.fps
    palm = bool(rng.uniform() < 0.75)
    base = rotation_about(_Y, np.radians(rng.uniform(-15.0, 15.0)))
    centre = np.array([0.0, 0.08, rng.uniform(0.42, 0.48)])
    pair = pair_motion(rng, n, fps, base, centre, np.zeros(3), wobble_deg=6.0, drift_m=0.01)
    tilt = rng.uniform(25.0, 45.0)  # the right hand's fingers lean over the left's
    flat = (KEY_POSES["flat"], KEY_POSES["spread"], KEY_POSES["point"], KEY_POSES["relaxed"])
    # Out, hold, back, hold: two fast crossings (~0.35 s each at 36 frames).
    times = (0.0, 0.1, 0.33, 0.55, 0.78, 1.0)
    planned = {}
    for side, sign, x0, x1, dz in (("left", 1.0, 0.08, -0.05, 0.0),
                                   ("right", -1.0, -0.10, 0.07, -0.035)):  # fmt: skip
        angles = pose_sequence_track(rng, n, fps, flat, (0.2, 0.4), (0.1, 0.3), 2.0)
        roll = -sign * (tilt if side == "right" else rng.uniform(0.0, 15.0))
        rot = facing_rotation(hands[side], palm, -sign * rng.uniform(-10, 10), roll)
        a, b = np.array([x0, 0.0, dz]), np.array([x1, 0.0, dz])
        path = keyed_path(n, list(zip(times, (a, a, b, b, a, a), strict=True)))
        planned[side] = pair.place(rng, fps, side, angles, rot, path, wobble_deg=4.0)
    return planned, pair, Contact(_Z, "right", "left", 0.0, GLIDE_GAP_M, "glide"), None


def _fingertips(spec: ClipSpec, hands: dict[str, WebXRHand], rng: np.random.Generator) -> Placement:
    n, fps = spec.num_frames, spec.fps
    turn = rng.choice([-1.0, 1.0]) * rng.uniform(25.0, 40.0)
    tip = rng.uniform(0.0, 25.0)  # the steeple leans towards the camera
    base = rotation_about(_Y, np.radians(turn)) @ rotation_about(_X, np.radians(tip))
    centre = np.array([0.0, 0.07, rng.uniform(0.36, 0.42)])
    travel = rng.uniform([-0.03, -0.02, -0.02], [0.03, 0.02, 0.03])
    pair = pair_motion(rng, n, fps, base, centre, travel, wobble_deg=8.0, drift_m=0.015)
    steeple = tuple(CONTACT_POSES[k] for k in ("steeple", "steeple_open", "steeple_closed"))
    # One finger track for both hands: mirrored poses meet tip to tip.
    angles = pose_sequence_track(rng, n, fps, steeple, (0.5, 1.0), (0.1, 0.5), 0.0)
    lean = np.radians(rng.uniform(10.0, 20.0))  # fingers lean in: palms apart
    planned = {}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        tilt = rotation_about(_Z, -sign * lean)
        rot = orient(hands[side], tilt @ -_Y, tilt @ (-sign * _X))
        offsets = np.broadcast_to([sign * 0.06, 0.0, 0.0], (n, 3))
        planned[side] = pair.place(rng, fps, side, angles, rot, offsets, wobble_deg=0.0)
    return planned, pair, Contact(_X, "right", "left", 0.5, TOUCH_GAP_M, "touch"), None


def plan_interaction(
    spec: ClipSpec, hands: dict[str, WebXRHand], rng: np.random.Generator
) -> list[HandMotion]:
    """The two hands' motion for an interaction layout, in ``spec.handedness`` order."""
    layout = {
        "two_touching": _touching,
        "two_stacked": _stacked,
        "two_tutting": _tutting,
        "two_fingertips": _fingertips,
    }[spec.layout]
    planned, pair, contact, extra = layout(spec, hands, rng)
    motions = settle(hands, planned, pair, contact, extra)
    return [motions[side] for side in spec.handedness]
