"""Rotation utilities, vectorised over any leading batch shape (numpy + scipy only).

Conventions used everywhere in handmocap:

* rotation matrices act on column vectors: ``v_world = R @ v_local``;
* quaternions are stored **(w, x, y, z)** (Blender's order; scipy uses x, y, z, w);
* axis-angle vectors are ``axis * angle`` with the angle in radians (MANO's layout).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

# OpenCV camera (x right, y down, z forward) -> Blender camera-local axes
# (x right, y up, looking down -z). Also the world rotation of a Blender camera that
# looks exactly like an OpenCV camera at the origin.
OPENCV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0])

# glTF asset axes (Y up) -> Blender axes (Z up): (x, y, z) -> (x, -z, y).
GLTF_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _flat(a: np.ndarray, tail: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    a = np.asarray(a, dtype=np.float64)
    if a.shape[a.ndim - len(tail) :] != tail:
        raise ValueError(
            f"expected an array of shape (..., {', '.join(map(str, tail))}), got {a.shape}"
        )
    lead = a.shape[: a.ndim - len(tail)]
    return a.reshape((-1, *tail)), lead


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle in radians -> (..., 3, 3) rotation matrices."""
    flat, lead = _flat(aa, (3,))
    return Rotation.from_rotvec(flat).as_matrix().reshape((*lead, 3, 3))


def matrix_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle in radians (angle in [0, pi])."""
    flat, lead = _flat(m, (3, 3))
    return Rotation.from_matrix(flat).as_rotvec().reshape((*lead, 3))


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z), any norm > 0 -> (..., 3, 3) rotation matrices."""
    flat, lead = _flat(q, (4,))
    return Rotation.from_quat(flat[:, [1, 2, 3, 0]]).as_matrix().reshape((*lead, 3, 3))


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z) with w >= 0."""
    flat, lead = _flat(m, (3, 3))
    xyzw = Rotation.from_matrix(flat).as_quat()
    wxyz = xyzw[:, [3, 0, 1, 2]]
    wxyz *= np.where(wxyz[:, :1] < 0.0, -1.0, 1.0)
    return wxyz.reshape((*lead, 4))


def rotation_about(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotation by ``angle`` (radians, shape (...)) about unit ``axis`` (shape (..., 3)).

    Returns (..., 3, 3). Broadcasts axis against angle.
    """
    axis = np.asarray(axis, dtype=np.float64)
    angle = np.asarray(angle, dtype=np.float64)
    return axis_angle_to_matrix(axis * angle[..., None])


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle in radians between rotation matrices a and b, shape (...)."""
    rel = np.swapaxes(a, -1, -2) @ b
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def orthonormalize(m: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (SVD, det +1) to each (..., 3, 3) matrix."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    return u @ vt


def look_rotation(forward: np.ndarray, up_hint: np.ndarray) -> np.ndarray:
    """Rotation whose columns are (right, up, forward) built from ``forward`` and an up hint.

    Shapes (..., 3) -> (..., 3, 3). ``up`` is ``up_hint`` made orthogonal to ``forward``.
    """
    f = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    u = up_hint - np.sum(up_hint * f, axis=-1, keepdims=True) * f
    u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    r = np.cross(u, f)
    return np.stack([r, u, f], axis=-1)
