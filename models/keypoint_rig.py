"""The hand model reduced to its 21 keypoints, and the IK network's input features.

Plain numpy, no torch: the engine's fit reads these at every capture, and a capture does not
import torch (docs/architecture.md, "Speed and threads"). :mod:`.iknet` trains on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handmocap.retarget.hand_skeleton import MANO21_FOR_MEDIAPIPE, MEDIAPIPE_21_PARENTS

PARENTS = np.array(MEDIAPIPE_21_PARENTS)
# Rotation applied at each MediaPipe keypoint: its MANO joint, or none (-1) for the tips.
JOINT_OF_KEYPOINT = np.array([m if m < 16 else -1 for m in MANO21_FOR_MEDIAPIPE])
# The keypoint tree in MediaPipe order, level by level: the five digits side by side.
LEVELS = [np.array([1, 5, 9, 13, 17]) + i for i in range(4)]
# Level-major keypoint order (the wrist, then each level) -> MediaPipe order.
LEVEL_ORDER = np.argsort(np.concatenate([[0], *LEVELS]))


@dataclass(frozen=True)
class KeypointRig:
    """The hand model reduced to what keypoints need (all in hand space, metres).

    Attributes:
        rest: (21, 3) rest keypoints (MediaPipe order) at betas = 0.
        shape: (21, 3, 10) their change per unit of each beta.
    """

    rest: np.ndarray
    shape: np.ndarray

    @staticmethod
    def from_model_arrays(v_template, shapedirs, j_regressor, tip_ids) -> KeypointRig:
        joints = j_regressor @ v_template
        joint_dirs = np.einsum("jv,vcb->jcb", j_regressor, shapedirs)
        rest21 = np.vstack([joints, v_template[list(tip_ids)]])[MANO21_FOR_MEDIAPIPE]
        dirs21 = np.concatenate([joint_dirs, shapedirs[list(tip_ids)]])[MANO21_FOR_MEDIAPIPE]
        return KeypointRig(rest21, dirs21)

    def shaped(self, betas: np.ndarray) -> np.ndarray:
        """(21, 3) rest keypoints for one shape ``betas`` (10,)."""
        return self.rest + np.einsum("kcb,b->kc", self.shape, betas)


def features(keypoints: np.ndarray) -> np.ndarray:
    """(B, 21, 3) keypoints (any units, any origin) -> (B, 123) network input:
    wrist-relative keypoints divided by the wrist -> middle knuckle distance, and the
    20 unit bone vectors."""
    k = keypoints - keypoints[:, :1]
    scale = np.linalg.norm(k[:, 9], axis=-1)[:, None, None]
    k = k / np.maximum(scale, 1e-9)
    bones = k[:, 1:] - k[:, PARENTS[1:]]
    bones = bones / np.maximum(np.linalg.norm(bones, axis=-1, keepdims=True), 1e-9)
    return np.concatenate([k.reshape(len(k), -1), bones.reshape(len(k), -1)], axis=1).astype(
        np.float32
    )
