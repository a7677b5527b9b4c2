"""The fit's numpy gradients (inference/fit_grad.py) against torch's autograd.

Each term is written here once more in torch, as the fit computed it before it left torch,
and its gradient compared with ours on random inputs of the fit's shapes: float32 both, so
agreement to ~1e-4 of the gradient's own size is what the rounding allows.
"""

import numpy as np
import pytest
import torch

from handmocap.inference import fit_grad
from handmocap.inference.fit_grad import Adam
from handmocap.inference.mano_fit import angle_map
from handmocap.models.iknet import fk as torch_fk
from handmocap.models.iknet import rot6d_to_matrix as torch_rot6d
from handmocap.models.keypoint_rig import KeypointRig
from handmocap.retarget.camera import intrinsics_from_fov
from handmocap.retarget.rotations import axis_angle_to_matrix

T = 7
RNG_SEED = 12


def _close(ours: np.ndarray, theirs: torch.Tensor, rel: float = 2e-4) -> None:
    theirs = theirs.detach().numpy()
    scale = max(float(np.abs(theirs).max()), 1e-12)
    assert ours.shape == theirs.shape
    assert ours.dtype == np.float32
    assert float(np.abs(ours - theirs).max()) <= rel * scale, (
        f"max difference {np.abs(ours - theirs).max():.3g} against a scale of {scale:.3g}"
    )


def _leaf(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32, requires_grad=True)


@pytest.fixture
def rng():
    return np.random.default_rng(RNG_SEED)


def _rig(rng) -> KeypointRig:
    # A hand-sized tree (fingers 2-10 cm long) with shape directions of a few millimetres.
    rest = rng.normal(scale=0.04, size=(21, 3))
    return KeypointRig(rest, rng.normal(scale=0.003, size=(21, 3, 10)))


def _rotations(rng, n: int) -> np.ndarray:
    return axis_angle_to_matrix(rng.normal(scale=0.8, size=(T, n, 3))).astype(np.float32)


def _check_term(value: float, backward, theirs, x: np.ndarray, weight: float) -> None:
    """A scalar loss term: our ``value`` and ``backward(weight)`` against torch's value of
    ``theirs`` at ``x`` and the gradient of ``weight`` times it."""
    leaf = _leaf(x)
    loss = theirs(leaf)
    assert value == pytest.approx(float(loss.detach()), rel=1e-4)
    (g,) = torch.autograd.grad(loss * weight, leaf)
    _close(backward(weight), g)


def test_rot6d_and_its_gradient_match_torch(rng):
    x = rng.normal(size=(T, 16, 6)).astype(np.float32)
    upstream = rng.normal(size=(T, 16, 3, 3)).astype(np.float32)
    r, backward = fit_grad.rot6d_to_matrix(x)
    xt = _leaf(x)
    rt = torch_rot6d(xt)
    _close(r, rt, 1e-5)
    (gt,) = torch.autograd.grad((rt * torch.as_tensor(upstream)).sum(), xt)
    _close(backward(upstream), gt)
    # A rotation's own 6D gives the rotation back.
    np.testing.assert_allclose(fit_grad.rotations_from_6d(r[..., :2].swapaxes(-1, -2).reshape(
        T, 16, 6)), r, atol=1e-6)  # fmt: skip


def test_forward_kinematics_and_its_gradient_match_torch(rng):
    rig = _rig(rng)
    betas = rng.normal(size=10).astype(np.float32)
    rots = _rotations(rng, 16)
    upstream = rng.normal(size=(T, 21, 3)).astype(np.float32)
    rest = rig.shaped(betas).astype(np.float32)
    kp, backward = fit_grad.forward_kinematics(rest, rots)
    rots_t, betas_t = _leaf(rots), _leaf(betas)
    kp_t = torch_fk(rig, rots_t, betas_t.expand(T, 10))
    _close(kp, kp_t, 1e-5)
    d_rot_t, d_betas_t = torch.autograd.grad((kp_t * torch.as_tensor(upstream)).sum(),
                                             (rots_t, betas_t))  # fmt: skip
    d_rot, d_rest = backward(upstream)
    _close(d_rot, d_rot_t)
    _close(np.einsum("kcb,kc->b", rig.shape.astype(np.float32), d_rest), d_betas_t)


def _robust(sq, scale):
    s2 = scale * scale
    return sq * s2 / (sq + s2)


def test_keypoint_term_and_its_gradient_match_torch(rng):
    cam = (rng.normal(scale=0.03, size=(T, 21, 3)) + np.array([0, 0, 0.5])).astype(np.float32)
    target = rng.normal(scale=0.5, size=(T, 21, 3)).astype(np.float32)
    target -= target.mean(axis=1, keepdims=True)
    conf = rng.uniform(size=(T, 21)).astype(np.float32)
    value, backward = fit_grad.keypoint_term(cam, target, conf, 0.01)

    def theirs(c):
        centred = c - c.mean(dim=1, keepdim=True)
        fixed = centred.detach()
        tt = torch.as_tensor(target)
        scale = (tt * fixed).sum((1, 2)) / (tt**2).sum((1, 2)).clamp_min(1e-12)
        residual = _robust(((centred - scale[:, None, None] * tt) ** 2).sum(-1), 0.01)
        w = torch.as_tensor(conf)
        return (w * residual).sum() / (0.01**2 * w.sum().clamp_min(1))

    _check_term(value, backward, theirs, cam, 0.3)


