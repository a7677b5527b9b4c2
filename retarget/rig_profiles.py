"""Rig profiles: which bone plays which hand role, for each rig family, as data (no bpy).

A :class:`RigProfile` maps roles (see :mod:`handmocap.retarget.bone_names`) to bone-name
templates; ``{S}``/``{s}``/``{Side}``/``{side}`` stand for ``R``/``r``/``Right``/``right``
(or the left forms). :func:`detect_rig` tries every built-in profile plus one read from the
bone names themselves, and returns the best as a :class:`RigMapping`: for each hand, the
bone of each role and the roles the rig lacks. A mapping the user edits is saved to and
loaded from JSON (:func:`mapping_to_json`, :func:`mapping_from_json`).

Names match exactly, or after dropping a namespace such as Mixamo's ``mixamorig:``
(``mixamorig1:``, ``mixamorig9:`` ... and none at all are all found).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from handmocap.retarget.armature import RigError
from handmocap.retarget.bone_names import (
    FINGER_ROLES,
    MANO_JOINT_FOR_ROLE,
    ROLES,
    digit_segments,
    parse_bone_name,
    tokens,
)
from handmocap.retarget.hand_skeleton import FINGERS
from handmocap.sides import BOTH, Side

MAPPING_FORMAT = "handmocap-rig-mapping"
MAPPING_VERSION = 1
# A side needs this many of the MANO-driven finger roles to count as a hand.
MIN_FINGER_BONES = 3


@dataclass(frozen=True)
class RigProfile:
    """One rig family's naming. ``bones`` maps role -> template; ``single_hand`` profiles
    (the WebXR hand) have no side in their names: one armature is one hand;
    ``bone_x_flexes`` says the family rolls its digit bones so that bone X is the axis the
    digit curls about (Rigify, WebXR), which the solver then trusts over its own estimate."""

    id: str
    label: str
    bones: Mapping[str, str]
    single_hand: bool = False
    bone_x_flexes: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.bones) - set(ROLES)
        if unknown:
            raise RigError(f"profile {self.id!r} has unknown roles: {sorted(unknown)}")
        object.__setattr__(self, "bones", MappingProxyType(dict(self.bones)))

    def bone_name(self, role: str, side: Side) -> str | None:
        """The bone that plays ``role`` on ``side``'s hand (None: the family has none)."""
        template = self.bones.get(role)
        if not template:
            return None
        side = Side(side)
        return template.format(S=side.letter, s=side.letter.lower(), Side=side.display,
                               side=side.value)  # fmt: skip


def _digits(name_of) -> dict[str, str]:
    """Templates for every digit role from ``name_of(finger, segment)`` (None: no bone)."""
    out = {}
    for finger in FINGERS:
        for segment in digit_segments(finger):
            name = name_of(finger, segment)
            if name:
                out[f"{finger}.{segment}"] = name
    return out


def _numbered(finger: str, segment: str) -> int:
    """1-based bone number counted the usual way: thumb from its metacarpal, fingers from
    their proximal phalanx."""
    segments = digit_segments(finger)
    return segments.index(segment) + (1 if finger == "thumb" else 0)


def _rigify_digit(finger: str, segment: str) -> str:
    if finger == "thumb":
        return f"thumb.0{_numbered(finger, segment)}.{{S}}"
    if segment == "metacarpal":
        return f"palm.0{('index', 'middle', 'ring', 'pinky').index(finger) + 1}.{{S}}"
    return f"f_{finger}.0{_numbered(finger, segment)}.{{S}}"


def _prefixed(prefix: str, bones: Mapping[str, str]) -> dict[str, str]:
    return {role: prefix + name for role, name in bones.items()}


_FINGER_METACARPALS = tuple(f"{f}.metacarpal" for f in FINGERS if f != "thumb")
_RIGIFY_METARIG = {"forearm": "forearm.{S}", "hand": "hand.{S}", **_digits(_rigify_digit)}
_WEBXR_SEGMENT = {"metacarpal": "metacarpal", "proximal": "phalanx-proximal",
                  "intermediate": "phalanx-intermediate", "distal": "phalanx-distal"}  # fmt: skip

