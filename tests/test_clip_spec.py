"""Clip specs and hand placement (no rendering)."""

import numpy as np
import pytest

from bench.synth.clip_spec import PRESETS, facing_rotation, plan_hands
from bench.synth.ground_truth import intrinsics_from_fov, project
from bench.synth.render_clip import plan_motion
from handmocap.errors import HandmocapError
from handmocap.retarget.hand_skeleton import WEBXR_25


def test_palm_to_camera_fingers_up_thumb_to_the_right_for_a_right_hand(hands):
    hand = hands["right"]
    r = facing_rotation(hand, palm_to_camera=True, yaw_deg=0.0, roll_deg=0.0)
    np.testing.assert_allclose(r @ hand.palm_normal(), [0, 0, -1], atol=0.05)
    fingers = r @ hand.finger_direction()
    assert fingers[1] < -0.99  # up in the image (OpenCV y points down)
    thumb = hand.rest_positions[WEBXR_25.index("thumb-phalanx-distal")] - hand.rest_positions[0]
    # Seen from the front, a right hand held up palm-forward has its thumb on the image's right.
    assert (r @ thumb)[0] > 0.02


def test_presets_put_every_hand_in_view(hands):
    for name, spec in PRESETS.items():
        k = intrinsics_from_fov(spec.width, spec.height, spec.fov_deg)
        _, motions = plan_motion(spec, {s: hands[s] for s in spec.handedness})
        for m in motions:
            px = project(m.keypoints_cam, k)
            inside = (
                (px[..., 0] >= 0)
                & (px[..., 0] < spec.width)
                & (px[..., 1] >= 0)
                & (px[..., 1] < spec.height)
            )
            assert inside.mean() > 0.97, name
            height_px = np.ptp(px[..., 1], axis=-1).mean()
            assert 0.2 * spec.height < height_px < 0.8 * spec.height, (name, height_px)


def test_crossing_layout_overlaps_for_a_good_part_of_the_clip(hands):
    spec = PRESETS["two_crossing"]
    rng = np.random.default_rng(spec.seed)
    left, right = plan_hands(spec, hands, rng)
    assert left.side == "left" and right.side == "right"
    assert right.start[2] < left.start[2]  # the right hand passes in front
    assert right.start[0] < left.start[0] and right.end[0] > left.end[0]


def test_bad_specs_are_clear_errors():
    with pytest.raises(HandmocapError, match="unknown layout"):
        PRESETS["demo"].with_overrides(layout="three_hands")
    with pytest.raises(HandmocapError, match="resolution"):
        PRESETS["demo"].with_overrides(width=10)
    with pytest.raises(HandmocapError, match="num_frames"):
        PRESETS["demo"].with_overrides(num_frames=0)
