# SPDX-License-Identifier: GPL-3.0-or-later
"""Cleanup tools for captured hands: re-smooth a range, fill a gap, swap the hands on a
range, reduce keys to a tolerance, bake onto Rigify's FK controls; and what re-solving a
range with the motion prior needs (the take the hands came from, :func:`recorded_take`).

They work on the handmocap Actions of the target armature (Actions carrying ``hm_side``,
active or on NLA tracks). Each bone's quaternion is sampled on whole frames as Blender
plays it (linear keys, normalised), changed with :mod:`handmocap.retarget.curves`, and
written back in bulk: keys outside the range stay as they were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from handmocap.errors import HandmocapError
from handmocap.retarget.curves import (
    fill_gap,
    nlerp_curve,
    reduce_rotation_keys,
    smooth_rotations,
    splice_rotation_keys,
)
from handmocap.retarget.rotations import (
    MIRROR_X,
    angle_between,
    make_continuous,
    matrix_to_quat,
    orthonormalize,
    quat_to_matrix,
)
from handmocap.retarget.timeline import merge_confidence_keys, merge_rotation_keys
from handmocap.sides import BOTH, Side

from .keyframes import HAS_SLOTS, ActionWriter, action_fcurves, get_keys, new_fcurve, set_keys

_ROT_PATH = re.compile(r'^pose\.bones\["(.+)"\]\.rotation_quaternion$')


@dataclass
class BoneCurves:
    """The four quaternion F-curves of one bone in one action."""

    bone: str
    curves: list  # 4 FCurves, w x y z

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(frames (K,), quaternions (K, 4)); the four curves share their key frames."""
        frames, w = get_keys(self.curves[0])
        q = np.stack([w] + [get_keys(c)[1] for c in self.curves[1:]], axis=1)
        return frames, q

    def sample(self, frames: np.ndarray) -> np.ndarray:
        """(T, 4) what Blender shows at ``frames``."""
        kf, kq = self.keys()
        return nlerp_curve(kf, kq, frames)

    def write(self, frames: np.ndarray, quats: np.ndarray) -> None:
        for c, fc in enumerate(self.curves):
            set_keys(fc, frames, quats[:, c])


def handmocap_actions(obj: bpy.types.Object) -> dict[str, bpy.types.Action]:
    """side -> the armature's handmocap Action (the newest per side)."""
    data = obj.animation_data
    found: dict[str, bpy.types.Action] = {}
    if data is None:
        return found
    candidates = [data.action] + [s.action for t in data.nla_tracks for s in t.strips]
    for action in candidates:
        if action is not None and "hm_side" in action:
            found[str(action["hm_side"])] = action
    return found


def bone_curves(action: bpy.types.Action) -> list[BoneCurves]:
    by_bone: dict[str, list] = {}
    for fc in action_fcurves(action):
        m = _ROT_PATH.match(fc.data_path)
        if m:
            by_bone.setdefault(m.group(1), [None] * 4)[fc.array_index] = fc
    return [BoneCurves(b, c) for b, c in by_bone.items() if all(x is not None for x in c)]


def _require_actions(obj: bpy.types.Object | None) -> dict[str, bpy.types.Action]:
    if obj is None or obj.type != "ARMATURE":
        raise HandmocapError("choose the captured armature in the panel first")
    actions = handmocap_actions(obj)
    if not actions:
        raise HandmocapError(f"{obj.name} has no captured hands to clean up; capture first")
    return actions


def recorded_take(obj: bpy.types.Object, actions: dict[str, bpy.types.Action]) -> Path:
    """The take file ``obj``'s handmocap Actions (side -> Action) were keyed from
    (``hm_take``), checked to be there. Raises HandmocapError saying what to do when they
    record none, record different takes, or the file is gone."""
    recorded = {str(a.get("hm_take", "")) for a in actions.values()}
    if "" in recorded:
        raise HandmocapError(f"the captured hands on {obj.name} do not record the take they "
                             "came from: capture again to re-solve them")  # fmt: skip
    if len(recorded) > 1:
        names = ", ".join(sorted(Path(p).name for p in recorded))
        raise HandmocapError(f"the hands on {obj.name} come from different takes ({names}); "
                             "re-solving needs both from one capture")  # fmt: skip
    path = Path(bpy.path.abspath(recorded.pop()))
    if not path.is_file():
        raise HandmocapError(f"{obj.name}'s hands were captured from {path}, which is missing "
                             "(moved or deleted): put the take back there, or capture "
                             "again")  # fmt: skip
    return path


def _range_frames(start: int, end: int) -> np.ndarray:
    if end < start:
        raise HandmocapError(f"the frame range {start}-{end} is empty")
    return np.arange(start, end + 1, dtype=np.float64)