BUILTIN_PROFILES: tuple[RigProfile, ...] = (
    RigProfile(
        "rigify",
        "Rigify (generated rig: finger FK controls, IK hand)",
        # The generated arm starts in IK (IK_FK = 0), where hand_ik turns the hand.
        # Its palm.0N bones become ORG-/DEF- bones under one palm control: no metacarpals.
        {
            **{r: n for r, n in _RIGIFY_METARIG.items() if r not in _FINGER_METACARPALS},
            "forearm": "forearm_fk.{S}",
            "hand": "hand_ik.{S}",
        },
        bone_x_flexes=True,
    ),
    # Rigify rolls every finger and thumb bone so that X is the axis its chain curls about.
    RigProfile("rigify_metarig", "Rigify metarig", _RIGIFY_METARIG, bone_x_flexes=True),
    RigProfile(
        "rigify_deform",
        "Rigify deform bones (DEF-)",
        _prefixed("DEF-", _RIGIFY_METARIG),
        bone_x_flexes=True,
    ),
    RigProfile(
        "rigify_org",
        "Rigify original bones (ORG-)",
        _prefixed("ORG-", _RIGIFY_METARIG),
        bone_x_flexes=True,
    ),
    RigProfile(
        "mixamo",
        "Mixamo",
        {
            "forearm": "{Side}ForeArm",
            "hand": "{Side}Hand",
            **_digits(
                lambda f, s: (
                    None
                    if f != "thumb" and s == "metacarpal"
                    else f"{{Side}}Hand{f.capitalize()}{_numbered(f, s)}"
                )
            ),
        },
    ),
    RigProfile(
        "unreal",
        "Unreal Engine mannequin",
        {
            "forearm": "lowerarm_{s}",
            "hand": "hand_{s}",
            **_digits(
                lambda f, s: (
                    f"{f}_metacarpal_{{s}}"
                    if f != "thumb" and s == "metacarpal"
                    else f"{f}_0{_numbered(f, s)}_{{s}}"
                )
            ),
        },
    ),
    RigProfile(
        "webxr",
        "WebXR hand (one hand per armature)",
        {
            "hand": "wrist",
            **_digits(
                lambda f, s: (
                    f"{f}-{_WEBXR_SEGMENT[s]}"
                    if f == "thumb"
                    else f"{f}-finger-{_WEBXR_SEGMENT[s]}"
                )
            ),
        },
        single_hand=True,
    ),
    RigProfile(
        "handmocap",
        "handmocap MANO hand",
        {
            "forearm": "forearm.{S}",
            "hand": "wrist.{S}",
            **_digits(
                lambda f, s: (
                    None if f != "thumb" and s == "metacarpal" else f"{f}{_numbered(f, s)}.{{S}}"
                )
            ),
        },
        bone_x_flexes=True,
    ),
)
PROFILES_BY_ID = MappingProxyType({p.id: p for p in BUILTIN_PROFILES})
PARSED_PROFILE_ID = "names"
CUSTOM_PROFILE_ID = "custom"


@dataclass(frozen=True)
class HandBones:
    """One hand of a rig: ``bones`` maps role -> bone name for the roles the rig has;
    ``missing`` lists the roles the profile expected but the armature lacks."""

    side: Side
    bones: Mapping[str, str]
    missing: tuple[str, ...] = ()
    bone_x_flexes: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "bones", MappingProxyType(dict(self.bones)))

    @property
    def driven_roles(self) -> tuple[str, ...]:
        """The mapped roles that MANO rotates (phalanges and the thumb's three bones)."""
        return tuple(r for r in MANO_JOINT_FOR_ROLE if r in self.bones)


