"""Clip specs and hand placement (no rendering)."""

import numpy as np
import pytest

from bench.synth.clip_spec import PRESETS, facing_rotation, plan_hands
from bench.synth.ground_truth import Visibility, intrinsics_from_fov, project
from bench.synth.occluder import EDGE_FRAMES, fully_hidden_run, plan_occluder
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
    for frames in (-1, 48, 100):
        with pytest.raises(HandmocapError, match=r"occluder_frames must be 0\.\.num_frames-1"):
            PRESETS["demo"].with_overrides(occluder_frames=frames)
    assert PRESETS["demo"].with_overrides(occluder_frames=47).occluder_frames == 47
    with pytest.raises(HandmocapError, match="unknown finger_motion 'slow'"):
        PRESETS["demo"].with_overrides(finger_motion="slow")


def _fingerprint(a: np.ndarray) -> float:
    """A number that any change of any element of ``a`` changes."""
    a = np.asarray(a, dtype=np.float64).ravel()
    return float(a @ np.cos(np.arange(a.size)))


# (keypoints_cam, mano_pose) fingerprints per hand, computed with the renderer as it was
# before the occluder and fast-finger fields existed: the new fields' defaults must leave
# every older preset's motion (hence its random draws) exactly as it was.
_PLANNED_BEFORE = {
    "demo": [(-4.408508409, -0.4292838824)],
    "left": [(-3.0806400162, -1.1734496689)],
    "two_apart": [(-1.0561329159, -0.7253571022), (1.9884106965, -0.9242455559)],
    "two_crossing": [(-0.1891051972, -1.4475751147), (-2.3229359991, -0.1851236536)],
    "smoke": [(-0.7044626214, 0.1772981352), (-0.6007622397, -2.6062220984)],
}


def test_older_presets_plan_exactly_the_motion_they_had(hands):
    for name, expected in _PLANNED_BEFORE.items():
        spec = PRESETS[name]
        assert spec.occluder_frames == 0 and spec.finger_motion == "natural"
        _, motions = plan_motion(spec, {s: hands[s] for s in spec.handedness})
        got = [(_fingerprint(m.keypoints_cam), _fingerprint(m.mano_pose())) for m in motions]
        # Stored to 1e-10; another libm moves them by ~1e-13, another draw by far more.
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8, err_msg=name)


def test_new_presets_are_what_the_motion_prior_is_measured_on():
    seeds = [spec.seed for spec in PRESETS.values()]
    assert len(set(seeds)) == len(seeds)
    occluded, fast = PRESETS["occluded"], PRESETS["fast"]
    for spec in (occluded, fast):
        assert (spec.layout, spec.width, spec.height, spec.fps, spec.num_frames) == (
            "right", 512, 512, 24.0, 72,
        )  # fmt: skip
    assert 12 <= occluded.occluder_frames <= 18 and occluded.finger_motion == "natural"
    assert fast.finger_motion == "fast" and fast.occluder_frames == 0


def _planned(spec, hands):
    k, motions = plan_motion(spec, {s: hands[s] for s in spec.handedness})
    keypoints = np.stack([m.keypoints_cam for m in motions], axis=1)
    return k, keypoints, plan_occluder(spec, keypoints, k)


@pytest.mark.parametrize(
    ("preset", "frames"), [("occluded", 15), ("demo", 10), ("two_crossing", 12), ("demo", 1)]
)
def test_occluder_hides_every_keypoint_for_the_asked_frames_mid_clip(hands, preset, frames):
    spec = PRESETS[preset].with_overrides(occluder_frames=frames)
    k, keypoints, plan = _planned(spec, hands)
    covered = plan.covers(keypoints)  # (T, H, 21)
    hidden = np.flatnonzero(covered.all(axis=(1, 2)))
    np.testing.assert_array_equal(hidden, np.arange(plan.first_hidden, plan.last_hidden + 1))
    assert len(hidden) == frames
    assert abs((plan.first_hidden + plan.last_hidden) / 2 - (spec.num_frames - 1) / 2) <= 0.5
    # It comes in and goes out over a few frames, partly covering the hands on the way.
    touched = np.flatnonzero(covered.any(axis=(1, 2)))
    assert plan.first_hidden - touched[0] <= EDGE_FRAMES
    assert touched[-1] - plan.last_hidden <= EDGE_FRAMES
    assert 0 < covered[plan.first_hidden - 1].mean() < 1
    assert not covered[: plan.first_hidden - EDGE_FRAMES - 1].any()
    # Between the camera and every hand, and taller than the image.
    assert plan.centres[0, 2] + plan.size[2] / 2 < keypoints[..., 2].min()
    top = project(plan.centres[:1] - plan.size / 2 * [0, 1, 1], k)[0, 1]
    bottom = project(plan.centres[:1] + plan.size / 2 * [0, 1, -1], k)[0, 1]
    assert top < 0 and bottom > spec.height


def test_occluder_leaves_the_hands_and_their_look_alone(hands):
    spec = PRESETS["demo"]
    _, plain, none = _planned(spec, hands)
    _, occluded, _ = _planned(spec.with_overrides(occluder_frames=12), hands)
    assert none is None
    np.testing.assert_array_equal(plain, occluded)


def test_fully_hidden_run_is_the_longest_run_without_a_visible_keypoint():
    vis = np.full((10, 2, 21), int(Visibility.VISIBLE), np.int8)
    assert fully_hidden_run(vis) == (None, None)
    vis[1, :, :] = Visibility.SELF_OCCLUDED
    vis[4:8, 0, :] = Visibility.OCCLUDED_BY_OBJECT
    vis[4:8, 1, :] = Visibility.OUTSIDE_IMAGE
    vis[9, :, :] = Visibility.OCCLUDED_BY_OBJECT
    assert fully_hidden_run(vis) == (4, 7)
    vis[6, 1, 3] = Visibility.VISIBLE  # one keypoint of one hand shows
    assert fully_hidden_run(vis) == (4, 5)
