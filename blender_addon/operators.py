# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators behind the panel's buttons other than Capture: the mapping editor, the
cleanup tools, re-capturing a range, re-solving it with the motion prior, and FBX export.
Each is a thin shell: it checks its inputs, calls plain functions, and reports one line. A
failure of any kind is one error line too, and the operators that edit animation put the
armature back first."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import StringProperty

from handmocap.errors import CurveError, HandmocapError
from handmocap.retarget.bone_names import ROLES
from handmocap.retarget.rig_profiles import mapping_from_json, mapping_to_json
from handmocap.retarget.timeline import FrameMap

from . import cleanup
from .apply_take import AnimationSnapshot, scene_fps
from .armature_io import detect_armature
from .capture_op import (
    CaptureOperatorBase,
    CaptureSession,
    PriorSession,
    report_failure,
    resolve_mapping,
    rollback,
)


def _settings(context):
    return context.scene.handmocap


def _target(context) -> bpy.types.Object:
    obj = _settings(context).target
    if obj is None or obj.type != "ARMATURE":
        raise HandmocapError("choose the armature in the panel first")
    return obj


def _fill_editor(settings, mapping) -> None:
    """The mapping editor's rows: every role of every hand, empty where no bone plays it."""
    settings.mapping.clear()
    for side, hand in sorted(mapping.hands.items()):
        for role in ROLES:
            row = settings.mapping.add()
            row.side, row.role, row.bone = side, role, hand.bones.get(role, "")
    settings.use_custom_mapping = True


def _with_advice(err: Exception) -> Exception:
    """``err``, or for a CurveError (the curve maths refusing the keys it read off the
    armature: a NaN typed in, a damaged action) a HandmocapError that says what to do."""
    if isinstance(err, CurveError):
        return HandmocapError(f"the hand's keys cannot be worked on ({err}): undo the edit "
                              "that damaged them, or capture the range again")  # fmt: skip
    return err


class _Reporting:
    """Run ``self.run(context)`` and report one line. A HandmocapError (a CurveError from
    the curve maths with what to do added) becomes one error line; any other exception (an
    OSError, a bug) too, its traceback printed to the console for a bug report. Operators
    with ``changes_animation`` snapshot the target armature first and put it back on
    failure."""

    changes_animation = False

    def execute(self, context):
        snapshot = None
        try:
            if self.changes_animation:
                obj = _settings(context).target
                if obj is not None and obj.type == "ARMATURE":
                    snapshot = AnimationSnapshot(obj, keys=True)
            message = self.run(context)
        except Exception as err:
            rollback(snapshot)
            report_failure(self, _with_advice(err))
            return {"CANCELLED"}
        self.report({"INFO"}, message)
        return {"FINISHED"}


class HM_OT_mapping_from_rig(_Reporting, bpy.types.Operator):
    """Fill the mapping editor with the bones detected on the armature (every role, empty
    where the rig has no bone)"""

    bl_idname = "handmocap.mapping_from_rig"
    bl_label = "Fill From Rig"
    bl_options = {"REGISTER", "UNDO"}

    def run(self, context) -> str:
        settings = _settings(context)
        obj = _target(context)
        mapping = detect_armature(obj, settings.rig_side())
        _fill_editor(settings, mapping)
        return mapping.report().replace("\n", " ")


class HM_OT_mapping_save(_Reporting, bpy.types.Operator):
    """Save the mapping in use to a JSON file"""

    bl_idname = "handmocap.mapping_save"
    bl_label = "Save Mapping"

    filepath: StringProperty(subtype="FILE_PATH")

    def invoke(self, context, event):
        self.filepath = bpy.path.abspath("//hand_mapping.json")
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def run(self, context) -> str:
        mapping = resolve_mapping(_target(context), _settings(context))
        path = Path(bpy.path.abspath(self.filepath))
        try:
            path.write_text(mapping_to_json(mapping))
        except OSError as err:
            raise HandmocapError(f"cannot write {path}: {err.strerror or err}") from err
        return f"mapping saved to {path}"