@dataclass(frozen=True)
class RigMapping:
    """The hands found in an armature and which profile found them."""

    profile_id: str
    label: str
    hands: Mapping[Side, HandBones] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hands", MappingProxyType(dict(self.hands)))

    def report(self) -> str:
        """One line per hand: what is mapped and what is missing (for the UI)."""
        lines = [f"{self.label}:"]
        for side, hand in sorted(self.hands.items()):
            n = len(hand.driven_roles)
            text = f"  {side} hand: {n} of {len(MANO_JOINT_FOR_ROLE)} finger bones"
            text += ", wrist" if "hand" in hand.bones else ", no wrist bone"
            if hand.missing:
                text += f"; missing: {', '.join(hand.missing)}"
            lines.append(text)
        return "\n".join(lines)


def _bare(name: str) -> str:
    return name.rsplit(":", 1)[-1]


def _lookup(names: Iterable[str]) -> dict[str, str]:
    """Exact names, plus each name without its namespace (first one wins)."""
    table: dict[str, str] = {}
    for n in names:
        table.setdefault(n, n)
    for n in names:
        table.setdefault(_bare(n), n)
    return table


def apply_profile(profile: RigProfile, bone_names: Iterable[str],
                  side: Side | None = None) -> RigMapping:  # fmt: skip
    """The mapping ``profile`` gives on an armature with these bones. For a single-hand
    profile, ``side`` says which hand the armature is."""
    table = _lookup(list(bone_names))
    sides = BOTH if not profile.single_hand else ((Side(side),) if side else ())
    hands = {}
    for s in sides:
        found, missing = {}, []
        for role in profile.bones:
            name = table.get(profile.bone_name(role, s))
            if name is not None:
                found[role] = name
            elif role != "forearm":  # only a reference: nothing is keyed on it
                missing.append(role)
        if sum(r in found for r in MANO_JOINT_FOR_ROLE) >= MIN_FINGER_BONES:
            hands[s] = HandBones(s, found, tuple(missing), profile.bone_x_flexes)
    return RigMapping(profile.id, profile.label, hands)


def mapping_from_names(bone_names: Iterable[str], side: Side | None = None) -> RigMapping:
    """A mapping read from the bone names alone (:func:`parse_bone_name`), for rigs no
    profile knows. Bones without a side in their name count as ``side``'s when given.

    Where several bones claim one role (``hand_fk.R`` and ``ORG-hand.R``), the one with the
    fewest extra words wins, then the shortest name.
    """
    core = ("hand", *(r for r in FINGER_ROLES if not r.endswith("metacarpal") or "thumb" in r))
    candidates: dict[tuple[str, str], list[str]] = {}
    for name in bone_names:
        parsed = parse_bone_name(name)
        bone_side = parsed.side or side
        if parsed.role and bone_side:
            candidates.setdefault((bone_side, parsed.role), []).append(name)
    for s in BOTH:
        _shift_three_word_thumb(candidates, s)
    hands = {}
    for s in BOTH:
        found = {
            role: min(candidates[(s, role)], key=lambda n: (len(tokens(n)), len(n)))
            for role in ROLES
            if (s, role) in candidates
        }
        if sum(r in found for r in MANO_JOINT_FOR_ROLE) >= MIN_FINGER_BONES:
            missing = tuple(r for r in core if r not in found)
            hands[s] = HandBones(s, found, missing)
    return RigMapping(PARSED_PROFILE_ID, "Custom rig (mapped from bone names)", hands)


def _shift_three_word_thumb(candidates: dict[tuple[str, str], list[str]], side: Side) -> None:
    """A thumb named proximal/intermediate/distal (VRM 0.x, some game rigs) counts its
    metacarpal as 'proximal': shift it down one segment."""
    thumbs = candidates.get((side, "thumb.proximal"), [])
    inter = [n for n in thumbs if _INTERMEDIATE_WORDS & set(tokens(n))]
    if not inter:
        return
    prox = [n for n in thumbs if n not in inter]
    candidates[(side, "thumb.proximal")] = inter
    if prox:
        candidates.setdefault((side, "thumb.metacarpal"), []).extend(prox)


_INTERMEDIATE_WORDS = {"intermediate", "inter", "medial", "middle", "mid"}


