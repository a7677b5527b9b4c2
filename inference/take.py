"""The Take: the engine's result file, consumed by the add-on and every later stage.

This module is the contract: the file format, its bounds, and the data types
(:class:`Track`, :class:`Take`). The value checks live in :mod:`.take_checks`, the defensive
reader (:func:`load_take`, re-exported here) in :mod:`.take_reader`.

The file format
---------------
A take is an ``.npz``: a zip (entries stored or deflated, never encrypted) of ``.npy``
arrays, written and read without pickle. Its entries, and no others:

``header.npy``
    A 0-d text array (``<U``) holding a JSON object of at most :data:`MAX_HEADER_CHARS`
    characters, with these fields:

    - ``format``: ``"handmocap-take"`` (:data:`FORMAT`); ``version``: ``1`` (:data:`VERSION`).
    - ``source``: the video's path (text); ``intrinsics_source`` (optional text): where the
      intrinsics came from (``"user"`` or a guess).
    - ``fps``: frames per second of the track frames (a number; times the frame stride it
      is a video rate within :data:`FPS_RANGE`).
    - ``width``, ``height``: the video frame size, whole pixels ``1..MAX_IMAGE_SIDE``.
    - ``intrinsics``: the 3x3 camera matrix in pixels (``fx``, ``fy`` positive).
    - ``hand_model``: text naming the hand model of the MANO stage, or ``null`` before it.
    - ``frame_range`` (optional): ``{"start", "end" (null: to the end), "stride"}``, the
      video frames captured.
    - Engine facts (``engine_version``, ``device``, ``provider``, ...): any JSON values.

    Every number anywhere in the header is finite.

``track{i}.meta.npy``, for tracks ``i = 0..N-1`` (no gaps)
    A 0-d text array holding ``{"track_id": int, "handedness": "left" | "right"}`` as JSON,
    at most :data:`MAX_META_CHARS` characters.

``track{i}.<field>.npy``, for each field of :data:`TRACK_SHAPES`
    The track's arrays, C or Fortran order, shapes as in :data:`TRACK_SHAPES` (``T``: the
    track's frame count) and dtypes as :func:`stored_dtype` says: ``frames`` int64,
    ``flags`` uint8, every other field float32. The fields of :data:`OPTIONAL_FIELDS` (the
    MANO stage's) may be absent. :class:`Track` documents each field's meaning and units.

Reading never trusts the file: it checks every entry's name, declared size, dtype and shape
against the format *before* decompressing any array data (a 4 MB file cannot make it
allocate gigabytes), then checks the header fields and every value (finite numbers, frame
indices, probabilities, flag bits). Every problem is a
:class:`~handmocap.errors.HandmocapError` naming the file, the field and what to do. The
same value checks run in :class:`Track` itself, so a track the engine builds is held to the
format as a loaded one, and :meth:`Take.save` refuses to write anything it would not read
back.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from enum import IntFlag
from pathlib import Path
from typing import Any

import numpy as np

from handmocap.atomic import atomic_output
from handmocap.errors import HandmocapError

# take_checks and take_reader import this module (its bounds and types); this module imports
# them only inside the functions that call them, so importing any of the three first works.

FORMAT = "handmocap-take"
VERSION = 1


class FrameFlag(IntFlag):
    """How each frame of a track was obtained."""

    DETECTED = 1  # the crop came from the palm detector this frame
    TRACKED = 2  # the crop came from the previous frame's landmarks
    DEOCCLUDED = 4  # the estimate comes from a crop with the other hand removed
    INFILLED = 8  # no observation: filled by the motion prior


KNOWN_FLAGS = int(
    FrameFlag.DETECTED | FrameFlag.TRACKED | FrameFlag.DEOCCLUDED | FrameFlag.INFILLED
)
"""Every :class:`FrameFlag` bit; a flag value with any other bit set is refused."""

# --- the track arrays --------------------------------------------------------------------------
TRACK_SHAPES: dict[str, tuple[str | int, ...]] = {
    "frames": ("T",),
    "keypoints_2d": ("T", 21, 2),
    "keypoints_rel_depth": ("T", 21),
    "world_landmarks": ("T", 21, 3),
    "confidence": ("T", 21),
    "right_prob": ("T",),
    "flags": ("T",),
    "mano_pose": ("T", 16, 3),
    "mano_betas": (10,),
    "translation": ("T", 3),
    "keypoints_3d": ("T", 21, 3),
    "rest_keypoints": (21, 3),
}
"""Each array field of a :class:`Track` and its shape (``"T"``: the track's frame count)."""
OPTIONAL_FIELDS = ("mano_pose", "mano_betas", "translation", "keypoints_3d", "rest_keypoints")
"""The fields the MANO stage fills: None (absent from the file) before it."""
INTEGER_DTYPES = {"frames": np.int64, "flags": np.uint8}
"""The integer fields and their stored dtypes; every other field is stored as float32."""
UNIT_RANGE_FIELDS = ("confidence", "right_prob")
"""Probabilities: every value in [0, 1]."""


def stored_dtype(name: str) -> np.dtype:
    """The dtype a track field has in the file (and after loading)."""
    return np.dtype(INTEGER_DTYPES.get(name, np.float32))


# --- bounds: the largest take handmocap writes or reads ---------------------------------------
MAX_TRACK_FRAMES = 1_000_000
"""Frames in one track: 9.3 hours of video at 30 fps, far beyond any capture session."""
MAX_TAKE_ROWS = 2 * MAX_TRACK_FRAMES
"""Track frames in a whole take: both hands through the longest video (several shorter
tracks share the budget). This, with :data:`MAX_TRACKS`, bounds what loading may allocate
(:data:`MAX_TAKE_BYTES`, about 2.3 GB)."""
MAX_TRACKS = 10_000
"""Tracks in a take (a hand lost and found again starts a new track)."""
MAX_FRAME_INDEX = 10**8
"""Video frame indices are ``0 <= frame < MAX_FRAME_INDEX`` (38 days at 30 fps)."""
FPS_RANGE = (1.0, 1000.0)
"""Video frame rates accepted: below 1 fps is no video camera's rate (a sign of a broken
header, such as 0.07), above 1000 fps is beyond consumer high-speed cameras."""
MAX_IMAGE_SIDE = 16384
"""Largest video width or height (16K); a frame size beyond it is a broken header."""
MAX_FRAME_STRIDE = MAX_FRAME_INDEX
MAX_HEADER_CHARS = 100_000  # the header is ~1 KB of JSON
MAX_META_CHARS = 1_000  # a track's meta is ~40 characters of JSON
MAX_NPY_HEADER_BYTES = 1024  # bytes of one .npy header (numpy writes 128)
MAX_ENTRIES = 1 + MAX_TRACKS * (len(TRACK_SHAPES) + 1)
"""Zip entries in a take: the header, and per track its meta and its arrays."""


def _row_bytes() -> tuple[int, int]:
    """Bytes of array data per track frame, and per track independent of T."""
    per_row = per_track = 0
    for name, spec in TRACK_SHAPES.items():
        size = stored_dtype(name).itemsize * math.prod(s for s in spec if s != "T")
        if "T" in spec:
            per_row += size
        else:
            per_track += size
    return per_row, per_track


_PER_ROW, _PER_TRACK = _row_bytes()
_MEMBERS_PER_TRACK = len(TRACK_SHAPES) + 1  # + meta
MAX_TAKE_BYTES = (
    MAX_TAKE_ROWS * _PER_ROW
    + MAX_TRACKS * (_PER_TRACK + 4 * MAX_META_CHARS + _MEMBERS_PER_TRACK * MAX_NPY_HEADER_BYTES)
    + 4 * MAX_HEADER_CHARS
    + MAX_NPY_HEADER_BYTES
)
"""Uncompressed bytes of the largest take accepted (about 2.3 GB): the sum of the declared
sizes of a file's entries is checked against it before anything is decompressed."""
MAX_FILE_BYTES = MAX_TAKE_BYTES + MAX_TAKE_BYTES // 100 + MAX_ENTRIES * 512
"""On-disk size of the largest take: deflate can grow random data by a fraction of a
percent, and every zip entry costs some hundred bytes of directory."""


# --- the data types ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Track:
    """One hand over time. T frames (not necessarily consecutive video frames).

    Construction checks every field (shapes, number dtypes, finite values, frame order,
    probability ranges, flag bits) and raises :class:`HandmocapError` naming the field.

    Attributes:
        track_id: stable id within the take, a non-negative integer.
        handedness: "left" / "right", the physical hand (decided over the whole track).
        frames: (T,) integer video frame indices, strictly increasing, in
            ``0..MAX_FRAME_INDEX - 1``.
        keypoints_2d: (T, 21, 2) MediaPipe-order keypoints in image pixels.
        keypoints_rel_depth: (T, 21) the landmark network's relative depth, in pixels.
        world_landmarks: (T, 21, 3) metres, hand-centred, image-aligned axes.
        confidence: (T, 21) per-keypoint confidence in [0, 1].
        right_prob: (T,) per-frame probability of a right hand, in [0, 1].
        flags: (T,) integer :class:`FrameFlag` bits (stored as uint8).
        mano_pose: (T, 16, 3) axis-angle, radians, or None before the MANO stage.
        mano_betas: (10,) shape, or None.
        translation: (T, 3) wrist in camera space, metres, or None.
        keypoints_3d: (T, 21, 3) camera space, metres, or None.
        rest_keypoints: (21, 3) the fitted hand model's rest pose (MediaPipe order, hand
            space, metres, wrist at the origin): the skeleton ``mano_pose`` rotates, which
            retargeting needs. None before the MANO stage.
    """

    track_id: int
    handedness: str
    frames: np.ndarray
    keypoints_2d: np.ndarray
    keypoints_rel_depth: np.ndarray
    world_landmarks: np.ndarray
    confidence: np.ndarray
    right_prob: np.ndarray
    flags: np.ndarray
    mano_pose: np.ndarray | None = None
    mano_betas: np.ndarray | None = None
    translation: np.ndarray | None = None
    keypoints_3d: np.ndarray | None = None
    rest_keypoints: np.ndarray | None = None

    def __post_init__(self) -> None:
        from .take_checks import BadTrack, Invalid, check_track

        try:
            check_track(self)
        except Invalid as err:
            raise BadTrack(self.track_id, err.detail) from None

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class Take:
    """A capture: the header (JSON-able dict) and the tracks."""

    header: dict[str, Any]
    tracks: tuple[Track, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.tracks, tuple) or not all(isinstance(t, Track) for t in self.tracks):
            raise HandmocapError(f"a take's tracks must be a tuple of Track, got {self.tracks!r}")

    def save(self, path: Path) -> Path:
        """Write the take to ``path`` (an ``.npz``), atomically: on any failure, including
        an interrupt, an existing file at ``path`` is left byte-identical and no temporary
        file remains. Everything is validated first; nothing is written for a bad take.

        Raises:
            HandmocapError: a field is invalid, or the file cannot be written (the message
                names the path and the reason).
        """
        from .take_checks import Invalid

        path = Path(path)
        try:
            arrays = self._arrays()
        except Invalid as err:
            raise HandmocapError(f"cannot write the take to {path}: {err.detail}") from err
        if not path.parent.is_dir():
            raise HandmocapError(
                f"cannot write the take to {path}: the folder {path.parent} does not exist"
            )
        try:
            with atomic_output(path) as tmp:
                flags = os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
                with os.fdopen(os.open(tmp, flags), "wb") as out:
                    # a file object: numpy adds no second ".npz" suffix
                    np.savez_compressed(out, **arrays)
        except HandmocapError as err:
            reason = str(err).removeprefix(f"cannot write {path}: ")
            raise HandmocapError(f"cannot write the take to {path}: {reason}") from err
        return path

    def _arrays(self) -> dict[str, np.ndarray]:
        """The file's arrays, in their stored dtypes, every one validated."""
        from .take_checks import BadTrack, Invalid, check_header, check_take_size

        check_header(self.header)
        try:
            text = json.dumps(self.header, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise Invalid(f"the header is not plain JSON ({err})") from err
        if len(text) > MAX_HEADER_CHARS:
            raise Invalid(f"the header is {len(text)} characters; at most {MAX_HEADER_CHARS}")
        check_take_size(self.tracks)
        arrays: dict[str, np.ndarray] = {"header": np.array(text)}
        for i, tr in enumerate(self.tracks):
            meta = {"track_id": int(tr.track_id), "handedness": tr.handedness}
            arrays[f"track{i}.meta"] = np.array(json.dumps(meta))
            stored = {}
            with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: refused
                for name in TRACK_SHAPES:
                    value = getattr(tr, name)
                    if value is not None:
                        stored[name] = np.ascontiguousarray(value, dtype=stored_dtype(name))
            try:
                replace(tr, **stored)  # the checks again, on exactly what is written
            except BadTrack as err:
                raise Invalid(f"track {i} (id {tr.track_id}) {err.detail}") from err
            arrays.update({f"track{i}.{name}": value for name, value in stored.items()})
        return arrays


def make_header(source: Path, fps: float, width: int, height: int, intrinsics: np.ndarray,
                intrinsics_source: str, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The take header; ``extra`` adds engine/device facts."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "source": str(source),
        "fps": float(fps),
        "width": int(width),
        "height": int(height),
        "intrinsics": np.asarray(intrinsics, dtype=float).tolist(),
        "intrinsics_source": intrinsics_source,
        "hand_model": None,
        **extra,
    }


def load_take(path: Path) -> Take:
    """Read and validate a take. Raises HandmocapError naming the file, the field and what
    to do; never decompresses more than the entries' shapes allow (:data:`MAX_TAKE_BYTES`).

    The reader is :func:`.take_reader.load_take`; this is its public name.
    """
    from .take_reader import load_take as read

    return read(path)