class HM_OT_mapping_load(_Reporting, bpy.types.Operator):
    """Load a mapping from a JSON file into the mapping editor"""

    bl_idname = "handmocap.mapping_load"
    bl_label = "Load Mapping"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def run(self, context) -> str:
        obj = _target(context)
        path = Path(bpy.path.abspath(self.filepath))
        try:
            text = path.read_text()
        except OSError as err:
            raise HandmocapError(f"cannot read {path}: {err.strerror or err}") from err
        mapping = mapping_from_json(text, [b.name for b in obj.data.bones], str(path))
        _fill_editor(_settings(context), mapping)
        return f"mapping loaded from {path}"


class HM_OT_smooth_range(_Reporting, bpy.types.Operator):
    """Smooth the captured rotations on the frame range with the strength set below"""

    bl_idname = "handmocap.smooth_range"
    bl_label = "Re-smooth Range"
    bl_options = {"REGISTER", "UNDO"}
    changes_animation = True

    def run(self, context) -> str:
        s = _settings(context)
        n = cleanup.smooth_range(_target(context), s.range_start, s.range_end, s.smooth_sigma)
        return f"smoothed {n} bones on frames {s.range_start}-{s.range_end}"


class HM_OT_fill_gap(_Reporting, bpy.types.Operator):
    """Replace the frame range (a stretch where the hand was lost) by a smooth bridge from
    the frames around it"""

    bl_idname = "handmocap.fill_gap"
    bl_label = "Fill Gap"
    bl_options = {"REGISTER", "UNDO"}
    changes_animation = True

    def run(self, context) -> str:
        s = _settings(context)
        n = cleanup.fill_range(_target(context), s.range_start, s.range_end)
        return f"filled frames {s.range_start}-{s.range_end} on {n} bones"


class HM_OT_swap_hands(_Reporting, bpy.types.Operator):
    """Exchange the left and right hands' animation on the frame range"""

    bl_idname = "handmocap.swap_hands"
    bl_label = "Swap Hands"
    bl_options = {"REGISTER", "UNDO"}
    changes_animation = True

    def run(self, context) -> str:
        s = _settings(context)
        obj = _target(context)
        n = cleanup.swap_hands(obj, resolve_mapping(obj, s), s.range_start, s.range_end)
        return f"swapped {n} bone pairs on frames {s.range_start}-{s.range_end}"


class HM_OT_reduce_keys(_Reporting, bpy.types.Operator):
    """Remove keys while keeping every bone within the tolerance (degrees) of the animation"""

    bl_idname = "handmocap.reduce_keys"
    bl_label = "Reduce Keys"
    bl_options = {"REGISTER", "UNDO"}
    changes_animation = True

    def run(self, context) -> str:
        tol = _settings(context).reduce_tolerance
        before, after, worst = cleanup.reduce_keys(_target(context), tol)
        share = 100.0 * (1 - after / before) if before else 0.0
        return f"{before} -> {after} keys ({share:.0f}% removed), worst {worst:.2f} deg"


class HM_OT_bake_fk(_Reporting, bpy.types.Operator):
    """Key Rigify's FK controls (arm, hand, fingers) with the pose the rig shows on the
    frame range, so the arm can be switched to FK"""

    bl_idname = "handmocap.bake_fk"
    bl_label = "Bake to FK Controls"
    bl_options = {"REGISTER", "UNDO"}
    changes_animation = True

    def run(self, context) -> str:
        s = _settings(context)
        n = cleanup.bake_to_fk(_target(context), s.range_start, s.range_end, context.scene)
        return f"baked {n} FK controls on frames {s.range_start}-{s.range_end}"


