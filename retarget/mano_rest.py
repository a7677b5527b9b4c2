"""The rest skeleton of the hand model that MANO rotations are applied to (numpy only).

MANO's local rotations only mean something with the rest skeleton they rotate: the segment
from each joint to its child. The engine writes the fitted hand's rest keypoints into the
take (``Track.rest_keypoints``); :data:`OPEN_HAND_RIGHT_REST_MM` is the open hand model's
rest at zero shape, the fallback for takes without them (a test pins it to the built model).
"""

from __future__ import annotations

from typing import Final

import numpy as np

from handmocap.retarget.hand_skeleton import MANO21_FOR_MEDIAPIPE

# (21, 3) MediaPipe order, hand space (metres * 1000), wrist at the origin; right hand.
OPEN_HAND_RIGHT_REST_MM: Final = np.array([
    [0.0, 0.0, 0.0],
    [-19.16, 28.03, -35.96], [-34.31, 44.96, -59.22], [-43.71, 66.91, -83.12],
    [-51.32, 82.99, -95.64],
    [-7.32, 23.55, -88.55], [-10.55, 22.02, -133.75], [-12.77, 20.69, -157.92],
    [-11.73, 18.54, -177.48],
    [-2.54, 1.73, -91.65], [-7.02, -2.64, -138.12], [-9.79, -5.69, -165.36],
    [-7.95, -8.58, -186.9],
    [-6.53, -17.47, -84.69], [-10.88, -26.76, -126.31], [-14.17, -33.19, -151.89],
    [-15.5, -37.2, -171.98],
    [-13.69, -35.05, -73.9], [-18.12, -42.37, -107.41], [-20.97, -48.95, -126.4],
    [-22.2, -53.58, -144.27],
])  # fmt: skip

# The hand model's left hand is the right one mirrored across hand-space x.
MIRROR_X: Final = np.diag([-1.0, 1.0, 1.0])

# MediaPipe keypoint index of each MANO joint (MANO_16 order) and of the point its bone
# points at (the next keypoint along the digit: the child joint or the tip).
MEDIAPIPE_FOR_MANO16: Final = np.argsort(MANO21_FOR_MEDIAPIPE)[:16]
MANO16_BONE_END: Final = MEDIAPIPE_FOR_MANO16 + 1


def default_rest_keypoints(side: str) -> np.ndarray:
    """(21, 3) metres, MediaPipe order: the open hand model's rest for ``side``."""
    rest = OPEN_HAND_RIGHT_REST_MM / 1000.0
    return rest @ MIRROR_X if side == "left" else rest.copy()
