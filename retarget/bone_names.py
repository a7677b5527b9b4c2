"""Hand bone roles and a bone-name parser that knows the common naming schemes (no bpy).

A *role* is what a bone does in a hand, independent of any rig: ``"hand"``, ``"forearm"``,
or ``"<finger>.<segment>"`` such as ``"index.proximal"``. Fingers have a metacarpal and
three phalanges (proximal, intermediate, distal); the thumb has a metacarpal, proximal and
distal. Roles are the vocabulary shared by rig profiles, custom mappings and the solver.

:func:`parse_bone_name` reads side, finger and segment out of names such as
``f_index.01.R`` (Rigify), ``DEF-thumb.02.L``, ``mixamorig:RightHandIndex1`` (Mixamo),
``index_metacarpal_l`` (Unreal 5), ``CC_Base_R_Pinky3`` (Character Creator), ``rIndex2``
(Daz), ``J_Bip_L_Ring1`` (VRoid), ``rightThumbProximal`` (VRM) or
``pinky-finger-phalanx-distal`` (WebXR). Numbered segments count from the first bone of the
digit that has its own name: ``1`` is a finger's proximal phalanx (nobody numbers the
metacarpal) and the thumb's metacarpal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from handmocap.retarget.hand_skeleton import FINGERS
from handmocap.sides import Side

FINGER_SEGMENTS: Final = ("metacarpal", "proximal", "intermediate", "distal")
THUMB_SEGMENTS: Final = ("metacarpal", "proximal", "distal")


def digit_segments(finger: str) -> tuple[str, ...]:
    return THUMB_SEGMENTS if finger == "thumb" else FINGER_SEGMENTS


# Every role, arm side first, then each digit from the palm outwards.
ROLES: Final = (
    "forearm",
    "hand",
    *(f"{f}.{s}" for f in FINGERS for s in digit_segments(f)),
)
FINGER_ROLES: Final = tuple(r for r in ROLES if "." in r)

# The MANO joint (index into MANO_16) that rotates the bone of each role. MANO keeps the
# finger metacarpals rigid in the palm, so they have no joint; the thumb's MANO joints are
# its metacarpal (CMC), proximal (MCP) and distal (IP) bones.
MANO_JOINT_FOR_ROLE: Final = {
    "index.proximal": 1, "index.intermediate": 2, "index.distal": 3,
    "middle.proximal": 4, "middle.intermediate": 5, "middle.distal": 6,
    "pinky.proximal": 7, "pinky.intermediate": 8, "pinky.distal": 9,
    "ring.proximal": 10, "ring.intermediate": 11, "ring.distal": 12,
    "thumb.metacarpal": 13, "thumb.proximal": 14, "thumb.distal": 15,
}  # fmt: skip


def role_finger(role: str) -> str:
    return role.split(".", 1)[0]


@dataclass(frozen=True)
class ParsedBoneName:
    """What a bone name says. ``role`` is None for bones that are not a hand role (tips,
    helper bones such as ``MCH-``/``*_master``/IK targets, or anything unrecognised)."""

    name: str
    side: Side | None
    role: str | None
    helper: bool = False


_SIDE_WORDS = {"left": Side.LEFT, "right": Side.RIGHT, "l": Side.LEFT, "r": Side.RIGHT,
               "lf": Side.LEFT, "rt": Side.RIGHT, "lft": Side.LEFT, "rgt": Side.RIGHT}  # fmt: skip
_FINGER_WORDS = {
    "thumb": "thumb", "index": "index", "pointer": "index", "forefinger": "index",
    "middle": "middle", "mid": "middle", "ring": "ring", "pinky": "pinky", "pinkie": "pinky",
    "little": "pinky", "small": "pinky", "baby": "pinky",
}  # fmt: skip
_SEGMENT_WORDS = {
    "metacarpal": "metacarpal", "meta": "metacarpal", "carpal": "metacarpal",
    "proximal": "proximal", "prox": "proximal",
    "intermediate": "intermediate", "inter": "intermediate", "medial": "intermediate",
    "middle": "intermediate", "mid": "intermediate",
    "distal": "distal", "dist": "distal",
}  # fmt: skip
_TIP_WORDS = {"tip", "end", "nub", "top", "nail"}
# Bones that exist to drive others: never mapped.
_HELPER_WORDS = {"mch", "master", "tweak", "target", "pole", "twist", "socket", "vis", "ik",
                 "drv", "parent", "poletarget", "helper", "corrective"}  # fmt: skip
_RIGIFY_PALM = {1: "index", 2: "middle", 3: "ring", 4: "pinky"}
_DUPLICATE = re.compile(r"\.\d{3}$")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def tokens(name: str) -> list[str]:
    """Lower-case words and numbers of a bone name, namespace (``ns:``) removed.

    >>> tokens("mixamorig:RightHandIndex1")
    ['right', 'hand', 'index', '1']
    >>> tokens("DEF-f_index.01.R")
    ['def', 'f', 'index', '01', 'r']
    """
    bare = name.rsplit(":", 1)[-1]
    return [t.lower() for part in re.split(r"[\s._\-|]+", bare) for t in _CAMEL.findall(part)]


def parse_bone_name(name: str) -> ParsedBoneName:
    """Side, role and helper status of one bone name (see the module docstring)."""
    words = tokens(_DUPLICATE.sub("", name))
    sides = {_SIDE_WORDS[w] for w in words if w in _SIDE_WORDS}
    side = sides.pop() if len(sides) == 1 else None
    helper = bool(_HELPER_WORDS & set(words)) or name.upper().startswith(("MCH-", "VIS-"))
    role = None if helper else _role(words)
    return ParsedBoneName(name, side, role, helper)


def _role(words: list[str]) -> str | None:
    fingers = [(i, _FINGER_WORDS[w]) for i, w in enumerate(words) if w in _FINGER_WORDS]
    if not fingers:
        if "palm" in words:  # Rigify's palm.01..04 are the index..pinky metacarpals
            number = _first_number(words)
            finger = _RIGIFY_PALM.get(number) if number is not None else None
            return f"{finger}.metacarpal" if finger else None
        if "forearm" in words or {"lower", "arm"} <= set(words) or "lowerarm" in words:
            return "forearm"
        if {"fore", "arm"} <= set(words):
            return "forearm"
        if "hand" in words or "wrist" in words:
            return "hand"
        return None
    at, finger = fingers[0]
    rest = words[at + 1 :]
    if _TIP_WORDS & set(rest):
        return None
    for w in rest:
        if w in _SEGMENT_WORDS:
            segment = _SEGMENT_WORDS[w]
            if segment in digit_segments(finger):
                return f"{finger}.{segment}"
            if finger == "thumb" and segment == "intermediate":
                return "thumb.proximal"
    number = _first_number(rest)
    if number is None:
        return None
    numbered = digit_segments(finger)[0 if finger == "thumb" else 1 :]
    return f"{finger}.{numbered[number - 1]}" if 1 <= number <= len(numbered) else None


def _first_number(words: list[str]) -> int | None:
    for w in words:
        if w.isdigit():
            return int(w)
    return None
