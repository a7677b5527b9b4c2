"""A take onto an armature inside Blender, without the engine: takes built from the
renderer's ground truth go through apply_take; the keys land on whole scene frames at the
scene's frame rate, the confidence curve drops where the hand was lost, a failure half-way
leaves the armature as it was, and the two hands of a take can be swapped on a range.

A take that would key garbage (NaN or infinite values, a wrong frame rate, too many keys,
frames Blender cannot hold, a hand seen on one frame) is refused with a HandmocapError that
names the problem, before anything in the scene changes; a failure while writing puts the
armature, its actions and its pose back."""

import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

bpy = pytest.importorskip("bpy")

import blender_addon.apply_take as at  # noqa: E402
from blender_addon.apply_take import (  # noqa: E402
    AnimationSnapshot,
    ApplySettings,
    apply_take,
)
from blender_addon.armature_io import (  # noqa: E402
    create_armature,
    detect_armature,
    read_armature_spec,
)
from blender_addon.cleanup import bone_curves, handmocap_actions, swap_hands  # noqa: E402
from handmocap.errors import HandmocapError  # noqa: E402
from handmocap.retarget.hand_skeleton import WEBXR_FOR_MEDIAPIPE  # noqa: E402
from handmocap.retarget.mano_armature import mano_armature_spec  # noqa: E402
from handmocap.retarget.mano_rest import default_rest_keypoints  # noqa: E402
from handmocap.retarget.rotations import (  # noqa: E402
    MIRROR_X,
    angle_between,
    matrix_to_quat,
    quat_to_matrix,
)
from handmocap.retarget.solver import HandRetargeter, RetargetConfig, WristMode  # noqa: E402
from handmocap.retarget.timeline import hand_series  # noqa: E402
from handmocap.take import FrameRange, Take, TakeHeader, Track, make_header  # noqa: E402

pytestmark = pytest.mark.blender


def _header(fps=24.0) -> TakeHeader:
    """A whole video's take header with the frame rate ``fps`` as given (not checked: the
    frame-rate tests give wrong ones)."""
    header = make_header("clip.mp4", 24.0, 640, 480, np.eye(3), "guess",
                         frame_range=FrameRange(0, None, 1))  # fmt: skip
    return replace(header, fps=fps)


def _take(gt, hands, fps=24.0, drop=()):
    """A take whose MANO fields are the clip's ground truth (frames in ``drop`` lost)."""
    tracks = []
    for h, side in enumerate(gt.handedness):
        keep = np.array([f for f in range(gt.num_frames) if f not in drop], dtype=np.int64)
        t = len(keep)
        rest = hands[side].keypoint_rest_positions()[WEBXR_FOR_MEDIAPIPE]
        tracks.append(Track(
            track_id=h, handedness=side, frames=keep,
            keypoints_2d=gt.keypoints_px[keep, h], keypoints_rel_depth=np.zeros((t, 21)),
            world_landmarks=np.zeros((t, 21, 3)), confidence=np.full((t, 21), 0.9),
            right_prob=np.full(t, 1.0 if side == "right" else 0.0),
            flags=np.ones(t, dtype=np.uint8), mano_pose=gt.mano_pose[keep, h],
            mano_betas=np.zeros(10), translation=gt.wrist_position[keep, h],
            rest_keypoints=rest - rest[0],
        ))  # fmt: skip
    return Take(_header(fps), tuple(tracks))


@pytest.fixture(scope="module")
def crossing():
    from bench.synth.cache import cached_clip
    from bench.synth.ground_truth import load_ground_truth

    return load_ground_truth(cached_clip("two_crossing")[1])


def _two_hand_rig():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    right = mano_armature_spec("right")
    left = mano_armature_spec("left")
    # one armature with both hands side by side (left hand 0.3 m to the +x side)
    from handmocap.retarget.armature import ArmatureSpec

    rest_l = left.rest.copy()
    rest_l[:, 0, 3] += 0.3
    spec = ArmatureSpec(
        "hands", right.bone_names + left.bone_names,
        np.concatenate([right.parents, np.where(left.parents >= 0, left.parents + 16, -1)]),
        np.concatenate([right.rest, rest_l]), np.concatenate([right.lengths, left.lengths]),
    )  # fmt: skip
    return create_armature(spec, "hands")


