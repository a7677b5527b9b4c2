# SPDX-License-Identifier: GPL-3.0-or-later
"""A take onto an armature: one Action per hand, keyed in bulk, undone completely if
anything fails half-way.

Video frames map to scene frames through time: the take's first frame lands on
``scene_start``, and when the video's frame rate differs from the scene's the solved
rotations are resampled (slerp) at the scene's whole frames. The take's per-frame
confidence is keyed as a custom property (``hm_confidence_R``/``_L``, 0..1, 0 where the
hand was lost) so the animator sees where the capture is weak. The arithmetic of it lives in
:mod:`handmocap.retarget.timeline`: this module reads Blender's data, calls it, and writes.

Nothing is keyed from a take that would put garbage into the scene: everything that will
be keyed is computed and checked first (finite rotations, locations and confidences, a sane
frame rate, a bounded number of keys, frames Blender can hold), and only then written. A
take that fails a check raises :class:`HandmocapError` naming the problem, with the scene
untouched; any other failure while writing is undone by an :class:`AnimationSnapshot`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

import bpy
import numpy as np

from handmocap.errors import HandmocapError
from handmocap.retarget.armature import ArmatureSpec
from handmocap.retarget.rig_profiles import HandBones, RigMapping
from handmocap.retarget.solver import (
    CAMERA_FIRST_PERSON,
    CAMERA_IN_FRONT,
    BonePoses,
    HandRetargeter,
    RetargetConfig,
    WristMode,
)
from handmocap.retarget.timeline import (
    TAKE_DAMAGED,
    FrameMap,
    HandSeries,
    TakeTiming,
    check_finite_keys,
    check_rate,
    check_scene_frames,
    hand_series,
    on_scene_frames,
    scene_grid,
    side_tracks,
    take_timing,
)
from handmocap.sides import BOTH, Side
from handmocap.take import Take, Track, checks

from .armature_io import (
    camera_to_armature,
    current_pose_matrices,
    read_armature_spec,
    units_per_metre,
)
from .keyframes import HAS_SLOTS, ActionWriter

# Limits on what one take may key (see _plan; the timeline's own: a video frame spread over
# at most 4 scene frames, frames Blender can hold). Keys one capture may write, all hands
# and curves together (a 10-minute two-hand capture at 30 fps is about 2.5 million).
MAX_KEYS: Final = 5_000_000
# A hand needs this many samples to be keyed as motion.
MIN_SAMPLES: Final = 2


class CameraPlacement(Enum):
    FRONT = "front"  # the camera faces the character (a webcam, a phone on a tripod)
    FIRST_PERSON = "first_person"  # the camera looks where the character looks


CAMERA_ROTATIONS = {CameraPlacement.FRONT: CAMERA_IN_FRONT,
                    CameraPlacement.FIRST_PERSON: CAMERA_FIRST_PERSON}  # fmt: skip


@dataclass(frozen=True)
class ApplySettings:
    """How a take lands on an armature (built once from the panel's properties).

    Attributes:
        sides: the hands to apply (:class:`Side`, or their text).
        wrist: what happens to the hand bone.
        camera: where the camera was relative to the character.
        scene_start: the scene frame the take's first video frame lands on.
        use_nla: put each hand's Action on its own NLA track (always done for the second
            hand of a two-handed rig, since an object plays only one active Action).
        take_name: names the Actions ("<take_name>_R").
        take_path: stored on the Actions so cleanup tools can go back to the take.
    """

    sides: tuple[Side, ...] = BOTH
    wrist: WristMode = WristMode.ROTATION
    camera: CameraPlacement = CameraPlacement.FRONT
    scene_start: int = 1
    use_nla: bool = True
    take_name: str = "handmocap"
    take_path: str = ""

    def __post_init__(self) -> None:
        sides = tuple(Side.parse(s, "a hand to apply") for s in self.sides)
        object.__setattr__(self, "sides", sides)


@dataclass
class ApplyResult:
    actions: dict[Side, str] = field(default_factory=dict)  # side -> action name
    keyed_bones: dict[Side, int] = field(default_factory=dict)
    frame_range: tuple[int, int] | None = None
    messages: list[str] = field(default_factory=list)


# -- checking the take ------------------------------------------------------------------------


def scene_fps(scene: bpy.types.Scene) -> float:
    """The scene's frame rate (frames per second), checked."""
    fps = scene.render.fps / scene.render.fps_base
    if not math.isfinite(fps) or fps <= 0.0:
        raise HandmocapError(f"the scene's frame rate is {fps:g} fps: set a positive frame "
                             "rate (Output Properties > Format)")  # fmt: skip
    return fps


