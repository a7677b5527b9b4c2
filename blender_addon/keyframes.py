# SPDX-License-Identifier: GPL-3.0-or-later
"""Write solved bone rotations as an Action, many keys per call (docs/architecture.md,
"Keys in Blender").

Every F-curve is filled with ``keyframe_points.add(n)`` and ``foreach_set``, never a
per-frame ``keyframe_insert`` loop. Works with the slotted Actions of Blender 4.4+ (and
5.0, where ``Action.fcurves`` is gone) and with the plain Actions of 4.2/4.3.
"""

from __future__ import annotations

import bpy
import numpy as np

from handmocap.errors import CurveError, HandmocapError
from handmocap.retarget.solver import BonePoses

# Feature tests on RNA properties: ``hasattr(bpy.types.Action, "slots")`` is False even
# where actions have slots.
_ACTION_PROPS = bpy.types.Action.bl_rna.properties
HAS_SLOTS = "slots" in _ACTION_PROPS
_LINEAR = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value


class ActionWriter:
    """A new Action for ``obj`` (with its own slot on Blender 4.4+), F-curves added in bulk.

    ``assign=True`` makes it the object's active action at once; otherwise call
    :meth:`assign` or :meth:`push_to_nla` when the curves are written.
    """

    def __init__(self, obj: bpy.types.Object, name: str, assign: bool = True):
        self.obj = obj
        self.action = bpy.data.actions.new(name)
        self.slot = None
        self.channelbag = None
        if HAS_SLOTS:
            self.slot = self.action.slots.new(id_type=obj.id_type, name=obj.name)
            strip = self.action.layers.new("Layer").strips.new(type="KEYFRAME")
            self.channelbag = strip.channelbag(self.slot, ensure=True)
        if assign:
            self.assign()

    def assign(self) -> None:
        """Make the action the object's active one."""
        data = self.obj.animation_data or self.obj.animation_data_create()
        data.action = self.action
        if self.slot is not None:
            data.action_slot = self.slot  # assigning the action alone may leave no slot chosen

    def push_to_nla(self, track_name: str) -> bpy.types.NlaTrack:
        """Play the action from a new NLA track of its own, aligned with the scene frames."""
        data = self.obj.animation_data or self.obj.animation_data_create()
        track = data.nla_tracks.new()
        track.name = track_name
        start = round(self.action.frame_range[0])
        strip = track.strips.new(self.action.name, start, self.action)
        if self.slot is not None and "action_slot" in strip.bl_rna.properties:
            strip.action_slot = self.slot
        return track

    def curve(self, data_path: str, index: int, frames: np.ndarray, values: np.ndarray,
              group: str) -> bpy.types.FCurve:  # fmt: skip
        """One F-curve with linear keys at ``frames`` (n,) holding ``values`` (n,)."""
        fc = new_fcurve(self.action, self.channelbag, data_path, index, group)
        set_keys(fc, frames, values)
        return fc

    def bone_curves(self, poses: BonePoses, frames: np.ndarray) -> None:
        """Quaternion (and location) curves of every solved bone, keyed at ``frames`` (T,).
        Pose bones are switched to quaternion rotation. Raises CurveError when ``frames``
        does not match the poses, HandmocapError when a bone is gone from the armature."""
        frames = np.asarray(frames, dtype=np.float64)
        if frames.shape != (poses.rotations.shape[0],):
            raise CurveError(f"cannot key {poses.rotations.shape[0]} solved poses at "
                             f"{frames.size} scene frames: they must match one to one")  # fmt: skip
        for k, bone in enumerate(poses.bone_names):
            pb = self.obj.pose.bones.get(bone)
            if pb is None:
                raise HandmocapError(
                    f"{self.obj.name} has no bone {bone!r} any more (renamed or deleted since "
                    "the mapping was made): check the Rig panel's mapping and capture again"
                )
            pb.rotation_mode = "QUATERNION"
            path = pb.path_from_id("rotation_quaternion")
            for c in range(4):
                self.curve(path, c, frames, poses.rotations[:, k, c], bone)
            if poses.locations is not None and np.any(poses.locations[:, k]):
                path = pb.path_from_id("location")
                for c in range(3):
                    self.curve(path, c, frames, poses.locations[:, k, c], bone)


def new_fcurve(action: bpy.types.Action, channelbag, data_path: str, index: int,
               group: str) -> bpy.types.FCurve:  # fmt: skip
    """A new F-curve in ``group``: in ``channelbag`` (Blender 4.4+), else in the action."""
    if channelbag is None:
        return action.fcurves.new(data_path, index=index, action_group=group)
    fc = channelbag.fcurves.new(data_path, index=index)
    fc.group = channelbag.groups.get(group) or channelbag.groups.new(group)
    return fc


def set_keys(fc: bpy.types.FCurve, frames: np.ndarray, values: np.ndarray) -> None:
    """Replace all keys of ``fc`` with linear keys at ``frames`` (n,) holding ``values``."""
    n = len(frames)
    points = fc.keyframe_points
    if len(points):
        points.clear()
    co = np.empty(2 * n, dtype=np.float32)
    co[0::2] = frames
    co[1::2] = values
    points.add(n)
    points.foreach_set("co", co)
    points.foreach_set("interpolation", np.full(n, _LINEAR, dtype=np.int32))
    fc.update()


def get_keys(fc: bpy.types.FCurve) -> tuple[np.ndarray, np.ndarray]:
    """(frames (n,), values (n,)) of an F-curve's keys."""
    n = len(fc.keyframe_points)
    co = np.empty(2 * n, dtype=np.float32)
    fc.keyframe_points.foreach_get("co", co)
    return co[0::2].astype(np.float64), co[1::2].astype(np.float64)


def action_fcurves(action: bpy.types.Action):
    """The F-curves of an action written by :class:`ActionWriter`: ``action.fcurves`` on
    4.2/4.3; on 4.4+ those of its first channelbag, which holds them all, since the writer
    gives each action one slot, one layer and one strip."""
    if not HAS_SLOTS:
        return action.fcurves
    for layer in action.layers:
        for strip in layer.strips:
            for bag in strip.channelbags:
                return bag.fcurves
    return []


def write_bone_action(obj: bpy.types.Object, poses: BonePoses, frames: np.ndarray,
                      name: str) -> bpy.types.Action:  # fmt: skip
    """A new Action, made the object's active one, with every solved bone keyed at the
    scene ``frames`` (T,)."""
    writer = ActionWriter(obj, name)
    writer.bone_curves(poses, frames)
    return writer.action
