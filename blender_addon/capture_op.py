# SPDX-License-Identifier: GPL-3.0-or-later
"""The Capture button: a modal operator around a :class:`CaptureSession`.

The engine runs as a child process; a timer polls it, its progress drives Blender's
progress bar and status text, Esc kills it. The scene is only touched once the take is in,
and :func:`~.apply_take.apply_take` undoes its own partial work on failure, so a cancelled
or failed capture leaves the scene as it was. Without a window (background mode, scripts)
the same operator runs the session to the end before returning.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import bpy

from handmocap.errors import HandmocapError
from handmocap.inference.take import load_take
from handmocap.retarget.armature import RigError
from handmocap.retarget.rig_profiles import MAPPING_FORMAT, RigMapping, mapping_from_json

from .apply_take import ApplyResult, apply_take
from .armature_io import detect_armature
from .engine import CaptureRequest, EngineRun
from .preferences import addon_prefs


def resolve_mapping(obj: bpy.types.Object | None, settings) -> RigMapping:
    """The rig's hands: the mapping editor's rows when 'Custom mapping' is on, else the
    detected profile. Raises RigError with what to do."""
    if obj is None or obj.type != "ARMATURE":
        raise RigError("choose the armature to capture onto (Armature field of the panel)")
    if settings.use_custom_mapping:
        rows = [r for r in settings.mapping if r.bone]
        if not rows:
            raise RigError("the custom mapping is empty: fill it from the rig or turn it off")
        hands: dict[str, dict[str, str]] = {}
        for r in rows:
            hands.setdefault(r.side, {})[r.role] = r.bone
        text = json.dumps({"format": MAPPING_FORMAT, "version": 1, "label": "Custom mapping",
                           "hands": hands})  # fmt: skip
        return mapping_from_json(text, [b.name for b in obj.data.bones], "the custom mapping")
    side = None if settings.one_hand_side == "AUTO" else settings.one_hand_side.lower()
    return detect_armature(obj, side)


def take_folder() -> Path:
    """``//handmocap_takes`` next to the saved .blend, else a temporary folder."""
    if bpy.data.filepath:
        folder = Path(bpy.path.abspath("//handmocap_takes"))
    else:
        folder = Path(tempfile.gettempdir()) / "handmocap_takes"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class CaptureSession:
    """Validate the panel's inputs, start the engine, and apply the take when it is in.

    ``video_range`` overrides the panel's frame range (video frames, end exclusive);
    ``scene_start`` overrides where the take lands (re-capturing a range).
    """

    def __init__(self, context: bpy.types.Context, video_range: tuple[int, int] | None = None,
                 scene_start: int | None = None):  # fmt: skip
        scene = context.scene
        self.settings = settings = scene.handmocap
        prefs = addon_prefs(context)
        self.target = settings.target
        self.mapping = resolve_mapping(self.target, settings)
        video = settings.video()
        if video is None:
            raise HandmocapError("choose a video file (or a movie clip) to capture")
        if not video.exists():
            raise HandmocapError(f"video not found: {video}")
        if video_range is None:
            start = settings.frame_start
            end = settings.frame_end + 1 if settings.frame_end else None
        else:
            start, end = video_range
        if end is not None and end <= start:
            raise HandmocapError(f"the frame range {start}..{end - 1} is empty")
        self.scene_start = settings.scene_start if scene_start is None else scene_start
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.take_name = f"{video.stem}_{stamp}"
        device = prefs.default_device if settings.device == "PREFERENCES" else settings.device
        request = CaptureRequest(
            python=bpy.path.abspath(prefs.engine_python), video=video,
            take_path=take_folder() / f"{self.take_name}.npz", device=device.lower(),
            start=start, end=end, stride=settings.stride,
            max_hands=2 if settings.hands == "BOTH" else 1,
            mano_dir=Path(bpy.path.abspath(prefs.mano_dir)) if prefs.mano_dir else None,
        )  # fmt: skip
        self.run = EngineRun(request)

    def poll(self) -> bool:
        return self.run.poll()

    def wait(self, timeout_s: float = 3600.0) -> None:
        end = time.monotonic() + timeout_s
        while not self.poll():
            if time.monotonic() > end:
                self.run.cancel()
                raise HandmocapError(f"the capture took longer than {timeout_s:.0f} s")
            time.sleep(0.05)

    def finish(self, context: bpy.types.Context) -> ApplyResult:
        """Put the finished take on the armature (raises HandmocapError on failure)."""
        if self.run.error:
            raise HandmocapError(self.run.error)
        take_path = self.run.take_path
        take = load_take(take_path)
        if not take.tracks:
            raise HandmocapError(f"no hands were found in {self.run.request.video}; nothing "
                                 "was keyed")  # fmt: skip
        settings = replace(self.settings.apply_settings(self.take_name, str(take_path)),
                           scene_start=self.scene_start)  # fmt: skip
        result = apply_take(self.target, take, self.mapping, settings, context.scene)
        if not result.actions:
            raise HandmocapError("; ".join(result.messages) or "nothing was keyed")
        self.settings.last_take = str(take_path)
        return result


def summary(result: ApplyResult) -> str:
    hands = ", ".join(f"{side} {n} bones" for side, n in sorted(result.keyed_bones.items()))
    lo, hi = result.frame_range or (0, 0)
    text = f"captured {hands}, frames {lo}-{hi}"
    return text + ("" if not result.messages else " (" + "; ".join(result.messages) + ")")


class CaptureOperatorBase:
    """The modal logic shared by Capture and Re-capture Range (Blender does not allow one
    registered operator class to subclass another, hence a plain mixin)."""

    bl_options = {"REGISTER", "UNDO"}

    _session: CaptureSession | None = None
    _timer = None

    def _start(self, context) -> bool:
        try:
            self._session = self.make_session(context)
        except HandmocapError as err:
            self.report({"ERROR"}, str(err))
            return False
        return True

    def make_session(self, context) -> CaptureSession:
        return CaptureSession(context)

    def execute(self, context):
        if not self._start(context):
            return {"CANCELLED"}
        try:
            self._session.wait()
        except HandmocapError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        return self._finish(context)

    def invoke(self, context, event):
        if context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.progress_begin(0, 1000)
        wm.modal_handler_add(self)
        context.workspace.status_text_set("Hand capture: starting the engine (Esc cancels)")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC":
            self._session.run.cancel()
            self._end_ui(context)
            self.report({"WARNING"}, "capture cancelled; the scene is unchanged")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        done = self._session.poll()
        run = self._session.run
        context.window_manager.progress_update(int(1000 * run.fraction))
        context.workspace.status_text_set(f"Hand capture: {run.status} (Esc cancels)")
        if not done:
            return {"RUNNING_MODAL"}
        self._end_ui(context)
        return self._finish(context)

    def _finish(self, context):
        try:
            result = self._session.finish(context)
        except HandmocapError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, summary(result))
        return {"FINISHED"}

    def _end_ui(self, context) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        context.workspace.status_text_set(None)

    def cancel(self, context):  # Blender closing the window while we run
        if self._session is not None:
            self._session.run.cancel()
        self._end_ui(context)


class HM_OT_capture(CaptureOperatorBase, bpy.types.Operator):
    """Run the engine on the video and key the captured hands onto the armature (Esc
    cancels)"""

    bl_idname = "handmocap.capture"
    bl_label = "Capture Hands"


CLASSES = (HM_OT_capture,)
