# SPDX-License-Identifier: GPL-3.0-or-later
"""The sidebar panel "Capture hands from video" (3D viewport, tab "Hand Mocap")."""

from __future__ import annotations

import json

import bpy

from .engine import MOTION_PRIOR
from .preferences import EngineCheck
from .rig_status import rig_fingerprint, rig_status


def _has_motion_prior(context) -> bool:
    """Whether the checked engine (of the interpreter in the preferences) reports the motion
    prior: its Smoothing controls are drawn only then."""
    from .capture_op import checked_engine

    info = checked_engine(context)
    return info is not None and info.has_stage(MOTION_PRIOR) and info.smoothing is not None


class _HandMocapPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Hand Mocap"


class HM_PT_capture(_HandMocapPanel, bpy.types.Panel):
    bl_idname = "HM_PT_capture"
    bl_label = "Capture hands from video"

    def draw(self, context):
        s = context.scene.handmocap
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(s, "source", expand=True)
        if s.source == "FILE":
            layout.prop(s, "video_path")
        else:
            layout.template_ID(s, "clip", open="clip.open")
        col = layout.column(align=True)
        col.prop(s, "frame_start")
        col.prop(s, "frame_end")
        col.prop(s, "stride")
        col.prop(s, "video_fps")
        layout.prop(s, "hands")
        layout.prop(s, "target")
        layout.prop(s, "wrist")
        layout.prop(s, "camera")
        layout.prop(s, "device")
        layout.prop(s, "scene_start")
        layout.prop(s, "use_nla")
        if _has_motion_prior(context):
            layout.prop(s, "prior_smoothing")
        info = EngineCheck.info
        if info is not None:
            # Only what this engine reports it has; stages it lacks get no control.
            stages = ", ".join(k.replace("_", " ") for k, v in info.stages.items() if v)
            layout.label(text=f"Engine: {info.summary()}; stages: {stages or 'none'}")
        else:
            layout.label(text=f"Engine: {EngineCheck.message}")
        row = layout.row()
        row.scale_y = 1.5
        row.operator("handmocap.capture", icon="REC")


def _rig_fingerprint(obj: bpy.types.Object, s) -> tuple:
    """What rig detection reads from ``obj`` and the panel settings ``s``, as a cheap key
    (see :func:`rig_fingerprint`): the custom mapping's rows when it is on, else the hand
    chosen for a one-hand rig."""
    if s.use_custom_mapping:
        mapping = "custom " + json.dumps([(r.side, r.role, r.bone) for r in s.mapping])
    else:
        mapping = "detected " + s.one_hand_side
    data = obj.data if obj.type == "ARMATURE" else None
    bones = [b.name for b in data.bones] if data is not None else []
    return rig_fingerprint(obj.name, data.name if data is not None else "", bones, mapping)


class HM_PT_rig(_HandMocapPanel, bpy.types.Panel):
    bl_idname = "HM_PT_rig"
    bl_label = "Rig"
    bl_parent_id = "HM_PT_capture"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        from .capture_op import resolve_mapping

        s = context.scene.handmocap
        layout = self.layout
        obj = s.target
        if obj is None:
            layout.label(text="Choose an armature above", icon="INFO")
            return
        layout.prop(s, "one_hand_side")
        status = rig_status(_rig_fingerprint(obj, s), lambda: resolve_mapping(obj, s).report())
        lines = layout
        if status.error:
            lines = layout.column()
            lines.alert = True
        for line in status.lines:
            lines.label(text=line)
        row = layout.row(align=True)
        row.operator("handmocap.mapping_from_rig", icon="BONE_DATA")
        row.operator("handmocap.mapping_load", icon="FILEBROWSER")
        row.operator("handmocap.mapping_save", icon="FILE_TICK")
        layout.prop(s, "use_custom_mapping")
        if s.use_custom_mapping:
            box = layout.box()
            for row_data in s.mapping:
                row = box.row(align=True)
                row.label(text=f"{row_data.side[0].upper()} {row_data.role}")
                row.prop_search(row_data, "bone", obj.data, "bones", text="")


class HM_PT_cleanup(_HandMocapPanel, bpy.types.Panel):
    bl_idname = "HM_PT_cleanup"
    bl_label = "Cleanup"
    bl_parent_id = "HM_PT_capture"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.handmocap
        layout = self.layout
        row = layout.row(align=True)
        row.prop(s, "range_start")
        row.prop(s, "range_end")
        row = layout.row(align=True)
        row.prop(s, "smooth_sigma")
        row.operator("handmocap.smooth_range")
        layout.operator("handmocap.fill_gap")
        layout.operator("handmocap.swap_hands")
        layout.operator("handmocap.recapture_range")
        if _has_motion_prior(context):
            row = layout.row(align=True)
            row.prop(s, "resolve_smoothing")
            row.operator("handmocap.resolve_prior")
        row = layout.row(align=True)
        row.prop(s, "reduce_tolerance")
        row.operator("handmocap.reduce_keys")
        layout.operator("handmocap.bake_fk")


class HM_PT_export(_HandMocapPanel, bpy.types.Panel):
    bl_idname = "HM_PT_export"
    bl_label = "Export"
    bl_parent_id = "HM_PT_capture"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.handmocap
        layout = self.layout
        layout.prop(s, "fbx_preset")
        layout.prop(s, "fbx_path")
        layout.operator("handmocap.export_fbx", icon="EXPORT")


CLASSES = (HM_PT_capture, HM_PT_rig, HM_PT_cleanup, HM_PT_export)
