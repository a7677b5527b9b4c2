"""The value checks of a take: a track's fields and the header's (pure numpy and JSON values,
no file). :class:`~.format.Track` runs :func:`check_track` on construction,
:meth:`~.format.Take.save` runs :func:`check_header` (on the header's JSON) and
:func:`check_take_size` before writing, and the reader runs the same checks on what it loaded.

A check raises :class:`Invalid` with a ``detail`` naming the field and the value (no file, no
advice): the caller adds the file or the track and what to do.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np

from handmocap.errors import HandmocapError
from handmocap.sides import Side

from .format import (
    FORMAT,
    FPS_RANGE,
    FRAME_FIT_FIELDS,
    INTEGER_DTYPES,
    KNOWN_FLAGS,
    MAX_FRAME_INDEX,
    MAX_FRAME_STRIDE,
    MAX_IMAGE_SIDE,
    MAX_TAKE_ROWS,
    MAX_TRACK_FRAMES,
    MAX_TRACKS,
    OPTIONAL_FIELDS,
    READABLE_VERSIONS,
    TRACK_SHAPES,
    UNIT_RANGE_FIELDS,
)

if TYPE_CHECKING:
    from .format import Track


class Invalid(Exception):
    """A field fails validation; ``detail`` names it (no file, no advice)."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class BadTrack(HandmocapError):
    """A :class:`~.format.Track` built with a bad field (what the engine sees)."""

    def __init__(self, track_id: Any, detail: str):
        super().__init__(
            f"track {track_id} {detail}; re-capture the video (if it happens "
            "again, report it with the video)"
        )
        self.detail = detail


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool | np.bool_)


