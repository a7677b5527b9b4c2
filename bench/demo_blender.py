"""The demo's Blender half: the captured take on a rigged hand, saved as a .blend and
exported as FBX, through the same code the add-on runs (apply_take, export_fbx)."""

from __future__ import annotations

from pathlib import Path

import bpy

from blender_addon.apply_take import ApplySettings, apply_take
from blender_addon.armature_io import detect_armature
from blender_addon.fbx_export import UNITY, export_fbx
from handmocap.models.webxr_asset import ensure_webxr_hand
from handmocap.models.webxr_hand import load_webxr_hand
from handmocap.retarget.solver import WristMode
from handmocap.take import load_take

from .synth import blender_scene as bs


def write_blend_and_fbx(take_path: Path, out: Path) -> tuple[Path, list[Path]]:
    """(.blend, [FBX per hand]) with each captured hand keyed onto a WebXR hand rig."""
    take = load_take(take_path)
    bs.reset_blender()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = round(take.header.fps), 1.0
    files = ensure_webxr_hand()
    fbx_paths = []
    last = 1
    sides = sorted({t.handedness for t in take.tracks})
    for side in sides:
        hand = load_webxr_hand(files.glb(side), side)
        rig = bs.import_hand(scene, files.glb(side), hand, (0.78, 0.57, 0.45), 1).armature
        settings = ApplySettings(sides=(side,), wrist=WristMode.ROTATION_AND_LOCATION,
                                 use_nla=False, take_name=f"demo_{side}",
                                 take_path=str(take_path))  # fmt: skip
        result = apply_take(rig, take, detect_armature(rig, side), settings, scene)
        last = max(last, result.frame_range[1])
    scene.frame_start, scene.frame_end = 1, last
    blend = out / "demo_hands.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend.resolve()))
    for obj in [o for o in bpy.data.objects if o.type == "ARMATURE"]:
        path = out / f"demo_{obj.name.replace('.', '_')}.fbx"
        fbx_paths.append(export_fbx(path, obj, UNITY, 1, last))
    return blend, fbx_paths
