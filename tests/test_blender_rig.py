"""The WebXR hand inside Blender: the bone chain the importer loses is rebuilt, bone axes
follow the anatomy, and posing through matrices puts every bone where kinematics says."""

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from bench.synth import blender_scene as bs  # noqa: E402
from bench.synth.motion import KEY_POSES  # noqa: E402
from handmocap.retarget.hand_skeleton import WEBXR_25, WEBXR_25_PARENTS  # noqa: E402
from handmocap.retarget.joint_limits import angles_to_local_rotations, spread_signs  # noqa: E402
from handmocap.retarget.kinematics import forward_kinematics  # noqa: E402
from handmocap.retarget.rotations import axis_angle_to_matrix  # noqa: E402

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module", params=["left", "right"])
def imported(request, webxr_files, hands):
    side = request.param
    bs.reset_blender()
    scene = bs.setup_render(64, 64, 1, False)
    bh = bs.import_hand(scene, webxr_files.glb(side), hands[side], (0.5, 0.4, 0.3), pass_index=1)
    return scene, bh, hands[side]


def test_chain_is_rebuilt(imported):
    _, bh, _ = imported
    bones = bh.armature.data.bones
    assert len(bones) == 25
    for j, name in enumerate(WEBXR_25):
        parent = WEBXR_25_PARENTS[j]
        assert (bones[name].parent.name if bones[name].parent else None) == (
            WEBXR_25[parent] if parent >= 0 else None
        )
    # Only the hand, its forearm and the armature remain of the import (helper nodes removed).
    assert {o.name for o in bpy.data.objects} == {bh.armature.name, bh.mesh.name, bh.forearm.name}


def test_bone_axes_follow_the_anatomy(imported):
    """Bone Y along the bone, bone Z out of the back of the hand: fingers curl about X."""
    _, bh, hand = imported
    for j, name in enumerate(WEBXR_25):
        if name.endswith("-tip") or name == "wrist":
            continue
        m = np.array(bh.armature.data.bones[name].matrix_local)[:3, :3]
        back = hand.rest_frames[j][:, 1]
        assert np.degrees(np.arccos(np.clip(m[:, 2] @ back, -1, 1))) < 10.0, name


def test_posing_matches_kinematics_to_a_micrometre(imported):
    _, bh, hand = imported
    local = angles_to_local_rotations(
        KEY_POSES["fist"], hand.rest_frames, spread_signs(hand.rest_frames, hand.rest_positions)
    )
    g_hand, p_hand = forward_kinematics(
        hand.parents, hand.rest_positions, local, np.eye(3), hand.rest_positions[0]
    )
    root_rot = axis_angle_to_matrix(np.array([0.4, -1.1, 0.3]))
    root_pos = np.array([0.02, 0.05, 0.5])
    _, p_cam = forward_kinematics(hand.parents, hand.rest_positions, local, root_rot, root_pos)
    bs.pose_hand(bh, g_hand, p_hand, root_rot, root_pos, hand.rest_positions[0])
    bpy.context.view_layer.update()
    err_mm = 1000 * np.abs(bs.evaluated_joint_heads(bh) - p_cam).max()
    assert err_mm < 1e-3
    # The skinned mesh follows: the fist's fingertips are near the palm, not out straight.
    depsgraph = bpy.context.evaluated_depsgraph_get()
    mesh = bh.mesh.evaluated_get(depsgraph).to_mesh()
    verts = np.array([v.co for v in mesh.vertices]) @ np.array(bh.mesh.matrix_world)[:3, :3].T
    bh.mesh.evaluated_get(depsgraph).to_mesh_clear()
    extent_along_fingers = np.ptp(verts @ (root_rot @ hand.finger_direction()))
    assert extent_along_fingers < 0.15  # measured: open hand 0.21 m, fist 0.12 m
