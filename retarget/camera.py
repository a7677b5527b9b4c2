"""Pinhole camera helpers in OpenCV's convention (x right, y down, z forward; metres, pixels).

Pixel coordinates have (0, 0) at the top-left corner of the top-left pixel.
"""

from __future__ import annotations

import numpy as np

# A field of view to assume when the user gives none: typical of phone main cameras and
# webcams in landscape (65-75 degrees horizontal); the MANO stage lets the user override it.
DEFAULT_FOV_DEG = 65.0


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """(3, 3) K of a centred pinhole with square pixels and horizontal field of view."""
    f = 0.5 * width / np.tan(np.radians(fov_x_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def project(points_cam: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(..., 3) camera-space points -> (..., 2) pixel coordinates through K."""
    uvw = points_cam @ intrinsics.T
    return uvw[..., :2] / uvw[..., 2:3]
