"""Seeded, smooth hand motion for synthetic clips (numpy only).

Finger articulation is a sequence of key poses (grasp, counting, spread, pinch, random
poses inside the anatomical limits) joined by minimum-jerk transitions and short holds,
all in the anatomical angle space of ``retarget.joint_limits``. Every frame is inside the
limits: key poses are clipped, and a minimum-jerk blend of two in-range poses stays in
range (the limits are a box).

``fast_finger_track`` is the other kind: quick finger actions (index/middle taps, fist to
spread and back) with 0.1-0.3 s transitions and short holds, the motion that a temporal
prior must not smooth away. Same key poses, same blends, same limits.

The wrist moves with a smooth random rotation about a base orientation and a smooth
random translation (sums of a few low-frequency sinusoids with random phases).

``pose_sequence_track`` walks through a given set of poses (the interaction layouts use it
with ``CONTACT_POSES`` and a few key poses), and ``HandMotion`` turns angles and a wrist
track into the posed skeleton and keypoints of a clip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from handmocap.models.webxr_hand import WebXRHand
from handmocap.retarget.hand_skeleton import WEBXR_25, WEBXR_FOR_MANO, WEBXR_FOR_MEDIAPIPE
from handmocap.retarget.joint_limits import (
    angles_to_local_rotations,
    clip_to_limits,
    limits_array,
    spread_signs,
)
from handmocap.retarget.kinematics import forward_kinematics
from handmocap.retarget.rotations import axis_angle_to_matrix, matrix_to_axis_angle

_FINGERS4 = ("index", "middle", "ring", "pinky")


def _j(name: str) -> int:
    return WEBXR_25.index(name)


def _finger(
    pose: np.ndarray, finger: str, mcp: float, pip: float, dip: float, spread: float = 0.0
) -> None:
    base = f"{finger}-finger-phalanx-"
    pose[_j(base + "proximal")] = (mcp, spread, 0.0)
    pose[_j(base + "intermediate")] = (pip, 0.0, 0.0)
    pose[_j(base + "distal")] = (dip, 0.0, 0.0)


def _thumb(pose: np.ndarray, cmc: tuple[float, float, float], mcp: float, ip: float) -> None:
    pose[_j("thumb-metacarpal")] = cmc
    pose[_j("thumb-phalanx-proximal")] = (mcp, 0.0, 0.0)
    pose[_j("thumb-phalanx-distal")] = (ip, 0.0, 0.0)


def _curled(pose: np.ndarray, fingers: tuple[str, ...]) -> None:
    for f in fingers:
        _finger(pose, f, 85.0, 100.0, 60.0)


def _named_pose(build: Callable[[np.ndarray], None]) -> np.ndarray:
    pose = np.zeros((25, 3))
    build(pose)
    return clip_to_limits(pose)


# Key poses in anatomical angles (flex, spread, twist) in degrees, (25, 3) each.
KEY_POSES: dict[str, np.ndarray] = {
    "flat": _named_pose(lambda p: None),
    "relaxed": _named_pose(lambda p: [
        *(_finger(p, f, 15 + 5 * i, 25 + 5 * i, 12) for i, f in enumerate(_FINGERS4)),
        _thumb(p, (10, 15, 0), 10, 10)]),
    "fist": _named_pose(lambda p: [
        _curled(p, _FINGERS4), _thumb(p, (35, 10, 15), 45, 40)]),
    "spread": _named_pose(lambda p: [
        _finger(p, "index", 0, 0, 0, 15), _finger(p, "middle", 0, 0, 0, 0),
        _finger(p, "ring", 0, 0, 0, -12), _finger(p, "pinky", 0, 0, 0, -22),
        _thumb(p, (-10, 35, 0), 0, 0)]),
    "point": _named_pose(lambda p: [
        _finger(p, "index", 0, 5, 0), _curled(p, ("middle", "ring", "pinky")),
        _thumb(p, (35, 10, 15), 40, 35)]),
    "two": _named_pose(lambda p: [
        _finger(p, "index", 0, 0, 0, 10), _finger(p, "middle", 0, 0, 0, -6),
        _curled(p, ("ring", "pinky")), _thumb(p, (35, 10, 15), 40, 35)]),
    "three": _named_pose(lambda p: [
        _finger(p, "index", 0, 0, 0, 10), _finger(p, "middle", 0, 0, 0),
        _finger(p, "ring", 0, 0, 0, -8), _curled(p, ("pinky",)),
        _thumb(p, (35, 10, 15), 40, 35)]),
    "four": _named_pose(lambda p: [
        _finger(p, "index", 0, 0, 0, 10), _finger(p, "middle", 0, 0, 0),
        _finger(p, "ring", 0, 0, 0, -8), _finger(p, "pinky", 0, 0, 0, -15),
        _thumb(p, (40, 5, 15), 45, 40)]),
    "pinch": _named_pose(lambda p: [
        _finger(p, "index", 45, 55, 25), _finger(p, "middle", 20, 25, 10),
        _finger(p, "ring", 25, 30, 12), _finger(p, "pinky", 30, 35, 15),
        _thumb(p, (30, 25, 15), 20, 20)]),
    "grasp": _named_pose(lambda p: [
        *(_finger(p, f, 50, 60, 30) for f in _FINGERS4), _thumb(p, (25, 30, 10), 25, 25)]),
    "thumbs_up": _named_pose(lambda p: [
        _curled(p, _FINGERS4), _thumb(p, (-10, 20, 0), 0, 0)]),
}  # fmt: skip


# Poses for hands in contact, kept apart from KEY_POSES (whose sorted names the articulation
# track draws from). "steeple": fingertips meet those of the other hand, palms apart.
CONTACT_POSES: dict[str, np.ndarray] = {
    "steeple": _named_pose(lambda p: [
        _finger(p, "index", 25, 12, 6, 4), _finger(p, "middle", 25, 12, 6),
        _finger(p, "ring", 25, 12, 6, -4), _finger(p, "pinky", 25, 12, 6, -8),
        _thumb(p, (0, 20, 0), 10, 5)]),
    "steeple_open": _named_pose(lambda p: [
        _finger(p, "index", 15, 5, 3, 10), _finger(p, "middle", 15, 5, 3),
        _finger(p, "ring", 15, 5, 3, -8), _finger(p, "pinky", 15, 5, 3, -16),
        _thumb(p, (-5, 30, 0), 5, 0)]),
    "steeple_closed": _named_pose(lambda p: [
        _finger(p, "index", 40, 20, 10, 2), _finger(p, "middle", 40, 20, 10),
        _finger(p, "ring", 40, 20, 10, -2), _finger(p, "pinky", 40, 20, 10, -4),
        _thumb(p, (5, 15, 0), 15, 10)]),
    "loose_fist": _named_pose(lambda p: [
        *(_finger(p, f, 70 + 4 * i, 80, 45) for i, f in enumerate(_FINGERS4)),
        _thumb(p, (30, 15, 10), 35, 30)]),
}  # fmt: skip


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """A random (25, 3) pose inside the limits with natural PIP/DIP coupling."""
    lim = limits_array()
    u = rng.uniform(size=(25, 3))
    pose = lim[..., 0] + u * (lim[..., 1] - lim[..., 0])
    pose[:, 1:] *= 0.6  # spread and twist near the middle of their ranges look natural
    for f in _FINGERS4:
        pip = pose[_j(f"{f}-finger-phalanx-intermediate"), 0]
        pose[_j(f"{f}-finger-phalanx-distal"), 0] = 0.65 * pip + rng.normal(0.0, 5.0)
    return clip_to_limits(pose)


def min_jerk(s: np.ndarray) -> np.ndarray:
    return s**3 * (10.0 - 15.0 * s + 6.0 * s**2)


def _transition(start: np.ndarray, end: np.ndarray, n_move: int) -> np.ndarray:
    """(n_move, 25, 3) minimum-jerk blend from ``start`` towards ``end`` (25, 3), ``end``
    itself excluded (it is the first frame of whatever follows)."""
    s = min_jerk(np.linspace(0.0, 1.0, n_move, endpoint=False))[:, None, None]
    return start + s * (end - start)


@dataclass(frozen=True)
class ArticulationConfig:
    """How finger motion is sequenced. Times in seconds."""

    transition_s: tuple[float, float] = (0.5, 1.1)
    hold_s: tuple[float, float] = (0.0, 0.4)
    random_pose_share: float = 0.35
    jitter_deg: float = 2.0


def articulation_track(
    rng: np.random.Generator, n_frames: int, fps: float, config: ArticulationConfig | None = None
) -> np.ndarray:
    """(n_frames, 25, 3) anatomical angles in degrees, smooth and inside the limits."""
    cfg = config or ArticulationConfig()
    names = sorted(KEY_POSES)
    keys: list[np.ndarray] = [KEY_POSES[str(rng.choice(["relaxed", "flat", "spread"]))]]
    frames: list[np.ndarray] = []
    while len(frames) < n_frames:
        if rng.uniform() < cfg.random_pose_share:
            nxt = random_pose(rng)
        else:
            nxt = KEY_POSES[str(rng.choice(names))]
        n_move = max(2, round(rng.uniform(*cfg.transition_s) * fps))
        n_hold = round(rng.uniform(*cfg.hold_s) * fps)
        frames.extend(_transition(keys[-1], nxt, n_move))
        frames.extend([nxt] * n_hold)
        keys.append(nxt)
    track = np.stack(frames[:n_frames])
    if cfg.jitter_deg > 0:
        track = track + smooth_noise(rng, n_frames, (25, 3), fps, cfg.jitter_deg, 1.5)
    return clip_to_limits(track)


def pose_sequence_track(
    rng: np.random.Generator,
    n_frames: int,
    fps: float,
    poses: tuple[np.ndarray, ...],
    transition_s: tuple[float, float],
    hold_s: tuple[float, float],
    jitter_deg: float,
) -> np.ndarray:
    """(n_frames, 25, 3) anatomical angles in degrees: a random walk through ``poses``
    ((25, 3) each, never the same twice in a row when there are two or more), joined by
    minimum-jerk moves of ``transition_s`` and holds of ``hold_s`` seconds, plus smooth
    jitter of at most ``jitter_deg``, inside the limits."""
    current = poses[int(rng.integers(len(poses)))]
    frames: list[np.ndarray] = [current] * round(rng.uniform(*hold_s) * fps)
    while len(frames) < n_frames:
        choices = [p for p in poses if p is not current] or list(poses)
        nxt = choices[int(rng.integers(len(choices)))]
        frames.extend(_transition(current, nxt, max(2, round(rng.uniform(*transition_s) * fps))))
        frames.extend([nxt] * round(rng.uniform(*hold_s) * fps))
        current = nxt
    track = np.stack(frames[:n_frames])
    if jitter_deg > 0:
        track = track + smooth_noise(rng, n_frames, (25, 3), fps, jitter_deg, 1.5)
    return clip_to_limits(track)


@dataclass(frozen=True)
class FastFingerConfig:
    """How fast finger actions are sequenced. Times in seconds.

    Attributes:
        tap_s: one way of a tap (flex or extend); a tap is down, short hold, up.
        grip_s: one way between fist, spread and the home pose.
        hold_s: holds at the ends of each move.
        rest_s: pause at the home pose between actions.
        tap_flex_deg: (low, high) MCP flexion of a tap; the PIP takes 1.0-1.2 times it.
    """

    tap_s: tuple[float, float] = (0.1, 0.2)
    grip_s: tuple[float, float] = (0.15, 0.3)
    hold_s: tuple[float, float] = (0.0, 0.1)
    rest_s: tuple[float, float] = (0.1, 0.4)
    tap_flex_deg: tuple[float, float] = (45.0, 70.0)
    jitter_deg: float = 2.0


_TAP_FINGERS: tuple[tuple[str, ...], ...] = (("index",), ("middle",), ("index", "middle"))


def _tapped(home: np.ndarray, fingers: tuple[str, ...], mcp: float, pip: float) -> np.ndarray:
    """``home`` (25, 3) with ``fingers`` flexed (their spread kept), inside the limits."""
    pose = home.copy()
    for f in fingers:
        base = f"{f}-finger-phalanx-"
        pose[_j(base + "proximal"), 0] = mcp
        pose[_j(base + "intermediate"), 0] = pip
        pose[_j(base + "distal"), 0] = 0.65 * pip
    return clip_to_limits(pose)


def _tap_moves(
    rng: np.random.Generator, home: np.ndarray, cfg: FastFingerConfig
) -> list[tuple[np.ndarray, tuple[float, float], tuple[float, float]]]:
    """Two or three taps of the index, the middle or both: (pose, move s, hold s) each."""
    fingers = _TAP_FINGERS[int(rng.integers(len(_TAP_FINGERS)))]
    mcp = rng.uniform(*cfg.tap_flex_deg)
    down = _tapped(home, fingers, mcp, mcp * rng.uniform(1.0, 1.2))
    moves = []
    for _ in range(int(rng.integers(2, 4))):
        moves += [(down, cfg.tap_s, cfg.hold_s), (home, cfg.tap_s, cfg.hold_s)]
    return moves


def _grip_moves(
    rng: np.random.Generator, home: np.ndarray, cfg: FastFingerConfig
) -> list[tuple[np.ndarray, tuple[float, float], tuple[float, float]]]:
    """Fist, spread, (fist, spread,) back home: (pose, move s, hold s) each."""
    moves = []
    for _ in range(int(rng.integers(1, 3))):
        moves += [(KEY_POSES["fist"], cfg.grip_s, cfg.hold_s),
                  (KEY_POSES["spread"], cfg.grip_s, cfg.hold_s)]  # fmt: skip
    return [*moves, (home, cfg.grip_s, cfg.hold_s)]


def fast_finger_track(
    rng: np.random.Generator, n_frames: int, fps: float, config: FastFingerConfig | None = None
) -> np.ndarray:
    """(n_frames, 25, 3) anatomical angles in degrees: quick taps and fist-to-spread from a
    home pose, minimum-jerk moves of 0.1-0.3 s, inside the limits."""
    cfg = config or FastFingerConfig()
    home = KEY_POSES[str(rng.choice(["relaxed", "flat"]))]
    frames: list[np.ndarray] = [home] * round(rng.uniform(*cfg.rest_s) * fps)
    current = home
    while len(frames) < n_frames:
        action = _tap_moves if rng.uniform() < 0.5 else _grip_moves
        for pose, move_s, hold_s in action(rng, home, cfg):
            frames.extend(_transition(current, pose, max(2, round(rng.uniform(*move_s) * fps))))
            frames.extend([pose] * round(rng.uniform(*hold_s) * fps))
            current = pose
        frames.extend([home] * round(rng.uniform(*cfg.rest_s) * fps))
    track = np.stack(frames[:n_frames])
    if cfg.jitter_deg > 0:
        track = track + smooth_noise(rng, n_frames, (25, 3), fps, cfg.jitter_deg, 1.5)
    return clip_to_limits(track)


def smooth_noise(
    rng: np.random.Generator,
    n_frames: int,
    shape: tuple[int, ...],
    fps: float,
    amplitude: float,
    max_hz: float,
    n_waves: int = 3,
) -> np.ndarray:
    """Sum of ``n_waves`` random sinusoids below ``max_hz`` per element, shape (n_frames, *shape),
    with peak amplitude at most ``amplitude``."""
    t = np.arange(n_frames)[:, None] / fps
    out = np.zeros((n_frames, int(np.prod(shape))))
    for _ in range(n_waves):
        freq = rng.uniform(0.1, max_hz, size=out.shape[1])
        phase = rng.uniform(0, 2 * np.pi, size=out.shape[1])
        out += np.sin(2 * np.pi * freq * t + phase) / n_waves
    return (amplitude * out).reshape((n_frames, *shape))


@dataclass(frozen=True)
class WristMotion:
    """Global hand motion in camera space.

    Attributes:
        rotations: (T, 3, 3) camera-from-hand rotations.
        positions: (T, 3) wrist joint positions in camera space (OpenCV axes, metres).
    """

    rotations: np.ndarray
    positions: np.ndarray


def wrist_track(
    rng: np.random.Generator,
    n_frames: int,
    fps: float,
    base_rotation: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    rotation_amplitude_deg: float = 30.0,
    translation_amplitude_m: float = 0.03,
) -> WristMotion:
    """Wrist moving from ``start`` to ``end`` (3,) with smooth wobble in rotation and position.

    The rotation is ``R_wobble(t) @ base_rotation``; the wobble is an axis-angle vector in
    camera axes whose components stay within ``rotation_amplitude_deg``.
    """
    wobble = smooth_noise(rng, n_frames, (3,), fps, np.radians(rotation_amplitude_deg), 0.5)
    rotations = axis_angle_to_matrix(wobble) @ base_rotation
    s = min_jerk(np.linspace(0.0, 1.0, n_frames))[:, None]
    positions = start + s * (end - start)
    positions = positions + smooth_noise(rng, n_frames, (3,), fps, translation_amplitude_m, 0.6)
    return WristMotion(rotations=rotations, positions=positions)


class HandMotion:
    """Per-hand motion of one clip, all arrays over T frames (numpy only)."""

    def __init__(self, hand: WebXRHand, angles: np.ndarray, rot: np.ndarray, pos: np.ndarray):
        self.hand = hand
        self.local = angles_to_local_rotations(
            angles, hand.rest_frames, spread_signs(hand.rest_frames, hand.rest_positions)
        )  # (T, 25, 3, 3)
        self.root_rotation, self.root_position = rot, pos
        t = len(angles)
        eye = np.broadcast_to(np.eye(3), (t, 3, 3))
        rest_wrist = np.broadcast_to(hand.rest_positions[0], (t, 3))
        self.g_hand, self.p_hand = forward_kinematics(
            hand.parents, hand.rest_positions, self.local, eye, rest_wrist
        )
        _, self.joints_cam = forward_kinematics(
            hand.parents, hand.rest_positions, self.local, rot, pos
        )
        _, sites = forward_kinematics(
            hand.parents, hand.keypoint_rest_positions(), self.local, rot, pos
        )
        self.keypoints_cam = sites[:, WEBXR_FOR_MEDIAPIPE]  # (T, 21, 3)

    def mano_pose(self) -> np.ndarray:
        """(T, 16, 3) axis-angle: global wrist rotation, then 15 local finger rotations."""
        rots = self.local[:, WEBXR_FOR_MANO].copy()
        rots[:, 0] = self.root_rotation @ self.local[:, 0]
        return matrix_to_axis_angle(rots)
