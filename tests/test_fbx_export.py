"""FBX export round trip: the handmocap hand armature, keyed with smooth random rotations on
every bone, is exported with each preset and read back with two independent readers (ufbx
and assimp); every bone's local rotation on every frame must match what Blender had.

What the file holds per bone (derived from Blender's exporter, bench/fbx_read.py): the
pose relative to the parent bone, ``parent.matrix^-1 @ bone.matrix``, turned by the bone
axis correction C (``C^-1 @ L @ C``; root bone ``bone.matrix @ C``). Bar: 0.1 deg.
Measured: 5e-5 deg for the presets (float32 Euler keys), 3e-4 deg with bone axes X / -Z.
"""

import dataclasses
import math
import os

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
pytest.importorskip("ufbx")
pytest.importorskip("pyassimp")

from bench.fbx_read import (  # noqa: E402
    axis_conversion,
    blender_to_fbx_local,
    bone_axis_correction,
    read_assimp,
    read_ufbx,
)
from blender_addon.armature_io import create_armature  # noqa: E402
from blender_addon.fbx_export import (  # noqa: E402
    GENERIC,
    UNITY,
    UNREAL,
    FbxExportError,
    FbxPreset,
    export_fbx,
)
from blender_addon.keyframes import write_bone_action  # noqa: E402
from handmocap.retarget.mano_armature import mano_armature_spec  # noqa: E402
from handmocap.retarget.rotations import angle_between, quat_to_matrix  # noqa: E402
from handmocap.retarget.solver import BonePoses  # noqa: E402

pytestmark = pytest.mark.blender

FIRST, T = 11, 60  # keyed and exported frames FIRST .. FIRST + T - 1
EXTRA_BONE = "ik_target.R"  # a non-deforming bone (deform-only presets drop it)
BONE_AXES = dataclasses.replace(
    GENERIC, name="bone_axes", label="Bone axes X / -Z", primary_bone_axis="X",
    secondary_bone_axis="-Z",
)  # fmt: skip
PRESETS = {p.name: p for p in (GENERIC, UNITY, UNREAL, BONE_AXES)}
MAX_ERROR_DEG = 0.1


