"""Scenarios run inside Blender (the bpy wheel) in a child process by tests/test_addon.py:
the built extension zip is installed into a throw-away user folder and enabled, then one
scenario runs and prints ``RESULT <json>``. The process leaves with ``os._exit`` (bpy 4.5
can hang at exit after Rigify generation or with engine threads alive).

    python tests/addon_scenarios.py ZIP SCENARIO [ARGS...]
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import bpy
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ADDON = "bl_ext.user_default.handmocap"


def install(zip_path: str) -> None:
    bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo="user_default", enable_on_install=True
    )


def prefs():
    return bpy.context.preferences.addons[ADDON].preferences


def fingerprint() -> dict:
    """What a failed or cancelled capture must not change."""
    out = {"objects": sorted(o.name for o in bpy.data.objects),
           "actions": sorted(a.name for a in bpy.data.actions)}  # fmt: skip
    for obj in bpy.data.objects:
        if obj.type != "ARMATURE":
            continue
        data = obj.animation_data
        out[obj.name] = {
            "tracks": [t.name for t in data.nla_tracks] if data else [],
            "action": data.action.name if data and data.action else None,
            "props": sorted(obj.keys()),
            "modes": {pb.name: pb.rotation_mode for pb in obj.pose.bones},
            "quats": {pb.name: [round(v, 6) for v in pb.rotation_quaternion]
                      for pb in obj.pose.bones},
        }  # fmt: skip
    return out


def webxr_hand(side: str = "right"):
    from bench.synth import blender_scene as bs
    from handmocap.models.webxr_asset import ensure_webxr_hand
    from handmocap.models.webxr_hand import load_webxr_hand

    files = ensure_webxr_hand()
    hand = load_webxr_hand(files.glb(side), side)
    return bs.import_hand(bpy.context.scene, files.glb(side), hand, (0.5, 0.4, 0.3), 1).armature


def direction_errors(obj, take_path: str, side: str, measure=lambda bone: bone,
                     only: range | None = None) -> np.ndarray:  # fmt: skip
    """Degrees between each keyed finger bone's world direction (as Blender evaluates it)
    and the take's MANO segment, over every frame of the take (``only``: the scene frames
    among them that are in it)."""
    from bl_ext.user_default.handmocap.armature_io import detect_armature

    from handmocap.retarget.bone_names import MANO_JOINT_FOR_ROLE
    from handmocap.retarget.mano_rest import MANO16_BONE_END, MEDIAPIPE_FOR_MANO16
    from handmocap.retarget.rotations import axis_angle_to_matrix
    from handmocap.retarget.solver import CAMERA_IN_FRONT, mano_hand_rotations
    from handmocap.take import load_take

    take = load_take(take_path)
    (track,) = [t for t in take.tracks if t.handedness == side]
    mapping = detect_armature(obj)
    local = axis_angle_to_matrix(track.mano_pose.astype(np.float64))
    g = (CAMERA_IN_FRONT @ local[:, 0])[:, None] @ mano_hand_rotations(local)
    rest = track.rest_keypoints.astype(np.float64)
    world = np.array(obj.matrix_world)[:3, :3]
    errors = []
    start = bpy.context.scene.handmocap.scene_start
    for i, _f in enumerate(track.frames):
        if only is not None and start + i not in only:
            continue
        bpy.context.scene.frame_set(start + i)
        for role, bone in mapping.hands[side].bones.items():
            j = MANO_JOINT_FOR_ROLE.get(role)
            if j is None:
                continue
            m = world @ np.array(obj.pose.bones[measure(bone)].matrix)[:3, :3]
            want = g[i, j] @ (rest[MANO16_BONE_END[j]] - rest[MEDIAPIPE_FOR_MANO16[j]])
            y = m[:, 1] / np.linalg.norm(m[:, 1])
            c = float(np.clip(want @ y / np.linalg.norm(want), -1, 1))
            errors.append(math.degrees(math.acos(c)))
    return np.array(errors)


def keyed_bones(obj) -> dict[str, list[float]]:
    """bone -> [first frame, last frame, number of keys] of its rotation keys."""
    from bl_ext.user_default.handmocap.cleanup import bone_curves, handmocap_actions

    out = {}
    for action in handmocap_actions(obj).values():
        for bc in bone_curves(action):
            frames, _ = bc.keys()
            out[bc.bone] = [float(frames[0]), float(frames[-1]), len(frames)]
    return out


def keyed_frames(obj) -> dict[str, list[float]]:
    from bl_ext.user_default.handmocap.cleanup import bone_curves, handmocap_actions

    return {bc.bone: bc.keys()[0].tolist() for a in handmocap_actions(obj).values()
            for bc in bone_curves(a)}  # fmt: skip


def evaluated_rotations(obj, bones, frames, local: bool = False) -> np.ndarray:
    """(F, B, 3, 3) rotations Blender shows: armature space, or each bone's own (local)
    rotation, the thing its keys hold."""
    out = np.empty((len(frames), len(bones), 3, 3))
    for i, f in enumerate(frames):
        bpy.context.scene.frame_set(int(f))
        for k, b in enumerate(bones):
            pb = obj.pose.bones[b]
            out[i, k] = np.array(pb.matrix_basis if local else pb.matrix)[:3, :3]
    return out


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from handmocap.retarget.rotations import angle_between

    return np.degrees(angle_between(a, b))


def fbx_round_trip(obj, last_frame: int) -> dict[str, float]:
    """Export the captured armature with the Unity preset (the panel's operator), read the
    file back with ufbx and with assimp, and return each reader's worst difference (degrees)
    from every bone's local rotation per frame as Blender had it."""
    from bench.fbx_read import (
        blender_to_fbx_local,
        bone_axis_correction,
        read_assimp,
        read_ufbx,
    )

    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, last_frame
    s = scene.handmocap
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"hm_roundtrip_{os.getpid()}.fbx"
    s.fbx_path, s.fbx_preset = str(path), "UNITY"
    bpy.ops.handmocap.export_fbx()
    bones = [b.name for b in obj.data.bones if b.use_deform]
    frames = np.arange(1, last_frame + 1)
    want = {}
    for f in frames:
        scene.frame_set(int(f))
        for name in bones:
            pb = obj.pose.bones[name]
            m = np.array(pb.matrix)[:3, :3]
            local = np.linalg.inv(np.array(pb.parent.matrix)[:3, :3]) @ m if pb.parent else m
            want.setdefault(name, []).append(
                blender_to_fbx_local(local, bone_axis_correction(), pb.parent is not None)
            )
    worst = {}
    for take in (read_ufbx(path, frames=frames.astype(float)), read_assimp(path)):
        errs = [angle_deg(np.array(want[n]), take.rotations[n][: len(frames)]) for n in bones]
        worst[take.reader] = float(np.max(np.concatenate(errs)))
    path.unlink(missing_ok=True)
    return worst


# --- scenarios -------------------------------------------------------------------------


def scenario_registered(_args) -> dict:
    import addon_utils

    loaded, enabled = addon_utils.check(ADDON)
    ops = [n for n in dir(bpy.ops.handmocap)]
    panels = [n for n in ("HM_PT_capture", "HM_PT_rig", "HM_PT_cleanup", "HM_PT_export")
              if hasattr(bpy.types, n)]  # fmt: skip
    import handmocap

    result = {"loaded": loaded, "enabled": enabled, "ops": ops, "panels": panels,
              "engine_python": prefs().engine_python,
              "handmocap_from": handmocap.__file__,
              "panel_label": bpy.types.HM_PT_capture.bl_label,
              "category": bpy.types.HM_PT_capture.bl_category}  # fmt: skip
    addon_utils.disable(ADDON)
    result["after_disable"] = hasattr(bpy.types, "HM_PT_capture") or hasattr(
        bpy.types.Scene, "handmocap"
    )
    return result


def scenario_capture_webxr(args) -> dict:
    video = args[0]
    obj = webxr_hand("right")
    s = bpy.context.scene.handmocap
    s.video_path = video
    s.target = obj
    started = time.perf_counter()
    status = bpy.ops.handmocap.capture()
    seconds = time.perf_counter() - started
    keys = keyed_bones(obj)
    errors = direction_errors(obj, s.last_take, "right")
    # The animator's pass: re-smooth the whole take (sigma 3 frames, on top of the engine's
    # motion prior), then reduce keys at 1 deg, measured on what Blender shows before and
    # after.
    bones = sorted(keys)
    frames = np.arange(1, int(max(v[1] for v in keys.values())) + 1)
    s.range_start, s.range_end, s.smooth_sigma = 1, int(frames[-1]), 3.0
    smooth_all = bpy.ops.handmocap.smooth_range()
    before = evaluated_rotations(obj, bones, frames, local=True)
    s.reduce_tolerance = 1.0
    reduce_status = bpy.ops.handmocap.reduce_keys()
    after_keys = keyed_bones(obj)
    after = evaluated_rotations(obj, bones, frames, local=True)
    drift = angle_deg(before, after)
    # cleanup tools keep what every frame outside their range shows, here on curves that
    # "Reduce keys" left sparse (old keys far outside the range interpolate across it)
    s.range_start, s.range_end = 20, 26
    outside = frames[(frames < 20) | (frames > 26)]
    outside_before = evaluated_rotations(obj, bones, outside)
    smooth = bpy.ops.handmocap.smooth_range()
    fill = bpy.ops.handmocap.fill_gap()
    outside_after = evaluated_rotations(obj, bones, outside)
    fbx_errors = fbx_round_trip(obj, int(frames[-1]))
    # re-capture frames 30-40 only: the engine runs on those video frames, the keys there
    # are replaced, the rest stay, and no second take is left behind
    s.range_start, s.range_end = 30, 40
    outside = frames[(frames < 30) | (frames > 40)]
    keep_before = evaluated_rotations(obj, bones, outside)
    recapture = bpy.ops.handmocap.recapture_range()
    keep_after = evaluated_rotations(obj, bones, outside)
    recaptured_keys = keyed_bones(obj)
    recaptured_frames = keyed_frames(obj)
    # the same on dense curves: re-smoothing every frame keys every frame, then re-capture
    s.range_start, s.range_end = 1, int(frames[-1])
    bpy.ops.handmocap.smooth_range()
    dense_keys = min(v[2] for v in keyed_bones(obj).values())
    s.range_start, s.range_end = 30, 40
    dense_before = evaluated_rotations(obj, bones, outside)
    recapture_dense = bpy.ops.handmocap.recapture_range()
    dense_after = evaluated_rotations(obj, bones, outside)
    resolve = resolve_with_prior(obj, bones)
    return {
        "status": sorted(status), "seconds": seconds, "keys": keys, "fbx_max_deg": fbx_errors,
        "dir_median": float(np.median(errors)), "dir_max": float(errors.max()),
        "reduce": sorted(reduce_status), "smooth_all": sorted(smooth_all),
        "keys_before": sum(v[2] for v in keys.values()),
        "keys_after": sum(v[2] for v in after_keys.values()),
        "reduce_max_drift_deg": float(drift.max()),
        "cleanup": [sorted(smooth), sorted(fill)],
        "cleanup_outside_drift_deg": float(angle_deg(outside_before, outside_after).max()),
        "confidence_prop": "hm_confidence_R" in obj.keys(),
        "recapture": sorted(recapture),
        "recapture_outside_drift_deg": float(angle_deg(keep_before, keep_after).max()),
        "recapture_keys_in_range": min(
            int(np.sum((np.array(v) >= 30) & (np.array(v) <= 40)))
            for v in recaptured_frames.values()
        ),
        "dense_keys_per_bone": dense_keys,
        "recapture_dense": sorted(recapture_dense),
        "recapture_dense_outside_drift_deg": float(angle_deg(dense_before, dense_after).max()),
        "actions_after_recapture": sorted(a.name for a in bpy.data.actions),
        "keys_after_recapture": {k: v[:2] for k, v in recaptured_keys.items()},
        "resolve": resolve,
    }  # fmt: skip


def scenario_setup_then_capture(args) -> dict:
    """Set Up Engine pressed with the real engine the zip bundles (CPU, pip's own sources on
    this machine: ``--retries 1`` replaces the PyTorch index, which it cannot reach), then
    the demo clip captured through the new environment onto the WebXR hand."""
    import importlib

    p = importlib.import_module(f"{ADDON}.preferences")
    before = prefs().engine_python
    bpy.context.preferences.system.use_online_access = True
    prefs().engine_accelerator = "CPU"
    prefs().engine_pip_args = "--retries 1"
    started = time.perf_counter()
    status = bpy.ops.handmocap.setup_engine()
    end = time.monotonic() + float(args[1])
    while p._poll_setup() is not None and time.monotonic() < end:  # no timers in background
        time.sleep(0.5)
    progress = p.EngineSetup.runner.snapshot()
    setup = {"setup_status": sorted(status), "setup_seconds": time.perf_counter() - started,
             "outcome": p.EngineSetup.outcome, "log_tail": list(progress.log_tail[-12:]),
             "before": before, "engine_python": prefs().engine_python,
             "user_folder": bpy.utils.extension_path_user(ADDON)}  # fmt: skip
    if prefs().engine_python == before:
        return setup
    p.EngineCheck.wait(300)
    setup["check"] = p.EngineCheck.message
    return {**setup, **scenario_capture_webxr(args[:1])}


def _keys_by_curve(obj) -> dict[tuple, np.ndarray]:
    """(action, path, index) -> (K, 2) float32 (frame, value) of every key (see _all_keys)."""
    return {tuple(k[:3]): k[3].reshape(-1, 2) for k in _all_keys(obj)}


def resolve_with_prior(obj, bones: list[str]) -> dict:
    """Re-solve with Motion Prior on frames 10-20 at smoothing 3, with the real engine's
    ``smooth`` on this capture's take (no second capture). First what it refuses, each
    without starting the engine or with the engine's own error, scene and keys unchanged;
    a re-solve cancelled while the engine runs; then the re-solve itself: keys outside the
    range as they were, to the byte, keys inside from the new take, which lies next to the
    old one (untouched) under a new name."""
    import hashlib
    from dataclasses import replace
    from types import SimpleNamespace

    from bl_ext.user_default.handmocap import capture_op
    from bl_ext.user_default.handmocap.cleanup import handmocap_actions
    from bl_ext.user_default.handmocap.preferences import EngineCheck

    from handmocap.take import load_take

    s = bpy.context.scene.handmocap
    bpy.ops.handmocap.check_engine()
    EngineCheck.wait()
    info = EngineCheck.info
    span = info.smoothing if info is not None else None
    out: dict = {"range": None if span is None else [span.minimum, span.maximum, span.default]}
    actions = handmocap_actions(obj)
    take = Path(next(iter(actions.values()))["hm_take"])
    digest = hashlib.sha256(take.read_bytes()).hexdigest()
    bare = bpy.data.objects.new("Bare", bpy.data.armatures.new("Bare"))
    bpy.context.scene.collection.objects.link(bare)
    bpy.context.view_layer.update()  # gives it its (empty) pose
    s.range_start, s.range_end, s.resolve_smoothing = 10, 20, 3.0

    def refused(name: str) -> dict:
        files, keys, before = set(os.listdir(take.parent)), _all_keys(obj), fingerprint()
        status = _run_capture(name, bpy.ops.handmocap.resolve_prior)
        return {"status": status, "unchanged": fingerprint() == before,
                "keys_unchanged": _same_keys(keys, _all_keys(obj)),
                "takes_left": sorted(set(os.listdir(take.parent)) - files)}  # fmt: skip

    def recorded(path: Path) -> None:
        for action in actions.values():
            action["hm_take"] = str(path)

    s.target = bare
    out["resolve_no_actions"] = refused("resolve_no_actions")
    s.target = obj
    recorded(take.parent / "moved_away.npz")
    out["resolve_take_missing"] = refused("resolve_take_missing")
    damaged = take.parent / "damaged.npz"
    damaged.write_bytes(take.read_bytes()[: take.stat().st_size // 2])
    recorded(damaged)
    out["resolve_engine_error"] = refused("resolve_engine_error")
    damaged.unlink()
    recorded(take)
    EngineCheck.info = replace(info, stages={**info.stages, "motion_prior": False},
                               smoothing=None)  # fmt: skip
    out["resolve_no_stage"] = refused("resolve_no_stage")
    EngineCheck.info = info
    # cancelled while the engine runs (what Esc does): its new take goes, the old stays
    session = capture_op.PriorSession(bpy.context, take, 3.0, scene_start=1, sides=("right",))
    existed = session.take_path.is_file()
    capture_op.CaptureOperatorBase._abort(SimpleNamespace(_session=session))
    out["resolve_cancelled"] = {"existed_while_running": existed,
                                "left_after_cancel": session.take_path.exists(),
                                "error": session.run.error}  # fmt: skip
    # the re-solve
    files, actions_before = set(os.listdir(take.parent)), sorted(a.name for a in bpy.data.actions)
    keys_before = _keys_by_curve(obj)
    inside = np.arange(10, 21)
    rot_before = evaluated_rotations(obj, bones, inside, local=True)
    out["status"] = _run_capture("resolve", bpy.ops.handmocap.resolve_prior)
    keys_after = _keys_by_curve(obj)
    rot_after = evaluated_rotations(obj, bones, inside, local=True)
    outside_same, inside_counts = [], []
    for curve, before in keys_before.items():
        after = keys_after.get(curve, np.empty((0, 2), np.float32))
        keep_b = (before[:, 0] < 10) | (before[:, 0] > 20)
        keep_a = (after[:, 0] < 10) | (after[:, 0] > 20)
        outside_same.append(before[keep_b].tobytes() == after[keep_a].tobytes())
        if "rotation_quaternion" in curve[1]:
            inside_counts.append(int(np.sum(~keep_a)))
    change = angle_deg(rot_before, rot_after)
    new_take = Path(s.last_take)
    stages = (load_take(new_take).header.engine.stages or {}) if new_take.is_file() else {}
    errors = direction_errors(obj, str(new_take), "right", only=range(10, 21))
    out.update({
        "curves": len(keys_before), "same_curves": sorted(keys_after) == sorted(keys_before),
        "outside_identical": all(outside_same), "inside_keys_per_curve": sorted(set(inside_counts)),
        "inside_change_deg": [float(np.median(change)), float(change.max())],
        "inside_dir_deg": [float(np.median(errors)), float(errors.max()), len(errors)],
        "new_take": new_take.name, "old_take": take.name,
        "same_folder": new_take.parent == take.parent,
        "new_files": sorted(set(os.listdir(take.parent)) - files),
        "old_take_untouched": hashlib.sha256(take.read_bytes()).hexdigest() == digest,
        "new_take_smoothing": dict(stages.get("motion_prior") or {}).get("smoothing"),
        "actions_same": sorted(a.name for a in bpy.data.actions) == actions_before,
    })  # fmt: skip
    return out


def scenario_capture_rigify(args) -> dict:
    import addon_utils

    video = args[0]
    addon_utils.enable("rigify", default_set=True)
    bpy.ops.object.armature_human_metarig_add()
    metarig = bpy.context.active_object
    bpy.ops.pose.rigify_generate()
    rig = next(o for o in bpy.data.objects if o.type == "ARMATURE" and o is not metarig)
    metarig.hide_set(True)
    s = bpy.context.scene.handmocap
    s.video_path = video
    s.target = rig
    s.hands = "RIGHT"
    status = bpy.ops.handmocap.capture()
    keys = keyed_bones(rig)
    errors = direction_errors(rig, s.last_take, "right", measure=lambda b: "DEF-" + b
                              if not b.startswith("hand") else b)  # fmt: skip
    s.range_start, s.range_end = 1, 10
    bake = bpy.ops.handmocap.bake_fk()
    return {"status": sorted(status), "keys": keys, "dir_median": float(np.median(errors)),
            "dir_max": float(errors.max()), "bake": sorted(bake)}  # fmt: skip


def scenario_bad_inputs(args) -> dict:
    """Each bad input: the operator's result, and whether the scene changed."""
    video, fake_engine_dir, corrupt_video, empty_video = args[0], Path(args[1]), args[2], args[3]
    obj = webxr_hand("right")
    robot_data = bpy.data.armatures.new("Robot")
    robot = bpy.data.objects.new("Robot", robot_data)
    bpy.context.scene.collection.objects.link(robot)
    bpy.context.view_layer.objects.active = robot
    bpy.ops.object.mode_set(mode="EDIT")
    for name in ("Hips", "Spine", "Head"):
        b = robot_data.edit_bones.new(name)
        b.tail = (0, 0, 1)
    bpy.ops.object.mode_set(mode="OBJECT")
    s = bpy.context.scene.handmocap
    good_python = prefs().engine_python
    cases = {
        "no_armature": dict(target=None),
        "no_hand_bones": dict(target=robot),
        "engine_not_found": dict(python="/nonexistent/bin/python"),
        "video_missing": dict(video="/nonexistent/clip.mp4"),
        "video_corrupt": dict(video=corrupt_video),
        "no_hands": dict(video=empty_video),
        "models_not_built": dict(python=str(fake_engine_dir / "no_models" / "python")),
        "engine_crash": dict(python=str(fake_engine_dir / "crash" / "python")),
    }
    out = {}
    for name, case in cases.items():
        s.target = case.get("target", obj)
        s.video_path = case.get("video", video)
        prefs().engine_python = case.get("python", good_python)
        before = fingerprint()
        print(f"SCENARIO {name}", flush=True)
        try:
            status = sorted(bpy.ops.handmocap.capture())
        except RuntimeError as err:  # how an ERROR report reaches a script (the UI shows it)
            print(f"report: {err}", flush=True)
            status = ["CANCELLED"]
        print(f"END {name}", flush=True)
        out[name] = {"status": status, "unchanged": fingerprint() == before}
    # an engine that is too old: the preferences' check says so
    from bl_ext.user_default.handmocap.preferences import EngineCheck

    prefs().engine_python = str(fake_engine_dir / "old" / "python")
    bpy.ops.handmocap.check_engine()
    EngineCheck.wait()
    out["engine_too_old"] = EngineCheck.message
    prefs().engine_python = good_python
    bpy.ops.handmocap.check_engine()
    EngineCheck.wait()
    out["engine_good"] = EngineCheck.message
    return out


def _pose_finite(obj) -> bool:
    return all(np.isfinite(pb.rotation_quaternion).all() and np.isfinite(pb.rotation_euler).all()
               for pb in obj.pose.bones)  # fmt: skip


def _all_keys(obj) -> list[tuple[str, str, int, np.ndarray]]:
    """Every key of every Action the armature plays: (action, path, index, (2K,) co)."""
    from bl_ext.user_default.handmocap.keyframes import action_fcurves

    data = obj.animation_data
    actions = [data.action, *(s.action for t in data.nla_tracks for s in t.strips)] if data else []
    out = []
    for action in actions:
        if action is None:
            continue
        for fc in action_fcurves(action):
            co = np.empty(2 * len(fc.keyframe_points), dtype=np.float32)
            fc.keyframe_points.foreach_get("co", co)
            out.append((action.name, fc.data_path, fc.array_index, co))
    return out


def _same_keys(a, b) -> bool:
    if len(a) != len(b):
        return False
    return all(x[:3] == y[:3] and np.array_equal(x[3], y[3], equal_nan=True)
               for x, y in zip(a, b, strict=True))  # fmt: skip


def _run_capture(name: str, op=None) -> list[str]:
    """Run an operator (default Capture) between SCENARIO/END markers; its status."""
    print(f"SCENARIO {name}", flush=True)
    try:
        status = sorted((op or bpy.ops.handmocap.capture)())
    except RuntimeError as err:  # how an ERROR report reaches a script (the UI shows it)
        print(f"report: {err}", flush=True)
        status = ["CANCELLED"]
    print(f"END {name}", flush=True)
    return status


def scenario_bad_takes(args) -> dict:
    """Stand-in engines hand back crafted takes (one ``bad_*`` engine each, then ``good``
    and ``slow``): each bad take is refused with the scene (actions, pose) and the take
    folder as they were; 21 quick good captures leave 21 take files in a private folder; a
    cancelled capture leaves none; a cleanup tool failing half-way puts its keys back."""
    import tempfile
    from types import SimpleNamespace

    from bl_ext.user_default.handmocap import capture_op
    from bl_ext.user_default.handmocap.cleanup import bone_curves, handmocap_actions

    video, fakes = args[0], Path(args[1])
    obj = webxr_hand("right")
    scene = bpy.context.scene
    s = scene.handmocap
    s.target, s.video_path = obj, video
    folder = capture_op.take_folder()
    out: dict = {"folder": str(folder), "folder_mode": folder.stat().st_mode & 0o777,
                 "shared_tmp": str(Path(tempfile.gettempdir()).resolve())}  # fmt: skip
    for engine in sorted(p.name for p in fakes.iterdir() if p.name.startswith("bad_")):
        prefs().engine_python = str(fakes / engine / "python")
        files = set(os.listdir(folder))
        before = fingerprint()
        status = _run_capture(engine)
        scene.frame_set(scene.frame_current)  # evaluate: a NaN key would show in the pose
        out[engine] = {"status": status, "unchanged": fingerprint() == before,
                       "pose_finite": _pose_finite(obj),
                       "takes_left": sorted(set(os.listdir(folder)) - files)}  # fmt: skip
    # 21 captures in quick succession: 21 take files (the old names changed once a second)
    prefs().engine_python = str(fakes / "good" / "python")
    files = set(os.listdir(folder))
    started = time.perf_counter()
    statuses, takes = [], []
    for _ in range(21):
        statuses.append(sorted(bpy.ops.handmocap.capture()))
        takes.append(s.last_take)
    scene.frame_set(10)
    out["quick"] = {"seconds": time.perf_counter() - started, "statuses": statuses,
                    "last_takes": takes, "new_files": sorted(set(os.listdir(folder)) - files),
                    "pose_finite": _pose_finite(obj)}  # fmt: skip
    # a capture cancelled while the engine runs (what Esc does): its take file goes
    prefs().engine_python = str(fakes / "slow" / "python")
    session = capture_op.CaptureSession(bpy.context)
    existed = session.take_path.is_file()
    capture_op.CaptureOperatorBase._abort(SimpleNamespace(_session=session))
    out["cancelled"] = {"existed_while_running": existed,
                        "left_after_cancel": session.take_path.exists(),
                        "error": session.run.error}  # fmt: skip
    # a cleanup tool that fails half-way (a NaN key on the last bone: the curve maths raises
    # after the other bones were re-smoothed) reports one line and puts every key back
    action = handmocap_actions(obj)["right"]
    fc = bone_curves(action)[-1].curves[1]
    fc.keyframe_points[12].co = (fc.keyframe_points[12].co[0], float("nan"))
    fc.update()
    s.range_start, s.range_end, s.smooth_sigma = 5, 30, 2.0
    keys, before = _all_keys(obj), fingerprint()
    status = _run_capture("smooth_nan", bpy.ops.handmocap.smooth_range)
    out["smooth_nan"] = {"status": status, "keys_unchanged": _same_keys(keys, _all_keys(obj)),
                         "unchanged": fingerprint() == before}  # fmt: skip
    return out


def main() -> None:
    zip_path, scenario, *args = sys.argv[1:]
    code = 0
    try:
        install(zip_path)
        result = globals()[f"scenario_{scenario}"](args)
        print("RESULT " + json.dumps(result), flush=True)
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
