# SPDX-License-Identifier: GPL-3.0-or-later
"""The panel's settings, stored on the scene (``scene.handmocap``), and how they become the
engine's and the retargeter's config objects.

The two Smoothing sliders span the range of the engine this add-on ships with; they are
drawn only when the checked engine reports its motion prior, and what they send is clamped
to the range that engine reports."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from handmocap.retarget.solver import WristMode
from handmocap.sides import BOTH, Side

from .apply_take import ApplySettings, CameraPlacement
from .engine import SMOOTHING_BEFORE_CHECK, SmoothingRange

HANDS = (
    ("BOTH", "Both", "Capture both hands"),
    ("LEFT", "Left", "Only the left hand"),
    ("RIGHT", "Right", "Only the right hand"),
)
WRIST = (
    ("ROTATION", "Rotation", "The hand bone turns as captured; the arm stays as it is"),
    ("NONE", "Fingers only", "Only the fingers are keyed; the hand keeps its pose"),
    (
        "ROTATION_AND_LOCATION",
        "Rotation and location",
        "The hand bone also moves as the captured wrist moves (bones not connected to a parent)",
    ),
)
CAMERA = (
    ("FRONT", "Facing the character", "The camera faced the performer, like a webcam"),
    ("FIRST_PERSON", "First person", "The camera looked where the performer looked"),
)
DEVICE = (
    ("PREFERENCES", "From preferences", "Use the device set in the add-on preferences"),
    ("AUTO", "Auto", "GPU when there is one, else CPU"),
    ("CUDA", "GPU (CUDA)", "Fail if no CUDA GPU can run the engine"),
    ("CPU", "CPU", "Always run on the CPU"),
)
SIDE = (
    ("AUTO", "From its name", "Read the hand from the armature's name"),
    ("LEFT", "Left", ""),
    ("RIGHT", "Right", ""),
)
FBX_PRESETS = (("UNITY", "Unity", ""), ("UNREAL", "Unreal", ""), ("GENERIC", "Generic", ""))
CAPTURE_SMOOTHING = ("Motion prior strength for the capture: 0 keeps the per-frame fit (every "
                     "frame solved on its own); higher gives smoother motion and fills short "
                     "stretches where the hand was hidden")  # fmt: skip
RESOLVE_SMOOTHING = ("Motion prior strength for Re-solve with Motion Prior: 0 puts back the "
                     "per-frame fit; higher gives smoother motion and fills short stretches "
                     "where the hand was hidden")  # fmt: skip


def _smoothing(description: str, span: SmoothingRange):
    """A Smoothing slider over ``span`` (the engine's range), starting at its default."""
    return FloatProperty(
        name="Smoothing", description=description, default=span.default,
        min=span.minimum, max=span.maximum, soft_min=span.minimum, soft_max=span.maximum,
        step=10, precision=2,
    )  # fmt: skip


def _is_armature(_self, obj: bpy.types.Object) -> bool:
    return obj.type == "ARMATURE"


class HM_MappingItem(bpy.types.PropertyGroup):
    """One row of the mapping editor: a hand role and the bone that plays it."""

    side: StringProperty(name="Side")
    role: StringProperty(name="Role")
    bone: StringProperty(name="Bone", description="The bone that plays this role (empty: none)")


class HM_CaptureSettings(bpy.types.PropertyGroup):
    source: EnumProperty(
        name="Source",
        items=(
            ("FILE", "Video file", "A video file or a folder of frames"),
            ("CLIP", "Movie clip", "A movie clip loaded in this file"),
        ),
    )
    video_path: StringProperty(
        name="Video",
        subtype="FILE_PATH",
        description="The video to capture (or a folder of frames)",
    )
    clip: PointerProperty(name="Clip", type=bpy.types.MovieClip)
    frame_start: IntProperty(
        name="First frame",
        min=0,
        default=0,
        description="First video frame to capture (0 = the first)",
    )
    frame_end: IntProperty(
        name="Last frame",
        min=0,
        default=0,
        description="Last video frame (inclusive; 0 = to the end)",
    )
    stride: IntProperty(name="Stride", min=1, default=1, description="Use every n-th frame")
    video_fps: FloatProperty(
        name="Video frame rate",
        min=0.0,
        max=1000.0,
        default=0.0,
        description="Frames per second of the video, for files that do not state it (and for "
        "folders of frames); 0 = what the file says (folders: 30)",
    )
    hands: EnumProperty(name="Hands", items=HANDS, default="BOTH")
    target: PointerProperty(
        name="Armature",
        type=bpy.types.Object,
        poll=_is_armature,
        description="The rig to put the animation on",
    )
    one_hand_side: EnumProperty(
        name="Hand of this rig",
        items=SIDE,
        default="AUTO",
        description="For rigs that hold one hand",
    )
    wrist: EnumProperty(name="Wrist", items=WRIST, default="ROTATION")
    camera: EnumProperty(name="Camera", items=CAMERA, default="FRONT")
    device: EnumProperty(name="Device", items=DEVICE, default="PREFERENCES")
    prior_smoothing: _smoothing(CAPTURE_SMOOTHING, SMOOTHING_BEFORE_CHECK)
    scene_start: IntProperty(
        name="Start at scene frame",
        default=1,
        description="Scene frame where the first captured frame lands",
    )
    use_nla: BoolProperty(name="Each take on its own NLA track", default=True)
    use_custom_mapping: BoolProperty(
        name="Custom mapping",
        default=False,
        description="Use the bones set below instead of detection",
    )
    mapping: CollectionProperty(type=HM_MappingItem)
    last_take: StringProperty(name="Last take", subtype="FILE_PATH")
    # cleanup
    range_start: IntProperty(name="From", default=1)
    range_end: IntProperty(name="To", default=250)
    smooth_sigma: FloatProperty(
        name="Strength",
        min=0.0,
        max=20.0,
        default=2.0,
        description="Gaussian smoothing, standard deviation in frames",
    )
    resolve_smoothing: _smoothing(RESOLVE_SMOOTHING, SMOOTHING_BEFORE_CHECK)
    reduce_tolerance: FloatProperty(
        name="Tolerance",
        min=0.0,
        max=20.0,
        default=1.0,
        subtype="NONE",
        description="Keep every bone within this many degrees of the full animation",
    )
    # export
    fbx_preset: EnumProperty(name="Preset", items=FBX_PRESETS, default="UNITY")
    fbx_path: StringProperty(name="FBX file", subtype="FILE_PATH", default="//hands.fbx")

    def sides(self) -> tuple[Side, ...]:
        """The hands to capture: ``hands`` is BOTH or a Side's name (LEFT, RIGHT)."""
        return BOTH if self.hands == "BOTH" else (Side[self.hands],)

    def rig_side(self) -> Side | None:
        """The hand a one-hand rig holds, or None to let detection decide (``AUTO``)."""
        return None if self.one_hand_side == "AUTO" else Side[self.one_hand_side]

    def video(self) -> Path | None:
        if self.source == "CLIP":
            clip = self.clip or bpy.context.scene.active_clip  # default: the scene's clip
            return Path(bpy.path.abspath(clip.filepath)) if clip else None
        return Path(bpy.path.abspath(self.video_path)) if self.video_path else None

    def apply_settings(self, take_name: str, take_path: str) -> ApplySettings:
        return ApplySettings(
            sides=self.sides(),
            wrist=WristMode(self.wrist.lower()),
            camera=CameraPlacement(self.camera.lower()),
            scene_start=self.scene_start,
            use_nla=self.use_nla,
            take_name=take_name,
            take_path=take_path,
        )


CLASSES = (HM_MappingItem, HM_CaptureSettings)


def register() -> None:
    bpy.types.Scene.handmocap = PointerProperty(type=HM_CaptureSettings)


def unregister() -> None:
    del bpy.types.Scene.handmocap
