"""A take onto an armature inside Blender, without the engine: takes built from the
renderer's ground truth go through apply_take; the keys land on whole scene frames at the
scene's frame rate, the confidence curve drops where the hand was lost, a failure half-way
leaves the armature as it was, and the two hands of a take can be swapped on a range."""

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from blender_addon.apply_take import ApplySettings, apply_take, hand_series  # noqa: E402
from blender_addon.armature_io import (  # noqa: E402
    create_armature,
    detect_armature,
    read_armature_spec,
)
from blender_addon.cleanup import bone_curves, handmocap_actions, swap_hands  # noqa: E402
from handmocap.inference.take import Take, Track  # noqa: E402
from handmocap.retarget.curves import quat_angle_deg  # noqa: E402
from handmocap.retarget.hand_skeleton import WEBXR_FOR_MEDIAPIPE  # noqa: E402
from handmocap.retarget.mano_armature import mano_armature_spec  # noqa: E402
from handmocap.retarget.solver import HandRetargeter, RetargetConfig  # noqa: E402

pytestmark = pytest.mark.blender


def _take(gt, hands, fps=24.0, drop=()):
    """A take whose MANO fields are the clip's ground truth (frames in ``drop`` lost)."""
    tracks = []
    for h, side in enumerate(gt.handedness):
        keep = np.array([f for f in range(gt.num_frames) if f not in drop])
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
    header = {"fps": fps, "frame_range": {"start": 0, "end": None, "stride": 1}}
    return Take(header, tuple(tracks))


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
        on_grid = quat_angle_deg(q[::5], solved.rotations[::4, k][: len(q[::5])])
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
    s = np.diag([-1.0, 1.0, 1.0])
    r_r = np.array(obj.data.bones["index2.R"].matrix_local)[:3, :3]
    r_l = np.array(obj.data.bones["index2.L"].matrix_local)[:3, :3]
    c = r_l.T @ s @ r_r
    from handmocap.retarget.rotations import matrix_to_quat, quat_to_matrix

    want = matrix_to_quat(c @ quat_to_matrix(old_r) @ c.T)
    assert quat_angle_deg(new_l, want).max() < 0.01
    outside = bone_curves_by_name(obj, "left")["index2.L"].sample(np.array([5.0, 30.0]))
    assert quat_angle_deg(outside, old_l_outside).max() < 1e-6
    # a mirrored flexion is still a flexion: the angle from rest is kept
    np.testing.assert_allclose(
        quat_angle_deg(new_l, np.tile([1.0, 0, 0, 0], (len(frames), 1))),
        quat_angle_deg(old_r, np.tile([1.0, 0, 0, 0], (len(frames), 1))), atol=1e-6,
    )  # fmt: skip


def bone_curves_by_name(obj, side):
    return {bc.bone: bc for bc in bone_curves(handmocap_actions(obj)[side])}