def _splice(bc: BoneCurves, start: int, end: int, frames: np.ndarray, quats: np.ndarray) -> None:
    """Put ``quats`` at ``frames`` inside [start, end]; every whole frame outside the range
    keeps the pose it showed (see :func:`splice_rotation_keys`)."""
    kf, kq = bc.keys()
    bc.write(*splice_rotation_keys(kf, kq, start, end, frames, quats))


def smooth_range(obj: bpy.types.Object, start: int, end: int, sigma: float) -> int:
    """Gaussian-smooth every captured bone on scene frames [start, end]; neighbours outside
    the range take part but keep their keys. Returns the number of bones changed."""
    actions = _require_actions(obj)
    inner = _range_frames(start, end)
    pad = int(np.ceil(3 * sigma)) + 1
    frames = np.arange(start - pad, end + pad + 1, dtype=np.float64)
    mask = (frames >= start) & (frames <= end)
    n = 0
    for action in actions.values():
        for bc in bone_curves(action):
            q = bc.sample(frames)
            smoothed = smooth_rotations(q[:, None], sigma, mask)[:, 0]
            _splice(bc, start, end, inner, smoothed[mask])
            n += 1
    return n


def fill_range(obj: bpy.types.Object, start: int, end: int) -> int:
    """Replace scene frames [start, end] (where the hand was lost or wrong) by a smooth
    bridge from the frames on both sides. Returns the number of bones changed."""
    actions = _require_actions(obj)
    inner = _range_frames(start, end)
    frames = np.arange(start - 3, end + 4, dtype=np.float64)
    gap = (frames >= start) & (frames <= end)
    n = 0
    for action in actions.values():
        for bc in bone_curves(action):
            q = bc.sample(frames)
            filled = fill_gap(frames, q[:, None], gap)[:, 0]
            _splice(bc, start, end, inner, filled[gap])
            n += 1
    return n


def reduce_keys(obj: bpy.types.Object, tolerance_deg: float) -> tuple[int, int, float]:
    """Remove keys while every bone stays within ``tolerance_deg`` of the animation as it
    was, on every whole frame. Returns (keys before, keys after, worst error in degrees)."""
    actions = _require_actions(obj)
    before = after = 0
    worst = 0.0
    for action in actions.values():
        for bc in bone_curves(action):
            kf, kq = bc.keys()
            frames = np.arange(kf[0], kf[-1] + 1.0)
            dense = make_continuous(nlerp_curve(kf, kq, frames))
            keep = reduce_rotation_keys(frames, dense, tolerance_deg)
            bc.write(frames[keep], dense[keep])
            shown = nlerp_curve(frames[keep], dense[keep], frames)
            worst = max(worst, float(np.degrees(angle_between(shown, dense)).max()))
            before += len(kf)
            after += int(keep.sum())
    return before, after, worst


def swap_hands(obj: bpy.types.Object, mapping, start: int, end: int) -> int:
    """Exchange the left and right hands' animation on scene frames [start, end], each pose
    mirrored onto the other side's bone (for rigs that are left/right mirror images)."""
    actions = _require_actions(obj)
    if set(actions) != set(BOTH):
        raise HandmocapError("swapping needs both hands captured on this armature")
    inner = _range_frames(start, end)
    curves = {s: {bc.bone: bc for bc in bone_curves(a)} for s, a in actions.items()}
    rest = {b.name: np.array(b.matrix_local)[:3, :3] for b in obj.data.bones}
    pairs = []
    for role, right_bone in mapping.hands[Side.RIGHT].bones.items():
        left_bone = mapping.hands[Side.LEFT].bones.get(role)
        if left_bone in curves[Side.LEFT] and right_bone in curves[Side.RIGHT]:
            r_r, r_l = rest[right_bone], rest[left_bone]
            if np.linalg.norm(np.abs(r_l) - np.abs(MIRROR_X @ r_r)) > 0.05:
                raise HandmocapError(f"{left_bone} and {right_bone} are not mirror images: "
                                     "this rig's hands cannot be swapped")  # fmt: skip
            pairs.append((left_bone, right_bone, r_l.T @ MIRROR_X @ r_r))
    sampled = {}
    for left_bone, right_bone, c in pairs:
        q_l = curves[Side.LEFT][left_bone].sample(inner)
        q_r = curves[Side.RIGHT][right_bone].sample(inner)
        sampled[left_bone] = _conjugate(c, q_r)
        sampled[right_bone] = _conjugate(c.T, q_l)
    for left_bone, right_bone, _ in pairs:
        _splice(curves[Side.LEFT][left_bone], start, end, inner, sampled[left_bone])
        _splice(curves[Side.RIGHT][right_bone], start, end, inner, sampled[right_bone])
    return len(pairs)


