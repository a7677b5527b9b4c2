"""MANO rotations -> local pose rotations of a rig's hand bones (numpy only).

The idea: every bone gets an *anatomical frame* -- y along the bone, x the axis it curls
about, z = x cross y -- on the MANO hand and on the rig, so that bone rolls and rest poses
drop out:

* the hand: y from the wrist to the middle knuckle, x from the palm normal ``n`` (built from
  the wrist and the outer knuckles) as ``normalize(y x n)``;
* a MANO digit segment: y from its joint to the next, x the hand model's flexion axis
  (:func:`~handmocap.retarget.mano_rest.default_flex_axes`);
* a rig digit bone: y the bone's own Y; x the rig's bone X when its family rolls bones
  anatomically (Rigify), else MANO's axis carried over through the frame of the segment
  before (the hand for a digit's first bone) and made perpendicular to the bone, so a rig
  whose rest pose curls or spreads the digits gets the axis the curl turned.

A rig bone's anatomical frame is fixed in the bone, ``F_b = R_b @ K_b`` at rest, so posing
the bone to ``P_b`` moves it to ``P_b @ K_b``. The solver asks each mapped bone's frame to
equal the MANO segment's posed frame carried into the rig's hand::

    P_b @ K_b = Q @ G_j @ F_j          Q = H @ F_hand_mano^T

where ``G_j`` is MANO joint j's rotation relative to the wrist (hand space), ``F_j`` its
rest frame, and ``H`` the rig hand's posed anatomical frame (from the capture's global
orientation when the wrist is driven, else the hand's current pose). Each finger segment
then points where the captured one points, relative to the hand, with the captured twist,
whatever the rig's rest curl, roll or proportions. The local rotation Blender wants is
``L_b = R_b^T R_p P_p^T P_b`` (``p`` the parent, ``R`` rest, ``P`` posed, armature space).

Everything is vectorised over frames; the loop is over bones only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Final

import numpy as np

from handmocap.retarget.armature import ArmatureSpec, RigError
from handmocap.retarget.bone_names import MANO_JOINT_FOR_ROLE, role_finger
from handmocap.retarget.hand_skeleton import MANO_16_PARENTS
from handmocap.retarget.mano_rest import (
    MANO16_BONE_END,
    MEDIAPIPE_FOR_MANO16,
    default_flex_axes,
    default_rest_keypoints,
)
from handmocap.retarget.rig_profiles import HandBones
from handmocap.retarget.rotations import axis_angle_to_matrix, make_continuous, matrix_to_quat
from handmocap.sides import Side

# OpenCV camera axes -> Blender world axes for two common set-ups (columns: where the
# camera's x right, y down, z forward point in the world).
# A camera in front of the character, looking at it (characters face -Y in Blender).
CAMERA_IN_FRONT: Final = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
# A camera at the character's eyes looking where it looks (head-mounted, first person).
CAMERA_FIRST_PERSON: Final = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])

# MediaPipe keypoints of the palm used for frames: wrist, and the knuckles of each finger.
_MP_WRIST = 0
_MP_KNUCKLE = {"index": 5, "middle": 9, "ring": 13, "pinky": 17}


class WristMode(Enum):
    """What the capture does to the rig's hand bone."""

    NONE = "none"  # fingers only: the hand keeps its current pose
    ROTATION = "rotation"  # the hand turns as captured; the arm stays as it is
    ROTATION_AND_LOCATION = "rotation_and_location"  # and moves as captured (unconnected bones)


@dataclass(frozen=True)
class RetargetConfig:
    """How captured hands land on a rig.

    Attributes:
        wrist: see :class:`WristMode`.
        camera_to_armature: (3, 3) rotation from OpenCV camera axes to armature axes (the
            add-on composes :data:`CAMERA_IN_FRONT` with the armature object's rotation).
        units_per_metre: armature units per metre of captured motion (location mode).
    """

    wrist: WristMode = WristMode.ROTATION
    camera_to_armature: np.ndarray = field(default_factory=lambda: CAMERA_IN_FRONT.copy())
    units_per_metre: float = 1.0

    def validated(self) -> RetargetConfig:
        c = np.asarray(self.camera_to_armature, dtype=np.float64)
        if c.shape != (3, 3) or not np.allclose(c.T @ c, np.eye(3), atol=1e-6):
            raise RigError("camera_to_armature must be a 3x3 rotation matrix")
        if np.linalg.det(c) < 0:
            raise RigError("camera_to_armature must be a rotation, not a reflection")
        if not self.units_per_metre > 0:
            raise RigError(f"units_per_metre must be positive, got {self.units_per_metre}")
        return self


