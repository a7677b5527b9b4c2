"""The MANO refinement's maths with its gradients, in numpy (no torch at capture time).

Each piece is a forward function that returns its value and a ``backward`` closure: given
the gradient of the loss with respect to the value, it returns the gradients with respect
to the inputs (reverse-mode differentiation written out, as an autograd would do it). The
fit (:mod:`.mano_fit`) composes them; ``tests/test_fit_grad.py`` checks every gradient
against torch's autograd on the same formulas. Arrays are float32, as the fit runs.

Why not torch: importing it costs ~1 s of CPU on every capture and the fit's thousands of
small tensor operations pay autograd's bookkeeping on each (docs/architecture.md, "Speed
and threads").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from handmocap.models.keypoint_rig import JOINT_OF_KEYPOINT, LEVELS

DEGREES = np.float32(180.0 / np.pi)
Backward = Callable[[np.ndarray], np.ndarray]


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., 3) x (..., 3) -> (..., 1) dot products. Written out: numpy's sum over a last
    axis of 3 took 6x as long as the three products (95 against 15 microseconds for
    470 x 16 vectors), and the fit takes thousands."""
    return (a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2])[..., None]


def _over_keypoints(x: np.ndarray) -> np.ndarray:
    """(T, K, 3) -> (T, 3) sums over the keypoints (einsum: 5x faster than ``sum(axis=1)``
    here, and as exact)."""
    return np.einsum("tkc->tc", x)


def _normalise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) -> unit vectors and the lengths they were divided by (floored at 1e-8)."""
    length = np.maximum(np.sqrt(_dot(x, x)), np.float32(1e-8))
    return x / length, length


def _normalise_backward(unit: np.ndarray, length: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Gradient through x / |x|: the part of ``grad`` across ``unit``, over the length (a
    floored length is a constant, as torch's clamp has it)."""
    along = _dot(unit, grad)
    floored = length <= np.float32(1e-8)
    return np.where(floored, grad, grad - unit * along) / length