def _conjugate(c: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Local rotation seen through the (possibly improper) change of frame ``c``."""
    m = quat_to_matrix(q)
    return make_continuous(matrix_to_quat(c @ m @ c.T))


# Rigify: which FK control takes the pose of which original bone when baking.
_RIGIFY_FK = (("hand_fk", "ORG-hand"), ("forearm_fk", "ORG-forearm"),
              ("upper_arm_fk", "ORG-upper_arm"),
              *((f"f_{f}.0{i}", f"ORG-f_{f}.0{i}") for f in ("index", "middle", "ring", "pinky")
                for i in (1, 2, 3)),
              *((f"thumb.0{i}", f"ORG-thumb.0{i}") for i in (1, 2, 3)))  # fmt: skip


def bake_to_fk(obj: bpy.types.Object, start: int, end: int, scene: bpy.types.Scene) -> int:
    """Key Rigify's arm and finger FK controls with the pose the rig shows (whatever drives
    it: the IK hand, finger controls), so the arm can be switched to FK. Returns the number
    of controls keyed."""
    if obj is None or obj.type != "ARMATURE":
        raise HandmocapError("choose the captured armature in the panel first")
    frames = _range_frames(start, end)
    pairs = []
    for side in BOTH:
        for fk, org in _RIGIFY_FK:
            fk_name, org_name = f"{fk}.{side.letter}", f"{org}.{side.letter}"
            if fk_name in obj.pose.bones and org_name in obj.pose.bones:
                pairs.append((fk_name, org_name))
    if not pairs:
        raise HandmocapError(f"{obj.name} has no Rigify FK controls to bake onto")
    rest = {b.name: np.array(b.matrix_local) for b in obj.data.bones}
    targets = np.empty((len(frames), len(pairs), 4, 4))
    parents = np.empty_like(targets)
    keep_frame = scene.frame_current
    try:
        for i, f in enumerate(frames):
            scene.frame_set(int(f))
            for k, (fk, org) in enumerate(pairs):
                targets[i, k] = np.array(obj.pose.bones[org].matrix)
                parent = obj.pose.bones[fk].parent
                parents[i, k] = np.array(parent.matrix) if parent else np.eye(4)
    finally:
        scene.frame_set(keep_frame)
    data = obj.animation_data
    action = data.action if data is not None else None
    if action is None:
        action = ActionWriter(obj, f"{obj.name}_fk_bake").action
    for k, (fk, _org) in enumerate(pairs):
        pb = obj.pose.bones[fk]
        parent = obj.data.bones[fk].parent
        offset = np.linalg.inv(rest[parent.name]) @ rest[fk] if parent else rest[fk]
        local = np.linalg.inv(parents[:, k] @ offset) @ targets[:, k]
        q = make_continuous(matrix_to_quat(orthonormalize(local[:, :3, :3])))
        pb.rotation_mode = "QUATERNION"
        _key_channels(obj, action, pb.path_from_id("rotation_quaternion"), frames, q, fk)
    return len(pairs)


def _key_channels(obj, action, path, frames, values, group) -> None:
    """Replace the curves ``path`` [0..n) of ``action`` with keys at ``frames``."""
    existing = {(fc.data_path, fc.array_index): fc for fc in action_fcurves(action)}
    channelbag = None
    if HAS_SLOTS:
        slot = obj.animation_data.action_slot
        channelbag = action.layers[0].strips[0].channelbag(slot, ensure=True)
    for c in range(values.shape[1]):
        fc = existing.get((path, c)) or new_fcurve(action, channelbag, path, c, group)
        set_keys(fc, frames, values[:, c])


def merge_new_takes(obj: bpy.types.Object, old: dict[str, bpy.types.Action], start: int,
                    end: int) -> None:  # fmt: skip
    """After re-capturing scene frames [start, end]: move the new Actions' keys there into
    the earlier Actions (``old``, side -> Action) and delete the new Actions and tracks."""
    data = obj.animation_data
    for side, new in handmocap_actions(obj).items():
        previous = old.get(side)
        if previous is None or previous == new:
            continue
        inner = _range_frames(start, end)
        new_curves = {bc.bone: bc for bc in bone_curves(new)}
        for bc in bone_curves(previous):
            if bc.bone in new_curves:
                bc.write(*merge_rotation_keys(*bc.keys(), *new_curves[bc.bone].keys(), inner))
        new_conf = {
            fc.data_path: fc for fc in action_fcurves(new) if "hm_confidence" in fc.data_path
        }
        for fc in action_fcurves(previous):
            if fc.data_path in new_conf:
                merged = merge_confidence_keys(*get_keys(fc), *get_keys(new_conf[fc.data_path]),
                                               inner)  # fmt: skip
                if merged is not None:
                    set_keys(fc, *merged)
        for track in list(data.nla_tracks):
            if any(strip.action == new for strip in track.strips):
                data.nla_tracks.remove(track)
        if data.action == new:
            data.action = previous
        bpy.data.actions.remove(new)
