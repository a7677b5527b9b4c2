"""The Take: the engine's result file, consumed by the add-on and every later stage.

This module is the contract: the file format, its bounds, and the data types
(:class:`Track`, :class:`Take`, its header :class:`TakeHeader` with :class:`FrameRange` and
:class:`EngineFacts`). The value checks live in :mod:`.checks`, the defensive reader
(:func:`~.reader.load_take`) in :mod:`.reader`. No torch, no bpy: the engine writes takes
with it and the Blender add-on reads them.

The file format
---------------
A take is an ``.npz``: a zip (entries stored or deflated, never encrypted) of ``.npy``
arrays, written and read without pickle. Its entries, and no others:

``header.npy``
    A 0-d text array (``<U``) holding a JSON object of at most :data:`MAX_HEADER_CHARS`
    characters, with these fields:

    - ``format``: ``"handmocap-take"`` (:data:`FORMAT`); ``version``: ``2``
      (:data:`VERSION`, what this engine writes; the reader reads every version of
      :data:`READABLE_VERSIONS`, see the version history below).
    - ``source``: the video's path (text); ``intrinsics_source`` (optional text): where the
      intrinsics came from (``"user"`` or a guess).
    - ``fps``: frames per second of the track frames (a number; times the frame stride it
      is a video rate within :data:`FPS_RANGE`).
    - ``width``, ``height``: the video frame size, whole pixels ``1..MAX_IMAGE_SIDE``.
    - ``intrinsics``: the 3x3 camera matrix in pixels (``fx``, ``fy`` positive).
    - ``hand_model``: text naming the hand model of the MANO stage, or ``null`` before it.
    - ``frame_range`` (optional): ``{"start", "end" (null: to the end), "stride"}``, the
      video frames captured.
    - Engine facts (``engine_version``, ``device``, ``provider``, ``frames_read``, ...) and
      what the source did not deliver (``warnings``, ``frames_short``, ``missing_frames``):
      any JSON values (:class:`TakeHeader` types the ones it knows).
    - Any other field: kept as it is (:attr:`TakeHeader.extras`).

    Every number anywhere in the header is finite.

``track{i}.meta.npy``, for tracks ``i = 0..N-1`` (no gaps)
    A 0-d text array holding ``{"track_id": int, "handedness": "left" | "right"}`` (a
    :class:`~handmocap.sides.Side`) as JSON,
    at most :data:`MAX_META_CHARS` characters.

``track{i}.<field>.npy``, for each field of :data:`TRACK_SHAPES`
    The track's arrays, C or Fortran order, shapes as in :data:`TRACK_SHAPES` (``T``: the
    track's frame count) and dtypes as :func:`stored_dtype` says: ``frames`` int64,
    ``flags`` uint8, every other field float32. The fields of :data:`OPTIONAL_FIELDS` (the
    MANO stage's) may be absent; the two of :data:`FRAME_FIT_FIELDS` are both present or
    both absent, and only in a track that has ``mano_pose``. :class:`Track` documents each
    field's meaning and units.

The per-frame fit and infilled rows
-----------------------------------
The motion prior (a stage after the MANO fit) replaces ``mano_pose``, ``translation`` and
``keypoints_3d`` with smoothed values and adds rows flagged :attr:`FrameFlag.INFILLED` for
short runs of frames where the hand was hidden. ``frame_pose`` and ``frame_translation`` keep
the per-frame fit it started from (same layout as ``mano_pose`` and ``translation``), so the
prior can be solved again from the take alone, with other settings, without the video. On an
INFILLED row they hold the prior's starting guess, interpolated between the observed frames
around the gap.

An INFILLED row observed nothing: its ``keypoints_2d``, ``keypoints_rel_depth`` and
``world_landmarks`` are the hand model's projection, not the landmark network's output, and its
``confidence`` marks them as guesses. Anything that wants observations only skips the rows
whose flags have the INFILLED bit.

Version history
---------------
- v1: the header, the track meta and the fields up to ``rest_keypoints``.
- v2: adds the optional track fields ``frame_pose`` and ``frame_translation`` (the per-frame
  fit, for re-solving the motion prior). A v1 file is still read (its tracks have them None);
  a v1 file that holds either is refused, as is a file of any version not in
  :data:`READABLE_VERSIONS`.

Reading never trusts the file: it checks every entry's name, declared size, dtype and shape
against the format *before* decompressing any array data (a 4 MB file cannot make it
allocate gigabytes), then checks the header fields and every value (finite numbers, frame
indices, probabilities, flag bits). Every problem is a
:class:`~handmocap.errors.HandmocapError` naming the file, the field and what to do. The
same value checks run in :class:`Track` itself, so a track the engine builds is held to the
format as a loaded one, and :meth:`Take.save` refuses to write anything it would not read
back. A :class:`TakeHeader` is not checked when built (the add-on's timeline checks the clock
it uses again, for a header built in memory): saving and loading check it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import IntFlag
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from handmocap.atomic import atomic_output
from handmocap.errors import HandmocapError
from handmocap.sides import Side

# checks and reader import this module (its bounds and types); this module imports them only
# inside the functions that call them, so importing any of the three first works.

FORMAT = "handmocap-take"
VERSION = 2
"""The take format version this engine writes."""
READABLE_VERSIONS = (1, 2)
"""The take format versions the reader reads (the module docstring's version history)."""


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
    "frame_pose": ("T", 16, 3),
    "frame_translation": ("T", 3),
}
"""Each array field of a :class:`Track` and its shape (``"T"``: the track's frame count)."""
FRAME_FIT_FIELDS = ("frame_pose", "frame_translation")
"""The per-frame fit the motion prior starts from: both or neither, only with ``mano_pose``."""
OPTIONAL_FIELDS = (
    "mano_pose",
    "mano_betas",
    "translation",
    "keypoints_3d",
    "rest_keypoints",
    *FRAME_FIT_FIELDS,
)
"""The fields the MANO stage fills: None (absent from the file) before it."""
ROW_FIELDS = tuple(name for name, spec in TRACK_SHAPES.items() if spec[0] == "T")
"""The fields with one row per track frame (every field but the per-track shape and rest)."""
OBSERVATION_FIELDS = tuple(name for name in ROW_FIELDS if name not in OPTIONAL_FIELDS)
"""The per-frame fields the tracker fills (frames, keypoints, confidence, flags, ...)."""
FIELDS_SINCE = {"frame_pose": 2, "frame_translation": 2}
"""The first format version whose files may hold a track field (one not named: every version)."""
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
(:data:`MAX_TAKE_BYTES`, about 2.7 GB)."""
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
"""Uncompressed bytes of the largest take accepted (about 2.7 GB): the sum of the declared
sizes of a file's entries is checked against it before anything is decompressed."""
MAX_FILE_BYTES = MAX_TAKE_BYTES + MAX_TAKE_BYTES // 100 + MAX_ENTRIES * 512
"""On-disk size of the largest take: deflate can grow random data by a fraction of a
percent, and every zip entry costs some hundred bytes of directory."""