def is_number(value: Any) -> bool:
    """A Python int or float (what JSON numbers load as), not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- track checks ------------------------------------------------------------------------------
def check_track(tr: Track) -> None:
    """Check every field of ``tr`` (replacing array-likes by arrays and the handedness text by
    a :class:`Side`); raises Invalid."""
    if not is_int(tr.track_id) or not 0 <= int(tr.track_id) < 2**31:
        raise Invalid(f"track_id is {tr.track_id!r}; expected an integer 0..2**31-1")
    if not isinstance(tr.handedness, str) or tr.handedness not in tuple(Side):
        raise Invalid(f"handedness is {tr.handedness!r}; expected 'left' or 'right'")
    object.__setattr__(tr, "handedness", Side(tr.handedness))
    frames = _as_array(tr, "frames")
    if frames.ndim != 1:
        raise Invalid(f"frames has shape {frames.shape}, expected (T,)")
    t = frames.shape[0]
    for name, spec in TRACK_SHAPES.items():
        value = _as_array(tr, name)
        if value is None:
            continue
        want = tuple(t if s == "T" else s for s in spec)
        if value.shape != want:
            raise Invalid(f"{name} has shape {value.shape}, expected {want}")
        _check_values(name, value)
    _check_frame_fit(tr)
    _check_frames(frames)


def _as_array(tr: Track, name: str) -> np.ndarray | None:
    """Field ``name`` of ``tr`` as an array (stored back into the frozen track), or None."""
    value = getattr(tr, name)
    if value is None:
        if name in OPTIONAL_FIELDS:
            return None
        raise Invalid(f"has no {name}")
    if not isinstance(value, np.ndarray):
        value = np.asarray(value)
        object.__setattr__(tr, name, value)
    return value


def _check_values(name: str, value: np.ndarray) -> None:
    """Dtype kind, finiteness and range of one track field of the right shape."""
    kinds = "iu" if name in INTEGER_DTYPES else "fiu"
    if value.dtype.kind not in kinds:
        want = "integers" if name in INTEGER_DTYPES else "numbers"
        raise Invalid(f"has {name} of dtype {value.dtype}; expected {want}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise Invalid(f"{name} contains NaN or inf values")
    if value.size == 0:
        return
    if name in UNIT_RANGE_FIELDS and (value.min() < 0 or value.max() > 1):
        bad = value[(value < 0) | (value > 1)].flat[0]
        raise Invalid(f"{name} has values outside [0, 1] ({bad:g})")
    if name == "flags":
        if value.min() < 0 or value.max() > 255:
            low, high = int(value.min()), int(value.max())
            raise Invalid(f"flags has values outside 0..255 ({low}..{high})")
        unknown = np.bitwise_or.reduce(value.astype(np.int64).ravel()) & ~KNOWN_FLAGS
        if unknown:
            raise Invalid(f"flags has unknown FrameFlag bits (0x{int(unknown):x})")


def _check_frame_fit(tr: Track) -> None:
    """The per-frame fit (:data:`FRAME_FIT_FIELDS`): both fields or neither, only with
    ``mano_pose`` (it is the fit that ``mano_pose`` was smoothed from)."""
    present = [name for name in FRAME_FIT_FIELDS if getattr(tr, name) is not None]
    if not present:
        return
    if len(present) < len(FRAME_FIT_FIELDS):
        missing = next(name for name in FRAME_FIT_FIELDS if name not in present)
        raise Invalid(f"has {present[0]} but no {missing}; the per-frame fit needs both")
    if tr.mano_pose is None:
        raise Invalid(
            f"has {present[0]} but no mano_pose; the per-frame fit comes only with the MANO fields"
        )


def _check_frames(frames: np.ndarray) -> None:
    """(T,) integer frame indices: within ``0..MAX_FRAME_INDEX - 1``, strictly increasing."""
    if frames.size == 0:
        return
    low, high = frames.min(), frames.max()
    if low < 0 or high >= MAX_FRAME_INDEX:
        bad = low if low < 0 else high
        raise Invalid(f"frames has index {int(bad)}; expected 0..{MAX_FRAME_INDEX - 1}")
    step = np.diff(frames.astype(np.int64))
    if (step <= 0).any():
        k = int(np.flatnonzero(step <= 0)[0])
        raise Invalid(
            f"frames are not strictly increasing (frame {int(frames[k + 1])} "
            f"follows frame {int(frames[k])})"
        )


def check_take_size(tracks: tuple[Track, ...]) -> None:
    """The number of tracks, and the frames per track and in all, within the bounds."""
    if len(tracks) > MAX_TRACKS:
        raise Invalid(f"the take has {len(tracks)} tracks; at most {MAX_TRACKS}")
    for tr in tracks:
        if len(tr) > MAX_TRACK_FRAMES:
            raise Invalid(f"track {tr.track_id} has {len(tr)} frames; at most {MAX_TRACK_FRAMES}")
    rows = sum(len(tr) for tr in tracks)
    if rows > MAX_TAKE_ROWS:
        raise Invalid(f"the tracks hold {rows} frames together; at most {MAX_TAKE_ROWS}")


# --- header checks -----------------------------------------------------------------------------
_REQUIRED_HEADER = (
    "format",
    "version",
    "source",
    "fps",
    "width",
    "height",
    "intrinsics",
    "hand_model",
)


def check_header(header: Any) -> None:
    """Every header field a reader uses: type, range, finiteness. Raises Invalid."""
    if not isinstance(header, dict):
        raise Invalid(f"the header is a JSON {type(header).__name__}, not an object")
    for name in _REQUIRED_HEADER:
        if name not in header:
            raise Invalid(f"the header has no {name!r} field")
    if header["format"] != FORMAT:
        raise Invalid(f"header format is {header['format']!r}; expected {FORMAT!r}")
    if not is_int(header["version"]) or header["version"] not in READABLE_VERSIONS:
        expected = " or ".join(map(str, READABLE_VERSIONS))
        raise Invalid(f"header version is {header['version']!r}; expected {expected}")
    for name in ("source", "intrinsics_source"):
        if name in header and not isinstance(header[name], str):
            raise Invalid(f"header {name} is {header[name]!r}; expected text")
    if header["hand_model"] is not None and not isinstance(header["hand_model"], str):
        raise Invalid(f"header hand_model is {header['hand_model']!r}; expected text or null")
    for name in ("width", "height"):
        value = header[name]
        if not is_int(value) or not 1 <= value <= MAX_IMAGE_SIDE:
            raise Invalid(
                f"header {name} is {value!r}; expected a whole number of pixels 1..{MAX_IMAGE_SIDE}"
            )
    _check_intrinsics(header["intrinsics"])
    stride = _check_frame_range(header.get("frame_range"))
    _check_fps(header["fps"], stride)
    bad = _non_finite(header)
    if bad:
        raise Invalid(f"header {bad} is NaN or infinite; expected a finite number")


def _check_intrinsics(k: Any) -> None:
    """A 3x3 list of finite numbers with positive focal lengths."""
    rows_ok = isinstance(k, list | tuple) and len(k) == 3
    if not rows_ok or not all(
        isinstance(r, list | tuple) and len(r) == 3 and all(map(is_number, r)) for r in k
    ):
        raise Invalid(f"header intrinsics is {k!r}; expected a 3x3 matrix of numbers")
    if not all(math.isfinite(v) for r in k for v in r):
        raise Invalid(f"header intrinsics {k!r} holds NaN or infinite values")
    if not (k[0][0] > 0 and k[1][1] > 0):
        raise Invalid(
            f"header intrinsics {k!r} has focal lengths fx={k[0][0]}, "
            f"fy={k[1][1]}; expected positive pixels"
        )


def _check_frame_range(frame_range: Any) -> int:
    """Validate the optional ``frame_range``; return its stride (1 when absent)."""
    if frame_range is None:
        return 1
    if not isinstance(frame_range, dict) or not {"start", "end", "stride"} <= frame_range.keys():
        raise Invalid(
            f"header frame_range is {frame_range!r}; expected an object with start, end, stride"
        )
    start, end, stride = frame_range["start"], frame_range["end"], frame_range["stride"]
    if not is_int(start) or not 0 <= start < MAX_FRAME_INDEX:
        raise Invalid(
            f"header frame_range start is {start!r}; expected a frame index "
            f"0..{MAX_FRAME_INDEX - 1}"
        )
    if end is not None and (not is_int(end) or not start < end <= MAX_FRAME_INDEX):
        raise Invalid(
            f"header frame_range end is {end!r}; expected null or a frame index after start {start}"
        )
    if not is_int(stride) or not 1 <= stride <= MAX_FRAME_STRIDE:
        raise Invalid(f"header frame_range stride is {stride!r}; expected a whole number >= 1")
    return int(stride)


def _check_fps(fps: Any, stride: int) -> None:
    """``fps`` (of the track frames) times ``stride`` is a video rate within FPS_RANGE."""
    low, high = FPS_RANGE
    expected = f"expected {low:g}..{high:g} frames per second"
    if not is_number(fps):
        raise Invalid(f"header fps is {fps!r}; {expected}")
    rate = fps * stride
    if not math.isfinite(fps) or not low <= rate <= high:
        if stride == 1:
            raise Invalid(f"header fps is {fps!r}; {expected}")
        raise Invalid(
            f"header fps is {fps!r}, a video rate of {rate:g} with frame stride "
            f"{stride}; {expected} of video"
        )


def _non_finite(value: Any, where: str = "") -> str | None:
    """The dotted name of the first NaN/inf number anywhere in ``value``, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    items: Any = ()
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    for name, item in items:
        found = _non_finite(item, name)
        if found:
            return found
    return None
