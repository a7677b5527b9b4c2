"""The MANO -> rig solver, in plain numpy: rigs with other names, rolls, rest curls and
proportions are driven with known MANO poses, posed the way Blender poses bones
(``bench.rigs.evaluate_pose``), and measured against the MANO hand in armature space.

Truth used here is independent of the solver: segment directions from MANO forward
kinematics, and flexion axes from the WebXR joint frames the test rigs were built with.
"""

import numpy as np
import pytest

from bench.rigs import build_test_rig, evaluate_pose, known_poses, side_flex_axes
from handmocap.retarget.armature import RigError
from handmocap.retarget.mano_rest import (
    MANO16_BONE_END,
    MEDIAPIPE_FOR_MANO16,
    OPEN_HAND_RIGHT_REST_MM,
    default_rest_keypoints,
)
from handmocap.retarget.rig_profiles import PROFILES_BY_ID, detect_rig
from handmocap.retarget.rotations import axis_angle_to_matrix, make_continuous
from handmocap.retarget.solver import (
    CAMERA_FIRST_PERSON,
    HandRetargeter,
    RetargetConfig,
    WristMode,
    mano_hand_rotations,
)

SIDES = ("right", "left")


@pytest.fixture(scope="module")
def poses(hands):
    """flat, fist, spread, pinch and 30 random poses inside the limits, random wrists."""
    return known_poses(hands["right"])


@pytest.fixture(scope="module")
def flex(hands):
    return side_flex_axes(hands["right"])


REST = {s: default_rest_keypoints(s) for s in SIDES}


def measure(rig, side, pose, flex, camera=None, relative_to_hand=False):
    """(direction errors, twist errors) in degrees over frames and driven bones."""
    cfg = RetargetConfig(
        wrist=WristMode.NONE if relative_to_hand else WristMode.ROTATION,
        **({"camera_to_armature": camera} if camera is not None else {}),
    )
    mapping = detect_rig(rig.spec.bone_names)
    out = HandRetargeter(rig.spec, mapping.hands[side], REST[side], cfg).solve(pose)
    posed = evaluate_pose(rig.spec, out.bone_names, out.rotations)
    local = axis_angle_to_matrix(pose)
    if relative_to_hand:  # the hand stays at rest: MANO's hand lands on it by Kabsch
        to_arm = _kabsch_hand(rig, side)[None, None]
    else:
        to_arm = (cfg.camera_to_armature @ local[:, 0])[:, None]
    g = to_arm @ mano_hand_rotations(local)
    dirs, twists = [], []
    for name in mapping.hands[side].bones.values():
        if name not in rig.mano_joint:
            continue
        j, i = rig.mano_joint[name], rig.spec.index(name)
        d = REST[side][MANO16_BONE_END[j]] - REST[side][MEDIAPIPE_FOR_MANO16[j]]
        want = g[:, j] @ (d / np.linalg.norm(d))
        dirs.append(_angle(want, posed[:, i, :, 1]))
        twists.append(_angle(g[:, j] @ flex[side][j], posed[:, i] @ rig.flex_axes[name]))
    return np.concatenate(dirs), np.concatenate(twists)


def _angle(a, b):
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))


def _kabsch_hand(rig, side):
    """Rotation hand space -> armature that best lays MANO's wrist and knuckles on the
    rig's (rest), computed without the solver."""
    spec = rig.spec
    names = [rig.hand_bone[side]] + [
        n for n, j in rig.mano_joint.items() if j in (1, 4, 7, 10) and _side_of(n) == side
    ]
    mp = [0] + [int(MEDIAPIPE_FOR_MANO16[rig.mano_joint[n]]) for n in names[1:]]
    a = REST[side][mp] - REST[side][mp].mean(0)
    b = spec.heads[[spec.index(n) for n in names]]
    b = b - b.mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1, 1, d]) @ vt


def _side_of(name):
    from handmocap.retarget.bone_names import parse_bone_name

    return parse_bone_name(name).side or "right"


