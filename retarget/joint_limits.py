"""Anatomical joint limits per WebXR joint, in degrees, and the angle -> rotation map.

Each joint's rotation relative to its rest pose is described by three angles about the
axes of its anatomical frame (the WebXR authored frame, see ``models/webxr_hand.py``):

* **flex**: about local -X; positive curls the segment towards the palm;
* **spread**: about local +Y (the back-of-hand normal); positive moves the segment
  towards the thumb side (radial), whichever the hand;
* **twist**: about the bone axis (local -Z); positive is a right-handed turn about the
  direction towards the fingertip.

The rotation is ``R = R_flex @ R_spread @ R_twist`` in the joint frame. The ranges are
typical active ranges of motion from the hand-surgery literature, slightly narrowed so
that sampled poses look natural. Finger metacarpals and tips are rigid (0 range): MANO
folds the metacarpals into the palm, so every sampled pose is exactly representable by a
MANO-layout hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from handmocap.retarget.hand_skeleton import WEBXR_25, webxr_finger_and_segment
from handmocap.retarget.rotations import rotation_about


@dataclass(frozen=True)
class JointLimit:
    """Closed ranges (min, max) in degrees for flex, spread and twist."""

    flex: tuple[float, float]
    spread: tuple[float, float]
    twist: tuple[float, float]

    def as_array(self) -> np.ndarray:
        """(3, 2) array [[flex_min, flex_max], [spread_min, ...], [twist_min, ...]]."""
        return np.array([self.flex, self.spread, self.twist], dtype=np.float64)


_RIGID = JointLimit((0.0, 0.0), (0.0, 0.0), (0.0, 0.0))
_FINGER_MCP_SPREAD: Final = {
    "index": (-12.0, 20.0),
    "middle": (-12.0, 12.0),
    "ring": (-15.0, 10.0),
    "pinky": (-25.0, 8.0),
}

# Per (finger, segment). Finger MCP flexion to 90, PIP to 105, DIP to 75 (hyperextension
# allowed a little at MCP and DIP). Thumb CMC is a saddle joint (flex = opposition across
# the palm, spread = palmar abduction), MCP and IP are mostly hinges.
_LIMITS: Final[dict[tuple[str, str], JointLimit]] = {
    ("thumb", "metacarpal"): JointLimit((-15.0, 45.0), (-10.0, 40.0), (-20.0, 25.0)),
    ("thumb", "proximal"): JointLimit((-10.0, 55.0), (-8.0, 8.0), (-10.0, 10.0)),
    ("thumb", "distal"): JointLimit((-15.0, 75.0), (-3.0, 3.0), (-3.0, 3.0)),
    **{
        (f, "proximal"): JointLimit((-20.0, 90.0), _FINGER_MCP_SPREAD[f], (-8.0, 8.0))
        for f in ("index", "middle", "ring", "pinky")
    },
    **{(f, "intermediate"): JointLimit((0.0, 105.0), (-3.0, 3.0), (-4.0, 4.0))
       for f in ("index", "middle", "ring", "pinky")},
    **{(f, "distal"): JointLimit((-5.0, 75.0), (-3.0, 3.0), (-3.0, 3.0))
       for f in ("index", "middle", "ring", "pinky")},
}  # fmt: skip


def limit_for(joint_name: str) -> JointLimit:
    """The limit of one WebXR joint; the wrist is free (its range is the wrist's global pose,
    handled by the caller) and reported as rigid here."""
    if joint_name == "wrist":
        return _RIGID
    return _LIMITS.get(webxr_finger_and_segment(joint_name), _RIGID)


def limits_array() -> np.ndarray:
    """(25, 3, 2) limits in degrees for the WebXR joints in WEBXR_25 order."""
    return np.stack([limit_for(n).as_array() for n in WEBXR_25])


def clip_to_limits(angles_deg: np.ndarray) -> np.ndarray:
    """Clip (..., 25, 3) angles in degrees to the anatomical limits."""
    lim = limits_array()
    return np.clip(angles_deg, lim[..., 0], lim[..., 1])


def spread_signs(rest_frames: np.ndarray, rest_positions: np.ndarray) -> np.ndarray:
    """(25,) +1/-1 so that positive spread moves each joint towards the thumb side.

    rest_frames (25, 3, 3) and rest_positions (25, 3) in hand space. Derived from the
    geometry (index knuckle minus pinky knuckle), so it works for either hand.
    """
    radial = (
        rest_positions[WEBXR_25.index("index-finger-phalanx-proximal")]
        - rest_positions[WEBXR_25.index("pinky-finger-phalanx-proximal")]
    )
    # Turning about +y moves the bone direction (-z) towards -x.
    moves_towards = -rest_frames[:, :, 0]
    return np.where(moves_towards @ radial >= 0.0, 1.0, -1.0)


def angles_to_local_rotations(
    angles_deg: np.ndarray, rest_frames: np.ndarray, signs: np.ndarray
) -> np.ndarray:
    """Anatomical angles -> joint rotations in hand-space rest coordinates.

    Args:
        angles_deg: (..., 25, 3) flex, spread, twist in degrees.
        rest_frames: (25, 3, 3) joint frames at rest (columns = local axes in hand space).
        signs: (25,) spread sign per joint from :func:`spread_signs`.

    Returns:
        (..., 25, 3, 3) rotations L such that a posed child is ``G_parent @ L`` (MANO's
        convention: local rotations expressed in the rest pose's axes).
    """
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    x = rest_frames[:, :, 0]
    y = rest_frames[:, :, 1]
    z = rest_frames[:, :, 2]
    r_flex = rotation_about(-x, a[..., 0])
    r_spread = rotation_about(y, a[..., 1] * signs)
    r_twist = rotation_about(-z, a[..., 2])
    return r_flex @ r_spread @ r_twist
