"""Anatomical angles -> rotations -> forward kinematics, checked in degrees and millimetres."""

import numpy as np
import pytest

from handmocap.retarget.hand_skeleton import WEBXR_25
from handmocap.retarget.joint_limits import (
    angles_to_local_rotations,
    clip_to_limits,
    limit_for,
    limits_array,
    spread_signs,
)
from handmocap.retarget.kinematics import forward_kinematics

IDX_MCP = WEBXR_25.index("index-finger-phalanx-proximal")
IDX_PIP = WEBXR_25.index("index-finger-phalanx-intermediate")


def _pose(hand, angles):
    local = angles_to_local_rotations(
        angles, hand.rest_frames, spread_signs(hand.rest_frames, hand.rest_positions)
    )
    g, p = forward_kinematics(
        hand.parents, hand.rest_positions, local, np.eye(3), hand.rest_positions[0]
    )
    return g, p


def _bone(p, j, child):
    d = p[child] - p[j]
    return d / np.linalg.norm(d)


def test_zero_angles_give_the_rest_pose(hands):
    for hand in hands.values():
        g, p = _pose(hand, np.zeros((25, 3)))
        np.testing.assert_allclose(p, hand.rest_positions, atol=1e-12)
        np.testing.assert_allclose(g, np.broadcast_to(np.eye(3), (25, 3, 3)), atol=1e-12)


@pytest.mark.parametrize("side", ["left", "right"])
def test_flexion_curls_towards_the_palm_by_the_asked_angle(hands, side):
    hand = hands[side]
    angles = np.zeros((25, 3))
    angles[IDX_MCP, 0] = 60.0
    _, p = _pose(hand, angles)
    before, after = _bone(hand.rest_positions, IDX_MCP, IDX_PIP), _bone(p, IDX_MCP, IDX_PIP)
    assert np.degrees(np.arccos(before @ after)) == pytest.approx(60.0, abs=0.01)
    # The finger moves to the palm side.
    assert (after - before) @ hand.palm_normal() > 0.5


@pytest.mark.parametrize("side", ["left", "right"])
def test_positive_spread_moves_towards_the_thumb(hands, side):
    hand = hands[side]
    angles = np.zeros((25, 3))
    angles[IDX_MCP, 1] = 15.0
    _, p = _pose(hand, angles)
    radial = (
        hand.rest_positions[IDX_MCP]
        - hand.rest_positions[WEBXR_25.index("pinky-finger-phalanx-proximal")]
    )
    before, after = _bone(hand.rest_positions, IDX_MCP, IDX_PIP), _bone(p, IDX_MCP, IDX_PIP)
    assert np.degrees(np.arccos(before @ after)) == pytest.approx(15.0, abs=0.01)
    assert (after - before) @ radial > 0


def test_bone_lengths_survive_any_pose(hands):
    hand = hands["right"]
    rng = np.random.default_rng(5)
    lim = limits_array()
    angles = lim[..., 0] + rng.uniform(size=(50, 25, 3)) * (lim[..., 1] - lim[..., 0])
    _, p = _pose(hand, angles)
    for j, parent in enumerate(hand.parents):
        if parent < 0:
            continue
        rest = np.linalg.norm(hand.rest_positions[j] - hand.rest_positions[parent])
        posed = np.linalg.norm(p[:, j] - p[:, parent], axis=-1)
        assert np.abs(posed - rest).max() * 1000 < 1e-9


def test_limits_table():
    assert limit_for("wrist").as_array().tolist() == [[0, 0], [0, 0], [0, 0]]
    assert limit_for("index-finger-metacarpal").flex == (0.0, 0.0)  # rigid, as in MANO
    assert limit_for("index-finger-phalanx-intermediate").flex == (0.0, 105.0)
    clipped = clip_to_limits(np.full((25, 3), 500.0))
    assert clipped[IDX_PIP, 0] == 105.0 and clipped[IDX_MCP, 0] == 90.0