def check_track(track: Track, index: int) -> None:
    """Refuse a track whose fields are malformed or not finite, with the take's own checks
    (they ran when the track was built; its arrays may have changed since).

    Raises HandmocapError naming the track and the field."""
    try:
        checks.check_track(track)
    except checks.Invalid as err:
        raise HandmocapError(f"the take's track {index} ({track.handedness} hand): "
                             f"{err.detail}: {TAKE_DAMAGED}") from None  # fmt: skip


# -- putting the scene back -------------------------------------------------------------------

_POSE_CHANNELS = (("rotation_quaternion", 4), ("rotation_euler", 3), ("rotation_axis_angle", 4),
                  ("location", 3), ("scale", 3))  # fmt: skip
_KEY_FLOATS = (("co", 2), ("handle_left", 2), ("handle_right", 2))
_KEY_ENUMS = ("interpolation", "handle_left_type", "handle_right_type", "easing", "type")


def _fcurve_sets(action: bpy.types.Action) -> list[tuple[int, Any]]:
    """(pointer of the owner, F-curve collection) of every channelbag of the action (the
    action itself on Blender before 4.4)."""
    if not HAS_SLOTS:
        return [(action.as_pointer(), action.fcurves)]
    return [(bag.as_pointer(), bag.fcurves) for layer in action.layers
            for strip in layer.strips for bag in strip.channelbags]  # fmt: skip


def _read_keys(fc: bpy.types.FCurve) -> dict[str, np.ndarray]:
    points = fc.keyframe_points
    n = len(points)
    out = {}
    for attr, width in _KEY_FLOATS:
        out[attr] = np.empty(n * width, dtype=np.float32)
        points.foreach_get(attr, out[attr])
    for attr in _KEY_ENUMS:
        out[attr] = np.empty(n, dtype=np.int32)
        points.foreach_get(attr, out[attr])
    return out


def _write_keys(fc: bpy.types.FCurve, keys: dict[str, np.ndarray]) -> None:
    points = fc.keyframe_points
    if len(points):
        points.clear()
    points.add(len(keys["interpolation"]))
    for attr, values in keys.items():
        points.foreach_set(attr, values)
    fc.update()


def _plain(value: Any) -> Any:
    """A custom property's value as plain Python (ID property arrays and groups copied)."""
    for method in ("to_dict", "to_list"):
        if hasattr(value, method):
            return getattr(value, method)()
    return value


