"""Hand skeleton definitions kept as data: joint orders and the maps between them.

Three orders matter in handmocap:

* **MediaPipe 21 keypoints** (what the landmark network predicts and what ground truth
  is scored in): wrist; thumb CMC, MCP, IP, tip; then index, middle, ring, pinky each
  MCP, PIP, DIP, tip.
* **MANO 16 joints** (what the hand model is posed with): wrist; index, middle, pinky,
  ring, thumb, each 3 joints from the knuckle outwards. MANO has no separate finger
  metacarpal joints (they are part of the rigid palm) and no fingertip joints; the 5
  tips are extra vertices, appended in MANO's own order thumb, index, middle, ring,
  pinky to make MANO's 21 keypoints.
* **WebXR 25 joints** (the openly licensed rigged hand used for rendering and for the
  open hand model): wrist; thumb metacarpal, proximal, distal, tip; each finger
  metacarpal, proximal, intermediate, distal, tip.

"Handedness" always means the physical hand.
"""

from __future__ import annotations

from typing import Final

import numpy as np

FINGERS: Final = ("thumb", "index", "middle", "ring", "pinky")

# --- MediaPipe 21 -------------------------------------------------------------------
MEDIAPIPE_21: Final = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip

# Parent of each MediaPipe keypoint (the bones the overlay draws); -1 for the wrist.
MEDIAPIPE_21_PARENTS: Final = (
    -1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19,
)  # fmt: skip

# --- MANO 16 + 5 tips -----------------------------------------------------------------
MANO_16: Final = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)  # fmt: skip
MANO_16_PARENTS: Final = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
MANO_21: Final = (*MANO_16, "thumb_tip", "index_tip", "middle_tip", "ring_tip", "pinky_tip")

# --- WebXR 25 -------------------------------------------------------------------------
WEBXR_25: Final = (
    "wrist",
    "thumb-metacarpal", "thumb-phalanx-proximal", "thumb-phalanx-distal", "thumb-tip",
    "index-finger-metacarpal", "index-finger-phalanx-proximal",
    "index-finger-phalanx-intermediate", "index-finger-phalanx-distal", "index-finger-tip",
    "middle-finger-metacarpal", "middle-finger-phalanx-proximal",
    "middle-finger-phalanx-intermediate", "middle-finger-phalanx-distal", "middle-finger-tip",
    "ring-finger-metacarpal", "ring-finger-phalanx-proximal",
    "ring-finger-phalanx-intermediate", "ring-finger-phalanx-distal", "ring-finger-tip",
    "pinky-finger-metacarpal", "pinky-finger-phalanx-proximal",
    "pinky-finger-phalanx-intermediate", "pinky-finger-phalanx-distal", "pinky-finger-tip",
)  # fmt: skip
# The chain the WebXR importer loses (all 25 bones come in unparented):
# wrist -> metacarpal -> proximal -> intermediate -> distal -> tip; the thumb has no
# intermediate.
WEBXR_25_PARENTS: Final = (
    -1,
    0, 1, 2, 3,
    0, 5, 6, 7, 8,
    0, 10, 11, 12, 13,
    0, 15, 16, 17, 18,
    0, 20, 21, 22, 23,
)  # fmt: skip

# --- maps -----------------------------------------------------------------------------
# MediaPipe keypoint i sits on WebXR joint WEBXR_FOR_MEDIAPIPE[i]: MediaPipe's CMC/MCP/IP
# of the thumb are the heads of the WebXR thumb metacarpal/proximal/distal, and a
# finger's MCP/PIP/DIP are the heads of its proximal/intermediate/distal phalanges.
WEBXR_FOR_MEDIAPIPE: Final = np.array(
    [0, 1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 18, 19, 21, 22, 23, 24], dtype=np.int64
)
# The WebXR joint whose rotation equals MANO joint k's rotation: MANO's wrist is the
# WebXR wrist; MANO's finger joints 1..3 rotate the proximal/intermediate/distal
# phalanges; MANO's thumb1..3 rotate the thumb metacarpal/proximal/distal.
WEBXR_FOR_MANO: Final = np.array(
    [0, 6, 7, 8, 11, 12, 13, 21, 22, 23, 16, 17, 18, 1, 2, 3], dtype=np.int64
)
# MANO's 21 keypoints (16 joints + tips in MANO order) re-ordered to MediaPipe order.
MANO21_FOR_MEDIAPIPE: Final = np.array(
    [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20], dtype=np.int64
)
# WebXR joints that MANO keeps rigid (finger metacarpals) or does not rotate (tips).
WEBXR_RIGID_IN_MANO: Final = (5, 10, 15, 20, 4, 9, 14, 19, 24)


def webxr_finger_and_segment(name: str) -> tuple[str, str]:
    """Split a WebXR joint name into (finger, segment).

    >>> webxr_finger_and_segment("index-finger-phalanx-distal")
    ('index', 'distal')
    >>> webxr_finger_and_segment("wrist")
    ('wrist', 'wrist')
    """
    if name == "wrist":
        return "wrist", "wrist"
    finger = name.split("-", 1)[0]
    segment = name.rsplit("-", 1)[1]
    if finger not in FINGERS:
        raise ValueError(f"not a WebXR hand joint name: {name!r}")
    return finger, segment


def parents_are_topological(parents: tuple[int, ...]) -> bool:
    """True when every joint's parent comes before it (forward kinematics can run in order)."""
    return all(p < i for i, p in enumerate(parents))