# --- the header --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameRange:
    """Which video frames a capture reads: ``start`` inclusive, ``end`` exclusive (None: to
    the end), every ``stride``-th. The capture's setting, and the header's ``frame_range``.

    Not checked when built: :meth:`validated` checks a user's choice, the take's checks a
    header's (:func:`.checks.check_header`)."""

    start: int = 0
    end: int | None = None
    stride: int = 1

    def validated(self) -> FrameRange:
        """Raises HandmocapError naming the flag that is out of range."""
        if self.start < 0:
            raise HandmocapError(f"bad frame range: --start must be 0 or more, got {self.start}")
        if self.stride < 1:
            raise HandmocapError(f"bad frame range: --stride must be 1 or more, got {self.stride}")
        if self.end is not None and self.end <= self.start:
            raise HandmocapError(
                f"bad frame range: --end ({self.end}) must be greater than --start ({self.start})"
            )
        return self

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "stride": self.stride}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FrameRange:
        """From a checked header's ``frame_range`` object."""
        end = data["end"]
        return cls(int(data["start"]), None if end is None else int(end), int(data["stride"]))


@dataclass(frozen=True)
class EngineFacts:
    """What ran a capture and how it went: for the animator and the benchmarks, never
    needed to use the take. Each is None when the engine did not record it (its key is then
    absent from the file); each is a top-level key of the header, as named here.

    Attributes:
        engine_version: the engine's handmocap version.
        device: where the networks ran (``"cpu"``, ``"cuda"``).
        provider: the onnxruntime execution provider that ran them.
        frames_read: video frames decoded.
        detector_runs: palm detector runs.
        detected_frames: track frames whose crop came from the palm detector.
        tracking_seconds: wall-clock seconds of decoding and tracking.
        mano_seconds: wall-clock seconds of the MANO stage.
        stages: the stages that ran and their settings (stage name -> settings, JSON
            values), read-only, for an engine that records them.
        timings: wall-clock seconds spent in each part of the capture (part name ->
            seconds; parts that ran beside each other overlap), read-only: where the time
            went, for the benchmarks' profile.
    """

    engine_version: str | None = None
    device: str | None = None
    provider: str | None = None
    frames_read: int | None = None
    detector_runs: int | None = None
    detected_frames: int | None = None
    tracking_seconds: float | None = None
    mano_seconds: float | None = None
    stages: Mapping[str, Any] | None = None
    timings: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        for name in ("stages", "timings"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    def to_json(self) -> dict[str, Any]:
        """The recorded facts, by header key."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("stages", "timings"):
            if out[name] is not None:
                out[name] = dict(out[name])
        return {k: v for k, v in out.items() if v is not None}


_SOURCE_PROBLEMS = ("warnings", "frames_short", "missing_frames")


@dataclass(frozen=True, eq=False)
class TakeHeader:
    """The take's header: what the tracks' numbers mean (their clock, the camera, the hand
    model) and how the capture went. Frozen; equal when their JSON is equal.

    Not checked when built (a header built in memory may be wrong: the add-on checks the
    clock it uses again); :meth:`Take.save` checks it before writing and the reader before
    :meth:`from_json`, with :func:`.checks.check_header`.

    Attributes:
        source: the video's path.
        fps: frames per second of the track frames (the video's rate divided by the stride).
        width, height: the video frame size, pixels.
        intrinsics: (3, 3) float64 camera matrix in pixels, read-only.
        intrinsics_source: where the intrinsics came from (``"user"`` or a guess), or None.
        hand_model: the MANO stage's hand model, or None before it.
        frame_range: the video frames captured, or None (the whole video, stride 1).
        engine: what ran the capture (:class:`EngineFacts`).
        warnings: what the source did not deliver, in words; None when not recorded.
        frames_short: frames the video's header declared but its stream did not hold.
        missing_frames: video frames that could not be decoded (no data in the tracks).
        extras: read-only; the header's other fields, kept as they are (those of a newer
            engine; an engine fact or source problem of a type this version does not know),
            so they survive a round trip.
    """

    source: str
    fps: float
    width: int
    height: int
    intrinsics: np.ndarray
    intrinsics_source: str | None = None
    hand_model: str | None = None
    frame_range: FrameRange | None = None
    engine: EngineFacts = field(default_factory=EngineFacts)
    warnings: tuple[str, ...] | None = None
    frames_short: int | None = None
    missing_frames: tuple[int, ...] | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            k = np.array(self.intrinsics, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise HandmocapError(f"the take header's intrinsics are not numbers ({err})") from None
        if k.shape != (3, 3):
            raise HandmocapError(
                f"the take header's intrinsics have shape {k.shape}; expected (3, 3)"
            )
        k.setflags(write=False)
        object.__setattr__(self, "intrinsics", k)
        for name in ("warnings", "missing_frames"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        extras = MappingProxyType(dict(self.extras))
        object.__setattr__(self, "extras", extras)
        repeated = sorted(extras.keys() & self._known_json().keys())
        if repeated:
            raise HandmocapError(f"the take header's extras repeat its own fields: {repeated}")

    def to_json(self) -> dict[str, Any]:
        """The header as the file's JSON object (values as they are: saving checks them)."""
        return {**self._known_json(), **self.extras}

    def _known_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "intrinsics": self.intrinsics.tolist(),
        }
        if self.intrinsics_source is not None:
            out["intrinsics_source"] = self.intrinsics_source
        out["hand_model"] = self.hand_model
        out.update(self.engine.to_json())
        if self.frame_range is not None:  # anything else is written as it is, and refused
            fr = self.frame_range
            out["frame_range"] = fr.to_json() if isinstance(fr, FrameRange) else fr
        for name in _SOURCE_PROBLEMS:
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TakeHeader:
        """The header of a JSON object that passed :func:`.checks.check_header` (the reader
        calls it after its checks). An engine fact or source problem of a type this version
        does not know, and any field it does not know, go to :attr:`extras` as they are."""
        from .checks import is_int, is_number

        def is_text(value: Any) -> bool:
            return isinstance(value, str)

        def is_list_of(kind: Callable[[Any], bool]) -> Callable[[Any], bool]:
            return lambda value: isinstance(value, list) and all(map(kind, value))

        fits: dict[str, Callable[[Any], bool]] = {
            "engine_version": is_text,
            "device": is_text,
            "provider": is_text,
            "frames_read": is_int,
            "detector_runs": is_int,
            "detected_frames": is_int,
            "tracking_seconds": is_number,
            "mano_seconds": is_number,
            "stages": lambda value: isinstance(value, dict),
            "timings": lambda value: (
                isinstance(value, dict) and all(map(is_number, value.values()))
            ),
            "warnings": is_list_of(is_text),
            "frames_short": is_int,
            "missing_frames": is_list_of(is_int),
        }
        rest = {k: v for k, v in data.items() if k not in ("format", "version")}
        typed = {k: rest.pop(k) for k, fit in fits.items() if k in rest and fit(rest[k])}
        for name in ("tracking_seconds", "mano_seconds"):
            if name in typed:
                typed[name] = float(typed[name])
        frame_range = rest.pop("frame_range", None)
        return cls(
            source=rest.pop("source"),
            fps=float(rest.pop("fps")),
            width=int(rest.pop("width")),
            height=int(rest.pop("height")),
            intrinsics=rest.pop("intrinsics"),
            intrinsics_source=rest.pop("intrinsics_source", None),
            hand_model=rest.pop("hand_model"),
            frame_range=None if frame_range is None else FrameRange.from_json(frame_range),
            engine=EngineFacts(**{k: v for k, v in typed.items() if k not in _SOURCE_PROBLEMS}),
            **{k: v for k, v in typed.items() if k in _SOURCE_PROBLEMS},
            extras=rest,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TakeHeader):
            return NotImplemented
        return self.to_json() == other.to_json()