def rot6d_to_matrix(x: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """(..., 6) first two columns -> (..., 3, 3) rotations by Gram-Schmidt (Zhou et al. 2019),
    and the backward (..., 3, 3) -> (..., 6)."""
    a, b = x[..., 0:3], x[..., 3:6]
    c1, len_a = _normalise(a)
    s = _dot(c1, b)
    d = b - s * c1
    c2, len_d = _normalise(d)
    c3 = np.cross(c1, c2)
    r = np.stack([c1, c2, c3], axis=-1)

    def backward(grad: np.ndarray) -> np.ndarray:
        g1, g2, g3 = grad[..., 0], grad[..., 1], grad[..., 2]
        g1 = g1 + np.cross(c2, g3)  # c3 = c1 x c2
        g2 = g2 + np.cross(g3, c1)
        gd = _normalise_backward(c2, len_d, g2)
        c1_gd = _dot(c1, gd)
        gb = gd - c1_gd * c1  # d = b - (c1 . b) c1
        g1 = g1 - s * gd - c1_gd * b
        ga = _normalise_backward(c1, len_a, g1)
        return np.concatenate([ga, gb], axis=-1)

    return r, backward


def rotations_from_6d(x: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3), without the backward."""
    return rot6d_to_matrix(x)[0]


def forward_kinematics(
    rest: np.ndarray, rotations: np.ndarray
) -> tuple[np.ndarray, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """Keypoints (T, 21, 3) with the wrist at its rest position, from the shaped rest
    keypoints ``rest`` (21, 3) and ``rotations`` (T, 16, 3, 3) ([0] global orientation,
    [1:] MANO local rotations); one tree level at a time (four steps for all five digits).
    The backward takes (T, 21, 3) to (T, 16, 3, 3) and (21, 3)."""
    t = rotations.shape[0]
    g = np.broadcast_to(rotations[:, :1], (t, 5, 3, 3))
    p = np.broadcast_to(rest[0], (t, 5, 3))
    parent = np.zeros(5, dtype=np.int64)
    out = np.empty((t, 21, 3), rotations.dtype)
    out[:, 0] = rest[0]
    chain, bones = [], []
    for level, idx in enumerate(LEVELS):
        bone = rest[idx] - rest[parent]  # (5, 3)
        p = p + (g @ bone[:, :, None])[..., 0]
        out[:, idx] = p
        chain.append(g)
        bones.append(bone)
        if level < 3:
            g = g @ rotations[:, JOINT_OF_KEYPOINT[idx]]
        parent = idx

    def backward(grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d_rot = np.zeros_like(rotations)
        d_rest = np.zeros_like(rest)
        d_p = np.zeros((t, 5, 3), grad.dtype)
        d_next = None
        for level in range(3, -1, -1):
            idx = LEVELS[level]
            parent = LEVELS[level - 1] if level else np.zeros(5, dtype=np.int64)
            g, bone = chain[level], bones[level]
            d_p = d_p + grad[:, idx]  # this level's keypoints and every one below them
            d_g = d_p[..., :, None] * bone[:, None, :]
            d_bone = (g.swapaxes(-1, -2) @ d_p[..., None]).sum(axis=0)[..., 0]
            d_rest[idx] += d_bone
            if level:
                d_rest[parent] -= d_bone
            else:  # every thumb and finger starts at the wrist
                d_rest[0] -= d_bone.sum(axis=0)
            if d_next is not None:  # the next level's chain is g @ this level's rotations
                joints = JOINT_OF_KEYPOINT[idx]
                # numpy multiplies stacks of 3x3 matrices far faster when they are laid
                # out in memory as multiplied: transposes are copied first.
                d_g = d_g + d_next @ _transposed(rotations[:, joints])
                d_rot[:, joints] += _transposed(g) @ d_next
            d_next = d_g
        d_rot[:, 0] += np.einsum("tkij->tij", d_next)
        d_rest[0] += grad[:, 0].sum(axis=0) + d_p.sum(axis=(0, 1))
        return d_rot, d_rest

    return out, backward


def _transposed(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> each matrix transposed, contiguous."""
    return np.ascontiguousarray(m.swapaxes(-1, -2))


def _robust(sq: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Geman-McClure on squared residuals (~sq for small ones, bounded for outliers) and
    its derivative."""
    s2 = np.float32(scale * scale)
    return sq * s2 / (sq + s2), s2 * s2 / (sq + s2) ** 2


def keypoint_term(
    cam: np.ndarray, target: np.ndarray, conf: np.ndarray, robust_m: float
) -> tuple[float, Backward]:
    """3D agreement of the model's camera-space keypoints ``cam`` (T, 21, 3) m with the
    centred lifted keypoints ``target`` (T, 21, 3), the target scaled onto the model per
    frame (scale only, treated as a constant): a confidence-weighted (``conf`` (T, 21))
    mean of Geman-McClure residuals at ``robust_m`` metres, in units of ``robust_m``².
    The backward gives d/d``cam``."""
    centred = cam - _over_keypoints(cam)[:, None] / cam.shape[1]
    scale = (target * centred).sum((1, 2)) / np.maximum((target**2).sum((1, 2)), 1e-12)
    diff = centred - scale[:, None, None] * target
    residual, slope = _robust(_dot(diff, diff)[..., 0], robust_m)
    denom = np.float32(robust_m**2 * max(float(conf.sum()), 1.0))
    value = float((conf * residual).sum() / denom)

    def backward(grad: float) -> np.ndarray:
        d_centred = (grad * 2 / denom) * (conf * slope)[..., None] * diff
        return d_centred - _over_keypoints(d_centred)[:, None] / d_centred.shape[1]

    return value, backward


def reprojection_term(
    cam: np.ndarray, uv: np.ndarray, size_px: np.ndarray, k: np.ndarray, conf: np.ndarray,
    robust: float,
) -> tuple[float, Backward]:  # fmt: skip
    """2D agreement of ``cam`` (T, 21, 3) m projected through K ``k`` (3, 3) with the
    detected keypoints ``uv`` (T, 21, 2) px, in units of each frame's hand size ``size_px``
    (T,) px: a confidence-weighted mean of Geman-McClure residuals at ``robust`` hand
    sizes, in units of ``robust``². Depths under 1 mm count as 1 mm. The backward gives
    d/d``cam``."""
    proj = cam @ k.T
    depth = proj[..., 2:3]
    near = depth >= np.float32(1e-3)
    depth = np.maximum(depth, np.float32(1e-3))
    pixel = proj[..., :2] / depth
    size = size_px[:, None, None]
    diff = (pixel - uv) / size
    residual, slope = _robust(diff[..., 0] ** 2 + diff[..., 1] ** 2, robust)
    denom = np.float32(robust**2 * max(float(conf.sum()), 1.0))
    value = float((conf * residual).sum() / denom)

    def backward(grad: float) -> np.ndarray:
        d_pixel = (grad * 2 / denom) * (conf * slope)[..., None] * diff / size
        d_proj = np.empty_like(proj)
        d_proj[..., :2] = d_pixel / depth
        along = d_pixel[..., 0] * pixel[..., 0] + d_pixel[..., 1] * pixel[..., 1]
        d_proj[..., 2:3] = -along[..., None] / depth * near
        return d_proj @ k

    return value, backward


def anatomical_angles(
    local: np.ndarray, amap: np.ndarray, signs: np.ndarray
) -> tuple[np.ndarray, Backward]:
    """The finger joints' local rotations ``local`` (T, J, 3, 3) -> flex, spread and twist
    (T, J, 3) degrees through the joint frames folded into ``amap`` (J * 9, J * 5)
    (:func:`.mano_fit.angle_map`) and spread ``signs`` (J,): the inverse of
    ``retarget.joint_limits.angles_to_local_rotations`` (R = Rx(-flex) Ry(s spread)
    Rz(-twist)). The backward gives d/d``local``."""
    t, j = local.shape[:2]
    # The five entries as contiguous (T, J) arrays: numpy's arctan2 on strided float32 input
    # gave results 1 ulp apart depending on where the array lay in memory, and the fit
    # amplifies such bits (a capture must give the same take twice).
    a = np.moveaxis((local.reshape(t, -1) @ amap).reshape(t, j, 5), -1, 0).copy()
    a0 = np.clip(a[0], -1.0, 1.0)
    ry = a[1] ** 2 + a[2] ** 2
    rz = a[3] ** 2 + a[4] ** 2
    angles = DEGREES * np.stack(
        [-np.arctan2(-a[1], a[2]), np.arcsin(a0) * signs, -np.arctan2(-a[3], a[4])], axis=-1
    )

    def backward(grad: np.ndarray) -> np.ndarray:
        d_flex = -DEGREES * grad[..., 0]
        d_spread = DEGREES * grad[..., 1] * signs
        d_twist = -DEGREES * grad[..., 2]
        inside = np.abs(a[0]) <= 1.0
        d_a = np.stack([
            np.where(inside, d_spread / np.sqrt(np.maximum(1 - a0 * a0, 1e-12)), 0),
            -d_flex * a[2] / ry,  # flex = atan2(-a1, a2)
            d_flex * a[1] / ry,
            -d_twist * a[4] / rz,
            d_twist * a[3] / rz,
        ], axis=-1)  # fmt: skip
        return (d_a.reshape(t, -1) @ amap.T).reshape(t, j, 3, 3)

    return angles, backward


def joint_limit_term(local: np.ndarray, amap: np.ndarray, signs: np.ndarray,
                     lo: np.ndarray, hi: np.ndarray) -> tuple[float, Backward]:  # fmt: skip
    """Anatomical joint limits: the finger joints' local rotations ``local`` (T, 15, 3, 3)
    as flex, spread and twist (:func:`anatomical_angles`) beyond the limits ``lo``/``hi``
    (15, 3) degrees: mean squared excess in units of 10 degrees. The backward gives
    d/d``local``."""
    angles, angles_backward = anatomical_angles(local, amap, signs)
    above, below = angles > hi, angles < lo
    over = np.where(above, angles - hi, 0) + np.where(below, lo - angles, 0)
    value = float(((over / 10.0) ** 2).mean())

    def backward(grad: float) -> np.ndarray:
        d_angles = (grad * 2 / (100.0 * over.size)) * over * (above.astype(np.float32) - below)
        return angles_backward(d_angles.astype(np.float32))

    return value, backward


def ik_prior_term(rots: np.ndarray, rots_ik: np.ndarray) -> tuple[float, Backward]:
    """Pull towards the IK network's answer: squared Frobenius distance of the rotations
    ``rots`` (T, 16, 3, 3) from ``rots_ik`` (T, 16, 3, 3), mean over frames and joints.
    The backward gives d/d``rots``."""
    diff = rots - rots_ik
    count = rots.shape[0] * rots.shape[1]
    value = float((diff**2).sum() / count)
    return value, lambda grad: (grad * 2 / count) * diff


def shape_term(betas: np.ndarray) -> tuple[float, Backward]:
    """Shape prior: squared norm of the track's ``betas`` (10,) (standard deviations).
    The backward gives d/d``betas``."""
    return float((betas**2).sum()), lambda grad: (grad * 2) * betas


class Adam:
    """Adam (Kingma and Ba, 2015) with torch.optim.Adam's defaults: betas (0.9, 0.999),
    eps 1e-8, no weight decay, on numpy arrays updated in place; one rate per parameter."""

    def __init__(self, params: list[np.ndarray], lrs: list[float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):  # fmt: skip
        if len(lrs) != len(params):
            raise ValueError(f"{len(lrs)} learning rates for {len(params)} parameters")
        self.params, self.lrs = params, [float(lr) for lr in lrs]
        self.betas, self.eps = betas, eps
        self.steps = 0
        self._m = [np.zeros_like(p) for p in params]
        self._v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray]) -> None:
        """One update of every parameter from its gradient (same shapes, in order)."""
        b1, b2 = self.betas
        self.steps += 1
        correction1 = 1.0 - b1**self.steps
        root_correction2 = np.sqrt(1.0 - b2**self.steps)
        for p, g, m, v, lr in zip(self.params, grads, self._m, self._v, self.lrs, strict=True):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            denom = np.sqrt(v) / root_correction2 + self.eps
            p -= (lr / correction1) * m / denom
