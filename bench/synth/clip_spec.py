"""What a synthetic clip contains: the spec, the presets, and where the hands go (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from handmocap.errors import HandmocapError
from handmocap.models.webxr_hand import WebXRHand
from handmocap.retarget.rotations import rotation_about

Layout = Literal[
    "right", "left", "two_apart", "two_crossing",
    "two_touching", "two_stacked", "two_tutting", "two_fingertips",
]  # fmt: skip
# Two hands in contact (or a few millimetres apart), planned together by interaction.py.
INTERACTION_LAYOUTS: tuple[str, ...] = (
    "two_touching", "two_stacked", "two_tutting", "two_fingertips",
)  # fmt: skip
LAYOUTS: tuple[str, ...] = ("right", "left", "two_apart", "two_crossing", *INTERACTION_LAYOUTS)
FingerMotion = Literal["natural", "fast"]
FINGER_MOTIONS: tuple[str, ...] = ("natural", "fast")


@dataclass(frozen=True)
class ClipSpec:
    """One clip to render. Sizes in pixels, time in frames and frames per second."""

    name: str
    seed: int
    num_frames: int
    width: int
    height: int
    layout: Layout = "right"
    fps: float = 24.0
    fov_deg: float = 55.0
    samples: int = 16
    denoise: bool = True
    keep_png: bool = False
    # Cycles' sampling seed: the same scene with other pixel noise, which is what another CPU
    # gives too. Tests are checked against renders with another seed (see cache.py).
    noise_seed: int = 0
    # When > 0, an opaque board passes between the camera and the hands and hides them
    # completely for about this many frames in the middle of the clip (see occluder.py).
    occluder_frames: int = 0
    # "fast": taps and quick fist-to-spread in 0.1-0.3 s (motion.fast_finger_track), which
    # over-smoothing blurs; "natural": the unhurried key-pose sequence.
    finger_motion: FingerMotion = "natural"
    # Two-hand clips: on the frames where the hands meet, also render each hand alone (the
    # de-occlusion truth: amodal masks and hand-alone images). It costs about as much again
    # as the clip on those frames, so only the clips that are scored on it do it.
    render_alone: bool = False

    def validated(self) -> ClipSpec:
        if self.layout not in LAYOUTS:
            raise HandmocapError(f"unknown layout {self.layout!r}; choose one of {LAYOUTS}")
        if not (1 <= self.num_frames <= 100_000):
            raise HandmocapError(f"num_frames must be 1..100000, got {self.num_frames}")
        if not (64 <= self.width <= 4096 and 64 <= self.height <= 4096):
            raise HandmocapError(f"resolution must be 64..4096 px, got {self.width}x{self.height}")
        if not (10.0 <= self.fov_deg <= 120.0):
            raise HandmocapError(f"fov must be 10..120 degrees, got {self.fov_deg}")
        if self.samples < 1 or self.fps <= 0:
            raise HandmocapError("samples must be >= 1 and fps > 0")
        if not (0 <= self.occluder_frames < self.num_frames):
            raise HandmocapError(
                f"occluder_frames must be 0..num_frames-1 ({self.num_frames - 1}), "
                f"got {self.occluder_frames}; 0 means no occluder"
            )
        if self.finger_motion not in FINGER_MOTIONS:
            raise HandmocapError(
                f"unknown finger_motion {self.finger_motion!r}; choose one of {FINGER_MOTIONS}"
            )
        if self.layout in INTERACTION_LAYOUTS and self.finger_motion != "natural":
            raise HandmocapError(
                f"the {self.layout!r} layout plans its own finger motion; "
                "finger_motion must be 'natural'"
            )
        return self

    @property
    def handedness(self) -> tuple[str, ...]:
        return {"right": ("right",), "left": ("left",)}.get(self.layout, ("left", "right"))

    def with_overrides(self, **changes: object) -> ClipSpec:
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).validated()


# The demo clip is the embedded default the capture demo uses. "two_crossing" makes the
# right hand pass in front of the left one mid-clip (de-occlusion material). "occluded"
# hides the hand behind a board for ~15 frames mid-clip and "fast" has quick taps and
# fist-to-spread: a motion prior is measured on both (it must bridge the gap without
# over-smoothing the fast motion). The interaction clips put the hands in contact
# (interaction.py): "two_touching" loose fists side by side, touching from the first frame
# and parting late; "two_stacked" the right palm on the back of the left hand;
# "two_tutting" the right hand sweeping in front of the left one and back, a few
# millimetres off it; "two_fingertips" a steeple, fingertips touching, palms apart.
PRESETS: dict[str, ClipSpec] = {
    "demo": ClipSpec("demo", seed=7, num_frames=48, width=512, height=512, layout="right"),
    "left": ClipSpec("left", seed=11, num_frames=48, width=512, height=512, layout="left"),
    "two_apart": ClipSpec("two_apart", seed=13, num_frames=48, width=640, height=480,
                          layout="two_apart", fov_deg=60.0),
    "two_crossing": ClipSpec("two_crossing", seed=17, num_frames=48, width=640, height=480,
                             layout="two_crossing", fov_deg=60.0),
    "smoke": ClipSpec("smoke", seed=3, num_frames=4, width=192, height=192, layout="two_crossing",
                      samples=4, fov_deg=60.0, render_alone=True),
    "occluded": ClipSpec("occluded", seed=19, num_frames=72, width=512, height=512,
                         layout="right", occluder_frames=15),
    "fast": ClipSpec("fast", seed=23, num_frames=72, width=512, height=512, layout="right",
                     finger_motion="fast"),
    **{name: ClipSpec(name, seed=seed, num_frames=36, width=640, height=480, layout=name,
                      fov_deg=60.0, render_alone=True)
       for name, seed in (("two_touching", 29), ("two_stacked", 31), ("two_tutting", 37),
                          ("two_fingertips", 41))},
}  # fmt: skip


def facing_rotation(
    hand: WebXRHand, palm_to_camera: bool, yaw_deg: float, roll_deg: float
) -> np.ndarray:
    """(3, 3) camera-from-hand rotation: fingers up in the image, palm (or back) to the
    camera, then turned by ``yaw_deg`` about the image's vertical axis and ``roll_deg``
    about the optical axis."""
    up = hand.finger_direction()
    palm = hand.palm_normal() - (hand.palm_normal() @ up) * up
    palm /= np.linalg.norm(palm)
    src = np.stack([up, palm, np.cross(up, palm)], axis=1)
    toward = -1.0 if palm_to_camera else 1.0
    cam_up, cam_palm = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, toward])
    dst = np.stack([cam_up, cam_palm, np.cross(cam_up, cam_palm)], axis=1)
    base = dst @ src.T
    yaw = rotation_about(np.array([0.0, 1.0, 0.0]), np.radians(yaw_deg))
    roll = rotation_about(np.array([0.0, 0.0, 1.0]), np.radians(roll_deg))
    return roll @ yaw @ base


@dataclass(frozen=True)
class HandPlan:
    """Where one hand travels: base orientation and wrist start/end in camera space."""

    side: str
    base_rotation: np.ndarray  # (3, 3)
    start: np.ndarray  # (3,) metres
    end: np.ndarray  # (3,) metres


def plan_hands(
    spec: ClipSpec, hands: dict[str, WebXRHand], rng: np.random.Generator
) -> list[HandPlan]:
    """Placement per layout. Depths of 0.35-0.75 m give hands 130-260 px tall at the presets'
    resolutions.

    A person facing the camera shows the right hand on the image's left; the wrist is
    placed below the image centre so the ~18 cm hand is centred. The interaction layouts
    are planned by ``interaction.plan_interaction`` instead.
    """
    if spec.layout in INTERACTION_LAYOUTS:
        raise HandmocapError(f"the {spec.layout!r} layout is planned by interaction.py")
    plans = []
    palm = bool(rng.uniform() < 0.75)
    for side in spec.handedness:
        mirror = -1.0 if side == "left" else 1.0
        yaw = mirror * rng.uniform(-35.0, 35.0)
        roll = mirror * rng.uniform(-25.0, 25.0)
        rot = facing_rotation(hands[side], palm, yaw, roll)
        depth = rng.uniform(0.35, 0.65)
        if spec.layout in ("right", "left"):
            start = np.array([rng.uniform(-0.03, 0.03), 0.08, depth])
            end = start + np.array([rng.uniform(-0.04, 0.04), rng.uniform(-0.02, 0.02), 0.05])
        elif spec.layout == "two_apart":
            x = -0.11 if side == "right" else 0.11
            start = np.array([x, 0.08, depth + 0.1])
            end = start + np.array([0.0, rng.uniform(-0.02, 0.02), 0.0])
        else:  # two_crossing: the right hand passes in front of the left one; they overlap
            # for about half the clip (a hand is ~9 cm across, relative travel 20 cm).
            x0 = -0.10 if side == "right" else 0.10
            z = 0.48 if side == "right" else 0.62
            start = np.array([x0, 0.08, z])
            end = np.array([-x0, 0.09, z])
        plans.append(HandPlan(side, rot, start, end))
    return plans