def test_reprojection_term_and_its_gradient_match_torch(rng):
    k = intrinsics_from_fov(640, 480, 60.0).astype(np.float32)
    cam = (rng.normal(scale=0.04, size=(T, 21, 3)) + np.array([0, 0, 0.5])).astype(np.float32)
    cam[0, 3, 2] = -0.01  # behind the camera: its depth floored, no gradient through it
    uv = (rng.uniform(0, 480, size=(T, 21, 2))).astype(np.float32)
    size = rng.uniform(80, 200, size=T).astype(np.float32)
    conf = rng.uniform(size=(T, 21)).astype(np.float32)
    value, backward = fit_grad.reprojection_term(cam, uv, size, k, conf, 0.3)

    def theirs(c):
        proj = c @ torch.as_tensor(k).T
        proj = proj[..., :2] / proj[..., 2:3].clamp_min(1e-3)
        diff = (proj - torch.as_tensor(uv)) / torch.as_tensor(size)[:, None, None]
        w = torch.as_tensor(conf)
        return (w * _robust((diff**2).sum(-1), 0.3)).sum() / (0.3**2 * w.sum().clamp_min(1))

    _check_term(value, backward, theirs, cam, 0.5)


def test_joint_limit_term_and_its_gradient_match_torch(rng):
    frames = axis_angle_to_matrix(rng.normal(size=(15, 3)))
    signs = np.where(rng.uniform(size=15) < 0.5, -1.0, 1.0).astype(np.float32)
    lo = rng.uniform(-40, 0, size=(15, 3)).astype(np.float32)
    hi = (lo + rng.uniform(10, 60, size=(15, 3))).astype(np.float32)
    local = _rotations(rng, 15)
    for mirrored in (False, True):
        amap = angle_map(frames, mirrored)
        value, backward = fit_grad.joint_limit_term(local, amap, signs, lo, hi)

        def theirs(r, amap=amap):
            a = (r.reshape(T, -1) @ torch.as_tensor(amap)).reshape(T, 15, 5)
            beta = torch.asin(a[..., 0].clamp(-1.0, 1.0))
            alpha = torch.atan2(-a[..., 1], a[..., 2])
            gamma = torch.atan2(-a[..., 3], a[..., 4])
            s = torch.as_tensor(signs)
            angles = torch.rad2deg(torch.stack([-alpha, beta * s, -gamma], dim=-1))
            over = torch.relu(angles - torch.as_tensor(hi)) + torch.relu(
                torch.as_tensor(lo) - angles
            )
            return (over / 10.0).pow(2).mean()

        assert value > 0.1  # some joints are past their limits
        _check_term(value, backward, theirs, local, 0.5)


def test_ik_prior_and_shape_terms_and_their_gradients_match_torch(rng):
    rots, rots_ik = _rotations(rng, 16), _rotations(rng, 16)
    value, backward = fit_grad.ik_prior_term(rots, rots_ik)
    _check_term(
        value,
        backward,
        lambda r: ((r - torch.as_tensor(rots_ik)) ** 2).sum((-1, -2)).mean(),
        rots,
        0.005,
    )
    betas = rng.normal(size=10).astype(np.float32)
    value, backward = fit_grad.shape_term(betas)
    assert value == pytest.approx(float((betas.astype(np.float64) ** 2).sum()), rel=1e-6)
    np.testing.assert_allclose(backward(0.02), 0.04 * betas, rtol=1e-6)


def test_our_adam_takes_the_steps_torch_adam_takes_with_a_rate_per_parameter():
    """The fit's Adam follows torch.optim.Adam given one parameter group per tensor on a
    curved loss: 200 steps, parameters equal to 1e-5 of the distance travelled, and the
    slower parameter travels less."""
    rng = np.random.default_rng(4)
    target = rng.normal(size=(2, 30, 3)).astype(np.float32)
    starts = [rng.normal(size=(30, 3)).astype(np.float32) for _ in range(2)]
    ours = [x.copy() for x in starts]
    theirs = [torch.nn.Parameter(torch.as_tensor(x.copy())) for x in starts]
    opt_ours = Adam(ours, [0.05, 0.01])
    opt_theirs = torch.optim.Adam([{"params": [theirs[0]], "lr": 0.05},
                                   {"params": [theirs[1]], "lr": 0.01}])  # fmt: skip
    for _ in range(200):
        # d/dp of sum(sin(p) * t) + 0.1 * sum((p - t)^2)
        opt_ours.step([np.cos(p) * t + 0.2 * (p - t) for p, t in zip(ours, target, strict=True)])
        loss = sum((torch.sin(p) * torch.as_tensor(t)).sum()
                   + (p - torch.as_tensor(t)).pow(2).sum() * 0.1
                   for p, t in zip(theirs, target, strict=True))  # fmt: skip
        opt_theirs.zero_grad()
        loss.backward()
        opt_theirs.step()
    moved = [
        float(np.abs(p.detach().numpy() - s).max()) for p, s in zip(theirs, starts, strict=True)
    ]
    assert moved[0] > 0.5 and moved[1] < moved[0]
    for p, q, m in zip(ours, theirs, moved, strict=True):
        assert float(np.abs(p - q.detach().numpy()).max()) < 1e-5 * max(1.0, m)


def test_adam_refuses_a_rate_count_that_does_not_match():
    with pytest.raises(ValueError, match="2 learning rates for 1 parameters"):
        Adam([np.zeros(3, np.float32)], [0.1, 0.2])