def test_keys_on_scene_frames_at_the_scene_rate(crossing, hands):
    """Video at 24 fps into a 30 fps scene: keys on whole frames 10..(10 + 47 * 30/24),
    each the slerp of the solved rotations at that time (exact where the grids meet)."""
    obj = _two_hand_rig()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0
    take = _take(crossing, hands)
    mapping = detect_armature(obj)
    result = apply_take(obj, take, mapping, ApplySettings(scene_start=10, take_name="t"), scene)
    assert set(result.actions) == {"left", "right"}
    last = 10 + (crossing.num_frames - 1) * 30 / 24
    assert result.frame_range == (10, int(np.floor(last)))
    action = bpy.data.actions[result.actions["right"]]
    series = hand_series(take, "right")
    solver = HandRetargeter(read_armature_spec(obj), mapping.hands["right"],
                            series.rest_keypoints, RetargetConfig())  # fmt: skip
    solved = solver.solve(series.pose, series.translation)
    for bc in bone_curves(action):
        frames, q = bc.keys()
        np.testing.assert_array_equal(frames, np.arange(10, int(np.floor(last)) + 1))
        k = solved.bone_names.index(bc.bone)
        # scene frame 10 + 5n is take frame 4n
        on_grid = np.degrees(angle_between(q[::5], solved.rotations[::4, k][: len(q[::5])]))
        assert on_grid.max() < 0.01, bc.bone


def test_confidence_drops_where_the_hand_was_lost(crossing, hands):
    obj = _two_hand_rig()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    take = _take(crossing, hands, drop=range(20, 30))
    result = apply_take(obj, take, detect_armature(obj), ApplySettings(scene_start=1), scene)
    action = bpy.data.actions[result.actions["left"]]
    from blender_addon.keyframes import action_fcurves, get_keys

    (conf,) = [fc for fc in action_fcurves(action) if fc.data_path == '["hm_confidence_L"]']
    frames, values = get_keys(conf)
    assert conf.evaluate(25.0) == 0.0 and conf.evaluate(10.0) == pytest.approx(0.9)
    assert 21.0 in frames and values[list(frames).index(21.0)] == 0.0  # one after the last seen
    for bc in bone_curves(action):
        kf, _ = bc.keys()
        assert not np.any((kf > 20) & (kf < 31))  # no keys while lost


