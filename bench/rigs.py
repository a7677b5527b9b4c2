"""Hand rigs for testing the retargeter: built from the hand model's rest skeleton with the
bone names of a rig family, random bone rolls, a rest curl and their own proportions, plus
what is true about each bone (its anatomical flexion axis), so that a test can measure the
solver against something the solver never saw. Numpy only; the Blender tests turn these
into real armatures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handmocap.retarget.armature import ArmatureSpec
from handmocap.retarget.bone_names import MANO_JOINT_FOR_ROLE, digit_segments
from handmocap.retarget.hand_skeleton import (
    FINGERS,
    MEDIAPIPE_21_PARENTS,
    WEBXR_FOR_MANO,
)
from handmocap.retarget.kinematics import forward_kinematics
from handmocap.retarget.mano_rest import MANO16_BONE_END, MEDIAPIPE_FOR_MANO16
from handmocap.retarget.rig_profiles import RigProfile
from handmocap.retarget.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    mirror_axes,
    mirror_rotations,
    quat_to_matrix,
    rotation_about,
)
from handmocap.sides import Side

# Each side's hand in the armature: arms out to the sides (T-pose), palms down.
# Hand space -> armature space, and where the wrist goes (metres).
_PLACEMENT = {
    Side.RIGHT: (axis_angle_to_matrix(np.array([0.0, 0.0, -np.pi / 2])),
                 np.array([-0.7, 0.0, 1.4])),
    Side.LEFT: (axis_angle_to_matrix(np.array([0.0, 0.0, np.pi / 2])), np.array([0.7, 0.0, 1.4])),
}  # fmt: skip


@dataclass(frozen=True)
class TestRig:
    """A built rig and its truth.

    Attributes:
        spec: the armature.
        flex_axes: bone name -> (3,) the bone's true flexion axis in bone-local coordinates
            (for the MANO-driven digit bones).
        mano_joint: bone name -> MANO joint index it plays.
        hand_bone: side -> the hand bone's name.
    """

    spec: ArmatureSpec
    flex_axes: dict[str, np.ndarray]
    mano_joint: dict[str, int]
    hand_bone: dict[str, str]


def mano_flex_axes(webxr_rest_frames: np.ndarray) -> np.ndarray:
    """(16, 3) each MANO joint's flexion axis at rest in hand space: the WebXR joint frame's
    x axis (fingers curl about it; see joint_limits)."""
    return webxr_rest_frames[WEBXR_FOR_MANO][:, :, 0]


def build_test_rig(profile: RigProfile, rest: dict[str, np.ndarray],
                   flex: dict[str, np.ndarray], seed: int, *, roll_deg: float = 180.0,
                   curl_deg: float = 25.0, scale: float = 1.0,
                   metacarpals: bool = True) -> TestRig:  # fmt: skip
    """A two-handed (or, for single-hand profiles, one-handed) rig.

    Args:
        profile: gives the bone names.
        rest: side -> (21, 3) rest keypoints of the hand model (MediaPipe order, hand space).
        flex: side -> (16, 3) MANO flexion axes at rest (:func:`mano_flex_axes`).
        seed: for the random rolls and proportions.
        roll_deg: each bone's roll is the anatomical one plus uniform(-roll_deg, roll_deg),
            except in families that roll digit bones anatomically (``bone_x_flexes``), whose
            digit bones get X on the flexion axis.
        curl_deg: every digit joint is flexed this much in the rest pose.
        scale: overall size (the rig's units per metre).
        metacarpals: give the fingers metacarpal bones (Unreal 5, Rigify, WebXR do).
    """
    rng = np.random.default_rng(seed)
    names: list[str] = []
    parents: list[int] = []
    mats: list[np.ndarray] = []
    lengths: list[float] = []
    flex_axes: dict[str, np.ndarray] = {}
    mano_joint: dict[str, int] = {}
    hand_bone: dict[str, str] = {}

    def add(name: str, parent: str | None, head, tail, z_hint, roll: float) -> None:
        y = tail - head
        length = float(np.linalg.norm(y))
        y = y / length
        z = z_hint - (z_hint @ y) * y
        z /= np.linalg.norm(z)
        z = rotation_about(y, np.radians(roll)) @ z
        x = np.cross(y, z)
        m = np.eye(4)
        m[:3, :3] = np.stack([x, y, z], axis=1)
        m[:3, 3] = head
        names.append(name)
        parents.append(names.index(parent) if parent else -1)
        mats.append(m)
        lengths.append(length)

    add("root", None, np.zeros(3), np.array([0.0, 0.0, 0.2 * scale]), np.array([0.0, -1, 0]), 0)
    sides = (Side.RIGHT, Side.LEFT) if not profile.single_hand else (Side.RIGHT,)
    for side in sides:
        turn, wrist_at = _PLACEMENT[side]
        kp = _curled(rest[side], flex[side], np.radians(curl_deg))
        frames, positions = kp
        # per-digit proportions: each phalanx 0.85..1.2 of the model's
        stretch = rng.uniform(0.85, 1.2, size=21)
        pts = positions.copy()
        for k in range(1, 21):
            par = MEDIAPIPE_21_PARENTS[k]
            if par != 0:
                pts[k] = pts[par] + stretch[k] * (positions[k] - positions[par])
            else:
                pts[k] = positions[k]
        pts = (pts - pts[0]) * scale @ turn.T + wrist_at * scale
        back = turn @ np.cross(rest[side][5] - rest[side][17], rest[side][9] - rest[side][0])
        back *= 1.0 if side == Side.RIGHT else -1.0
        b = profile.bone_name
        forearm = b("forearm", side)
        hand = b("hand", side)
        along = pts[9] - pts[0]
        if forearm:
            add(
                forearm,
                "root",
                pts[0] - 2.5 * along,
                pts[0],
                back,
                rng.uniform(-roll_deg, roll_deg),
            )
        add(hand, forearm or "root", pts[0], pts[9], back, rng.uniform(-roll_deg, roll_deg))
        hand_bone[side] = hand
        for finger in FINGERS:
            parent = hand
            for segment in digit_segments(finger):
                role = f"{finger}.{segment}"
                name = b(role, side)
                if role in MANO_JOINT_FOR_ROLE:
                    j = MANO_JOINT_FOR_ROLE[role]
                    head, tail = pts[MEDIAPIPE_FOR_MANO16[j]], pts[MANO16_BONE_END[j]]
                    true_axis = turn @ frames[MEDIAPIPE_FOR_MANO16[j]] @ flex[side][j]
                    if profile.bone_x_flexes:  # the family rolls bone X onto the flexion axis
                        add(name, parent, head, tail, np.cross(true_axis, tail - head), 0.0)
                    else:
                        roll = rng.uniform(-roll_deg, roll_deg)
                        add(name, parent, head, tail, back, roll)
                    r_b = mats[-1][:3, :3]
                    flex_axes[name] = r_b.T @ true_axis
                    mano_joint[name] = j
                elif name and metacarpals:  # a finger metacarpal: wrist side of the knuckle
                    knuckle = pts[MEDIAPIPE_FOR_MANO16[MANO_JOINT_FOR_ROLE[f"{finger}.proximal"]]]
                    head = pts[0] + 0.15 * (knuckle - pts[0])
                    add(name, parent, head, knuckle, back, rng.uniform(-roll_deg, roll_deg))
                else:
                    continue
                parent = name
    spec = ArmatureSpec(
        f"test-{profile.id}", tuple(names), np.array(parents), np.array(mats), np.array(lengths)
    )
    return TestRig(spec, flex_axes, mano_joint, hand_bone)


def _curled(rest: np.ndarray, flex: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Flex every digit joint of the keypoint skeleton by ``angle`` about its flexion axis.

    Returns (global rotations (21, 3, 3), positions (21, 3)) in hand space.
    """
    local = np.tile(np.eye(3), (21, 1, 1))
    for j in range(1, 16):
        local[MEDIAPIPE_FOR_MANO16[j]] = rotation_about(flex[j], np.array(angle))
    g, p = forward_kinematics(np.array(MEDIAPIPE_21_PARENTS), rest, local, np.eye(3), rest[0])
    return g, p


def evaluate_pose(spec: ArmatureSpec, bone_names: tuple[str, ...],
                  quaternions: np.ndarray) -> np.ndarray:  # fmt: skip
    """(T, N, 3, 3) armature-space bone orientations after posing, as Blender computes them
    (``P_b = P_parent R_parent^T R_b L_b``); bones not in ``bone_names`` stay at rest."""
    t = quaternions.shape[0]
    r = spec.rotations
    local = np.tile(np.eye(3), (t, len(spec.bone_names), 1, 1))
    for k, name in enumerate(bone_names):
        local[:, spec.index(name)] = quat_to_matrix(quaternions[:, k])
    out = np.empty_like(local)
    for i in spec.topological_order():
        p = int(spec.parents[i])
        base = r[i] if p < 0 else out[:, p] @ (r[p].T @ r[i])
        out[:, i] = base @ local[:, i]
    return out


def mano_poses(angles: np.ndarray, webxr_right, root_rotations: np.ndarray,
               side: Side) -> np.ndarray:  # fmt: skip
    """(T, 16, 3) MANO axis-angle from anatomical angles (T, 25, 3) in degrees (see
    joint_limits), posed on the right hand and mirrored for the left (the hand model's left
    is the right mirrored). ``root_rotations`` (T, 3, 3) is the global orientation."""
    from handmocap.retarget.joint_limits import angles_to_local_rotations, spread_signs

    local = angles_to_local_rotations(
        angles, webxr_right.rest_frames,
        spread_signs(webxr_right.rest_frames, webxr_right.rest_positions),
    )[:, WEBXR_FOR_MANO]  # fmt: skip
    if side == Side.LEFT:
        local = mirror_rotations(local)
    local[:, 0] = root_rotations
    return matrix_to_axis_angle(local)


def side_flex_axes(webxr_right) -> dict[str, np.ndarray]:
    """side -> (16, 3) MANO flexion axes; a mirrored hand flexes about -S x (axes are
    pseudo-vectors)."""
    right = mano_flex_axes(webxr_right.rest_frames)
    return {Side.RIGHT: right, Side.LEFT: mirror_axes(right)}


def known_poses(webxr_right, n_random: int = 30, seed: int = 7) -> dict[str, np.ndarray]:
    """side -> (T, 16, 3) MANO poses: flat, fist, spread, pinch, then ``n_random`` random
    poses inside the joint limits, each with a random global orientation."""
    from bench.synth.motion import KEY_POSES, random_pose

    rng = np.random.default_rng(seed)
    angles = np.stack(
        [KEY_POSES[k] for k in ("flat", "fist", "spread", "pinch")]
        + [random_pose(rng) for _ in range(n_random)]
    )
    roots = axis_angle_to_matrix(rng.normal(size=(len(angles), 3)))
    return {s: mano_poses(angles, webxr_right, roots, s) for s in (Side.RIGHT, Side.LEFT)}
