"""A generated Rigify human rig as a .blend, for tests and the demo.

Rigify generation leaves bpy 4.5.15 hanging at interpreter exit (docs/architecture.md,
"Environment facts"), so it runs in a child process that saves the file and leaves with
``os._exit``. Rigify must be enabled with ``default_set=True``: without it its registration
fails and generation raises ``'RigifyParameters' object has no attribute
'make_custom_pivot'``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from handmocap.errors import HandmocapError

_SCRIPT = r"""
import os, sys, traceback
try:
    import bpy
    import addon_utils
    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable("rigify", default_set=True)
    bpy.ops.object.armature_human_metarig_add()
    metarig = bpy.context.active_object
    bpy.ops.pose.rigify_generate()
    rig = next(o for o in bpy.data.objects if o.type == "ARMATURE" and o is not metarig)
    rig.name = "rig"
    bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
    code = 0
except Exception:
    traceback.print_exc()
    code = 1
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""


def generate_rigify_human(path: Path, timeout_s: float = 300.0) -> Path:
    """Write a .blend with Rigify's human metarig and the rig generated from it (object
    "rig"). Takes about 5 s."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(path)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if proc.returncode != 0 or not path.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise HandmocapError(f"Rigify generation failed (exit {proc.returncode}):\n{tail}")
    return path
