# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on preferences: where the engine lives, the optional MANO folder, the default device,
a check of the engine that runs in the background (the UI never waits on it), and Set Up
Engine, which makes the engine's environment from Blender's own Python (engine_setup.py does
the work; this file only starts it, polls it from a timer and stores the result)."""

from __future__ import annotations

import shlex
import sys
import threading
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

from .engine import EngineError, EngineInfo, default_engine_python, query_engine
from .engine_setup import ONLINE_ACCESS_OFF, SetupError, SetupInputs, SetupRunner, bundled_inputs

ADDON_DIR = Path(__file__).resolve().parent


def addon_prefs(context: bpy.types.Context | None = None) -> HM_Preferences:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


class EngineCheck:
    """The latest engine check, run in a thread; the timer copies it into the UI."""

    lock = threading.Lock()
    running = False
    info: EngineInfo | None = None
    message = "not checked yet"

    @classmethod
    def start(cls, python: str, device: str) -> bool:
        with cls.lock:
            if cls.running:
                return False
            cls.running = True
            cls.message = "checking the engine..."
        threading.Thread(target=cls._run, args=(python, device), daemon=True).start()
        return True

    @classmethod
    def _run(cls, python: str, device: str) -> None:
        try:
            info = query_engine(python, device)
            problems = info.problems()
            message = info.summary() + ("" if not problems else ": " + "; ".join(problems))
        except EngineError as err:
            info, message = None, str(err)
        with cls.lock:
            cls.info, cls.message, cls.running = info, message, False

    @classmethod
    def wait(cls, timeout_s: float = 300.0) -> None:
        """Block until the running check ends (scripts and tests only)."""
        import time

        end = time.monotonic() + timeout_s
        while cls.running and time.monotonic() < end:
            time.sleep(0.05)


def _redraw_when_checked() -> float | None:
    if EngineCheck.running:
        return 0.25
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            area.tag_redraw()
    return None


class HM_OT_check_engine(bpy.types.Operator):
    """Ask the engine for its version, the device it would run on and whether its models
    are built"""

    bl_idname = "handmocap.check_engine"
    bl_label = "Check Engine"

    def execute(self, context):
        prefs = addon_prefs(context)
        if not EngineCheck.start(prefs.engine_python, prefs.default_device.lower()):
            self.report({"INFO"}, "an engine check is already running")
            return {"CANCELLED"}
        if not bpy.app.background:
            bpy.app.timers.register(_redraw_when_checked, first_interval=0.25)
        return {"FINISHED"}


class EngineSetup:
    """The one Set Up Engine run of this Blender session, polled by :func:`_poll_setup`."""

    runner = SetupRunner()
    outcome = ""  # the last run's result, shown in the preferences


def _tag_redraw_all() -> None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            area.tag_redraw()


def _status_text(text: str | None) -> None:
    for window in bpy.context.window_manager.windows:
        if window.workspace is not None:
            window.workspace.status_text_set(text)


def _poll_setup() -> float | None:
    """Timer: show the set-up's progress; when it ends, store the new interpreter (only on
    success) and check it."""
    progress = EngineSetup.runner.snapshot()
    if progress.running:
        _status_text(progress.summary() + " (Cancel Set-Up in the add-on's preferences)")
        _tag_redraw_all()
        return 0.5
    _status_text(None)
    EngineSetup.outcome = progress.summary()
    try:
        prefs = addon_prefs()
    except KeyError:  # the add-on was disabled meanwhile
        return None
    if progress.python and progress.error is None:
        prefs.engine_python = progress.python
        EngineCheck.start(progress.python, prefs.default_device.lower())
        if not bpy.app.background:
            bpy.app.timers.register(_redraw_when_checked, first_interval=0.25)
    _tag_redraw_all()
    return None


def setup_inputs(prefs: HM_Preferences) -> SetupInputs:
    """What Set Up Engine is given: Blender's own Python, the extension's user folder, and
    the engine wheel and lock bundled in the zip's ``engine/`` folder."""
    wheel, lock = bundled_inputs(ADDON_DIR)
    target = Path(bpy.utils.extension_path_user(__package__, create=True))
    return SetupInputs(
        base_python=sys.executable, target=target, wheel=wheel, requirements=lock,
        accelerator=prefs.engine_accelerator.lower(),
        pip_args=tuple(shlex.split(prefs.engine_pip_args, posix=sys.platform != "win32")),
        online_access=bool(getattr(bpy.app, "online_access", True)),
    )  # fmt: skip


