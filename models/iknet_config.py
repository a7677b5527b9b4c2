"""The IK network's training settings, apart from the network so that checking for a built
network (``iknet_build.built_iknet``, whose cache key hashes them) does not load torch: a
capture checks its assets before tracking and loads torch beside it (docs/architecture.md,
"Speed and threads")."""

from __future__ import annotations

from dataclasses import dataclass

N_FEATURES = 21 * 3 + 20 * 3  # the network's input: 21 keypoints, 20 bone directions


@dataclass(frozen=True)
class TrainingConfig:
    steps: int = 2500
    batch: int = 512
    lr: float = 2e-3
    seed: int = 0
    noise: float = 0.03  # per-joint Gaussian, in units of the wrist -> knuckle distance
    depth_noise: float = 0.06
    swap_prob: float = 0.02
    drop_prob: float = 0.02
