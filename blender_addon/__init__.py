# SPDX-License-Identifier: GPL-3.0-or-later
"""Hand Mocap: capture finger and wrist animation from ordinary video onto any rig.

The panel lives in the 3D viewport's sidebar (tab "Hand Mocap"). The capture engine runs in
its own Python as a child process (see engine.py); the retargeting maths is the plain-numpy
``handmocap.retarget`` package bundled as a wheel.
"""

from __future__ import annotations

from . import capture_op, operators, panel, preferences, properties

_CLASSES = (
    *properties.CLASSES,
    *preferences.CLASSES,
    *capture_op.CLASSES,
    *operators.CLASSES,
    *panel.CLASSES,
)


def register() -> None:
    import bpy

    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    properties.register()


def unregister() -> None:
    import bpy

    properties.unregister()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