@dataclass(frozen=True)
class BonePoses:
    """Solved local pose of some bones of one armature. T frames, B bones.

    Attributes:
        side: the hand.
        bone_names: (B,) the bones, parents before children.
        rotations: (T, B, 4) local pose quaternions (w, x, y, z), Blender's
            ``pose_bone.rotation_quaternion``; continuous in time (no sign flips).
        locations: (T, B, 3) local pose locations (``pose_bone.location``, armature units),
            or None when nothing moves.
    """

    side: Side
    bone_names: tuple[str, ...]
    rotations: np.ndarray
    locations: np.ndarray | None = None


def anatomical_frame(direction: np.ndarray, palm_normal: np.ndarray) -> np.ndarray:
    """Columns (x, y, z): y along ``direction``, x = y x n (the flexion axis), z = x x y.

    Shapes (..., 3) -> (..., 3, 3). Raises RigError when the direction is along the normal.
    """
    y = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    x = np.cross(y, palm_normal)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norm < 1e-6):
        raise RigError("a bone points straight out of the palm: its flexion axis is undefined")
    x = x / norm
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def frame_from_axis(direction: np.ndarray, axis_hint: np.ndarray) -> np.ndarray:
    """Columns (x, y, z): y along ``direction``, x = ``axis_hint`` made perpendicular to y.

    Shapes (..., 3) -> (..., 3, 3). Raises RigError when the hint is along the direction.
    """
    y = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    x = axis_hint - np.sum(axis_hint * y, axis=-1, keepdims=True) * y
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norm < 1e-6):
        raise RigError("a bone of the rig lies along its own flexion axis; check its rest pose")
    x = x / norm
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def palm_frame_points(points: dict[str, np.ndarray], wrist: np.ndarray,
                      fingers: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(direction wrist -> middle knuckle, palm normal) from knuckle positions.

    ``fingers`` are the fingers both hands have (at least two, in index..pinky order); the
    normal is ``(index side - pinky side) x direction``, so it is built the same way on any
    two hands of one side.
    """
    lateral = points[fingers[0]] - points[fingers[-1]]
    reach = points["middle"] if "middle" in points else np.mean([points[f] for f in fingers], 0)
    direction = reach - wrist
    normal = np.cross(lateral, direction)
    return direction, normal / np.linalg.norm(normal)


def mano_hand_rotations(local: np.ndarray) -> np.ndarray:
    """(T, 16, 3, 3) MANO rotations -> (T, 16, 3, 3) each joint's rotation relative to the
    wrist (hand space): ``G_0 = I``, ``G_j = G_parent @ local_j`` (the global orientation,
    ``local[:, 0]``, is left out)."""
    g = np.empty_like(local)
    g[:, 0] = np.eye(3)
    for j in range(1, 16):
        g[:, j] = g[:, MANO_16_PARENTS[j]] @ local[:, j]
    return g


class HandRetargeter:
    """Solves one hand of one armature. Build once per (rig, hand), then :meth:`solve`."""

    def __init__(self, spec: ArmatureSpec, hand: HandBones,
                 rest_keypoints: np.ndarray | None = None,
                 config: RetargetConfig | None = None,
                 flex_axes: np.ndarray | None = None):  # fmt: skip
        """``rest_keypoints``: (21, 3) the captured hand model's rest (MediaPipe order, hand
        space, metres); ``flex_axes``: (16, 3) its joints' flexion axes at rest. None uses
        the open hand model's."""
        self.spec = spec
        self.side = hand.side
        self.config = (config or RetargetConfig()).validated()
        if "hand" not in hand.bones:
            raise RigError(
                f"the {hand.side} hand of {spec.name!r} has no hand (wrist) bone mapped: "
                "map the role 'hand' in the mapping editor"
            )
        rest = (
            default_rest_keypoints(hand.side)
            if rest_keypoints is None
            else np.asarray(rest_keypoints, dtype=np.float64)
        )
        if rest.shape != (21, 3):
            raise RigError(f"rest keypoints must have shape (21, 3), got {rest.shape}")
        self.roles = tuple(r for r in MANO_JOINT_FOR_ROLE if r in hand.bones)
        self.hand_index = spec.index(hand.bones["hand"])
        self.bone_index = np.array([spec.index(hand.bones[r]) for r in self.roles], dtype=int)
        self.joints = np.array([MANO_JOINT_FOR_ROLE[r] for r in self.roles], dtype=int)
        r_rest = spec.rotations

        # Palm frames on both hands, from the fingers the rig has.
        rig_knuckles = {}
        for finger in _MP_KNUCKLE:
            if f"{finger}.proximal" in hand.bones:
                rig_knuckles[finger] = spec.heads[spec.index(hand.bones[f"{finger}.proximal"])]
            elif f"{finger}.metacarpal" in hand.bones:
                rig_knuckles[finger] = spec.tails[spec.index(hand.bones[f"{finger}.metacarpal"])]
        fingers = tuple(rig_knuckles)
        if len(fingers) < 2:
            raise RigError(
                f"the {hand.side} hand of {spec.name!r} needs the first bone of at least two "
                f"fingers to find its palm; it has {', '.join(fingers) or 'none'}"
            )
        wrist_r = spec.heads[self.hand_index]
        dir_r, self.normal_rig = palm_frame_points(rig_knuckles, wrist_r, fingers)
        mano_knuckles = {f: rest[_MP_KNUCKLE[f]] for f in fingers}
        dir_m, self.normal_mano = palm_frame_points(mano_knuckles, rest[_MP_WRIST], fingers)
        self.hand_frame_rig = anatomical_frame(dir_r, self.normal_rig)
        self.hand_frame_mano = anatomical_frame(dir_m, self.normal_mano)
        self.k_hand = r_rest[self.hand_index].T @ self.hand_frame_rig

        seg_m = rest[MANO16_BONE_END[self.joints]] - rest[MEDIAPIPE_FOR_MANO16[self.joints]]
        axes = default_flex_axes(hand.side) if flex_axes is None else np.asarray(flex_axes)
        if axes.shape != (16, 3):
            raise RigError(f"flex axes must have shape (16, 3), got {axes.shape}")
        self.frames_mano = frame_from_axis(seg_m, axes[self.joints])  # (J, 3, 3)
        # The rig bone's flexion axis: MANO's, carried into the rig through the frames of
        # the segment before it (the hand for a digit's first bone) and made perpendicular to
        # the bone. Unlike ``y x n`` on the rig itself, this follows a rest pose that curls
        # or spreads the digits.
        frames_rig = np.empty_like(self.frames_mano)
        previous: dict[str, int] = {}
        for k, role in enumerate(self.roles):
            finger = role_finger(role)
            if finger in previous:
                j = previous[finger]
                before_rig, before_mano = frames_rig[j], self.frames_mano[j]
            else:
                before_rig, before_mano = self.hand_frame_rig, self.hand_frame_mano
            hint = before_rig @ before_mano.T @ self.frames_mano[k, :, 0]
            if hand.bone_x_flexes:  # the rig says which axis the digit curls about
                x = r_rest[self.bone_index[k], :, 0]
                hint = x if x @ hint >= 0 else -x
            frames_rig[k] = frame_from_axis(r_rest[self.bone_index[k], :, 1], hint)
            previous[finger] = k
        # Unmapped parents of mapped digit bones ride with the hand (see solve()).
        mapped = set(self.bone_index.tolist())
        self.finger_parents = {int(spec.parents[b]) for b in self.bone_index} - mapped - {-1}
        k = np.swapaxes(r_rest[self.bone_index], 1, 2) @ frames_rig
        self.segment_to_bone = self.frames_mano @ np.swapaxes(k, 1, 2)  # F_j @ K_b^T

    def solve(self, pose: np.ndarray, translation: np.ndarray | None = None,
              current_pose: np.ndarray | None = None) -> BonePoses:  # fmt: skip
        """Local pose rotations (and hand location) for T frames.

        Args:
            pose: (T, 16, 3) MANO axis-angle, radians: [0] global orientation in camera
                space (OpenCV axes), [1:] local rotations (MANO order).
            translation: (T, 3) wrist in camera space, metres (location mode only).
            current_pose: (N, 4, 4) armature-space pose matrices of every bone as the rig
                stands now (``pose_bone.matrix``); None means the rest pose. Bones that the
                capture does not drive are taken to stay as they are.
        """
        pose = np.asarray(pose, dtype=np.float64)
        if pose.ndim != 3 or pose.shape[1:] != (16, 3):
            raise RigError(f"MANO pose must have shape (T, 16, 3), got {pose.shape}")
        spec, cfg = self.spec, self.config
        r_rest = spec.rotations
        current = np.asarray(spec.rest if current_pose is None else current_pose, dtype=float)
        t = len(pose)
        local = axis_angle_to_matrix(pose)
        g = mano_hand_rotations(local)
        h = self.hand_index
        drive_wrist = cfg.wrist is not WristMode.NONE
        if drive_wrist:
            frame_h = cfg.camera_to_armature @ local[:, 0] @ self.hand_frame_mano  # (T, 3, 3)
            posed_hand = frame_h @ self.k_hand.T
        else:
            posed_hand = np.broadcast_to(current[h, :3, :3], (t, 3, 3))
            frame_h = posed_hand @ self.k_hand
        q = frame_h @ self.hand_frame_mano.T  # MANO hand space -> armature space

        posed: dict[int, np.ndarray] = {}
        if drive_wrist:
            posed[h] = posed_hand
        for b, j, a in zip(self.bone_index, self.joints, self.segment_to_bone, strict=True):
            posed[int(b)] = q @ g[:, j] @ a

        def posed_rotation(i: int) -> np.ndarray:
            """Armature-space rotation of bone i in the solved pose (T, 3, 3)."""
            if i in posed:
                return posed[i]
            if i == h:
                return posed_hand
            relative = current[:, :3, :3]
            for a in spec.ancestors(i):
                if a in posed or a == h:  # rigid with a solved bone (or the hand) above it
                    return posed_rotation(a) @ (relative[a].T @ relative[i])
            if i in self.finger_parents:
                # A helper that constraints keep on the hand (Rigify's MCH-*_drv, under the
                # deform chain): it turns with the hand, keeping its current pose relative to it.
                return posed_hand @ (relative[h].T @ relative[i])
            return np.broadcast_to(relative[i], (t, 3, 3))

        order = [i for i in spec.topological_order() if i in posed]
        rotations = np.empty((t, len(order), 4))
        for k, i in enumerate(order):
            p = int(spec.parents[i])
            if p < 0:  # a root bone's parent space is armature space
                rel = r_rest[i].T @ posed[i]
            else:
                rel = (r_rest[i].T @ r_rest[p]) @ np.swapaxes(posed_rotation(p), 1, 2) @ posed[i]
            rotations[:, k] = matrix_to_quat(rel)
        locations = None
        if cfg.wrist is WristMode.ROTATION_AND_LOCATION and translation is not None:
            locations = np.zeros((t, len(order), 3))
            locations[:, order.index(h)] = self._hand_location(translation, current)
        names = tuple(spec.bone_names[i] for i in order)
        return BonePoses(self.side, names, make_continuous(rotations), locations)

    def _hand_location(self, translation: np.ndarray, current: np.ndarray) -> np.ndarray:
        """(T, 3) local location that moves the hand's head by the captured wrist motion
        (relative to the first frame), starting where the hand stands now."""
        spec, cfg, h = self.spec, self.config, self.hand_index
        translation = np.asarray(translation, dtype=np.float64)
        if translation.ndim != 2 or translation.shape[1] != 3:
            raise RigError(f"translation must have shape (T, 3), got {translation.shape}")
        delta = (translation - translation[0]) @ cfg.camera_to_armature.T * cfg.units_per_metre
        target = current[h, :3, 3] + delta
        r_b, head_b = spec.rotations[h], spec.heads[h]
        p = int(spec.parents[h])
        if p < 0:
            return (target - head_b) @ r_b
        r_p, head_p = spec.rotations[p], spec.heads[p]
        in_parent_rest = (target - current[p, :3, 3]) @ current[p, :3, :3] @ r_p.T + head_p
        return (in_parent_rest - head_b) @ r_b