def _score(mapping: RigMapping) -> int:
    return sum(len(h.driven_roles) + ("hand" in h.bones) for h in mapping.hands.values())


def detect_rig(bone_names: Iterable[str], armature_name: str = "armature",
               side: Side | None = None) -> RigMapping:  # fmt: skip
    """The best mapping for an armature: the profile that finds the most hand bones (ties
    go to the earlier profile; the bone-name parser comes last). ``side`` is the hand a
    one-hand armature holds when its names do not say.

    Raises RigError naming what was looked for when no hand is found.
    """
    names = list(bone_names)
    best: RigMapping | None = None
    for profile in BUILTIN_PROFILES:
        m = apply_profile(profile, names, side)
        if m.hands and (best is None or _score(m) > _score(best)):
            best = m
    parsed = mapping_from_names(names, side)
    if parsed.hands and (best is None or _score(parsed) > _score(best)):
        best = parsed
    if best is not None:
        return best
    one_hand = apply_profile(PROFILES_BY_ID["webxr"], names, Side.RIGHT)
    if one_hand.hands and side is None:
        raise RigError(
            f"armature {armature_name!r} holds one hand and its bone names do not say which: "
            "choose Left or Right for it"
        )
    examples = ", ".join(
        f"{p.label} ({p.bone_name('index.proximal', Side.RIGHT)})" for p in BUILTIN_PROFILES
    )
    raise RigError(
        f"no hand bones found in armature {armature_name!r} ({len(names)} bones). Looked for "
        f"{examples}, and for names with a side, a finger and a segment such as "
        "'Index_Proximal_R'. Map the bones by hand in the mapping editor or load a mapping file."
    )


def mapping_to_json(mapping: RigMapping) -> str:
    """The mapping as the JSON a user edits and saves."""
    return json.dumps(
        {
            "format": MAPPING_FORMAT,
            "version": MAPPING_VERSION,
            "label": mapping.label,
            "bone_x_flexes": any(h.bone_x_flexes for h in mapping.hands.values()),
            "hands": {s: dict(h.bones) for s, h in sorted(mapping.hands.items())},
        },
        indent=2,
    )


def mapping_from_json(text: str, bone_names: Iterable[str] | None = None,
                      source: str = "mapping") -> RigMapping:  # fmt: skip
    """Read a saved mapping; with ``bone_names`` also check every bone exists in the rig.

    Raises RigError naming unknown roles, sides or bones.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise RigError(f"{source} is not valid JSON: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != MAPPING_FORMAT:
        raise RigError(f"{source} is not a handmocap rig mapping (format {MAPPING_FORMAT!r})")
    if doc.get("version") != MAPPING_VERSION:
        raise RigError(f"{source} is mapping version {doc.get('version')}; expected 1")
    hands_doc = doc.get("hands")
    if not isinstance(hands_doc, dict) or not hands_doc:
        raise RigError(f"{source} maps no hands")
    bad_sides = set(hands_doc) - set(BOTH)
    if bad_sides:
        raise RigError(f"{source}: unknown hand(s) {sorted(bad_sides)}; use 'left' and 'right'")
    known = set(bone_names) if bone_names is not None else None
    hands = {}
    for name, bones in hands_doc.items():
        side = Side(name)
        bad_roles = set(bones) - set(ROLES)
        if bad_roles:
            raise RigError(
                f"{source}: unknown role(s) {sorted(bad_roles)} for the {side} hand; roles are "
                f"{', '.join(ROLES)}"
            )
        if known is not None:
            absent = sorted(n for n in bones.values() if n not in known)
            if absent:
                raise RigError(
                    f"{source} names bones that are not in the armature: {', '.join(absent)}"
                )
        missing = tuple(r for r in MANO_JOINT_FOR_ROLE if r not in bones)
        hands[side] = HandBones(side, bones, missing, bool(doc.get("bone_x_flexes", False)))
    return RigMapping(CUSTOM_PROFILE_ID, str(doc.get("label") or "Custom mapping"), hands)
