# SPDX-License-Identifier: GPL-3.0-or-later
"""Write solved bone rotations as an Action, many keys per call (ARCHITECTURE section 4).

Every F-curve is filled with ``keyframe_points.add(n)`` and ``foreach_set``, never a
per-frame ``keyframe_insert`` loop. Works with the slotted Actions of Blender 4.4+ (and
5.0, where ``Action.fcurves`` is gone) and with the plain Actions of 4.2/4.3.
"""

from __future__ import annotations

import bpy
import numpy as np

from handmocap.retarget.solver import BonePoses

# Feature tests on RNA properties: ``hasattr(bpy.types.Action, "slots")`` is False even
# where actions have slots.
_ACTION_PROPS = bpy.types.Action.bl_rna.properties
HAS_SLOTS = "slots" in _ACTION_PROPS
_LINEAR = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value


class ActionWriter:
    """One new Action assigned to ``obj``, with F-curves added in bulk."""

    def __init__(self, obj: bpy.types.Object, name: str):
        self.obj = obj
        self.action = bpy.data.actions.new(name)
        data = obj.animation_data or obj.animation_data_create()
        self.channelbag = None
        if HAS_SLOTS:
            slot = self.action.slots.new(id_type=obj.id_type, name=obj.name)
            strip = self.action.layers.new("Layer").strips.new(type="KEYFRAME")
            self.channelbag = strip.channelbag(slot, ensure=True)
            data.action = self.action
            data.action_slot = slot  # assigning the action alone may leave no slot chosen
        else:
            data.action = self.action

    def _group(self, name: str):
        groups = self.channelbag.groups if self.channelbag is not None else self.action.groups
        return groups.get(name) or groups.new(name)

    def curve(self, data_path: str, index: int, frames: np.ndarray, values: np.ndarray,
              group: str) -> bpy.types.FCurve:  # fmt: skip
        """One F-curve with linear keys at ``frames`` (n,) holding ``values`` (n,)."""
        if self.channelbag is not None:
            fc = self.channelbag.fcurves.new(data_path, index=index)
            fc.group = self._group(group)
        else:
            fc = self.action.fcurves.new(data_path, index=index, action_group=group)
        n = len(frames)
        co = np.empty(2 * n, dtype=np.float32)
        co[0::2] = frames
        co[1::2] = values
        points = fc.keyframe_points
        points.add(n)
        points.foreach_set("co", co)
        points.foreach_set("interpolation", np.full(n, _LINEAR, dtype=np.int32))
        fc.update()
        return fc


def write_bone_action(obj: bpy.types.Object, poses: BonePoses, frames: np.ndarray,
                      name: str) -> bpy.types.Action:  # fmt: skip
    """A new Action on ``obj`` with every solved bone's quaternion (and location) keyed at
    the scene ``frames`` (T,). Pose bones are switched to quaternion rotation."""
    frames = np.asarray(frames, dtype=np.float64)
    if frames.shape != (poses.rotations.shape[0],):
        raise ValueError(f"{len(frames)} frames for {poses.rotations.shape[0]} solved poses")
    writer = ActionWriter(obj, name)
    for k, bone in enumerate(poses.bone_names):
        pb = obj.pose.bones[bone]
        pb.rotation_mode = "QUATERNION"
        path = pb.path_from_id("rotation_quaternion")
        for c in range(4):
            writer.curve(path, c, frames, poses.rotations[:, k, c], bone)
        if poses.locations is not None and np.any(poses.locations[:, k]):
            path = pb.path_from_id("location")
            for c in range(3):
                writer.curve(path, c, frames, poses.locations[:, k, c], bone)
    return writer.action
