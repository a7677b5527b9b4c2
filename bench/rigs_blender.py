"""Blender armatures from :class:`~handmocap.retarget.armature.ArmatureSpec` (tests and
benchmarks only): the test rigs of :mod:`bench.rigs` become real Blender rigs."""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from handmocap.retarget.armature import ArmatureSpec


def create_armature(spec: ArmatureSpec, name: str | None = None) -> bpy.types.Object:
    """A new armature object at the origin with ``spec``'s bones (rest matrices and lengths
    exactly, rolls included), linked to the current scene."""
    data = bpy.data.armatures.new(name or spec.name)
    obj = bpy.data.objects.new(name or spec.name, data)
    bpy.context.scene.collection.objects.link(obj)
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
    return obj