class AnimationSnapshot:
    """What an operation may change on an armature, put back by :meth:`rollback`: its NLA
    tracks and active Action, the Actions created since (removed), its custom properties,
    its pose bones' rotation modes and transforms (so a failed capture never leaves a NaN
    or half-applied pose), and with ``keys=True`` every key of the Actions it plays (for
    operations that edit existing keys: the cleanup tools, re-capturing a range)."""

    def __init__(self, obj: bpy.types.Object, keys: bool = False):
        self.obj = obj
        self.action_ptrs = {a.as_pointer() for a in bpy.data.actions}
        data = obj.animation_data
        self.had_animation = data is not None
        self.active_action = data.action if data is not None else None
        self.active_slot = getattr(data, "action_slot", None) if data is not None else None
        self.track_ptrs = {t.as_pointer() for t in data.nla_tracks} if data is not None else set()
        self.curves: dict[int, dict[tuple[int, str, int], dict[str, np.ndarray]]] = {}
        if keys and data is not None:
            played = [data.action, *(s.action for t in data.nla_tracks for s in t.strips)]
            for action in played:
                if action is not None and action.as_pointer() not in self.curves:
                    self.curves[action.as_pointer()] = {
                        (owner, fc.data_path, fc.array_index): _read_keys(fc)
                        for owner, fcurves in _fcurve_sets(action) for fc in fcurves
                    }  # fmt: skip
        self.props = {k: _plain(obj[k]) for k in obj.keys()}
        bones = obj.pose.bones if obj.pose is not None else []
        self.modes = {pb.name: pb.rotation_mode for pb in bones}
        self.pose = {}
        for attr, width in _POSE_CHANNELS:
            self.pose[attr] = np.empty(len(bones) * width, dtype=np.float32)
            if len(bones):
                bones.foreach_get(attr, self.pose[attr])

    def rollback(self) -> None:
        """Put the armature back as it was when the snapshot was taken."""
        obj = self.obj
        data = obj.animation_data
        if data is not None:
            for track in [t for t in data.nla_tracks if t.as_pointer() not in self.track_ptrs]:
                data.nla_tracks.remove(track)
            if data.action != self.active_action:
                data.action = self.active_action
            if self.active_slot is not None and data.action_slot != self.active_slot:
                try:
                    data.action_slot = self.active_slot
                except (TypeError, RuntimeError, ReferenceError):
                    pass  # the slot went with its action; Blender picks one
        for action in [a for a in bpy.data.actions if a.as_pointer() not in self.action_ptrs]:
            bpy.data.actions.remove(action)
        self._restore_keys()
        if not self.had_animation and obj.animation_data is not None:
            obj.animation_data_clear()
        self._restore_pose()
        for key in set(obj.keys()) - set(self.props):
            del obj[key]
        for key, value in self.props.items():
            if key not in obj.keys() or _plain(obj[key]) != value:
                obj[key] = value

    def _restore_keys(self) -> None:
        actions = {a.as_pointer(): a for a in bpy.data.actions}
        for pointer, saved in self.curves.items():
            action = actions.get(pointer)
            if action is None:
                continue
            for owner, fcurves in _fcurve_sets(action):
                for fc in list(fcurves):
                    keys = saved.get((owner, fc.data_path, fc.array_index))
                    if keys is None:
                        fcurves.remove(fc)
                    else:
                        _write_keys(fc, keys)

    def _restore_pose(self) -> None:
        bones = self.obj.pose.bones if self.obj.pose is not None else []
        for pb in bones:  # modes first: switching the mode converts the rotation values
            mode = self.modes.get(pb.name)
            if mode is not None and pb.rotation_mode != mode:
                pb.rotation_mode = mode
        if len(bones) * 3 == len(self.pose["location"]):
            for attr, values in self.pose.items():
                bones.foreach_set(attr, values)


# -- planning and writing ---------------------------------------------------------------------


@dataclass(frozen=True)
class _HandKeys:
    """Everything one hand will key, computed and checked before the scene is touched."""

    side: Side
    poses: BonePoses  # rotations (K, B, 4), locations (K, B, 3) or None
    frames: np.ndarray  # (K,) scene frames
    conf_frames: np.ndarray  # (C,)
    conf_values: np.ndarray  # (C,) 0..1

    @property
    def key_count(self) -> int:
        per_frame = 4 * len(self.poses.bone_names)
        if self.poses.locations is not None:
            per_frame += 3 * int(np.any(self.poses.locations, axis=0).any(axis=1).sum())
        return per_frame * len(self.frames) + len(self.conf_frames)


def apply_take(obj: bpy.types.Object, take: Take, mapping: RigMapping, settings: ApplySettings,
               scene: bpy.types.Scene) -> ApplyResult:  # fmt: skip
    """Key the take onto ``obj``'s hand bones.

    Raises HandmocapError naming the problem, before anything is changed, when the take
    would key garbage: NaN or infinite values, a wrong frame rate, frames outside what
    Blender can hold, more than :data:`MAX_KEYS` keys. On any error while writing, the
    armature (its animation, custom properties and pose) is left exactly as it was and the
    error propagates."""
    result = ApplyResult()
    # What the engine could not read (a truncated video, undecodable frames) reaches the
    # animator with the capture's report, not only the engine's log.
    result.messages.extend(str(w) for w in take.header.warnings or ())
    frame_map, hands = _plan(obj, take, mapping, settings, scene, result.messages)
    snapshot = AnimationSnapshot(obj)
    try:
        _write(obj, hands, frame_map, settings, result)
    except BaseException:
        snapshot.rollback()
        raise
    return result