def make_header(source: Path | str, fps: float, width: int, height: int, intrinsics: np.ndarray,
                intrinsics_source: str, **other: Any) -> TakeHeader:  # fmt: skip
    """A take header from the video's facts; ``other`` sets any other :class:`TakeHeader`
    field (``engine``, ``frame_range``, ``hand_model``, ``warnings``, ...)."""
    return TakeHeader(source=str(source), fps=float(fps), width=int(width), height=int(height),
                      intrinsics=intrinsics, intrinsics_source=intrinsics_source,
                      **other)  # fmt: skip


# --- the data types ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Track:
    """One hand over time. T frames (not necessarily consecutive video frames).

    Construction checks every field (shapes, number dtypes, finite values, frame order,
    probability ranges, flag bits) and raises :class:`HandmocapError` naming the field; it
    turns the handedness text (``"left"``/``"right"``) into a :class:`Side`.

    Attributes:
        track_id: stable id within the take, a non-negative integer.
        handedness: the physical hand (decided over the whole track).
        frames: (T,) integer video frame indices, strictly increasing, in
            ``0..MAX_FRAME_INDEX - 1``.
        keypoints_2d: (T, 21, 2) MediaPipe-order keypoints in image pixels.
        keypoints_rel_depth: (T, 21) the landmark network's relative depth, in pixels.
        world_landmarks: (T, 21, 3) metres, hand-centred, image-aligned axes.
        confidence: (T, 21) per-keypoint confidence in [0, 1].
        right_prob: (T,) per-frame probability of a right hand, in [0, 1].
        flags: (T,) integer :class:`FrameFlag` bits (stored as uint8).
        mano_pose: (T, 16, 3) axis-angle, radians, or None before the MANO stage (smoothed
            by the motion prior when it ran).
        mano_betas: (10,) shape, or None.
        translation: (T, 3) wrist in camera space, metres, or None (smoothed likewise).
        keypoints_3d: (T, 21, 3) camera space, metres, or None (smoothed likewise).
        rest_keypoints: (21, 3) the fitted hand model's rest pose (MediaPipe order, hand
            space, metres, wrist at the origin): the skeleton ``mano_pose`` rotates, which
            retargeting needs. None before the MANO stage.
        frame_pose: (T, 16, 3) axis-angle, radians: the per-frame MANO fit before the motion
            prior, laid out as ``mano_pose`` (on INFILLED rows, the prior's starting guess
            interpolated between the observed frames around them). None before the MANO
            stage and in a v1 take; present exactly when ``frame_translation`` is, and only
            with ``mano_pose``.
        frame_translation: (T, 3) metres: the per-frame fit's ``translation``, likewise.

    An INFILLED row (:class:`FrameFlag`) observed nothing: its ``keypoints_2d``,
    ``keypoints_rel_depth`` and ``world_landmarks`` are the hand model's projection and its
    ``confidence`` marks them as guesses (the module docstring, "The per-frame fit and
    infilled rows").
    """

    track_id: int
    handedness: Side
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
    frame_pose: np.ndarray | None = None
    frame_translation: np.ndarray | None = None

    def __post_init__(self) -> None:
        from .checks import BadTrack, Invalid, check_track

        try:
            check_track(self)
        except Invalid as err:
            raise BadTrack(self.track_id, err.detail) from None

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class Take:
    """A capture: the header and the tracks."""

    header: TakeHeader
    tracks: tuple[Track, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.header, TakeHeader):
            raise HandmocapError(
                f"a take's header must be a TakeHeader, got {type(self.header).__name__}"
            )
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
        from .checks import Invalid

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
        from .checks import BadTrack, Invalid, check_header, check_take_size

        header = self.header.to_json()
        check_header(header)
        try:
            text = json.dumps(header, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise Invalid(f"the header is not plain JSON ({err})") from err
        if len(text) > MAX_HEADER_CHARS:
            raise Invalid(f"the header is {len(text)} characters; at most {MAX_HEADER_CHARS}")
        check_take_size(self.tracks)
        arrays: dict[str, np.ndarray] = {"header": np.array(text)}
        for i, tr in enumerate(self.tracks):
            meta = {"track_id": int(tr.track_id), "handedness": tr.handedness.value}
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
