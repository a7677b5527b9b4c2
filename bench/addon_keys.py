"""What "Reduce keys" leaves of a take keyed onto the WebXR hand rig, through the add-on's
own code (apply_take, cleanup.reduce_keys) in Blender's Python module."""

from __future__ import annotations

from pathlib import Path

import bpy

from blender_addon.apply_take import ApplySettings, apply_take
from blender_addon.armature_io import detect_armature
from blender_addon.cleanup import reduce_keys
from handmocap.models.webxr_asset import ensure_webxr_hand
from handmocap.models.webxr_hand import load_webxr_hand
from handmocap.retarget.solver import WristMode
from handmocap.take import load_take

from .synth import blender_scene as bs


def reduced_share(take_path: Path, tolerance_deg: float = 1.0) -> tuple[int, int]:
    """(keys before, keys after) "Reduce keys" at ``tolerance_deg`` on the take's first
    hand keyed onto a WebXR hand of its side (every keyed bone, rotation and location)."""
    take = load_take(take_path)
    bs.reset_blender()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = round(take.header.fps), 1.0
    files = ensure_webxr_hand()
    side = take.tracks[0].handedness
    hand = load_webxr_hand(files.glb(side), side)
    rig = bs.import_hand(scene, files.glb(side), hand, (0.78, 0.57, 0.45), 1).armature
    settings = ApplySettings(sides=(side,), wrist=WristMode.ROTATION_AND_LOCATION,
                             use_nla=False, take_name="bench",
                             take_path=str(take_path))  # fmt: skip
    apply_take(rig, take, detect_armature(rig, side), settings, scene)
    before, after, _ = reduce_keys(rig, tolerance_deg)
    return before, after
