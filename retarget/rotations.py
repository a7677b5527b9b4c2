"""Rotation utilities, vectorised over any leading batch shape (numpy only: this module runs
inside Blender's Python, which ships numpy but not scipy).

Conventions used everywhere in handmocap:

* rotation matrices act on column vectors: ``v_world = R @ v_local``;
* quaternions are stored **(w, x, y, z)** (Blender's order);
* axis-angle vectors are ``axis * angle`` with the angle in radians (MANO's layout).
"""

from __future__ import annotations

import numpy as np

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
    """(..., 3) axis-angle in radians -> (..., 3, 3) rotation matrices (Rodrigues)."""
    flat, lead = _flat(aa, (3,))
    return quat_to_matrix(_axis_angle_to_quat(flat)).reshape((*lead, 3, 3))


def matrix_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle in radians (angle in [0, pi])."""
    flat, lead = _flat(m, (3, 3))
    q = matrix_to_quat(flat)  # w >= 0, so the angle 2*atan2(|v|, w) is in [0, pi]
    v = q[:, 1:]
    s = np.linalg.norm(v, axis=1)
    angle = 2.0 * np.arctan2(s, q[:, 0])
    # angle / sin(angle / 2), with its limit 2 (plus the series term) near zero
    small = s < 1e-8
    scale = np.where(small, 2.0 + (s**2) / 3.0, angle / np.where(small, 1.0, s))
    return (v * scale[:, None]).reshape((*lead, 3))


def _axis_angle_to_quat(flat: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(flat, axis=1)
    half = 0.5 * angle
    small = angle < 1e-8
    # sin(angle / 2) / angle, with its series 1/2 - angle^2/48 near zero
    k = np.where(small, 0.5 - angle**2 / 48.0, np.sin(half) / np.where(small, 1.0, angle))
    return np.concatenate([np.cos(half)[:, None], flat * k[:, None]], axis=1)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z), any norm > 0 -> (..., 3, 3) rotation matrices."""
    flat, lead = _flat(q, (4,))
    w, x, y, z = (flat / np.linalg.norm(flat, axis=1, keepdims=True)).T
    m = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        axis=1,
    )  # fmt: skip
    return m.reshape((*lead, 3, 3))


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z) with w >= 0.

    Shepperd's method: of the four ways to extract the quaternion, each matrix uses the
    one whose pivot (4w^2, 4x^2, 4y^2 or 4z^2) is largest, so no division is ill-conditioned.
    """
    flat, lead = _flat(m, (3, 3))
    m00, m11, m22 = flat[:, 0, 0], flat[:, 1, 1], flat[:, 2, 2]
    m01, m02, m10 = flat[:, 0, 1], flat[:, 0, 2], flat[:, 1, 0]
    m12, m20, m21 = flat[:, 1, 2], flat[:, 2, 0], flat[:, 2, 1]
    candidates = np.stack(
        [
            np.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], axis=1),
            np.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], axis=1),
            np.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], axis=1),
            np.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], axis=1),
        ],
        axis=1,
    )  # (N, 4 candidates, 4): candidate k is 4 * q_k * q
    pivot = np.argmax(np.stack([candidates[:, k, k] for k in range(4)], axis=1), axis=1)
    q = candidates[np.arange(len(flat)), pivot]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.where(q[:, :1] < 0.0, -1.0, 1.0)
    return q.reshape((*lead, 4))


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