class HM_OT_setup_engine(bpy.types.Operator):
    """Create the engine's own Python environment from Blender's Python: download its
    packages (pinned), build the hand models, and point Engine Python at it"""

    bl_idname = "handmocap.setup_engine"
    bl_label = "Set Up Engine"

    def execute(self, context):
        prefs = addon_prefs(context)
        if not getattr(bpy.app, "online_access", True):
            self.report({"ERROR"}, ONLINE_ACCESS_OFF)
            EngineSetup.outcome = ONLINE_ACCESS_OFF
            return {"CANCELLED"}
        try:
            plan = EngineSetup.runner.start(setup_inputs(prefs))
        except (SetupError, ValueError) as err:
            self.report({"ERROR"}, str(err))
            EngineSetup.outcome = str(err)
            return {"CANCELLED"}
        EngineSetup.outcome = ""
        self.report({"INFO"}, f"setting up the engine for {plan.accelerator} "
                    f"({plan.accelerator_reason}); pip index: {plan.index_reason}")  # fmt: skip
        bpy.app.timers.register(_poll_setup, first_interval=0.25)
        return {"FINISHED"}


class HM_OT_cancel_engine_setup(bpy.types.Operator):
    """Stop the running engine set-up; the engine set up before (if any) stays"""

    bl_idname = "handmocap.cancel_engine_setup"
    bl_label = "Cancel Set-Up"

    @classmethod
    def poll(cls, context):
        return EngineSetup.runner.running

    def execute(self, context):
        EngineSetup.runner.cancel()
        return {"FINISHED"}


class HM_Preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_python: StringProperty(
        name="Engine Python", subtype="FILE_PATH", default=default_engine_python(ADDON_DIR),
        description="The python of the environment where handmocap's engine is installed "
        "(created by 'python3 build.py setup': <handmocap>/.venv/bin/python)",
    )  # fmt: skip
    mano_dir: StringProperty(
        name="MANO folder", subtype="DIR_PATH", default="",
        description="Optional: a folder with your MANO_RIGHT.pkl and MANO_LEFT.pkl (licensed "
        "separately); empty uses the open hand model",
    )  # fmt: skip
    default_device: EnumProperty(
        name="Device", default="AUTO",
        items=(("AUTO", "Auto", "GPU when there is one, else CPU"),
               ("CUDA", "GPU (CUDA)", "Fail if no CUDA GPU can run the engine"),
               ("CPU", "CPU", "Always run on the CPU")),
    )  # fmt: skip

    engine_accelerator: EnumProperty(
        name="Accelerator", default="AUTO",
        description="Which torch Set Up Engine installs",
        items=(("AUTO", "Auto", "CUDA when an NVIDIA driver is found, else CPU"),
               ("CPU", "CPU", "The CPU build of torch (smaller download)"),
               ("CUDA", "NVIDIA GPU (CUDA)", "The CUDA build; set-up fails if the GPU cannot "
                "run the engine")),
    )  # fmt: skip
    engine_pip_args: StringProperty(
        name="Extra pip arguments", default="",
        description="Optional: pip options that replace the default package index of the "
        "accelerator, e.g. '--index-url https://mirror.example/simple' for a studio mirror",
    )  # fmt: skip

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "engine_python")
        layout.prop(self, "mano_dir")
        layout.prop(self, "default_device")
        row = layout.row()
        row.operator(HM_OT_check_engine.bl_idname, icon="FILE_REFRESH")
        row.label(text=EngineCheck.message)
        self.draw_setup(layout.box())

    def draw_setup(self, box) -> None:
        box.label(text="Set up the engine: downloads its packages into Blender's user folder")
        box.prop(self, "engine_accelerator")
        box.prop(self, "engine_pip_args")
        progress = EngineSetup.runner.snapshot()
        row = box.row()
        row.operator(HM_OT_setup_engine.bl_idname, icon="IMPORT")
        row.operator(HM_OT_cancel_engine_setup.bl_idname, icon="CANCEL")
        if progress.running:
            box.label(text=f"{progress.step}: {100 * progress.fraction:.0f}%")
            box.label(text=f"accelerator {progress.accelerator}: {progress.accelerator_reason}")
        elif EngineSetup.outcome:
            box.label(text=EngineSetup.outcome, icon="ERROR" if progress.error else "CHECKMARK")
        if progress.running or progress.error:
            column = box.column(align=True)
            for line in progress.log_tail[-8:]:
                column.label(text=line[:160])


CLASSES = (HM_OT_check_engine, HM_OT_setup_engine, HM_OT_cancel_engine_setup, HM_Preferences)
