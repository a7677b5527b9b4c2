"""Rotated regions of interest and the image <-> crop affine maps (pure numpy).

Pixel convention: (0, 0) is the top-left corner of the top-left pixel; x right, y down.
Rotations are in radians, positive turning the crop clockwise on screen (MediaPipe's
convention: a hand pointing up has rotation 0, pointing right has rotation +pi/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Roi:
    """A square, rotated region in image pixels: centre (cx, cy), side ``size``, ``rotation``."""

    cx: float
    cy: float
    size: float
    rotation: float

    def corners(self) -> np.ndarray:
        """(4, 2) corners in image pixels: top-left, top-right, bottom-right, bottom-left of
        the crop (the crop's "up" is the hand's finger direction)."""
        h = self.size / 2.0
        local = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
        return local @ rotation_matrix_2d(self.rotation).T + [self.cx, self.cy]

    def crop_from_image(self, crop_size: int) -> np.ndarray:
        """(2, 3) affine map image pixels -> crop pixels for a crop_size x crop_size crop."""
        k = crop_size / self.size
        c, s = np.cos(self.rotation) * k, np.sin(self.rotation) * k
        # Rotate by -rotation and scale about the ROI centre, which lands on the crop centre.
        return np.array([
            [c, s, crop_size / 2.0 - c * self.cx - s * self.cy],
            [-s, c, crop_size / 2.0 + s * self.cx - c * self.cy],
        ])  # fmt: skip

    def image_from_crop(self, crop_size: int) -> np.ndarray:
        """(2, 3) affine map crop pixels -> image pixels."""
        k = self.size / crop_size
        c, s = np.cos(self.rotation) * k, np.sin(self.rotation) * k
        h = crop_size / 2.0
        return np.array([[c, -s, self.cx - (c - s) * h], [s, c, self.cy - (s + c) * h]])


def rotation_matrix_2d(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply (2, 3) affine to (..., 2) points."""
    return points @ affine[:, :2].T + affine[:, 2]


def normalize_angle(angle: float) -> float:
    return float(angle - 2.0 * np.pi * np.floor((angle + np.pi) / (2.0 * np.pi)))


def hand_rotation(wrist: np.ndarray, knuckle: np.ndarray) -> float:
    """MediaPipe's rule: rotation that makes wrist -> middle knuckle point up (radians)."""
    return normalize_angle(
        np.pi / 2.0 - np.arctan2(-(knuckle[1] - wrist[1]), knuckle[0] - wrist[0])
    )


def transform_rect(
    cx: float,
    cy: float,
    width: float,
    height: float,
    rotation: float,
    scale: float,
    shift_y: float,
) -> Roi:
    """MediaPipe's RectTransformation with square_long: shift the centre by ``shift_y`` of the
    height along the rect's own up axis (negative = towards the fingers), make it square on
    its long side and scale it."""
    cx += -height * shift_y * np.sin(rotation)
    cy += height * shift_y * np.cos(rotation)
    return Roi(float(cx), float(cy), float(max(width, height) * scale), float(rotation))
