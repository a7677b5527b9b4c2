"""The handmocap hand armature: MANO's own skeleton as Blender bones (numpy only).

For users without a rigged character (and for previews), the add-on builds this armature
from a take's rest skeleton. Bone names follow the ``handmocap`` rig profile (``wrist.R``,
``index1.R`` ... ``thumb3.R``), each digit bone runs from its joint to the next keypoint,
and each is rolled so that bone X is the axis it flexes about, as Rigify does.
"""

from __future__ import annotations

import numpy as np

from handmocap.retarget.armature import ArmatureSpec
from handmocap.retarget.bone_names import MANO_JOINT_FOR_ROLE
from handmocap.retarget.mano_rest import (
    MANO16_BONE_END,
    MEDIAPIPE_FOR_MANO16,
    default_flex_axes,
    default_rest_keypoints,
)
from handmocap.retarget.rig_profiles import PROFILES_BY_ID
from handmocap.retarget.solver import frame_from_axis
from handmocap.sides import Side

_PROFILE = PROFILES_BY_ID["handmocap"]


def mano_armature_spec(side: Side, rest_keypoints: np.ndarray | None = None,
                       hand_to_armature: np.ndarray | None = None,
                       name: str = "handmocap_hand") -> ArmatureSpec:  # fmt: skip
    """An ArmatureSpec for one hand.

    Args:
        side: which hand.
        rest_keypoints: (21, 3) MediaPipe order, hand space, metres (default: open hand).
        hand_to_armature: (3, 3) rotation placing hand space in the armature (default:
            identity).
        name: the armature's name.
    """
    rest = default_rest_keypoints(side) if rest_keypoints is None else np.asarray(rest_keypoints)
    turn = np.eye(3) if hand_to_armature is None else np.asarray(hand_to_armature)
    pts = (rest - rest[0]) @ turn.T
    axes = default_flex_axes(side) @ turn.T
    names = [_PROFILE.bone_name("hand", side)]
    parents = [-1]
    mats = []
    lengths = []
    # The wrist bone points at the middle knuckle, X across the palm (index side).
    along = pts[9] - pts[0]
    mats.append(_matrix(frame_from_axis(along, pts[5] - pts[17]), pts[0]))
    lengths.append(float(np.linalg.norm(along)))
    for role, j in MANO_JOINT_FOR_ROLE.items():
        head, tail = pts[MEDIAPIPE_FOR_MANO16[j]], pts[MANO16_BONE_END[j]]
        names.append(_PROFILE.bone_name(role, side))
        first = role.endswith("proximal") and not role.startswith("thumb")
        first |= role == "thumb.metacarpal"
        parents.append(0 if first else len(names) - 2)
        mats.append(_matrix(frame_from_axis(tail - head, axes[j]), head))
        lengths.append(float(np.linalg.norm(tail - head)))
    return ArmatureSpec(name, tuple(names), np.array(parents), np.array(mats), np.array(lengths))


def _matrix(rotation: np.ndarray, head: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = head
    return m