class HM_OT_recapture_range(CaptureOperatorBase, bpy.types.Operator):
    """Run the engine again on the video frames behind the frame range only, and replace
    the keys there"""

    bl_idname = "handmocap.recapture_range"
    bl_label = "Re-capture Range"
    edits_existing_keys = True

    def make_session(self, context) -> CaptureSession:
        obj = _target(context)
        actions = cleanup.handmocap_actions(obj)
        if not actions:
            raise HandmocapError(f"{obj.name} has no captured hands; capture first")
        s = _settings(context)
        first = next(iter(actions.values()))  # the frame map apply_take stored on it
        fps = scene_fps(context.scene)
        frame_map = FrameMap(
            scene_start=int(first.get("hm_scene_start", s.scene_start)), scene_fps=fps,
            video_start=int(first.get("hm_video_start", s.frame_start)),
            video_fps=float(first.get("hm_video_fps", fps)),
        )  # fmt: skip
        video_range = frame_map.video_range(s.range_start, s.range_end)
        self._replace = (s.range_start, s.range_end, dict(actions))
        return CaptureSession(context, video_range=video_range, scene_start=s.range_start)

    def after_apply(self, context) -> None:
        a, b, old = self._replace
        cleanup.merge_new_takes(_target(context), old, a, b)


class HM_OT_resolve_prior(CaptureOperatorBase, bpy.types.Operator):
    """Solve the motion prior again, with the smoothing set here, on the take the hands were
    captured from (no video needed), and replace the keys on the frame range only; the new
    take is written next to the old one (Esc cancels)"""

    bl_idname = "handmocap.resolve_prior"
    bl_label = "Re-solve with Motion Prior"
    edits_existing_keys = True
    activity = "Motion prior"

    def make_session(self, context) -> CaptureSession:
        obj = _target(context)
        actions = cleanup.handmocap_actions(obj)
        if not actions:
            raise HandmocapError(f"{obj.name} has no handmocap Actions (no captured hands) to "
                                 "re-solve; capture first")  # fmt: skip
        s = _settings(context)
        if s.range_end < s.range_start:
            raise HandmocapError(f"the frame range {s.range_start}-{s.range_end} is empty")
        take = cleanup.recorded_take(obj, actions)
        first = next(iter(actions.values()))  # where apply_take put the take's first frame
        self._replace = (s.range_start, s.range_end, dict(actions))
        return PriorSession(context, take, s.resolve_smoothing,
                            scene_start=int(first.get("hm_scene_start", s.scene_start)),
                            sides=tuple(actions))  # fmt: skip

    def after_apply(self, context) -> None:
        a, b, old = self._replace
        cleanup.merge_new_takes(_target(context), old, a, b)

    def done_text(self, result) -> str:
        (a, b, _), session = self._replace, self._session
        text = (f"re-solved frames {a}-{b} with the motion prior (smoothing "
                f"{session.smoothing:g}); new take {session.take_path.name}")  # fmt: skip
        return text + ("" if not result.messages else " (" + "; ".join(result.messages) + ")")


class HM_OT_export_fbx(_Reporting, bpy.types.Operator):
    """Export the armature and its animation as FBX with the chosen preset"""

    bl_idname = "handmocap.export_fbx"
    bl_label = "Export FBX"

    def run(self, context) -> str:
        from .fbx_export import GENERIC, UNITY, UNREAL, export_fbx

        s = _settings(context)
        scene = context.scene
        preset = {"UNITY": UNITY, "UNREAL": UNREAL, "GENERIC": GENERIC}[s.fbx_preset]
        path = Path(bpy.path.abspath(s.fbx_path))
        export_fbx(path, _target(context), preset, scene.frame_start, scene.frame_end)
        return f"exported {path}"


CLASSES = (HM_OT_mapping_from_rig, HM_OT_mapping_save, HM_OT_mapping_load, HM_OT_smooth_range,
           HM_OT_fill_gap, HM_OT_swap_hands, HM_OT_reduce_keys, HM_OT_bake_fk,
           HM_OT_recapture_range, HM_OT_resolve_prior, HM_OT_export_fbx)  # fmt: skip
