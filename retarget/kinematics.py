"""Forward kinematics of a joint tree, vectorised over frames (numpy only)."""

from __future__ import annotations

import numpy as np


def forward_kinematics(
    parents: np.ndarray,
    rest_positions: np.ndarray,
    local_rotations: np.ndarray,
    root_rotation: np.ndarray,
    root_position: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Pose a tree whose local rotations are expressed in the rest pose's axes (MANO style).

    ``G_j = G_parent @ L_j`` and ``p_j = p_parent + G_parent @ (rest_j - rest_parent)``;
    the root gets ``G_root = root_rotation @ L_root`` at ``root_position``.

    Args:
        parents: (J,) parent indices, -1 for the root, parents before children.
        rest_positions: (J, 3) joint positions at rest (metres).
        local_rotations: (..., J, 3, 3).
        root_rotation: (..., 3, 3) world-from-hand rotation of the whole hand.
        root_position: (..., 3) world position of the root joint (metres).

    Returns:
        global_rotations (..., J, 3, 3) and positions (..., J, 3), in world space.
    """
    parents = np.asarray(parents)
    lead = local_rotations.shape[:-3]
    n = len(parents)
    g = np.empty((*lead, n, 3, 3))
    p = np.empty((*lead, n, 3))
    for j, par in enumerate(parents):
        if par < 0:
            g[..., j, :, :] = root_rotation @ local_rotations[..., j, :, :]
            p[..., j, :] = root_position
        else:
            offset = rest_positions[j] - rest_positions[par]
            g[..., j, :, :] = g[..., par, :, :] @ local_rotations[..., j, :, :]
            p[..., j, :] = p[..., par, :] + g[..., par, :, :] @ offset
    return g, p
