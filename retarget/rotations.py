"""Rotation utilities, vectorised over any leading batch shape (numpy only: this module runs
inside Blender's Python, which ships numpy but not scipy).

Conventions used everywhere in handmocap:

* rotation matrices act on column vectors: ``v_world = R @ v_local``;
* quaternions are stored **(w, x, y, z)** (Blender's order);
* axis-angle vectors are ``axis * angle`` with the angle in radians (MANO's layout).
"""

from __future__ import annotations

from typing import Final

import numpy as np

# OpenCV camera (x right, y down, z forward) -> Blender camera-local axes
# (x right, y up, looking down -z). Also the world rotation of a Blender camera that
# looks exactly like an OpenCV camera at the origin.
OPENCV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0])

# glTF asset axes (Y up) -> Blender axes (Z up): (x, y, z) -> (x, -z, y).
GLTF_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

# The mirror across the plane x = 0 of hand space (x -> -x): the hand model's left hand is
# its right hand seen through it. Points mirror as ``p @ MIRROR_X`` (rows), rotations as
# :func:`mirror_rotations`, axes of rotation as :func:`mirror_axes`.
MIRROR_X: Final = np.diag([-1.0, 1.0, 1.0])


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
    return quat_to_matrix(quat_exp(flat)).reshape((*lead, 3, 3))


def matrix_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle in radians (angle in [0, pi])."""
    return quat_log(matrix_to_quat(m))


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
    """Geodesic angle in radians, in [0, pi], between rotations ``a`` and ``b``, shape (...).

    Each is (..., 3, 3) rotation matrices or (..., 4) quaternions (w, x, y, z), the two
    broadcasting against each other. Matrices are first made exact rotations
    (:func:`orthonormalize`); quaternions may have any nonzero norm, and q and -q are one
    rotation. The angle is ``2 atan2(|v|, |w|)`` of the relative quaternion, exact down to
    the smallest angles: ``arccos`` of the trace turns a 1e-6 departure from orthonormality
    (float32 pose matrices) into a false 0.04 deg, and loses all digits below about 1e-8 rad.
    """
    rel = quat_multiply(quat_conjugate(_as_quat(a)), _as_quat(b))
    return 2.0 * np.arctan2(np.linalg.norm(rel[..., 1:], axis=-1), np.abs(rel[..., 0]))


def _as_quat(r: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions as they are, or (..., 3, 3) matrices as unit quaternions."""
    r = np.asarray(r, dtype=np.float64)
    if r.shape[-1:] == (4,):
        return r
    if r.shape[-2:] == (3, 3):
        return matrix_to_quat(orthonormalize(r))
    raise ValueError(f"expected rotations of shape (..., 3, 3) or (..., 4), got {r.shape}")


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


# -- quaternion algebra, (w, x, y, z), vectorised over leading dims --------------------------


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b (rotate by b, then by a), (..., 4) x (..., 4) -> (..., 4),
    broadcasting."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """(..., 4) -> (..., 4) the conjugate (w, -x, -y, -z): the inverse of a unit quaternion."""
    return np.asarray(q, dtype=np.float64) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_log(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions -> (..., 3) rotation vectors (radians), angle in [0, pi]
    (q and -q, one rotation, give the same vector: the shorter way round)."""
    q = np.asarray(q, dtype=np.float64)
    q = np.where(q[..., :1] < 0.0, -q, q)
    w, v = q[..., 0], q[..., 1:]
    s = np.linalg.norm(v, axis=-1)
    angle = 2.0 * np.arctan2(s, w)
    # angle / sin(angle / 2), with its limit 2 / w near zero
    small = s < 1e-12
    scale = np.where(small, 2.0 / np.maximum(w, 1e-12), angle / np.where(small, 1.0, s))
    return v * scale[..., None]


def quat_exp(r: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors (radians) -> (..., 4) unit quaternions (inverse of
    :func:`quat_log`)."""
    r = np.asarray(r, dtype=np.float64)
    angle = np.linalg.norm(r, axis=-1)
    small = angle < 1e-8
    # sin(angle / 2) / angle, with its series 1/2 - angle^2/48 near zero
    k = np.where(small, 0.5 - angle**2 / 48.0, np.sin(0.5 * angle) / np.where(small, 1.0, angle))
    return np.concatenate([np.cos(0.5 * angle)[..., None], r * k[..., None]], axis=-1)


def quat_slerp(a: np.ndarray, b: np.ndarray, s: np.ndarray | float) -> np.ndarray:
    """Shortest-path slerp from unit ``a`` (s = 0) to unit ``b`` (s = 1); (..., 4) -> (..., 4),
    the result in a's hemisphere. ``s`` broadcasts against the leading dims (shape (...,) or
    a scalar)."""
    rel = quat_log(quat_multiply(quat_conjugate(a), b))
    return quat_multiply(a, quat_exp(rel * np.asarray(s, dtype=np.float64)[..., None]))


def make_continuous(q: np.ndarray) -> np.ndarray:
    """Flip quaternion signs along axis 0 so consecutive ones are in the same hemisphere.

    (T, ..., 4) -> same shape; q and -q are one rotation, but F-curves interpolate the
    numbers, so a sign flip between two keys would spin the bone the long way round.
    """
    if len(q) < 2:
        return q
    dots = np.sum(q[1:] * q[:-1], axis=-1)
    flips = np.cumprod(np.where(dots < 0.0, -1.0, 1.0), axis=0)
    out = q.copy()
    out[1:] *= flips[..., None]
    return out


# -- the left hand as the mirrored right --------------------------------------------------------


def mirror_rotations(r: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations -> (..., 3, 3) the same rotations seen in the mirror
    :data:`MIRROR_X`: ``M @ r @ M`` (a rotation by angle t about axis a becomes one by t about
    :func:`mirror_axes` of a). The mirror of a hand posed by ``r`` is posed by this."""
    return MIRROR_X @ r @ MIRROR_X


def mirror_axes(axes: np.ndarray) -> np.ndarray:
    """(..., 3) axes of rotation (rows) -> their mirror images ``-(axes @ M)``: an axis is a
    pseudo-vector, so a positive turn about the mirrored axis is the mirror of a positive
    turn about the original (a digit that curls towards the palm still does)."""
    return -(np.asarray(axes) @ MIRROR_X)
