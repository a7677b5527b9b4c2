# SPDX-License-Identifier: GPL-3.0-or-later
"""Add-on preferences: where the engine lives, the optional MANO folder, the default device,
and a check of the engine that runs in the background (the UI never waits on it)."""

from __future__ import annotations

import threading
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

from .engine import EngineError, EngineInfo, default_engine_python, query_engine

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

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "engine_python")
        layout.prop(self, "mano_dir")
        layout.prop(self, "default_device")
        row = layout.row()
        row.operator(HM_OT_check_engine.bl_idname, icon="FILE_REFRESH")
        row.label(text=EngineCheck.message)


CLASSES = (HM_OT_check_engine, HM_Preferences)