def _plan(obj, take, mapping, settings, scene, messages) -> tuple[FrameMap, list[_HandKeys]]:
    """Solve, resample and check every hand; nothing in the scene changes here."""
    timing = take_timing(take.header)
    fps = scene_fps(scene)
    check_rate(timing, fps)
    frame_map = FrameMap.of_take(timing, fps, int(settings.scene_start))
    planner = _Planner(
        obj, settings, timing, frame_map, messages,
        spec=read_armature_spec(obj), current=current_pose_matrices(obj),
        config=RetargetConfig(
            wrist=settings.wrist,
            camera_to_armature=camera_to_armature(obj, CAMERA_ROTATIONS[settings.camera]),
            units_per_metre=units_per_metre(obj, scene),
        ),
    )  # fmt: skip
    hands: list[_HandKeys] = []
    for side in settings.sides:
        tracks = side_tracks(take, side)
        if side not in mapping.hands:
            if tracks:
                messages.append(f"{obj.name} has no {side} hand; the {side} hand is skipped")
            continue
        for index, track in tracks:
            check_track(track, index)
        series = hand_series(take, side)
        if series is None:
            if tracks:
                messages.append(f"the take's {side} hand has no frames")
            elif len(settings.sides) == 1:
                messages.append(f"the take has no {side} hand")
            continue
        hand = planner.hand(series, mapping.hands[side], sum(h.key_count for h in hands))
        if hand is not None:
            hands.append(hand)
    return frame_map, hands


@dataclass
class _Planner:
    """What every hand of one take is planned against."""

    obj: bpy.types.Object
    settings: ApplySettings
    timing: TakeTiming
    frame_map: FrameMap  # the take's video frames onto the scene's
    messages: list[str]
    spec: ArmatureSpec
    current: np.ndarray  # (N, 4, 4) pose matrices
    config: RetargetConfig

    def hand(self, series: HandSeries, hand_map: HandBones,
             keys_before: int) -> _HandKeys | None:  # fmt: skip
        """The keys of one hand, checked; None (with a message) when it keys nothing."""
        side, obj, settings = series.side, self.obj, self.settings
        if len(series.frames) < MIN_SAMPLES:
            self.messages.append(
                f"the take's {side} hand was seen on only {len(series.frames)} video frame "
                f"(frame {series.frames[0]}): at least {MIN_SAMPLES} are needed to key motion; "
                "capture a longer frame range"
            )
            return None
        hand_bone = obj.data.bones[hand_map.bones["hand"]]
        if settings.wrist is WristMode.ROTATION_AND_LOCATION and hand_bone.use_connect:
            self.messages.append(
                f"{hand_bone.name} is connected to its parent, so only its rotation is keyed "
                "(move the arm's IK control instead)"
            )
        solver = HandRetargeter(self.spec, hand_map, series.rest_keypoints, self.config)
        solved = solver.solve(series.pose, series.translation, self.current)
        _check_solved(obj, series, solved, self.current)
        fps = self.frame_map.scene_fps
        times = self.frame_map.to_scene(series.frames)
        check_scene_frames(side, times)
        grid = scene_grid(times, fps / self.timing.fps)
        if not grid.segments:
            self.messages.append(f"the {side} hand covers no whole scene frame")
            return None
        _check_key_budget(obj, side, grid.key_count, solved, keys_before, self.timing, fps)
        keys = on_scene_frames(times, solved.rotations, solved.locations, series.confidence,
                               grid)  # fmt: skip
        check_finite_keys(side, "rotations", keys.rotations, solved.bone_names, keys.frames)
        if keys.locations is not None:
            check_finite_keys(side, "locations", keys.locations, solved.bone_names, keys.frames)
        poses = BonePoses(side, solved.bone_names, keys.rotations, keys.locations)
        return _HandKeys(side, poses, keys.frames, keys.conf_frames, keys.conf_values)


