"""IK network (minimal-hand's IKNet idea): 21 keypoints -> MANO joint rotations and shape.

An MLP maps root-relative, scale-normalised keypoints (plus unit bone directions) of a
**right** hand to 16 rotations in the 6D representation (global orientation + 15 finger
joints) and 10 shape coefficients. Left hands are mirrored in and out by the caller.

It is trained by ``build.py models`` on poses sampled inside the anatomical joint limits,
uniformly random hand orientations and random shapes, posed through the hand model's own
kinematics, with noise that mimics real landmark errors: per-joint Gaussian noise, extra
depth noise, and occasionally swapped or dropped joints. Deterministic (seeded) and a few
minutes on a 2-core CPU; the weights are cached, never committed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from handmocap.retarget.hand_skeleton import WEBXR_FOR_MANO
from handmocap.retarget.joint_limits import angles_to_local_rotations, limits_array, spread_signs

from .iknet_config import N_FEATURES, TrainingConfig
from .keypoint_rig import JOINT_OF_KEYPOINT, LEVEL_ORDER, LEVELS, PARENTS, KeypointRig, features
from .webxr_hand import WebXRHand

N_OUTPUTS = 16 * 6 + 10


def fk(rig: KeypointRig, rotations: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """Keypoints (B, 21, 3) with the wrist at its rest position.

    rotations (B, 16, 3, 3): [0] global orientation, [1:] MANO local rotations; betas (B, 10).
    Runs one tree level at a time (four steps for all five digits), not one joint at a time.
    """
    rest = torch.as_tensor(rig.rest, dtype=rotations.dtype) + torch.einsum(
        "kcb,nb->nkc", torch.as_tensor(rig.shape, dtype=rotations.dtype), betas
    )
    g = rotations[:, :1].expand(-1, 5, -1, -1)
    p = rest[:, :1].expand(-1, 5, -1)
    parent = np.zeros(5, dtype=np.int64)
    out = [rest[:, :1]]
    for level, idx in enumerate(LEVELS):
        p = p + torch.einsum("nkij,nkj->nki", g, rest[:, idx] - rest[:, parent])
        out.append(p)
        if level < 3:
            g = g @ rotations[:, JOINT_OF_KEYPOINT[idx]]
        parent = idx
    return torch.cat(out, dim=1)[:, LEVEL_ORDER]


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) first two columns -> (..., 3, 3) rotation by Gram-Schmidt (Zhou et al. 2019)."""
    a, b = x[..., 0:3], x[..., 3:6]
    c1 = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b = b - (c1 * b).sum(-1, keepdim=True) * c1
    c2 = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.stack([c1, c2, torch.cross(c1, c2, dim=-1)], dim=-1)


class IKNet(nn.Module):
    """(B, 123) features -> (B, 106): 16 x 6D rotations, then 10 betas."""

    def __init__(self, width: int = 384):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(N_FEATURES, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, N_OUTPUTS),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PoseSampler:
    """Random right-hand poses inside the limits, orientations and shapes; seeded."""

    def __init__(self, hand: WebXRHand, seed: int):
        self.rng = np.random.default_rng(seed)
        self.frames = hand.rest_frames
        self.signs = spread_signs(hand.rest_frames, hand.rest_positions)
        self.limits = limits_array()

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """rotations (n, 16, 3, 3) and betas (n, 10)."""
        from scipy.spatial.transform import Rotation

        lim = self.limits
        u = self.rng.uniform(size=(n, 25, 3))
        # Mix the full range with poses biased to the middle (natural hands are rarely at
        # every limit at once).
        u = np.where(self.rng.uniform(size=(n, 1, 1)) < 0.5, u, 0.5 + (u - 0.5) * 0.5)
        angles = lim[..., 0] + u * (lim[..., 1] - lim[..., 0])
        local = angles_to_local_rotations(angles, self.frames, self.signs)
        rots = np.empty((n, 16, 3, 3))
        rots[:, 0] = Rotation.random(n, random_state=self.rng).as_matrix()
        rots[:, 1:] = local[:, WEBXR_FOR_MANO[1:]]
        betas = np.clip(self.rng.normal(size=(n, 10)), -2.5, 2.5)
        return rots, betas


def corrupt(keypoints: np.ndarray, rng: np.random.Generator, cfg: TrainingConfig) -> np.ndarray:
    """Landmark-like errors on (n, 21, 3) keypoints (camera axes, z = depth)."""
    k = keypoints.copy()
    scale = np.linalg.norm(k[:, 9] - k[:, 0], axis=-1)[:, None, None]
    k += rng.normal(size=k.shape) * cfg.noise * scale
    k[..., 2] += rng.normal(size=k.shape[:2]) * cfg.depth_noise * scale[..., 0]
    n = len(k)
    swap = rng.uniform(size=n) < cfg.swap_prob  # two neighbouring fingertips confused
    a = rng.integers(0, 4, size=n)
    tips = np.array([4, 8, 12, 16, 20])
    ia, ib = tips[a], tips[a + 1]
    rows = np.flatnonzero(swap)
    k[rows, ia[rows]], k[rows, ib[rows]] = k[rows, ib[rows]].copy(), k[rows, ia[rows]].copy()
    drop = rng.uniform(size=(n, 21)) < cfg.drop_prob  # a joint collapsed onto its parent
    drop[:, 0] = False
    parent_pos = k[:, PARENTS.clip(0)]
    k[drop] = parent_pos[drop]
    return k


def train(rig: KeypointRig, hand: WebXRHand, cfg: TrainingConfig, log=print) -> IKNet:
    """Train deterministically; returns the network in eval mode."""
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(cfg.seed + 1)
    sampler = PoseSampler(hand, cfg.seed)
    net = IKNet()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps)
    for step in range(cfg.steps):
        rots, betas = sampler.sample(cfg.batch)
        rots_t = torch.as_tensor(rots, dtype=torch.float32)
        betas_t = torch.as_tensor(betas, dtype=torch.float32)
        with torch.no_grad():
            kp = fk(rig, rots_t, betas_t).numpy()
        x = torch.as_tensor(features(corrupt(kp, rng, cfg)))
        out = net(x)
        pred_rot = rot6d_to_matrix(out[:, :96].reshape(-1, 16, 6))
        pred_betas = 2.5 * torch.tanh(out[:, 96:])
        scale = torch.as_tensor(np.linalg.norm(kp[:, 9] - kp[:, 0], axis=-1), dtype=torch.float32)
        pred_kp = fk(rig, pred_rot, pred_betas)
        true_rel = (torch.as_tensor(kp) - torch.as_tensor(kp[:, :1])) / scale[:, None, None]
        pred_rel = (pred_kp - pred_kp[:, :1]) / scale[:, None, None]
        loss_rot = ((pred_rot - rots_t) ** 2).sum((-1, -2)).mean()
        loss_kp = (pred_rel - true_rel).norm(dim=-1).mean()
        loss_beta = ((pred_betas - betas_t) ** 2).mean()
        loss = loss_rot + 2.0 * loss_kp + 0.05 * loss_beta
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == cfg.steps - 1:
            log(f"[iknet] step {step:5d}  loss {loss.item():.4f}  rot {loss_rot.item():.4f}  "
                f"kp {loss_kp.item():.4f}  betas {loss_beta.item():.3f}")  # fmt: skip
    torch.use_deterministic_algorithms(False)
    return net.eval()
