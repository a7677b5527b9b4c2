# SPDX-License-Identifier: GPL-3.0-or-later
"""A take onto an armature: one Action per hand, keyed in bulk, undone completely if
anything fails half-way.

Video frames map to scene frames through time: the take's first frame lands on
``scene_start``, and when the video's frame rate differs from the scene's the solved
rotations are resampled (slerp) at the scene's whole frames. The take's per-frame
confidence is keyed as a custom property (``hm_confidence_R``/``_L``, 0..1, 0 where the
hand was lost) so the animator sees where the capture is weak.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum

import bpy
import numpy as np

from handmocap.inference.take import Take, Track
from handmocap.retarget.curves import resample_linear, resample_rotations
from handmocap.retarget.rig_profiles import RigMapping
from handmocap.retarget.solver import (
    CAMERA_FIRST_PERSON,
    CAMERA_IN_FRONT,
    BonePoses,
    HandRetargeter,
    RetargetConfig,
    WristMode,
)

from .armature_io import (
    camera_to_armature,
    current_pose_matrices,
    read_armature_spec,
    units_per_metre,
)
from .keyframes import ActionWriter

SIDE_SUFFIX = {"left": "L", "right": "R"}


class CameraPlacement(Enum):
    FRONT = "front"  # the camera faces the character (a webcam, a phone on a tripod)
    FIRST_PERSON = "first_person"  # the camera looks where the character looks


CAMERA_ROTATIONS = {CameraPlacement.FRONT: CAMERA_IN_FRONT,
                    CameraPlacement.FIRST_PERSON: CAMERA_FIRST_PERSON}  # fmt: skip


@dataclass(frozen=True)
class ApplySettings:
    """How a take lands on an armature (built once from the panel's properties).

    Attributes:
        sides: the hands to apply ("left", "right").
        wrist: what happens to the hand bone.
        camera: where the camera was relative to the character.
        scene_start: the scene frame the take's first video frame lands on.
        use_nla: put each hand's Action on its own NLA track (always done for the second
            hand of a two-handed rig, since an object plays only one active Action).
        take_name: names the Actions ("<take_name>_R").
        take_path: stored on the Actions so cleanup tools can go back to the take.
    """

    sides: tuple[str, ...] = ("left", "right")
    wrist: WristMode = WristMode.ROTATION
    camera: CameraPlacement = CameraPlacement.FRONT
    scene_start: int = 1
    use_nla: bool = True
    take_name: str = "handmocap"
    take_path: str = ""


@dataclass
class ApplyResult:
    actions: dict[str, str] = field(default_factory=dict)  # side -> action name
    keyed_bones: dict[str, int] = field(default_factory=dict)
    frame_range: tuple[int, int] | None = None
    messages: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HandSeries:
    """One hand over the take, its tracks merged. T samples (video frames, increasing)."""

    side: str
    frames: np.ndarray  # (T,) video frame indices
    pose: np.ndarray  # (T, 16, 3)
    translation: np.ndarray  # (T, 3)
    confidence: np.ndarray  # (T,) mean keypoint confidence, 0..1
    rest_keypoints: np.ndarray | None  # (21, 3)


def hand_series(take: Take, side: str) -> HandSeries | None:
    """The side's tracks merged by frame (where two overlap, the more confident wins)."""
    tracks = [t for t in take.tracks if t.handedness == side and t.mano_pose is not None]
    if not tracks:
        return None
    best: dict[int, tuple[float, Track, int]] = {}
    for tr in tracks:
        conf = tr.confidence.mean(axis=1)
        for i, f in enumerate(tr.frames.tolist()):
            if f not in best or conf[i] > best[f][0]:
                best[f] = (float(conf[i]), tr, i)
    frames = np.array(sorted(best), dtype=np.int64)
    pose = np.stack([best[f][1].mano_pose[best[f][2]] for f in frames]).astype(np.float64)
    transl = np.stack([
        best[f][1].translation[best[f][2]] if best[f][1].translation is not None else np.zeros(3)
        for f in frames
    ]).astype(np.float64)  # fmt: skip
    conf = np.array([best[f][0] for f in frames])
    longest = max(tracks, key=len)
    return HandSeries(side, frames, pose, transl, conf, longest.rest_keypoints)