def _check_solved(obj, series: HandSeries, solved: BonePoses, current: np.ndarray) -> None:
    """Refuse NaN from the retargeting, saying whether the rig's own pose is to blame."""
    bad = ~np.isfinite(solved.rotations).all(axis=2)
    if solved.locations is not None:
        bad |= ~np.isfinite(solved.locations).all(axis=2)
    if not bad.any():
        return
    broken = [b.name for b, m in zip(obj.data.bones, current, strict=True)
              if not np.isfinite(m).all()]  # fmt: skip
    if broken:
        raise HandmocapError(
            f"{obj.name}'s current pose is not finite (NaN) on {len(broken)} bones, e.g. "
            f"{broken[0]!r}: clear the pose (Pose > Clear Transform > All) or remove the "
            "animation that makes it, then capture again"
        )
    t, b = np.argwhere(bad)[0]
    raise HandmocapError(
        f"retargeting the take's {series.side} hand gave NaN rotations (bone "
        f"{solved.bone_names[b]!r}, video frame {series.frames[t]}): {TAKE_DAMAGED}"
    )


def _check_key_budget(obj, side: Side, frames: int, solved: BonePoses, before: int,
                      timing: TakeTiming, fps: float) -> None:  # fmt: skip
    """Refuse before resampling when the keys of all hands would exceed MAX_KEYS: ``before``
    keys of the hands planned so far, and ``frames`` scene frames of this one (quaternion
    curves of every solved bone, location curves where solved, one confidence curve)."""
    per_frame = 4 * len(solved.bone_names) + 1
    if solved.locations is not None:
        per_frame += 3 * len(solved.bone_names)
    keys = before + frames * per_frame
    if keys > MAX_KEYS:
        raise HandmocapError(
            f"the take would put about {keys:,} keys on {obj.name} ({frames:,} scene frames for "
            f"the {side} hand at {fps:g} fps, from a {timing.video_fps:g} fps video), more than "
            f"the {MAX_KEYS:,} one capture may key: capture a shorter frame range"
        )


def _write(obj, hands: list[_HandKeys], frame_map: FrameMap, settings: ApplySettings,
           result: ApplyResult) -> None:  # fmt: skip
    """Key the planned hands: one Action each, on its own NLA track or active. Each Action
    carries the frame map (``hm_scene_start``, ``hm_video_start``, ``hm_video_fps``), so a
    scene range can be mapped back to the video (re-capturing it)."""
    lo, hi = np.inf, -np.inf
    for written, hand in enumerate(hands):
        side = hand.side
        name = f"{settings.take_name}_{side.letter}"
        writer = ActionWriter(obj, name, assign=False)
        writer.bone_curves(hand.poses, hand.frames)
        prop = f"hm_confidence_{side.letter}"
        obj[prop] = 0.0
        obj.id_properties_ui(prop).update(min=0.0, max=1.0, description=(
            "handmocap: how sure the capture is of this hand (0 where it was lost)"))  # fmt: skip
        writer.curve(f'["{prop}"]', 0, hand.conf_frames, hand.conf_values, "Confidence")
        writer.action["hm_side"] = side.value
        writer.action["hm_take"] = settings.take_path
        writer.action["hm_scene_start"] = frame_map.scene_start
        writer.action["hm_video_start"] = frame_map.video_start
        writer.action["hm_video_fps"] = frame_map.video_fps
        # An object plays one active action: a second hand (or every hand, with use_nla)
        # goes on its own NLA track.
        if settings.use_nla or written > 0:
            writer.push_to_nla(name)
        else:
            writer.assign()
        result.actions[side] = writer.action.name
        result.keyed_bones[side] = len(hand.poses.bone_names)
        lo, hi = min(lo, hand.frames[0]), max(hi, hand.frames[-1])
    if hands:
        result.frame_range = (int(lo), int(hi))
