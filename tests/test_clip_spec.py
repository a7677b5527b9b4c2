"""Clip specs and hand placement (no rendering)."""

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.spatial import cKDTree

from bench.synth.clip_spec import INTERACTION_LAYOUTS, PRESETS, facing_rotation, plan_hands
from bench.synth.ground_truth import Visibility, intrinsics_from_fov, project
from bench.synth.hand_surface import posed_surface, surface_samples
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
        _, _, motions, _ = _plan(name, hands)
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
    with pytest.raises(HandmocapError, match="plans its own finger motion"):
        PRESETS["two_stacked"].with_overrides(finger_motion="fast")


def _fingerprint(a: np.ndarray) -> float:
    """A number that any change of any element of ``a`` changes."""
    a = np.asarray(a, dtype=np.float64).ravel()
    return float(a @ np.cos(np.arange(a.size)))


# (keypoints_cam, mano_pose) fingerprints per hand, computed with the renderer as it was
# before the occluder and fast-finger fields existed (occluded and fast: before the
# interaction layouts): the new fields' defaults and layouts must leave every older
# preset's motion (hence its random draws) exactly as it was.
_PLANNED_BEFORE = {
    "demo": [(-4.408508409, -0.4292838824)],
    "left": [(-3.0806400162, -1.1734496689)],
    "two_apart": [(-1.0561329159, -0.7253571022), (1.9884106965, -0.9242455559)],
    "two_crossing": [(-0.1891051972, -1.4475751147), (-2.3229359991, -0.1851236536)],
    "smoke": [(-0.7044626214, 0.1772981352), (-0.6007622397, -2.6062220984)],
    "occluded": [(-0.4992045553, 0.693424787)],
    "fast": [(0.0948691197, -0.2730045181)],
}


def test_older_presets_plan_exactly_the_motion_they_had(hands):
    for name, expected in _PLANNED_BEFORE.items():
        spec = PRESETS[name]
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


# The interaction layouts (interaction.py): their hands meet but never pass through each
# other. Measured on surface samples of the rendered cage (hand_surface.py), which is what
# Blender deforms (tests/test_render.py checks that).
TIP_KEYPOINTS = (4, 8, 12, 16, 20)  # MediaPipe thumb, index, middle, ring, pinky tips
_PLANS: dict[str, tuple] = {}
_MEETINGS: dict[tuple[int, int], "_Meeting"] = {}


def _plan(name, hands):
    """(spec, K, motions, surface samples) of a preset, planned once per test session."""
    if name not in _PLANS:
        spec = PRESETS[name]
        k, motions = plan_motion(spec, {s: hands[s] for s in spec.handedness})
        _PLANS[name] = (spec, k, motions, [surface_samples(m.hand) for m in motions])
    return _PLANS[name]


@dataclass(frozen=True)
class _Meeting:
    """How two hands meet on one frame (metres, pixels)."""

    distance: float  # closest surface samples of the two hands
    depth: float  # deepest surface sample of one hand inside the other's surface, or 0
    closest: tuple[np.ndarray, np.ndarray]  # that closest pair, (3,) each
    keypoints: float  # closest keypoints of the two hands
    screen: float  # closest projected surface samples (about 0 where they overlap)
    surfaces: tuple[np.ndarray, np.ndarray]  # (N, 3) samples per hand


def _tree(points: np.ndarray) -> cKDTree:
    return cKDTree(points, balanced_tree=False, compact_nodes=False)  # quicker to build