def smooth_random_rotations(t: int, b: int, seed: int = 3) -> np.ndarray:
    """(t, b, 4) unit quaternions (w, x, y, z): each bone turns back and forth about its own
    random axis, up to 60 deg, one to two cycles over the clip."""
    rng = np.random.default_rng(seed)
    phase = np.linspace(0.0, 1.0, t)[:, None]
    axes = rng.normal(size=(b, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angle = math.radians(60.0) * np.sin(
        2 * np.pi * (phase * rng.uniform(1.0, 2.0, b) + rng.uniform(0.0, 1.0, b))
    )
    return np.concatenate(
        [np.cos(angle / 2)[..., None], np.sin(angle / 2)[..., None] * axes[None]], axis=-1
    )


def _add_extra_bone(obj) -> None:
    """A non-deforming bone under the wrist (like an IK target)."""
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    eb = obj.data.edit_bones.new(EXTRA_BONE)
    wrist = obj.data.edit_bones["wrist.R"]
    eb.head = wrist.tail
    eb.tail = wrist.tail + (wrist.tail - wrist.head) * 0.5
    eb.parent = wrist
    eb.use_deform = False
    bpy.ops.object.mode_set(mode="OBJECT")


def _add_skinned_mesh(obj):
    """A small triangle fan skinned to the wrist, parented to the armature."""
    mesh = bpy.data.meshes.new("hand_mesh")
    mesh.from_pydata(
        [(0, 0, 0), (0.02, 0, 0), (0, 0.02, 0), (0, 0, 0.02)], [], [(0, 1, 2), (0, 2, 3)]
    )
    mesh_obj = bpy.data.objects.new("hand_mesh", mesh)
    bpy.context.scene.collection.objects.link(mesh_obj)
    mesh_obj.parent = obj
    group = mesh_obj.vertex_groups.new(name="wrist.R")
    group.add([0, 1, 2, 3], 1.0, "REPLACE")
    mod = mesh_obj.modifiers.new("Armature", "ARMATURE")
    mod.object = obj
    return mesh_obj


@pytest.fixture(scope="module")
def hand():
    """The keyed hand armature and what Blender evaluates: bone -> (T, 3, 3) rotation of
    the bone relative to its parent bone (armature space for the root bone)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    spec = mano_armature_spec("right")
    obj = create_armature(spec, "hand.R")
    obj.rotation_euler = (0.3, -0.2, 0.5)
    obj.location = (0.1, 0.2, 1.0)
    _add_extra_bone(obj)
    mesh = _add_skinned_mesh(obj)
    rotations = smooth_random_rotations(T, len(spec.bone_names))
    poses = BonePoses("right", spec.bone_names, rotations, None)
    write_bone_action(obj, poses, np.arange(FIRST, FIRST + T), "capture")
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 250
    scene.frame_set(5)
    bpy.context.view_layer.update()

    local = {name: np.empty((T, 3, 3)) for name in spec.bone_names}
    for t in range(T):
        scene.frame_set(FIRST + t)
        for name in spec.bone_names:
            pb = obj.pose.bones[name]
            m = np.array(pb.matrix)
            if pb.parent is not None:
                m = np.linalg.inv(np.array(pb.parent.matrix)) @ m
            local[name][t] = m[:3, :3]
    scene.frame_set(5)
    return {"obj": obj, "mesh": mesh, "spec": spec, "poses": poses, "local": local}


def test_blender_local_is_rest_offset_times_basis(hand):
    """The quantity compared below is ``parent_rest^-1 @ rest @ matrix_basis``: the keyed
    quaternions carried by the rest offsets (root bone: ``rest @ basis``)."""
    spec, poses = hand["spec"], hand["poses"]
    basis = quat_to_matrix(poses.rotations)  # (T, B, 3, 3)
    for k, name in enumerate(spec.bone_names):
        rest = spec.rest[k][:3, :3]
        p = int(spec.parents[k])
        offset = rest if p < 0 else np.linalg.inv(spec.rest[p][:3, :3]) @ rest
        err = np.degrees(angle_between(offset @ basis[:, k], hand["local"][name]))
        assert err.max() < 1e-3, (name, err.max())


@pytest.fixture(scope="module")
def exported(hand, tmp_path_factory):
    """preset name -> (file, ufbx take, assimp take)."""
    folder = tmp_path_factory.mktemp("fbx")
    out = {}
    for name, preset in PRESETS.items():
        path = export_fbx(folder / name, hand["obj"], preset, FIRST, FIRST + T - 1)
        out[name] = (path, read_ufbx(path), read_assimp(path))
    return out


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("reader", ["ufbx", "assimp"])
def test_bone_rotations_round_trip(preset, reader, hand, exported):
    settings = PRESETS[preset]
    take = exported[preset][1 if reader == "ufbx" else 2]
    correction = bone_axis_correction(settings.primary_bone_axis, settings.secondary_bone_axis)
    worst = 0.0
    for k, name in enumerate(hand["spec"].bone_names):
        expected = blender_to_fbx_local(hand["local"][name], correction,
                                        hand["spec"].parents[k] >= 0)  # fmt: skip
        got = quat_to_matrix(take.rotations[name])
        assert got.shape == (T, 3, 3), (name, got.shape)
        worst = max(worst, float(np.degrees(angle_between(expected, got)).max()))
    print(f"{preset} {reader}: max bone rotation error {worst:.2e} deg")
    assert worst <= MAX_ERROR_DEG, (preset, reader, worst)

    # The armature node carries the global axis conversion and the object's rotation.
    axes = axis_conversion("Y", "Z", settings.axis_forward, settings.axis_up)
    world = np.array(hand["obj"].matrix_world)[:3, :3]
    node = quat_to_matrix(take.rotations["hand.R"])
    assert np.degrees(angle_between(node, (axes @ world)[None])).max() < 1e-3

    if preset == BONE_AXES.name:  # the correction matters: without it the bones are off
        for k, name in enumerate(hand["spec"].bone_names):
            wrong = blender_to_fbx_local(hand["local"][name], np.eye(3),
                                         hand["spec"].parents[k] >= 0)  # fmt: skip
            got = quat_to_matrix(take.rotations[name])
            assert np.degrees(angle_between(wrong, got)).max() > 10.0


@pytest.mark.parametrize("preset", list(PRESETS))
def test_frame_range_in_file(preset, exported):
    _, by_ufbx, by_assimp = exported[preset]
    frames = np.arange(FIRST, FIRST + T, dtype=float)
    assert by_ufbx.take_range == pytest.approx((FIRST, FIRST + T - 1))
    np.testing.assert_allclose(by_ufbx.frames, frames)
    np.testing.assert_allclose(by_ufbx.key_frames, frames)  # a key on every frame
    # assimp rebases time to the take's start and does not report the start itself
    np.testing.assert_allclose(by_assimp.frames, frames - FIRST)
    np.testing.assert_allclose(by_assimp.key_frames, frames - FIRST)
    assert by_assimp.duration == pytest.approx(T - 1)
    assert by_ufbx.fps == by_assimp.fps == pytest.approx(bpy.context.scene.render.fps)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_no_leaf_bones_and_deform_only(preset, hand, exported):
    _, by_ufbx, by_assimp = exported[preset]
    for take in (by_ufbx, by_assimp):
        names = set(take.parents)
        assert not [n for n in names if n.endswith("_end")], (take.reader, sorted(names))
        assert set(hand["spec"].bone_names) <= names
        assert (EXTRA_BONE in names) == (not PRESETS[preset].use_armature_deform_only)
        assert "hand_mesh" in names


def test_leaf_bones_and_meshes_when_asked(hand, tmp_path):
    """Positive control for the leaf-bone check, and include_meshes=False."""
    leafy = dataclasses.replace(GENERIC, name="leafy", add_leaf_bones=True)
    path = export_fbx(tmp_path / "leafy.fbx", hand["obj"], leafy, FIRST, FIRST + T - 1,
                      include_meshes=False)  # fmt: skip
    names = set(read_ufbx(path).parents)
    assert "thumb3.R_end" in names and "index3.R_end" in names
    assert "hand_mesh" not in names


def test_scene_state_restored(hand, tmp_path):
    scene, view_layer = bpy.context.scene, bpy.context.view_layer
    mesh = hand["mesh"]
    for obj in view_layer.objects:
        obj.select_set(obj == mesh)
    view_layer.objects.active = mesh
    scene.frame_start, scene.frame_end = 100, 200  # the export range lies below this one
    scene.frame_set(150)
    path = export_fbx(tmp_path / "state", hand["obj"], UNITY, FIRST, FIRST + T - 1)
    assert path.name == "state.fbx" and path.is_file()
    assert (scene.frame_start, scene.frame_end, scene.frame_current) == (100, 200, 150)
    assert [o.name for o in view_layer.objects if o.select_get()] == ["hand_mesh"]
    assert view_layer.objects.active == mesh
    scene.frame_start, scene.frame_end = 1, 250
    scene.frame_set(5)


def test_no_armature_is_a_clear_error(hand, tmp_path):
    with pytest.raises(FbxExportError, match="nothing to export"):
        export_fbx(tmp_path / "a.fbx", None, GENERIC, 1, 10)
    with pytest.raises(FbxExportError, match="'hand_mesh' is a mesh, not an armature"):
        export_fbx(tmp_path / "a.fbx", hand["mesh"], GENERIC, 1, 10)
    assert not (tmp_path / "a.fbx").exists()


def test_bad_range_and_folder_are_clear_errors(hand, tmp_path):
    obj = hand["obj"]
    with pytest.raises(FbxExportError, match=r"frame range 20\.\.10 is empty"):
        export_fbx(tmp_path / "a.fbx", obj, GENERIC, 20, 10)
    with pytest.raises(FbxExportError, match="does not exist"):
        export_fbx(tmp_path / "missing" / "a.fbx", obj, GENERIC, 1, 10)
    (tmp_path / "file").write_text("")
    with pytest.raises(FbxExportError, match="does not exist"):
        export_fbx(tmp_path / "file" / "a.fbx", obj, GENERIC, 1, 10)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(FbxExportError, match="no permission"):
            export_fbx(locked / "a.fbx", obj, GENERIC, 1, 10)


def test_preset_validation():
    with pytest.raises(FbxExportError, match="axis_up"):
        FbxPreset("bad", "Bad", "forward and up on one axis", axis_forward="Z", axis_up="-Z")
    with pytest.raises(FbxExportError, match="mesh_smooth_type"):
        FbxPreset("bad", "Bad", "unknown smoothing", mesh_smooth_type="SOFT")
    assert GENERIC.operator_arguments()["bake_anim_simplify_factor"] == 0.0
    assert "name" not in GENERIC.operator_arguments()


def test_axis_conversion_matches_blender():
    from bpy_extras.io_utils import axis_conversion as blender_axis_conversion

    axes = ("X", "Y", "Z", "-X", "-Y", "-Z")
    for forward in axes:
        for up in axes:
            if forward[-1] == up[-1]:
                continue
            for args in ((forward, up, "X", "Y"), ("Y", "Z", forward, up)):
                np.testing.assert_allclose(
                    axis_conversion(*args), np.array(blender_axis_conversion(*args)),
                    atol=1e-12, err_msg=str(args),
                )  # fmt: skip
