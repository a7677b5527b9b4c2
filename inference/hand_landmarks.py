"""Hand landmarks: preprocess (rotated crops) -> run -> postprocess, pre/post pure numpy.

The facts: input 224x224 RGB in [0, 1]; outputs 21x3 landmarks in
crop pixels (z scaled like x), hand presence (already a probability), handedness (a
probability, > 0.5 = a physical RIGHT hand in an unmirrored image) and 21x3 world
landmarks in metres. Tracking takes the next crop from landmarks
{0,1,2,3,5,6,9,10,13,14,17,18}, scale 2.0, shift -0.1. Where the stage sits in the
pipeline: docs/architecture.md, "Data flow".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .backend import Backend, Network
from .geometry import Roi, apply_affine, hand_rotation, rotation_matrix_2d, transform_rect

INPUT_SIZE = 224
TRACKING_SUBSET = np.array([0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18])


@dataclass(frozen=True)
class HandLandmarks:
    """One hand's landmarks in one frame.

    Attributes:
        image_xyz: (21, 3) x, y in image pixels; z relative depth in the same pixel scale
            (smaller = nearer the camera, wrist-relative as the network predicts it).
        world_xyz: (21, 3) metres, hand-centred, axes aligned with the image (x right,
            y down) after undoing the crop's rotation.
        presence: probability that a hand is in the crop.
        right_prob: probability that it is a physical right hand.
        roi: the crop it came from.
    """

    image_xyz: np.ndarray
    world_xyz: np.ndarray
    presence: float
    right_prob: float
    roi: Roi


def crop_affine_cv(roi: Roi, size: int = INPUT_SIZE) -> np.ndarray:
    """(2, 3) matrix for cv2.warpAffine (pixel-centre convention) from image to crop."""
    a = roi.crop_from_image(size)
    # dst_centre = A(src_centre + 0.5) - 0.5  in corner coordinates
    out = a.copy()
    out[:, 2] = a[:, 2] + a[:, :2].sum(axis=1) * 0.5 - 0.5
    return out


def preprocess(image_rgb: np.ndarray | list[np.ndarray], rois: list[Roi]) -> np.ndarray:
    """(N, 224, 224, 3) float32 crops in [0, 1]; outside the image is black. One (H, W, 3)
    image for all crops, or one image per crop."""
    images = image_rgb if isinstance(image_rgb, list) else [image_rgb] * len(rois)
    out = np.empty((len(rois), INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    for i, (image, roi) in enumerate(zip(images, rois, strict=True)):
        crop = cv2.warpAffine(image, crop_affine_cv(roi), (INPUT_SIZE, INPUT_SIZE),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)  # fmt: skip
        out[i] = crop.astype(np.float32) * (1.0 / 255.0)
    return out


def postprocess(
    landmarks: np.ndarray,
    presence: np.ndarray,
    handedness: np.ndarray,
    world: np.ndarray,
    rois: list[Roi],
) -> list[HandLandmarks]:
    """Network outputs for N crops ((N, 63), (N, 1), (N, 1), (N, 63)) -> image-space hands."""
    hands = []
    for i, roi in enumerate(rois):
        lm = landmarks[i].reshape(21, 3).astype(np.float64)
        xy = apply_affine(roi.image_from_crop(INPUT_SIZE), lm[:, :2])
        z = lm[:, 2] * roi.size / INPUT_SIZE
        w = world[i].reshape(21, 3).astype(np.float64)
        w_xy = w[:, :2] @ rotation_matrix_2d(roi.rotation).T
        hands.append(
            HandLandmarks(
                image_xyz=np.column_stack([xy, z]),
                world_xyz=np.column_stack([w_xy, w[:, 2]]),
                presence=float(presence[i].reshape(-1)[0]),
                right_prob=float(handedness[i].reshape(-1)[0]),
                roi=roi,
            )
        )
    return hands


class HandLandmarker:
    """The hand landmark network: :meth:`preprocess` -> :meth:`run` -> :meth:`postprocess`.

    Pre- and postprocessing are the pure-numpy functions of this module; :meth:`run` is the
    one ONNX Runtime call, on the providers :func:`.backend.choose_backend` picked. All crops
    of a frame go through the network as one batch.
    """

    def __init__(self, model: Path, backend: Backend, threads: int = 0):
        """``model``: the ported ``hand_landmark.onnx``; ``threads`` 0 = every usable core
        (:mod:`.threads`)."""
        self.backend = backend
        self.network = Network(model, backend, threads)

    @staticmethod
    def preprocess(image_rgb: np.ndarray | list[np.ndarray], rois: list[Roi]) -> np.ndarray:
        """(H, W, 3) uint8 RGB (or one such image per crop) and N crops -> (N, 224, 224, 3)
        float32 crops in [0, 1]."""
        return preprocess(image_rgb, rois)

    def run(self, crops: np.ndarray, alone: bool = True) -> list[np.ndarray]:
        """(N, 224, 224, 3) float32 -> landmarks (N, 63) crop px, presence (N, 1),
        handedness (N, 1) and world landmarks (N, 63) metres, as the network returns them.
        ``alone``: no other network runs meanwhile (:meth:`.backend.Network.run`)."""
        return self.network.run("image", crops, alone)

    @staticmethod
    def postprocess(outputs: list[np.ndarray], rois: list[Roi]) -> list[HandLandmarks]:
        """:meth:`run`'s outputs for the N crops -> N hands in image space."""
        return postprocess(*outputs, rois)

    def estimate(
        self, image_rgb: np.ndarray | list[np.ndarray], rois: list[Roi], alone: bool = True
    ) -> list[HandLandmarks]:
        """One frame (or one image per crop) and N crops (none is fine) -> the N crops'
        hands, in crop order. ``alone`` as in :meth:`run`."""
        if not rois:
            return []
        parts = self.network.side_by_side(len(rois)) if alone else []
        if not parts:
            return self.postprocess(self.run(self.preprocess(image_rgb, rois), alone), rois)
        # Crops split across the cores: each thread also cuts and reads its own, where
        # cutting every crop before the network and reading them after ran on one core
        # while the other waited (docs/architecture.md, "Speed and threads").
        images = image_rgb if isinstance(image_rgb, list) else [image_rgb] * len(rois)

        def part(rows: slice) -> list[HandLandmarks]:
            crops = self.preprocess(images[rows], rois[rows])
            return self.postprocess(self.run(crops, alone=False), rois[rows])

        return [hand for hands in self.network.map_beside(part, parts) for hand in hands]

    __call__ = estimate


def roi_from_landmarks(image_xy: np.ndarray) -> Roi:
    """MediaPipe's tracking rule: the next crop from this frame's (21, 2) landmarks."""
    rotation = hand_rotation(image_xy[0], image_xy[9])
    pts = image_xy[TRACKING_SUBSET]
    centre = (pts.min(axis=0) + pts.max(axis=0)) / 2.0
    back = rotation_matrix_2d(-rotation)
    projected = (pts - centre) @ back.T
    lo, hi = projected.min(axis=0), projected.max(axis=0)
    mid = (lo + hi) / 2.0
    cx, cy = rotation_matrix_2d(rotation) @ mid + centre
    width, height = hi - lo
    return transform_rect(cx, cy, width, height, rotation, scale=2.0, shift_y=-0.1)
