"""Retargeting measured against the synthetic renderer's ground truth: the rotations the
clip was rendered with go through the solver onto a test rig, and each rig bone's posed
direction is compared with the rendered keypoints (what Blender drew), its flexion axis
with the render-time joint frames. Numpy only (the rig is posed the way Blender poses it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handmocap.retarget.hand_skeleton import WEBXR_FOR_MANO, WEBXR_FOR_MEDIAPIPE
from handmocap.retarget.mano_rest import (
    MANO16_BONE_END,
    MEDIAPIPE_FOR_MANO16,
    default_rest_keypoints,
)
from handmocap.retarget.rig_profiles import PROFILES_BY_ID, detect_rig
from handmocap.retarget.rotations import axis_angle_to_matrix
from handmocap.retarget.solver import HandRetargeter, RetargetConfig, mano_hand_rotations

from .rigs import build_test_rig, evaluate_pose, side_flex_axes


@dataclass(frozen=True)
class RetargetErrors:
    """Degrees over frames x driven bones of one hand."""

    side: str
    direction_deg: np.ndarray
    twist_deg: np.ndarray


def ground_truth_errors(gt, hands: dict, profile_id: str, seed: int = 0) -> list[RetargetErrors]:
    """One :class:`RetargetErrors` per hand of the clip ``gt`` (a ClipGroundTruth), on a
    test rig of ``profile_id`` (random rolls, 25 deg rest curl, own proportions).

    ``hands``: side -> WebXRHand, the assets the clip was rendered with.
    """
    rest_model = {s: default_rest_keypoints(s) for s in ("left", "right")}
    flex = side_flex_axes(hands["right"])
    rig = build_test_rig(PROFILES_BY_ID[profile_id], rest_model, flex, seed, scale=1.1,
                         metacarpals=profile_id != "mixamo")  # fmt: skip
    mapping = detect_rig(rig.spec.bone_names)
    out = []
    for h, side in enumerate(gt.handedness):
        hand = hands[side]
        # The skeleton the clip's rotations turn: the rendered asset's keypoint sites.
        rest = hand.keypoint_rest_positions()[WEBXR_FOR_MEDIAPIPE]
        rest = rest - rest[0]
        cfg = RetargetConfig()
        pose = gt.mano_pose[:, h].astype(np.float64)
        solved = HandRetargeter(rig.spec, mapping.hands[side], rest, cfg).solve(pose)
        posed = evaluate_pose(rig.spec, solved.bone_names, solved.rotations)
        kp = gt.keypoints_cam[:, h].astype(np.float64) @ cfg.camera_to_armature.T
        local = axis_angle_to_matrix(pose)
        g = (cfg.camera_to_armature @ local[:, 0])[:, None] @ mano_hand_rotations(local)
        x_rest = hand.rest_frames[WEBXR_FOR_MANO][:, :, 0]  # each joint's flexion axis
        dirs, twists = [], []
        for bone in mapping.hands[side].bones.values():
            j = rig.mano_joint.get(bone)
            if j is None:
                continue
            i = rig.spec.index(bone)
            want = kp[:, MANO16_BONE_END[j]] - kp[:, MEDIAPIPE_FOR_MANO16[j]]
            dirs.append(_angle(want, posed[:, i, :, 1]))
            twists.append(_angle(g[:, j] @ x_rest[j], posed[:, i] @ rig.flex_axes[bone]))
        out.append(RetargetErrors(side, np.concatenate(dirs), np.concatenate(twists)))
    return out


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))