def scene_times(take: Take, frames: np.ndarray, scene_fps: float,
                scene_start: int) -> np.ndarray:  # fmt: skip
    """(T,) scene frame (float) of each video frame index: the take's first frame of its
    range lands on ``scene_start``; time runs at the video's frame rate."""
    stride = int(take.header.get("frame_range", {}).get("stride", 1) or 1)
    video_fps = float(take.header["fps"]) * stride
    first = int(take.header.get("frame_range", {}).get("start", 0) or 0)
    return scene_start + (frames - first) / video_fps * scene_fps


def _segments(times: np.ndarray, step: float) -> list[slice]:
    """Runs of samples no further apart than 1.5 steps (a lost hand splits them)."""
    if len(times) == 0:
        return []
    breaks = np.flatnonzero(np.diff(times) > 1.5 * step) + 1
    edges = [0, *breaks.tolist(), len(times)]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def _on_scene_frames(solved: BonePoses, times: np.ndarray, conf: np.ndarray,
                     step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                            np.ndarray, np.ndarray]:  # fmt: skip
    """Resample onto whole scene frames, per segment. Returns (key frames (K,), rotations
    (K, B, 4), locations (K, B, 3) or None, confidence frames (C,), values (C,)) where the
    confidence curve drops to 0 one frame outside each segment."""
    out_f, out_q, out_l, conf_f, conf_v = [], [], [], [], []
    integral = np.allclose(times, np.round(times), atol=1e-6) and step >= 1.0 - 1e-9
    for seg in _segments(times, step):
        t = times[seg]
        if integral:
            dst = np.round(t)
            q = solved.rotations[seg]
            loc = solved.locations[seg] if solved.locations is not None else None
            c = conf[seg]
        else:
            dst = np.arange(np.ceil(t[0] - 1e-6), np.floor(t[-1] + 1e-6) + 1.0)
            if len(dst) == 0:
                continue
            q = resample_rotations(t, solved.rotations[seg], dst)
            loc = (resample_linear(t, solved.locations[seg], dst)
                   if solved.locations is not None else None)  # fmt: skip
            c = resample_linear(t, conf[seg], dst)
        out_f.append(dst)
        out_q.append(q)
        if loc is not None:
            out_l.append(loc)
        conf_f += [[dst[0] - 1.0], dst, [dst[-1] + 1.0]]
        conf_v += [[0.0], c, [0.0]]
    if not out_f:
        return np.zeros(0), np.zeros((0, len(solved.bone_names), 4)), None, np.zeros(0), np.zeros(0)
    frames = np.concatenate(out_f)
    cf, cv = np.concatenate(conf_f), np.concatenate(conf_v)
    keep = np.concatenate([[True], np.diff(cf) > 0.5])  # touching segments: no duplicate keys
    return (frames, np.concatenate(out_q), np.concatenate(out_l) if out_l else None,
            cf[keep], cv[keep])  # fmt: skip


class _Undo:
    """What apply_take changed, to put back if it fails half-way."""

    def __init__(self, obj: bpy.types.Object):
        self.obj = obj
        self.actions: list[bpy.types.Action] = []
        self.tracks: list[bpy.types.NlaTrack] = []
        self.had_animation = obj.animation_data is not None
        self.active_action = obj.animation_data.action if obj.animation_data else None
        self.rotation_modes = {pb.name: pb.rotation_mode for pb in obj.pose.bones}
        self.props = set(obj.keys())

    def rollback(self) -> None:
        obj = self.obj
        data = obj.animation_data
        if data is not None:
            for track in self.tracks:
                if track.name in data.nla_tracks:
                    data.nla_tracks.remove(track)
            data.action = self.active_action
        for action in self.actions:
            bpy.data.actions.remove(action)
        if not self.had_animation and obj.animation_data is not None:
            obj.animation_data_clear()
        for name, mode in self.rotation_modes.items():
            obj.pose.bones[name].rotation_mode = mode
        for key in set(obj.keys()) - self.props:
            del obj[key]


