"""The rest skeleton of the hand model that MANO rotations are applied to, and the axes its
digits flex about (numpy only).

MANO's local rotations only mean something with the rest skeleton they rotate: the segment
from each joint to its child. The engine writes the fitted hand's rest keypoints into the
take (``Track.rest_keypoints``); :data:`OPEN_HAND_RIGHT_REST_MM` is the open hand model's
rest at zero shape, the fallback for takes without them (a test pins it to the built model).

The flexion axes come from the open hand's source asset, whose joint frames were authored
with x as the axis each joint curls about; a real MANO hand flexes about nearly the same
axes (they are within 2 degrees of perpendicular to every segment of either skeleton).
"""

from __future__ import annotations

from typing import Final

import numpy as np

from handmocap.retarget.hand_skeleton import MANO21_FOR_MEDIAPIPE
from handmocap.retarget.rotations import MIRROR_X, mirror_axes
from handmocap.sides import Side

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

# (15, 3) unit flexion axis of MANO joints 1..15 at rest, hand space, right hand: the WebXR
# joint frames' x axes (a test pins them to the asset).
OPEN_HAND_RIGHT_FLEX_AXES: Final = np.array([
    [0.0641, -0.9979, 0.0128], [0.0104, -0.9987, 0.0508], [-0.0171, -0.9946, 0.1027],
    [-0.0134, -0.9949, 0.0995], [-0.03, -0.9895, 0.1415], [-0.1004, -0.9865, 0.1295],
    [-0.2247, -0.9446, 0.2394], [-0.2841, -0.8951, 0.3437], [-0.2912, -0.9237, 0.2491],
    [-0.0898, -0.9668, 0.2391], [-0.1523, -0.9468, 0.2835], [-0.1711, -0.9651, 0.1983],
    [0.8622, 0.0733, -0.5012], [0.8665, -0.1528, -0.4752], [0.8893, 0.0537, -0.4541],
])  # fmt: skip

# MediaPipe keypoint index of each MANO joint (MANO_16 order) and of the point its bone
# points at (the next keypoint along the digit: the child joint or the tip).
MEDIAPIPE_FOR_MANO16: Final = np.argsort(MANO21_FOR_MEDIAPIPE)[:16]
MANO16_BONE_END: Final = MEDIAPIPE_FOR_MANO16 + 1


def default_rest_keypoints(side: Side) -> np.ndarray:
    """(21, 3) metres, MediaPipe order: the open hand model's rest for ``side`` (the left
    hand is the right one mirrored across hand-space x, :data:`~.rotations.MIRROR_X`)."""
    rest = OPEN_HAND_RIGHT_REST_MM / 1000.0
    return rest @ MIRROR_X if side == Side.LEFT else rest.copy()


def default_flex_axes(side: Side) -> np.ndarray:
    """(16, 3) unit flexion axis per MANO joint at rest (row 0, the wrist, is zero).

    The left hand is the mirror image; an axis of rotation mirrors as ``-S @ axis``
    (:func:`~.rotations.mirror_axes`), so a positive turn about it still curls the digit
    towards the palm."""
    axes = np.zeros((16, 3))
    axes[1:] = (
        OPEN_HAND_RIGHT_FLEX_AXES / np.linalg.norm(OPEN_HAND_RIGHT_FLEX_AXES, axis=1)[:, None]
    )
    return mirror_axes(axes) if side == Side.LEFT else axes