@pytest.mark.parametrize("profile", ["mixamo", "unreal", "handmocap", "rigify_metarig"])
@pytest.mark.parametrize("side", SIDES)
def test_segments_point_and_twist_as_captured(profile, side, poses, flex):
    """Rolls anywhere in +-180 deg, every joint curled 25 deg at rest, phalanges 0.85-1.2x
    the model's, a 1.3x hand: directions match to 0.01 deg; the flexion-axis twist stays
    within 5 deg median / 8 deg max (the issue's bar), measured 0.4 / 0.9 deg."""
    rig = build_test_rig(PROFILES_BY_ID[profile], REST, flex, seed=3, scale=1.3,
                         metacarpals=profile != "mixamo")  # fmt: skip
    dirs, twists = measure(rig, side, poses[side], flex)
    assert np.median(dirs) < 0.01 and dirs.max() < 0.01
    assert np.median(twists) < 2.0 and twists.max() < 5.0


def test_a_rig_without_rest_curl_is_exact(poses, flex):
    rig = build_test_rig(PROFILES_BY_ID["unreal"], REST, flex, seed=4, curl_deg=0.0)
    dirs, twists = measure(rig, "right", poses["right"], flex)
    assert dirs.max() < 1e-4 and twists.max() < 1e-4


def test_fingers_only_leaves_the_hand_and_matches_relative_to_it(poses, flex):
    """Wrist mode NONE: the hand bone is not keyed, and fingers match MANO's relative to
    the hand, with the hand correspondence found by Kabsch on the knuckles (independent of
    the solver's palm frames; the rig's knuckles differ a little from MANO's, hence 2 deg)."""
    rig = build_test_rig(PROFILES_BY_ID["mixamo"], REST, flex, seed=5, curl_deg=0.0,
                         metacarpals=False)  # fmt: skip
    dirs, _ = measure(rig, "right", poses["right"], flex, relative_to_hand=True)
    assert np.median(dirs) < 2.0 and dirs.max() < 4.0
    mapping = detect_rig(rig.spec.bone_names)
    out = HandRetargeter(rig.spec, mapping.hands["right"], None,
                         RetargetConfig(wrist=WristMode.NONE)).solve(poses["right"])  # fmt: skip
    assert "RightHand" not in out.bone_names and len(out.bone_names) == 15


def test_camera_placement_turns_the_whole_hand(poses, flex):
    rig = build_test_rig(PROFILES_BY_ID["unreal"], REST, flex, seed=6, curl_deg=0.0)
    dirs, _ = measure(rig, "left", poses["left"], flex, camera=CAMERA_FIRST_PERSON)
    assert dirs.max() < 1e-4


def test_location_follows_the_wrist_in_armature_units(poses, flex):
    rig = build_test_rig(PROFILES_BY_ID["unreal"], REST, flex, seed=8, scale=100.0)
    mapping = detect_rig(rig.spec.bone_names)
    cfg = RetargetConfig(wrist=WristMode.ROTATION_AND_LOCATION, units_per_metre=100.0)
    t = len(poses["right"])
    translation = np.cumsum(np.full((t, 3), [0.01, -0.005, 0.02]), axis=0)
    out = HandRetargeter(rig.spec, mapping.hands["right"], None, cfg).solve(
        poses["right"], translation
    )
    k = out.bone_names.index("hand_r")
    h = rig.spec.index("hand_r")
    # Parent (forearm) at rest: head moves by R_b @ location.
    moved = out.locations[:, k] @ rig.spec.rotations[h].T
    want = (translation - translation[0]) @ cfg.camera_to_armature.T * 100.0
    np.testing.assert_allclose(moved, want, atol=1e-9)


