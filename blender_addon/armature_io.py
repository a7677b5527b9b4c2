# SPDX-License-Identifier: GPL-3.0-or-later
"""Armatures in and out of Blender: read an armature into an ArmatureSpec, put solved
rotations on its pose bones. The maths lives in handmocap.retarget; this is the thin layer
that turns Blender data into plain arrays and back."""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from handmocap.retarget.armature import ArmatureSpec, RigError
from handmocap.retarget.bone_names import parse_bone_name
from handmocap.retarget.rig_profiles import RigMapping, detect_rig
from handmocap.retarget.solver import BonePoses


def _require_armature(obj: bpy.types.Object | None) -> bpy.types.Object:
    if obj is None or obj.type != "ARMATURE":
        kind = "nothing" if obj is None else f"{obj.name!r} (a {obj.type.lower()})"
        raise RigError(f"select an armature to capture onto; the target is {kind}")
    return obj


def read_armature_spec(obj: bpy.types.Object) -> ArmatureSpec:
    """The armature's bones at rest, in armature space (units of the armature data)."""
    obj = _require_armature(obj)
    bones = obj.data.bones
    names = tuple(b.name for b in bones)
    index = {n: i for i, n in enumerate(names)}
    n = len(names)
    rest = np.empty(n * 16, dtype=np.float32)
    bones.foreach_get("matrix_local", rest)
    # foreach_get flattens matrices column by column
    rest = rest.reshape(n, 4, 4).transpose(0, 2, 1).astype(np.float64)
    lengths = np.empty(n, dtype=np.float32)
    bones.foreach_get("length", lengths)
    parents = np.array([index[b.parent.name] if b.parent else -1 for b in bones], dtype=int)
    return ArmatureSpec(obj.name, names, parents, rest, lengths.astype(np.float64))


def current_pose_matrices(obj: bpy.types.Object) -> np.ndarray:
    """(N, 4, 4) armature-space pose matrices as the rig stands now (``pose_bone.matrix``),
    in the order of ``obj.data.bones``."""
    pose_bones = obj.pose.bones
    return np.array([np.array(pose_bones[b.name].matrix) for b in obj.data.bones], dtype=float)


def guess_side(obj: bpy.types.Object) -> str | None:
    """The hand a one-hand armature holds, read from its object or data name."""
    for name in (obj.name, obj.data.name):
        side = parse_bone_name(name).side
        if side:
            return side
    return None


def detect_armature(obj: bpy.types.Object, side: str | None = None) -> RigMapping:
    """The rig profile and hand bones of an armature (RigError says what was looked for)."""
    obj = _require_armature(obj)
    return detect_rig([b.name for b in obj.data.bones], obj.name, side or guess_side(obj))


def camera_to_armature(obj: bpy.types.Object, camera_to_world: np.ndarray) -> np.ndarray:
    """(3, 3) rotation from OpenCV camera axes to this armature's axes, given where the
    camera's axes point in the world (e.g. CAMERA_IN_FRONT)."""
    world = np.array(obj.matrix_world, dtype=np.float64)[:3, :3]
    u, _, vt = np.linalg.svd(world)  # drop the object's scale
    return (u @ vt).T @ camera_to_world


def units_per_metre(obj: bpy.types.Object, scene: bpy.types.Scene) -> float:
    """Armature units per metre, from the object's scale and the scene's unit scale."""
    scale = float(np.cbrt(abs(np.linalg.det(np.array(obj.matrix_world)[:3, :3]))))
    unit = scene.unit_settings.scale_length if scene.unit_settings.system != "NONE" else 1.0
    return 1.0 / (scale * unit)


def set_quaternion_mode(obj: bpy.types.Object, bone_names: tuple[str, ...]) -> dict[str, str]:
    """Switch these pose bones to quaternion rotation; returns their previous modes (to
    restore them when a capture is cancelled)."""
    previous = {}
    for name in bone_names:
        pb = obj.pose.bones[name]
        previous[name] = pb.rotation_mode
        if pb.rotation_mode != "QUATERNION":
            pb.rotation_mode = "QUATERNION"
    return previous


def apply_pose(obj: bpy.types.Object, poses: BonePoses, frame_index: int) -> None:
    """Put one solved frame on the pose bones (no keyframes)."""
    set_quaternion_mode(obj, poses.bone_names)
    for k, name in enumerate(poses.bone_names):
        pb = obj.pose.bones[name]
        pb.rotation_quaternion = poses.rotations[frame_index, k].tolist()
        if poses.locations is not None:
            pb.location = poses.locations[frame_index, k].tolist()


def create_armature(
    spec: ArmatureSpec, name: str | None = None, collection: bpy.types.Collection | None = None
) -> bpy.types.Object:
    """A new armature object with ``spec``'s bones (rest matrices, rolls and lengths exactly),
    linked to ``collection`` (default: the scene's)."""
    data = bpy.data.armatures.new(name or spec.name)
    obj = bpy.data.objects.new(name or spec.name, data)
    (collection or bpy.context.scene.collection).objects.link(obj)
    previous = bpy.context.view_layer.objects.active
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    edit = data.edit_bones
    for i, bone in enumerate(spec.bone_names):
        eb = edit.new(bone)
        eb.head = (0.0, 0.0, 0.0)
        eb.tail = (0.0, 1.0, 0.0)
        eb.matrix = Matrix(np.asarray(spec.rest[i]).tolist())
        eb.length = float(spec.lengths[i])
    for i, bone in enumerate(spec.bone_names):
        p = int(spec.parents[i])
        if p >= 0:
            edit[bone].parent = edit[spec.bone_names[p]]
            edit[bone].use_connect = False
    bpy.ops.object.mode_set(mode="OBJECT")
    bpy.context.view_layer.objects.active = previous
    return obj