def apply_take(obj: bpy.types.Object, take: Take, mapping: RigMapping, settings: ApplySettings,
               scene: bpy.types.Scene) -> ApplyResult:  # fmt: skip
    """Key the take onto ``obj``'s hand bones. On any error the armature is left exactly as
    it was and the error propagates."""
    result = ApplyResult()
    undo = _Undo(obj)
    try:
        _apply(obj, take, mapping, settings, scene, result, undo)
    except BaseException:
        undo.rollback()
        raise
    return result


def _apply(obj, take, mapping, settings, scene, result, undo) -> None:
    spec = read_armature_spec(obj)
    current = current_pose_matrices(obj)
    config = RetargetConfig(
        wrist=settings.wrist,
        camera_to_armature=camera_to_armature(obj, CAMERA_ROTATIONS[settings.camera]),
        units_per_metre=units_per_metre(obj, scene),
    )
    scene_fps = scene.render.fps / scene.render.fps_base
    step = scene_fps / float(take.header["fps"])  # scene frames between two take samples
    lo, hi = np.inf, -np.inf
    written = 0
    for side in settings.sides:
        series = hand_series(take, side)
        if side not in mapping.hands:
            if series is not None:
                result.messages.append(f"{obj.name} has no {side} hand; the {side} hand is skipped")
            continue
        if series is None:
            if len(settings.sides) == 1:
                result.messages.append(f"the take has no {side} hand")
            continue
        hand_bone = obj.data.bones[mapping.hands[side].bones["hand"]]
        if settings.wrist is WristMode.ROTATION_AND_LOCATION and hand_bone.use_connect:
            result.messages.append(
                f"{hand_bone.name} is connected to its parent, so only its rotation is keyed "
                "(move the arm's IK control instead)"
            )
        solver = HandRetargeter(spec, mapping.hands[side], series.rest_keypoints, config)
        solved = solver.solve(series.pose, series.translation, current)
        times = scene_times(take, series.frames, scene_fps, settings.scene_start)
        frames, rot, loc, conf_f, conf_v = _on_scene_frames(solved, times, series.confidence,
                                                           step)  # fmt: skip
        if len(frames) == 0:
            result.messages.append(f"the {side} hand covers no whole scene frame")
            continue
        poses = BonePoses(side, solved.bone_names, rot, loc)
        name = f"{settings.take_name}_{SIDE_SUFFIX[side]}"
        writer = ActionWriter(obj, name, assign=False)
        undo.actions.append(writer.action)
        writer.bone_curves(poses, frames)
        prop = f"hm_confidence_{SIDE_SUFFIX[side]}"
        obj[prop] = 0.0
        obj.id_properties_ui(prop).update(min=0.0, max=1.0, description=(
            "handmocap: how sure the capture is of this hand (0 where it was lost)"))  # fmt: skip
        writer.curve(f'["{prop}"]', 0, conf_f, conf_v, "Confidence")
        writer.action["hm_side"] = side
        writer.action["hm_take"] = settings.take_path
        writer.action["hm_scene_start"] = int(settings.scene_start)
        frame_range = take.header.get("frame_range", {})
        writer.action["hm_video_start"] = int(frame_range.get("start", 0) or 0)
        writer.action["hm_video_fps"] = float(take.header["fps"]) * int(
            frame_range.get("stride", 1) or 1
        )
        # An object plays one active action: a second hand (or every hand, with use_nla)
        # goes on its own NLA track.
        if settings.use_nla or written > 0:
            track = writer.push_to_nla(f"{name}")
            undo.tracks.append(track)
        else:
            writer.assign()
        written += 1
        result.actions[side] = writer.action.name
        result.keyed_bones[side] = len(poses.bone_names)
        lo, hi = min(lo, frames[0]), max(hi, frames[-1])
    if written:
        result.frame_range = (int(lo), int(hi))