def test_partial_rig_maps_what_exists_and_reports_the_rest(poses, flex):
    rig = build_test_rig(PROFILES_BY_ID["mixamo"], REST, flex, seed=9, metacarpals=False)
    keep = [n for n in rig.spec.bone_names if "Ring" not in n and "Pinky3" not in n]
    mapping = detect_rig(keep)
    right = mapping.hands["right"]
    assert "ring.proximal" in right.missing and "pinky.distal" in right.missing
    assert len(right.driven_roles) == 11
    assert "right hand: 11 of 15 finger bones, wrist; missing:" in mapping.report()
    sub = _sub_spec(rig.spec, keep)
    out = HandRetargeter(sub, right, None).solve(poses["right"])
    assert len(out.bone_names) == 12  # 11 finger bones and the hand


def _sub_spec(spec, keep):
    from handmocap.retarget.armature import ArmatureSpec

    idx = [spec.index(n) for n in keep]
    remap = {old: new for new, old in enumerate(idx)}
    parents = np.array([remap.get(int(spec.parents[i]), -1) for i in idx])
    return ArmatureSpec(spec.name, tuple(keep), parents, spec.rest[idx], spec.lengths[idx])


def test_quaternions_are_continuous_and_unit():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 3, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    c = make_continuous(q)
    assert np.all(np.sum(c[1:] * c[:-1], axis=-1) >= 0)
    assert np.all(np.abs(np.abs(np.sum(c * q, -1)) - 1) < 1e-12)  # same rotations


def test_bad_input_is_named(poses, flex):
    rig = build_test_rig(PROFILES_BY_ID["mixamo"], REST, flex, seed=1, metacarpals=False)
    mapping = detect_rig(rig.spec.bone_names)
    solver = HandRetargeter(rig.spec, mapping.hands["right"])
    with pytest.raises(RigError, match=r"shape \(T, 16, 3\)"):
        solver.solve(np.zeros((10, 15, 3)))
    with pytest.raises(RigError, match="rotation"):
        RetargetConfig(camera_to_armature=np.diag([1.0, 1.0, -1.0])).validated()
    with pytest.raises(RigError, match="needs the first bone of at least two fingers"):
        only_index = [n for n in rig.spec.bone_names if "Index" in n or n == "RightHand"]
        sub = _sub_spec(rig.spec, only_index)
        HandRetargeter(sub, detect_rig(only_index).hands["right"])


def test_open_hand_rest_constant_matches_the_built_model():
    """The fallback rest skeleton in retarget/ is the built open hand model's (0.01 mm)."""
    from handmocap.models.hand_model import ensure_open_hand_model
    from handmocap.models.iknet_build import load_rig

    rig = load_rig(ensure_open_hand_model().folder, "right")
    np.testing.assert_allclose(OPEN_HAND_RIGHT_REST_MM, (rig.rest - rig.rest[0]) * 1000, atol=0.006)


def test_renderer_ground_truth_through_rigs(hands):
    """The rotations the demo clip was rendered with, retargeted onto Mixamo- and Unreal-named
    test rigs: each bone points along the rendered keypoints (measured 0.000 deg) and twists
    with the render-time joint frames (measured 0.40 median / 0.90 max)."""
    from bench.retarget_eval import ground_truth_errors
    from bench.synth.cache import cached_clip
    from bench.synth.ground_truth import load_ground_truth

    gt = load_ground_truth(cached_clip("demo")[1])
    for profile in ("mixamo", "unreal", "rigify_metarig"):
        (errors,) = ground_truth_errors(gt, hands, profile)
        assert errors.side == "right"
        assert np.median(errors.direction_deg) < 0.05 and errors.direction_deg.max() < 0.2
        assert np.median(errors.twist_deg) < 2.0 and errors.twist_deg.max() < 5.0


def test_open_hand_flex_axes_match_the_asset(hands):
    from handmocap.retarget.mano_rest import default_flex_axes

    for side in SIDES:
        axes = default_flex_axes(side)
        np.testing.assert_allclose(axes[1:], side_flex_axes(hands["right"])[side][1:], atol=1e-4)