def test_a_failure_half_way_changes_nothing(crossing, hands, monkeypatch):
    obj = _two_hand_rig()
    scene = bpy.context.scene
    before = ({pb.name: pb.rotation_mode for pb in obj.pose.bones}, set(bpy.data.actions.keys()))
    import blender_addon.apply_take as at

    calls = {"n": 0}
    real = at.ActionWriter.bone_curves

    def failing(self, poses, frames):
        calls["n"] += 1
        if calls["n"] == 2:  # the second hand fails after the first was written
            raise RuntimeError("simulated failure")
        return real(self, poses, frames)

    monkeypatch.setattr(at.ActionWriter, "bone_curves", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        apply_take(obj, _take(crossing, hands), detect_armature(obj), ApplySettings(), scene)
    after = ({pb.name: pb.rotation_mode for pb in obj.pose.bones}, set(bpy.data.actions.keys()))
    assert after == before
    assert obj.animation_data is None or len(obj.animation_data.nla_tracks) == 0
    assert "hm_confidence_R" not in obj.keys()


def test_swap_hands_mirrors_each_pose_onto_the_other_side(crossing, hands):
    """After swapping frames 10-20, each left bone there shows the right bone's former local
    rotation mirrored across the rig's x = 0 plane (and the other way); frames outside keep."""
    obj = _two_hand_rig()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    mapping = detect_armature(obj)
    apply_take(obj, _take(crossing, hands), mapping, ApplySettings(scene_start=1), scene)
    curves = {s: {bc.bone: bc for bc in bone_curves(a)} for s, a in handmocap_actions(obj).items()}
    frames = np.arange(10.0, 21.0)
    old_r = curves["right"]["index2.R"].sample(frames)
    old_l_outside = curves["left"]["index2.L"].sample(np.array([5.0, 30.0]))
    swap_hands(obj, mapping, 10, 20)
    new_l = bone_curves_by_name(obj, "left")["index2.L"].sample(frames)
    r_r = np.array(obj.data.bones["index2.R"].matrix_local)[:3, :3]
    r_l = np.array(obj.data.bones["index2.L"].matrix_local)[:3, :3]
    c = r_l.T @ MIRROR_X @ r_r
    want = matrix_to_quat(c @ quat_to_matrix(old_r) @ c.T)
    assert np.degrees(angle_between(new_l, want)).max() < 0.01
    outside = bone_curves_by_name(obj, "left")["index2.L"].sample(np.array([5.0, 30.0]))
    assert np.degrees(angle_between(outside, old_l_outside)).max() < 1e-6
    # a mirrored flexion is still a flexion: the angle from rest is kept
    rest = np.tile([1.0, 0, 0, 0], (len(frames), 1))
    np.testing.assert_allclose(
        np.degrees(angle_between(new_l, rest)), np.degrees(angle_between(old_r, rest)), atol=1e-6
    )


def bone_curves_by_name(obj, side):
    return {bc.bone: bc for bc in bone_curves(handmocap_actions(obj)[side])}


# -- the add-on must not key garbage -----------------------------------------------------------

N = 48  # frames of the synthetic takes below


def _synthetic(fps=24.0, drop=(), seed=3) -> Take:
    """Both hands over N frames: small seeded MANO rotations on the open hand model's rest
    (no rendered clip needed)."""
    rng = np.random.default_rng(seed)
    keep = np.array([f for f in range(N) if f not in drop], dtype=np.int64)
    t = len(keep)
    tracks = tuple(
        Track(track_id=h, handedness=side, frames=keep, keypoints_2d=np.full((t, 21, 2), 300.0),
              keypoints_rel_depth=np.zeros((t, 21)), world_landmarks=np.zeros((t, 21, 3)),
              confidence=np.full((t, 21), 0.9), right_prob=np.full(t, float(side == "right")),
              flags=np.ones(t, dtype=np.uint8), mano_pose=rng.normal(0.0, 0.15, (t, 16, 3)),
              mano_betas=np.zeros(10), translation=np.tile([0.1 * h, 0.0, 0.5], (t, 1)),
              rest_keypoints=default_rest_keypoints(side))
        for h, side in enumerate(("right", "left"))
    )  # fmt: skip
    return Take(_header(fps), tracks)


def _state(obj) -> dict:
    """What a refused take must leave as it was: the actions, the armature's animation
    data, custom properties, rotation modes and pose values (NaN compared as equal)."""
    data = obj.animation_data
    pose = {pb.name: np.array([*pb.rotation_quaternion, *pb.rotation_euler, *pb.location,
                               *pb.scale]) for pb in obj.pose.bones}  # fmt: skip
    return {
        "actions": sorted(bpy.data.actions.keys()),
        "tracks": [t.name for t in data.nla_tracks] if data else None,
        "action": data.action.name if data and data.action else None,
        "props": sorted(obj.keys()),
        "modes": {pb.name: pb.rotation_mode for pb in obj.pose.bones},
        "pose": pose,
    }


def _assert_same(before: dict, after: dict) -> None:
    pose_b, pose_a = before.pop("pose"), after.pop("pose")
    assert after == before
    assert pose_a.keys() == pose_b.keys()
    for name, values in pose_b.items():
        np.testing.assert_array_equal(pose_a[name], values, err_msg=name)


def _refused(obj, take, match: str, scene=None, **settings_kw) -> HandmocapError:
    scene = scene or bpy.context.scene
    before = _state(obj)
    with pytest.raises(HandmocapError, match=match) as info:
        apply_take(obj, take, detect_armature(obj), ApplySettings(**settings_kw), scene)
    _assert_same(before, _state(obj))
    assert "\n" not in str(info.value)
    return info.value


_FIELDS = ("mano_pose", "confidence", "translation", "rest_keypoints")


@settings(max_examples=20, deadline=None)
@given(field=st.sampled_from(_FIELDS), value=st.sampled_from([np.nan, np.inf, -np.inf]),
       where=st.floats(0.0, 0.999), side=st.sampled_from(["left", "right"]))  # fmt: skip
def test_a_non_finite_value_is_refused_before_anything_is_keyed(field, value, where, side):
    """A take whose arrays hold NaN or inf (it slipped past the reader, or was built in
    memory) keys nothing: the message names the track and the field, and the armature, its
    actions and its pose are as before."""
    obj = _two_hand_rig()
    take = _synthetic()
    (index,) = [i for i, t in enumerate(take.tracks) if t.handedness == side]
    arr = getattr(take.tracks[index], field)  # Track checks on construction: damage it after
    arr.reshape(-1)[int(where * arr.size)] = value
    message = (f"the take's track {index} ({side} hand): {field} contains NaN or inf values: "
               "the take file is damaged")  # fmt: skip
    _refused(obj, take, re.escape(message))


def test_an_all_nan_take_never_leaves_a_nan_pose():
    """The reported case: every rotation NaN (3,072 NaN keys before). Refused; the pose is
    finite and equal to before, and a good take keys afterwards as if nothing happened."""
    obj = _two_hand_rig()
    scene = bpy.context.scene
    bad = _synthetic()
    for track in bad.tracks:
        track.mano_pose[:] = np.nan
    _refused(obj, bad, "mano_pose contains NaN or inf values")
    scene.frame_set(5)
    assert all(np.isfinite(pb.rotation_quaternion).all() for pb in obj.pose.bones)
    result = apply_take(obj, _synthetic(), detect_armature(obj), ApplySettings(), scene)
    assert set(result.actions) == {"left", "right"}
    scene.frame_set(5)
    assert all(np.isfinite(pb.rotation_quaternion).all() for pb in obj.pose.bones)


@pytest.mark.parametrize(("fps", "message"), [
    (0.07, "the take's frame rate is 0.07 fps: each video frame would spread over 343 scene "
           "frames at 24 fps (at most 4 are keyed)"),
    (0.0, "the take's frame rate is 0.0 fps; it must be a positive number"),
    (-24.0, "the take's frame rate is -24.0 fps; it must be a positive number"),
    (float("nan"), "the take's frame rate is nan fps; it must be a positive number"),
    (float("inf"), "the take's frame rate is inf fps; it must be a positive number"),
    ("24", "the take's frame rate is '24' fps; it must be a positive number"),
    (True, "the take's frame rate is True fps; it must be a positive number"),
    (None, "the take's frame rate is None fps; it must be a positive number"),
    (1e6, "the take's frame rate is 1e+06 fps, above the 1000 fps any camera records"),
])  # fmt: skip
def test_a_wrong_frame_rate_is_refused_naming_it(fps, message):
    """An fps of 0.07 turned 48 samples into 1,047,477 keys (630 MB); now any frame rate
    that is not a positive number, or that would spread a video frame over more than 4 scene
    frames, is refused before anything is keyed."""
    obj = _two_hand_rig()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    _refused(obj, _synthetic(fps=fps), re.escape(message))


@pytest.mark.parametrize(("frame_range", "message"), [
    (FrameRange(0, None, 0.5), "the take's frame stride is 0.5; it must be a whole number"),
    (FrameRange(0, None, -2), "the take's frame stride is -2; it must be at least 1"),
    (FrameRange(-5, None, 1), "the take's first frame is -5; it must be at least 0"),
    ([0, 48, 1], "the take's frame_range is [0, 48, 1], not a JSON object"),
])  # fmt: skip
def test_a_broken_frame_range_is_refused(frame_range, message):
    obj = _two_hand_rig()
    take = _synthetic()
    take = Take(replace(take.header, frame_range=frame_range), take.tracks)
    _refused(obj, take, re.escape(message))


def test_the_slowest_video_still_keyed_and_a_stride_keeps_its_rate():
    """At the limit (a 6 fps video into a 24 fps scene: 4 scene frames per video frame) the
    take is keyed; a stride of 3 on a 24 fps video (take fps 8) lands as the video does."""
    obj = _two_hand_rig()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    result = apply_take(obj, _synthetic(fps=6.0), detect_armature(obj),
                        ApplySettings(take_name="slow"), scene)  # fmt: skip
    assert result.frame_range == (1, 1 + 4 * (N - 1))
    obj = _two_hand_rig()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    take = _synthetic(fps=8.0)
    take = Take(replace(take.header, frame_range=FrameRange(0, None, 3)), take.tracks)
    result = apply_take(obj, take, detect_armature(obj), ApplySettings(), scene)
    assert result.frame_range == (1, N)  # frames 0..47 at 24 fps


def test_more_keys_than_the_cap_are_refused(monkeypatch):
    obj = _two_hand_rig()
    bpy.context.scene.render.fps, bpy.context.scene.render.fps_base = 24, 1.0
    monkeypatch.setattr(at, "MAX_KEYS", 5_000)
    _refused(obj, _synthetic(), r"the take would put about 6,242 keys on hands \(48 "
             r"scene frames for the right hand at 24 fps, from a 24 fps video\), more than the "
             r"5,000 one capture may key: capture a shorter frame range")  # fmt: skip


def test_frames_beyond_blenders_range_are_refused():
    obj = _two_hand_rig()
    bpy.context.scene.render.fps, bpy.context.scene.render.fps_base = 24, 1.0
    _refused(obj, _synthetic(), "would land on scene frames 1048570 to 1048617, "
             "outside the frames Blender can key", scene_start=1_048_570)  # fmt: skip


def test_a_hand_with_one_or_no_frames_is_not_keyed():
    """One sample is no motion: that hand is skipped with a message (the other hand of the
    take is still keyed); a take with nothing else keys nothing."""
    obj = _two_hand_rig()
    scene = bpy.context.scene
    mapping = detect_armature(obj)
    one = _synthetic(drop=range(1, N))
    result = apply_take(obj, one, mapping, ApplySettings(), scene)
    assert result.actions == {} and bpy.data.actions.keys() == []
    assert result.messages == [
        f"the take's {side} hand was seen on only 1 video frame (frame 0): at least 2 are "
        "needed to key motion; capture a longer frame range"
        for side in ("left", "right")
    ]
    none = _synthetic(drop=range(N))
    result = apply_take(obj, none, mapping, ApplySettings(sides=("right",)), scene)
    assert result.actions == {} and result.messages == ["the take's right hand has no frames"]
    # a good right hand next to a one-frame left hand: the right one is keyed
    good, short = _synthetic(), one
    mixed = Take(good.header, tuple(
        t if t.handedness == "right" else next(s for s in short.tracks if s.handedness == "left")
        for t in good.tracks))  # fmt: skip
    result = apply_take(obj, mixed, mapping, ApplySettings(), scene)
    assert set(result.actions) == {"right"}
    assert result.messages[0].startswith("the take's left hand was seen on only 1 video frame")


def test_a_nan_pose_on_the_rig_is_named_not_keyed():
    """A rig whose current pose is NaN (left by an old NaN take) would make every solved
    rotation NaN where the solver uses that pose (fingers only): refused, naming the rig."""
    obj = _two_hand_rig()
    mapping = detect_armature(obj)
    hand = obj.pose.bones[mapping.hands["right"].bones["hand"]]
    hand.rotation_mode = "QUATERNION"
    hand.rotation_quaternion = (np.nan, 0.0, 0.0, 0.0)
    bpy.context.view_layer.update()
    _refused(obj, _synthetic(),
             f"hands's current pose is not finite \\(NaN\\) on .* bones, e.g. '{hand.name}'",
             sides=("right",), wrist=WristMode.NONE)  # fmt: skip


def test_a_failure_half_way_puts_the_pose_back(monkeypatch):
    """A write that fails after it switched rotation modes and left a NaN pose on the bones:
    modes and pose values are back as they were (Euler bones keep their Euler angles)."""
    obj = _two_hand_rig()
    for k, pb in enumerate(obj.pose.bones):
        pb.rotation_mode = "XYZ"
        pb.rotation_euler = (0.1 * k, -0.2, 0.3)
    before = _state(obj)
    real = at.ActionWriter.bone_curves

    def failing(self, poses, frames):
        real(self, poses, frames)
        for pb in self.obj.pose.bones:
            pb.rotation_quaternion = (np.nan,) * 4
            pb.rotation_euler = (np.nan,) * 3
        raise ValueError("simulated failure after keying")

    monkeypatch.setattr(at.ActionWriter, "bone_curves", failing)
    with pytest.raises(ValueError, match="simulated"):
        apply_take(obj, _synthetic(), detect_armature(obj), ApplySettings(),
                   bpy.context.scene)  # fmt: skip
    _assert_same(before, _state(obj))


def test_a_snapshot_puts_edited_keys_back():
    """What the cleanup operators rely on when they fail half-way: edited keys, added
    curves, new actions and properties are undone exactly."""
    from blender_addon.keyframes import action_fcurves, get_keys, new_fcurve, set_keys

    obj = _two_hand_rig()
    result = apply_take(obj, _synthetic(), detect_armature(obj), ApplySettings(),
                        bpy.context.scene)  # fmt: skip
    action = bpy.data.actions[result.actions["right"]]
    curves = list(action_fcurves(action))
    keys_before = [get_keys(fc) for fc in curves]
    before = _state(obj)
    snapshot = AnimationSnapshot(obj, keys=True)
    set_keys(curves[3], np.array([1.0, 7.0]), np.array([np.nan, 2.0]))
    bag = None
    if at.HAS_SLOTS:
        bag = action.layers[0].strips[0].channelbags[0]
    new_fcurve(action, bag, 'pose.bones["wrist.R"].scale', 0, "extra")
    bpy.data.actions.new("stray")
    obj["hm_confidence_R"] = 0.5
    obj["stray"] = 1
    snapshot.rollback()
    _assert_same(before, _state(obj))
    after = list(action_fcurves(action))
    assert len(after) == len(curves)
    for (f0, v0), fc in zip(keys_before, after, strict=True):
        f1, v1 = get_keys(fc)
        np.testing.assert_array_equal(f1, f0)
        np.testing.assert_array_equal(v1, v0)


def test_what_the_engine_could_not_read_is_reported_with_the_capture():
    """A take of a truncated video carries the engine's warning in its header; applying it
    keys the frames there are and hands the warning on for the operator's report."""
    obj = _two_hand_rig()
    good = _synthetic()
    warning = "clip.mp4 ended after 9 frames but its header declares 60"
    take = Take(replace(good.header, warnings=[warning]), good.tracks)
    result = apply_take(obj, take, detect_armature(obj), ApplySettings(), bpy.context.scene)
    assert set(result.actions) == {"left", "right"}
    assert warning in result.messages


def test_the_rig_panel_detects_once_and_again_after_a_bone_rename(monkeypatch):
    """Blender redraws the Rig subpanel many times a second: its draw detects the rig on
    the first redraw, not on the next, and again once a bone is renamed."""
    from types import SimpleNamespace

    import blender_addon.capture_op as capture_op
    from blender_addon.panel import HM_PT_rig

    calls = []

    def counting_detect(obj, side=None):
        calls.append(obj.name)
        return detect_armature(obj, side)

    monkeypatch.setattr(capture_op, "detect_armature", counting_detect)
    labels: list[str] = []

    class Layout:  # what draw touches: records the labels, ignores the rest
        def label(self, text="", **_):
            labels.append(text)

        def column(self, **_):
            return self

        row = box = column

        def prop(self, *_, **__):
            pass

        operator = prop_search = prop

    obj = _two_hand_rig()
    settings = SimpleNamespace(target=obj, one_hand_side="AUTO", use_custom_mapping=False,
                               mapping=[], rig_side=lambda: None)  # fmt: skip
    panel, context = SimpleNamespace(layout=Layout()), SimpleNamespace(scene=SimpleNamespace(
        handmocap=settings))  # fmt: skip
    HM_PT_rig.draw(panel, context)
    first = list(labels)
    HM_PT_rig.draw(panel, context)
    assert calls == [obj.name] and first and labels == first * 2
    obj.data.bones[-1].name += "_renamed"
    HM_PT_rig.draw(panel, context)
    assert calls == [obj.name] * 2
