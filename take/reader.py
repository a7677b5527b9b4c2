"""Reading a take file defensively: :func:`load_take` (also importable from
:mod:`handmocap.take`).

The file is never trusted. The reader opens the zip itself and, before decompressing any
array data, checks the file size, the number of entries and their declared sizes
(:data:`~.format.MAX_TAKE_BYTES`), every entry name, compression method and ``.npy`` header
(dtype, shape, no pickled objects) against the format of :mod:`.format`. Only then does it
read the header (checked by :func:`.checks.check_header`, then typed by
:meth:`~.format.TakeHeader.from_json`), checks that no track holds a field newer than the
file's format version (a v1 take has no ``frame_pose``), and reads each track's arrays, in
bounded chunks, building :class:`~.format.Track` objects (whose construction runs the value
checks).
Every problem becomes a :class:`~handmocap.errors.HandmocapError` naming the file, the entry
or field, and what to do.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handmocap.errors import HandmocapError

from .checks import BadTrack, Invalid, check_header, is_int
from .format import (
    FIELDS_SINCE,
    FORMAT,
    MAX_ENTRIES,
    MAX_FILE_BYTES,
    MAX_HEADER_CHARS,
    MAX_META_CHARS,
    MAX_NPY_HEADER_BYTES,
    MAX_TAKE_BYTES,
    MAX_TAKE_ROWS,
    MAX_TRACK_FRAMES,
    MAX_TRACKS,
    OPTIONAL_FIELDS,
    READABLE_VERSIONS,
    TRACK_SHAPES,
    Take,
    TakeHeader,
    Track,
    stored_dtype,
)

_READ_CHUNK = 16 << 20  # decompress array data 16 MB at a time
_RECAPTURE = "re-capture the video"
_COPY_AGAIN = "copy it again or re-capture the video"
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
    OverflowError,
)
_TRACK_KEY = re.compile(r"track(0|[1-9][0-9]{0,8})\.([a-z_0-9]+)")


@dataclass(frozen=True)
class _Entry:
    """One ``.npy`` entry, its array header read, its data not yet."""

    key: str
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int  # bytes of the .npy header before the data


def load_take(path: Path) -> Take:
    """Read and validate a take. Raises HandmocapError naming the file, the field and what
    to do; never decompresses more than the entries' shapes allow (:data:`MAX_TAKE_BYTES`)."""
    path = Path(path)
    if not path.is_file():
        raise HandmocapError(f"take file not found: {path}")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise HandmocapError(f"cannot read the take {path}: {err.strerror or err}") from err
    if size == 0:
        raise HandmocapError(
            f"{path} is empty (0 bytes), not a readable take file; an "
            f"interrupted copy or capture leaves this: {_COPY_AGAIN}"
        )
    if size > MAX_FILE_BYTES:
        raise HandmocapError(
            f"{path} is {size} bytes, larger than any take ({MAX_FILE_BYTES} "
            "bytes at most): not a readable take file; check the file name"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_take(path, archive)
    except _ZIP_ERRORS as err:
        raise HandmocapError(
            f"{path} is not a readable take file: it is truncated or not a "
            f"take file (bad zip: {err}); {_COPY_AGAIN}"
        ) from err
    except MemoryError as err:
        raise HandmocapError(
            f"not enough memory to load the take {path} ({size} bytes); "
            "close other programs and try again"
        ) from err


def _read_take(path: Path, archive: zipfile.ZipFile) -> Take:
    """The whole take from an open zip: inventory, header, array headers, then the data."""
    entries = _inventory(path, archive)
    if "header" not in entries:
        raise HandmocapError(f"{path} is not a take file (no header)")
    header = _read_json(path, archive, entries.pop("header"), "the header", MAX_HEADER_CHARS)
    version = _check_format(path, header)
    try:
        check_header(header)
    except Invalid as err:
        raise HandmocapError(f"{path}: {err.detail}; {_RECAPTURE}") from err
    groups = _group_tracks(path, entries)
    _check_fields_in_version(path, groups, version)
    probed = [_probe_track(path, archive, i, group) for i, group in enumerate(groups)]
    rows = sum(t for t, _ in probed)
    if rows > MAX_TAKE_ROWS:
        raise HandmocapError(
            f"{path}: the tracks hold {rows} frames together, more than "
            f"{MAX_TAKE_ROWS}; not a take handmocap wrote: {_RECAPTURE}"
        )
    tracks = []
    for i, ((_, arrays), group) in enumerate(zip(probed, groups, strict=True)):
        meta = _read_json(path, archive, group["meta"], f"track {i} meta", MAX_META_CHARS)
        tracks.append(_build_track(path, archive, i, meta, arrays))
    return Take(TakeHeader.from_json(header), tuple(tracks))


# --- the zip inventory -------------------------------------------------------------------------
def _inventory(path: Path, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Entry name (without ``.npy``) -> ZipInfo; counts and declared sizes checked."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise HandmocapError(
            f"{path} holds {len(infos)} entries, more than a take of "
            f"{MAX_TRACKS} tracks; not a take handmocap wrote: {_RECAPTURE}"
        )
    total = sum(info.file_size for info in infos)
    if total > MAX_TAKE_BYTES:
        raise HandmocapError(
            f"{path} declares {total} bytes of uncompressed data, more than "
            f"the largest take ({MAX_TAKE_BYTES}); refusing to unpack it: "
            f"not a take handmocap wrote, {_RECAPTURE}"
        )
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy") or info.is_dir():
            raise HandmocapError(
                f"{path}: unexpected entry {name!r}; a take holds only .npy "
                f"arrays: not a take handmocap wrote, {_RECAPTURE}"
            )
        if name[:-4] in entries:
            raise HandmocapError(
                f"{path} holds the entry {name!r} twice; the file is damaged: {_COPY_AGAIN}"
            )
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise HandmocapError(
                f"{path}: entry {name!r} uses zip compression method "
                f"{info.compress_type}; a take uses deflate: {_RECAPTURE}"
            )
        if info.flag_bits & 0x1:
            raise HandmocapError(
                f"{path}: entry {name!r} is encrypted; a take never is: {_RECAPTURE}"
            )
        entries[name[:-4]] = info
    return entries


def _group_tracks(
    path: Path, entries: dict[str, zipfile.ZipInfo]
) -> list[dict[str, zipfile.ZipInfo]]:
    """Per track index, field name -> ZipInfo; unknown entries and gaps refused."""
    by_track: dict[int, dict[str, zipfile.ZipInfo]] = {}
    for key, info in entries.items():
        found = _TRACK_KEY.fullmatch(key)
        if not found or (found.group(2) not in TRACK_SHAPES and found.group(2) != "meta"):
            raise HandmocapError(
                f"{path}: unexpected entry {key!r}; a take holds only "
                "'header' and 'track<i>.<field>' arrays: not a take "
                f"handmocap wrote, {_RECAPTURE}"
            )
        by_track.setdefault(int(found.group(1)), {})[found.group(2)] = info
    groups = []
    for i in range(len(by_track)):
        group = by_track.get(i)
        if group is None:
            raise HandmocapError(
                f"{path}: track {i} is missing but track {max(by_track)} is "
                f"there; the take is damaged: {_RECAPTURE}"
            )
        for name in ("meta", *(n for n in TRACK_SHAPES if n not in OPTIONAL_FIELDS)):
            if name not in group:
                raise HandmocapError(
                    f"{path}: track {i} has no {name}; the take is incomplete: {_RECAPTURE}"
                )
        groups.append(group)
    return groups


# --- one .npy entry: its header, then its data -------------------------------------------------
def _probe(path: Path, archive: zipfile.ZipFile, key: str, info: zipfile.ZipInfo) -> _Entry:
    """Read only the ``.npy`` header of an entry: shape, order, dtype; sizes cross-checked."""
    fmt = np.lib.format
    with archive.open(info) as stream:
        # numpy would read whatever header length the file declares: give it a bounded copy
        head = io.BytesIO(stream.read(min(info.file_size, MAX_NPY_HEADER_BYTES)))
    try:
        version = fmt.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(head, MAX_NPY_HEADER_BYTES)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(head, MAX_NPY_HEADER_BYTES)
        else:
            raise ValueError(f".npy format version {version} is not one numpy writes here")
    except (ValueError, SyntaxError, TypeError, RecursionError, KeyError) as err:
        raise HandmocapError(
            f"{path}: entry {key!r} has a damaged array header ({err}); {_COPY_AGAIN}"
        ) from err
    offset = head.tell()
    if dtype.hasobject:
        raise HandmocapError(
            f"{path}: entry {key!r} holds Python objects (pickle); a take "
            "holds only numbers and text and handmocap never unpickles: "
            f"{_RECAPTURE}"
        )
    return _Entry(key, info, shape, fortran, dtype, offset)


def _check_size(path: Path, entry: _Entry) -> None:
    """The entry's declared size is exactly its ``.npy`` header plus its array's bytes."""
    need = entry.offset + math.prod(entry.shape) * entry.dtype.itemsize
    if entry.info.file_size != need:
        raise HandmocapError(
            f"{path}: entry {entry.key!r} declares {entry.info.file_size} "
            f"bytes but its array needs {need}; the file is damaged: "
            f"{_COPY_AGAIN}"
        )


def _read_data(archive: zipfile.ZipFile, entry: _Entry) -> np.ndarray:
    """Decompress an entry's array data (its shape and size already checked)."""
    out = np.empty(entry.shape, entry.dtype, order="F" if entry.fortran else "C")
    flat = out.ravel(order="K").view(np.uint8)
    with archive.open(entry.info) as stream:
        stream.read(entry.offset)
        pos = 0
        while pos < flat.size:
            chunk = stream.read(min(_READ_CHUNK, flat.size - pos))
            if not chunk:
                raise EOFError(f"entry {entry.key!r} ends after {pos} of {flat.size} bytes")
            flat[pos : pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
            pos += len(chunk)
        if stream.read(1):  # also makes zipfile verify the entry's CRC
            raise ValueError(f"entry {entry.key!r} has data past its array")
    return out


# --- the JSON entries: the header and the track metas ------------------------------------------
def _read_json(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str, max_chars: int
) -> Any:
    """A 0-d text array holding JSON (the header, a track's meta), parsed."""
    entry = _probe(path, archive, info.filename[:-4], info)
    if entry.dtype.kind != "U" or entry.shape != ():
        raise HandmocapError(
            f"{path}: {what} is an array of {entry.dtype} {entry.shape}; "
            f"expected text: {_RECAPTURE}"
        )
    if not 0 < entry.dtype.itemsize <= 4 * max_chars:  # numpy wraps huge sizes to negative
        raise HandmocapError(
            f"{path}: {what} declares text of type {entry.dtype.str}; at most {max_chars} "
            f"characters: not a take handmocap wrote, {_RECAPTURE}"
        )
    _check_size(path, entry)
    text = str(_read_data(archive, entry)[()])
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise HandmocapError(
            f"{path}: {what} is not valid JSON ({err.msg}, character "
            f"{err.pos}); the take is damaged: {_COPY_AGAIN}"
        ) from err
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise HandmocapError(
            f"{path}: {what} is not valid JSON ({err}); the take is damaged: {_COPY_AGAIN}"
        ) from err
    except RecursionError as err:
        raise HandmocapError(
            f"{path}: {what} is nested too deeply to be a take's; {_RECAPTURE}"
        ) from err


def _check_fields_in_version(
    path: Path, groups: list[dict[str, zipfile.ZipInfo]], version: int
) -> None:
    """No track holds a field newer than the file's format version (:data:`FIELDS_SINCE`)."""
    for i, group in enumerate(groups):
        for name in group:
            since = FIELDS_SINCE.get(name, 1)
            if since > version:
                raise HandmocapError(
                    f"{path}: track {i} has {name}, which take format v{version} does not "
                    f"have (it came in v{since}): not a take handmocap wrote, {_RECAPTURE}"
                )


def _check_format(path: Path, header: Any) -> int:
    """A handmocap take of a version this reader reads (the message for another file or
    version); returns the version."""
    if not isinstance(header, dict):
        raise HandmocapError(
            f"{path}: the header is a JSON {type(header).__name__}, not an "
            f"object; not a take handmocap wrote: {_RECAPTURE}"
        )
    if header.get("format") != FORMAT:
        raise HandmocapError(f"{path} is not a take file (format {header.get('format')!r})")
    version = header.get("version")
    if not is_int(version) or version not in READABLE_VERSIONS:
        shown = version if is_int(version) else repr(version)
        readable = " and ".join(f"v{v}" for v in READABLE_VERSIONS)
        raise HandmocapError(
            f"{path} is take format v{shown}; this handmocap reads {readable}. "
            "Re-capture the video or update handmocap."
        )
    return int(version)


# --- the tracks --------------------------------------------------------------------------------
def _probe_track(
    path: Path, archive: zipfile.ZipFile, i: int, group: dict[str, zipfile.ZipInfo]
) -> tuple[int, dict[str, _Entry]]:
    """Array headers of track ``i``: dtypes and shapes checked; returns (T, entries)."""
    probed = {
        name: _probe(path, archive, f"track{i}.{name}", info)
        for name, info in group.items()
        if name != "meta"
    }
    frames = probed["frames"]
    t = frames.shape[0] if len(frames.shape) == 1 else -1
    if not 0 <= t <= MAX_TRACK_FRAMES:
        shown = frames.shape if t < 0 else f"{t} frames"
        raise HandmocapError(
            f"{path}: track {i} frames has shape {frames.shape} ({shown}); "
            f"expected (T,) with T <= {MAX_TRACK_FRAMES}: {_RECAPTURE}"
        )
    for name, entry in probed.items():
        want = stored_dtype(name)
        if entry.dtype.kind != want.kind or entry.dtype.itemsize != want.itemsize:
            raise HandmocapError(
                f"{path}: track {i} {name} has dtype {entry.dtype}; expected {want}: {_RECAPTURE}"
            )
        shape = tuple(t if s == "T" else s for s in TRACK_SHAPES[name])
        if entry.shape != shape:
            raise HandmocapError(
                f"{path}: track {i} {name} has shape {entry.shape}, expected {shape}; {_RECAPTURE}"
            )
        _check_size(path, entry)
    return t, probed


def _build_track(
    path: Path, archive: zipfile.ZipFile, i: int, meta: Any, entries: dict[str, _Entry]
) -> Track:
    """Track ``i`` from its meta and its (probed) entries; the Track checks its values."""
    if not isinstance(meta, dict):
        raise HandmocapError(
            f"{path}: track {i} meta is a JSON {type(meta).__name__}, not an object; {_RECAPTURE}"
        )
    for name in ("track_id", "handedness"):
        if name not in meta:
            raise HandmocapError(f"{path}: track {i} meta has no {name!r}; {_RECAPTURE}")
    values = {
        name: _read_data(archive, entry).astype(stored_dtype(name), copy=False)
        for name, entry in entries.items()
    }
    try:
        return Track(track_id=meta["track_id"], handedness=meta["handedness"], **values)
    except BadTrack as err:
        raise HandmocapError(f"{path}: track {i} {err.detail}; {_RECAPTURE}") from err
