# SPDX-License-Identifier: GPL-3.0-or-later
"""What the Rig subpanel says about the target armature, remembered between redraws (no bpy).

Blender redraws a panel whenever the mouse moves over it or the frame changes; detecting
the rig matches every bone name against every profile, so the panel detects once per
armature and asks again only when something detection reads has changed: the armature's
names, its bone names, or the mapping settings (see :func:`rig_fingerprint`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from handmocap.errors import HandmocapError


@dataclass(frozen=True)
class RigStatus:
    """The lines to show: the mapping's report, or the error's sentences (``error``)."""

    lines: tuple[str, ...]
    error: bool


def rig_fingerprint(object_name: str, data_name: str, bone_names: Iterable[str],
                    mapping: str) -> tuple:  # fmt: skip
    """A cheap key that changes when an input of rig detection changes: the object's and
    the armature data's names (the side is guessed from them), the bone names (count and
    hash, in order) and ``mapping``, the mapping settings as text (the custom rows or the
    chosen hand)."""
    names = tuple(bone_names)
    return object_name, data_name, len(names), hash(names), mapping


# armature object name -> (fingerprint, status): one entry per armature, replaced when its
# fingerprint changes.
_CACHE: dict[str, tuple[tuple, RigStatus]] = {}


def rig_status(fingerprint: tuple, report: Callable[[], str]) -> RigStatus:
    """The status for ``fingerprint`` (from :func:`rig_fingerprint`); ``report`` (detect
    the rig, return its report, or raise HandmocapError) runs only when the armature has
    none for this fingerprint yet."""
    armature = fingerprint[0]
    cached = _CACHE.get(armature)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    try:
        status = RigStatus(tuple(line.strip() for line in report().splitlines()), error=False)
    except HandmocapError as err:
        status = RigStatus(tuple(str(err).split(". ")), error=True)
    _CACHE[armature] = (fingerprint, status)
    return status
