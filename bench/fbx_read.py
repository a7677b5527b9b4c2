"""Read an FBX file's animation with two independent readers, ufbx and assimp, to check
what Blender's FBX exporter wrote (test and bench helper, not product code; no bpy).

Both readers give, per node (bone or object), its LOCAL rotation (relative to its parent
node, in the file's own axes) on every sampled frame as (T, 4) quaternions (w, x, y, z).

How that relates to Blender (read from ``io_scene_fbx/fbx_utils.py``,
``ObjectWrapper.fbx_object_matrix``, and checked numerically by tests/test_fbx_export.py):

- bone with a parent bone:  ``F = C^-1 @ L @ C`` with ``L = parent.matrix^-1 @ bone.matrix``
  (pose bones, armature space; equals ``parent_rest^-1 @ rest @ matrix_basis`` for a bone
  that inherits rotation and scale);
- root bone (parent: the armature node): ``F = bone.matrix @ C``;
- armature node: ``F = A @ armature.matrix_world`` (rotation part), A = the global axis
  conversion ``axis_conversion("Y", "Z", axis_forward, axis_up)``;

where C = ``bone_axis_correction(primary, secondary)`` (identity for Blender's default
primary Y / secondary X). The global conversion and unit scale reach bones only through
the armature node, so bone-local rotations never depend on them.

Reader notes: the ufbx Python binding (0.0.5) returns a cached element (Node, AnimStack,
AnimCurve...) without adding a reference (``Element_from`` in its prelude.h): the first
fetch hands out the cache's own reference and later ones a borrowed one, so dropping a
fetched element frees it under the cache and the next fetch, a second iteration of a list
or the scene's release crashes. :func:`_own` adds the missing reference on every element
fetched here (measured with ``sys.getrefcount``: two fetches, one reference). Assimp
rebases key times to the take's start (its first key is time 0) and does not report the
take's start frame.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# aiProcess_PopulateArmatureData (assimp >= 5.0; pyassimp's postprocess list lacks it)
AI_PROCESS_POPULATE_ARMATURE_DATA = 0x4000

_AXIS_VECTORS = {
    "X": (1.0, 0.0, 0.0), "Y": (0.0, 1.0, 0.0), "Z": (0.0, 0.0, 1.0),
    "-X": (-1.0, 0.0, 0.0), "-Y": (0.0, -1.0, 0.0), "-Z": (0.0, 0.0, -1.0),
}  # fmt: skip


@dataclass(frozen=True)
class FbxTake:
    """One take (animation stack) as a reader sees it. T samples.

    Attributes:
        reader: "ufbx" or "assimp".
        fps: the file's frame rate, frames per second.
        frames: (T,) the sampled frames. ufbx: scene frames (time x fps, e.g. 1..60);
            assimp: frames from the take's start (0..T-1), as assimp rebases time.
        rotations: node name -> (T, 4) local rotation quaternions (w, x, y, z).
        parents: node name -> parent node name (None under the file's root).
        key_frames: (K,) the distinct frames at which the file holds keys, same origin as
            ``frames``.
        duration: the take's length, frames (end - start).
        take_range: (start, end) frames as the file declares them (ufbx: the stack's
            LocalStart/LocalStop); None where the reader does not report it (assimp).
    """

    reader: str
    fps: float
    frames: np.ndarray
    rotations: dict[str, np.ndarray]
    parents: dict[str, str | None]
    key_frames: np.ndarray
    duration: float
    take_range: tuple[float, float] | None


def _own(obj, always: bool = False):
    """``obj`` with the reference the ufbx binding forgot to add when it is an element (or
    ``always``: one more reference, never given back, which keeps a loaded scene alive to
    the end of the process: releasing one, by refcount or by the cycle collector, can
    crash)."""
    import ufbx

    if always or isinstance(obj, ufbx.Element):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    return obj


def _items(seq) -> list:
    """A ufbx list as a Python list, each element owned (see :func:`_own`)."""
    return [_own(seq[i]) for i in range(len(seq))]


def read_ufbx(path: str | Path, stack: int = 0, frames: np.ndarray | None = None) -> FbxTake:
    """The take ``stack`` of ``path`` evaluated by ufbx at ``frames`` (scene frames; default
    every whole frame of the take's declared range). No axis or unit conversion is asked
    of ufbx, so rotations are the file's own."""
    import ufbx

    scene = _own(ufbx.load_file(str(path)), always=True)  # never released: see _own
    fps = float(scene.settings.frames_per_second)
    stacks = _items(scene.anim_stacks)
    if not stacks:
        raise ValueError(f"{path}: no animation stack")
    take = stacks[stack]
    start, end = take.time_begin * fps, take.time_end * fps
    if frames is None:
        frames = np.arange(round(start), round(end) + 1, dtype=np.float64)
    frames = np.asarray(frames, dtype=np.float64)
    anim = take.anim
    nodes = _items(scene.nodes)
    names = [n.name for n in nodes]
    ids = [n.typed_id for n in nodes]
    by_id = dict(zip(ids, names, strict=True))
    rotations: dict[str, np.ndarray] = {}
    parents: dict[str, str | None] = {}
    for node, name in zip(nodes, names, strict=True):
        if node.is_root:
            continue
        parent = _own(node.parent)
        parent_name = by_id[parent.typed_id] if parent is not None else None
        parents[name] = None if parent is None or parent.is_root else parent_name
        q = np.empty((len(frames), 4))
        for t, frame in enumerate(frames):
            r = node.evaluate_transform(anim, frame / fps).rotation  # Quat(x, y, z, w)
            q[t] = (r.w, r.x, r.y, r.z)
        rotations[name] = q
    key_times = set()
    for curve in _items(scene.anim_curves):  # every curve of the file (Blender: one take)
        key_times.update(k.time for k in _items(curve.keyframes))
    key_frames = np.unique(np.round(np.array(sorted(key_times)) * fps, 6))
    return FbxTake("ufbx", fps, frames, rotations, parents, key_frames, end - start,
                   (start, end))  # fmt: skip


def read_assimp(path: str | Path, animation: int = 0) -> FbxTake:
    """Animation ``animation`` of ``path`` as assimp imports it (flag 0x4000, populate
    armature data): every channel's rotation keys, which must share one set of times."""
    import pyassimp

    with pyassimp.load(str(path), processing=AI_PROCESS_POPULATE_ARMATURE_DATA) as scene:
        if not scene.animations:
            raise ValueError(f"{path}: assimp found no animation")
        anim = scene.animations[animation]
        ticks = float(anim.tickspersecond) or 25.0  # assimp's documented fallback
        fps = _assimp_fps(scene) or ticks
        parents: dict[str, str | None] = {}

        def walk(node, parent: str | None) -> None:
            for child in node.children:
                name = _text(child.name)
                parents[name] = parent
                walk(child, name)

        walk(scene.rootnode, None)
        rotations: dict[str, np.ndarray] = {}
        times = None
        all_times: set[float] = set()
        for channel in anim.channels:
            name = _text(channel.nodename)
            if "$AssimpFbx$" in name:
                raise ValueError(f"{path}: assimp split {name!r} into pivot helpers; compare "
                                 "the node's product of helpers instead")  # fmt: skip
            keys = channel.rotationkeys
            t = np.array([k.time for k in keys], dtype=np.float64)
            q = np.array([np.asarray(k.value, dtype=np.float64) for k in keys])  # (w, x, y, z)
            all_times.update(t.tolist())
            if times is None:
                times = t
            elif len(t) != len(times) or np.any(np.abs(t - times) > 1e-6):
                raise ValueError(f"{path}: channel {name!r} has keys at other times than the "
                                 "first channel; resample before comparing")  # fmt: skip
            rotations[name] = q
        frames = np.zeros(0) if times is None else times / ticks * fps
        key_frames = np.unique(np.round(np.array(sorted(all_times)) / ticks * fps, 6))
        return FbxTake("assimp", fps, frames, rotations, parents, key_frames,
                       float(anim.duration) / ticks * fps, None)  # fmt: skip


def _text(value) -> str:
    """An assimp name (str, bytes or a pyassimp String structure) as str."""
    value = getattr(value, "data", value)
    return value.decode() if isinstance(value, bytes) else str(value)


def _assimp_fps(scene) -> float | None:
    """The file's custom frame rate from assimp's scene metadata (FBX GlobalSettings)."""
    metadata = getattr(scene, "metadata", None)
    if metadata is None or not hasattr(metadata, "keys"):
        return None
    for key, entry in zip(metadata.keys, metadata.values, strict=True):
        if key == "CustomFrameRate" and getattr(entry, "data", None):
            return float(entry.data)
    return None


def axis_conversion(from_forward: str = "Y", from_up: str = "Z", to_forward: str = "Y",
                    to_up: str = "Z") -> np.ndarray:  # fmt: skip
    """(3, 3) rotation taking ``from_forward`` to ``to_forward`` and ``from_up`` to
    ``to_up``, as ``bpy_extras.io_utils.axis_conversion`` (axes "X" ... "-Z")."""

    def basis(forward: str, up: str) -> np.ndarray:
        f, u = np.array(_AXIS_VECTORS[forward]), np.array(_AXIS_VECTORS[up])
        if abs(f @ u) > 0.5:
            raise ValueError(f"forward {forward} and up {up} lie on the same axis")
        return np.column_stack([f, u, np.cross(f, u)])

    return basis(to_forward, to_up) @ basis(from_forward, from_up).T


def bone_axis_correction(primary: str = "Y", secondary: str = "X") -> np.ndarray:
    """(3, 3) C that Blender's exporter right-multiplies on bone matrices for the bone axis
    settings: ``axis_conversion(from_forward=secondary, from_up=primary, to_forward="X",
    to_up="Y")``; identity for primary Y / secondary X."""
    return axis_conversion(secondary, primary, "X", "Y")


def blender_to_fbx_local(local: np.ndarray, correction: np.ndarray,
                         parent_is_bone: bool) -> np.ndarray:  # fmt: skip
    """(..., 3, 3) the rotation the FBX file holds for a bone, from Blender's rotation of the
    bone relative to its parent (``parent.matrix^-1 @ bone.matrix``, or ``bone.matrix`` for a
    root bone): ``C^-1 @ L @ C`` under a parent bone, ``L @ C`` under the armature."""
    out = np.asarray(local) @ correction
    return correction.T @ out if parent_is_bone else out


def fbx_to_blender_local(fbx: np.ndarray, correction: np.ndarray,
                         parent_is_bone: bool) -> np.ndarray:  # fmt: skip
    """Inverse of :func:`blender_to_fbx_local`."""
    out = np.asarray(fbx) @ correction.T
    return correction @ out if parent_is_bone else out