def _near(a: np.ndarray, b: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The points of ``a`` (N, D) and ``b`` (M, D) inside the other's bounding box grown by
    ``margin``: only they can come that close (the rest only costs time)."""
    a_in = np.all((a >= b.min(0) - margin) & (a <= b.max(0) + margin), axis=1)
    b_in = np.all((b >= a.min(0) - margin) & (b <= a.max(0) + margin), axis=1)
    return a_in, b_in


def _meeting(plan, t) -> _Meeting:
    if (id(plan), t) in _MEETINGS:
        return _MEETINGS[id(plan), t]
    _, k, motions, samples = plan
    posed = [
        posed_surface(m.hand, s, m.g_hand[t], m.p_hand[t], m.root_rotation[t],
                      m.root_position[t], with_normals=True)
        for m, s in zip(motions, samples, strict=True)
    ]  # fmt: skip
    distance, depth, closest = np.inf, 0.0, (None, None)
    for i, j in ((0, 1), (1, 0)):
        a_in, b_in = _near(posed[i].points, posed[j].points, 0.01)
        if not a_in.any() or not b_in.any():
            continue
        a, normals, b = posed[i].points[a_in], posed[i].normals[a_in], posed[j].points[b_in]
        d, idx = _tree(a).query(b, distance_upper_bound=0.02)  # inf beyond 2 cm
        found = np.isfinite(d)
        if not found.any():
            continue
        d, idx, b = d[found], idx[found], b[found]
        # Signed by the nearest sample's outward normal: negative inside hand i.
        inside = np.einsum("ij,ij->i", b - a[idx], normals[idx])
        depth = max(depth, float(-inside[d < 0.01].min()) if np.any(d < 0.01) else 0.0)
        if d.min() < distance:
            distance = float(d.min())
            closest = (a[idx[d.argmin()]], b[d.argmin()])
    kp = [m.keypoints_cam[t] for m in motions]
    uv = [project(p.points, k) for p in posed]
    screen = np.inf
    a_in, b_in = _near(uv[0], uv[1], 20.0)
    if a_in.any() and b_in.any():
        screen = float(_tree(uv[0][a_in]).query(uv[1][b_in], distance_upper_bound=20.0)[0].min())
    meet = _Meeting(
        distance=distance,
        depth=max(depth, 0.0),
        closest=closest,
        keypoints=float(np.linalg.norm(kp[0][:, None] - kp[1][None], axis=-1).min()),
        screen=screen,
        surfaces=(posed[0].points, posed[1].points),
    )
    _MEETINGS[id(plan), t] = meet
    return meet


def _hidden_share(k, back, front, cell_px=4.0) -> float:
    """Share of the screen cells of the ``back`` samples (N, 3) where ``front`` samples
    lie nearer the camera."""
    cells = {}
    for h, points in enumerate((back, front)):
        ij = np.floor(project(points, k) / cell_px).astype(np.int64)
        key = ij[:, 0] * 100_000 + ij[:, 1]
        order = np.argsort(key)
        key, z = key[order], points[order, 2]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        cells[h] = dict(
            zip(key[first].tolist(), np.minimum.reduceat(z, first).tolist(), strict=True)
        )
    hidden = [c for c, z in cells[0].items() if cells[1].get(c, np.inf) < z]
    return len(hidden) / len(cells[0])


def test_interaction_presets_are_vga_clips_planned_together(hands):
    for name in INTERACTION_LAYOUTS:
        spec = PRESETS[name]
        assert (spec.layout, spec.width, spec.height, spec.fov_deg) == (name, 640, 480, 60.0)
        assert (spec.num_frames, spec.samples, spec.handedness) == (36, 16, ("left", "right"))
        with pytest.raises(HandmocapError, match=r"planned by interaction\.py"):
            plan_hands(spec, hands, np.random.default_rng(spec.seed))
    _, _, first, _ = _plan("two_touching", hands)
    _, again = plan_motion(PRESETS["two_touching"], hands)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.keypoints_cam, b.keypoints_cam)  # seeded


@pytest.mark.parametrize("name", INTERACTION_LAYOUTS)
def test_interacting_hands_never_pass_through_each_other(hands, name):
    plan = _plan(name, hands)
    # Fingertip keypoints sit 3 mm inside the ends of the fingers: touching tips are ~6 mm.
    least_keypoints = 0.0035 if name == "two_fingertips" else 0.008
    for t in range(0, plan[0].num_frames, 3):
        meet = _meeting(plan, t)
        # A sample may sit up to ~0.3 mm under the other's flat facets (2 mm spacing).
        assert meet.depth < 0.001, (t, meet.depth)
        assert meet.keypoints > least_keypoints, (t, meet.keypoints)


def test_touching_fists_touch_from_the_first_frame_then_part(hands):
    plan = _plan("two_touching", hands)
    for t in range(0, 21, 2):
        meet = _meeting(plan, t)
        assert meet.distance < 0.002 and meet.screen < 1.5, (t, meet.distance, meet.screen)
    assert _meeting(plan, 35).distance > 0.015
    left, right = (m.keypoints_cam[0, :, 0].mean() for m in plan[2])
    assert right < left  # seen from the front, the right hand is on the image's left


def test_stacked_right_palm_lies_on_the_left_hand_and_hides_most_of_it(hands):
    plan = _plan("two_stacked", hands)
    hidden = []
    for t in range(0, 36, 5):
        meet = _meeting(plan, t)
        assert meet.distance < 0.005, (t, meet.distance)
        hidden.append(_hidden_share(plan[1], *meet.surfaces))
        left, right = plan[2][0], plan[2][1]
        assert right.keypoints_cam[t, 9, 2] < left.keypoints_cam[t, 9, 2]  # middle knuckles
    assert np.mean(hidden) > 0.5, hidden


def test_tutting_right_hand_crosses_in_front_and_back_close_to_the_left(hands):
    plan = _plan("two_tutting", hands)
    spec, k, (left, right), _ = plan
    x = [project(m.keypoints_cam, k)[:, :, 0].mean(axis=1) for m in (left, right)]
    side = np.sign(x[1] - x[0])  # -1: the right hand on the left's image-left
    assert side[0] < 0 and side[spec.num_frames // 2] > 0 and side[-1] < 0
    assert np.count_nonzero(np.diff(side)) == 2  # two crossings
    for crossing in np.flatnonzero(np.diff(side)):
        meet = _meeting(plan, int(crossing))
        assert meet.screen < 1.0 and meet.distance < 0.008, (crossing, meet.distance)
        assert (
            right.keypoints_cam[crossing, :, 2].mean() < left.keypoints_cam[crossing, :, 2].mean()
        )


def test_steeple_fingertips_touch_on_every_frame(hands):
    plan = _plan("two_fingertips", hands)
    motions = plan[2]
    for t in range(0, 36, 3):
        meet = _meeting(plan, t)
        assert meet.distance < 0.001, (t, meet.distance)
        for m, point in zip(motions, meet.closest, strict=True):
            tips = m.keypoints_cam[t, list(TIP_KEYPOINTS)]
            assert np.linalg.norm(tips - point, axis=1).min() < 0.015, t
