"""The take reader and writer against bad input: damaged, hostile and mistyped files fail
with a HandmocapError naming the file and the field (never another exception, never a
gigabyte allocation, never an unpickle); saving validates first, follows no planted link
and leaves the old take byte-identical when interrupted; valid takes round-trip exactly."""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import tempfile
import time
import tracemalloc
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from handmocap import atomic
from handmocap.errors import HandmocapError
from handmocap.take import (
    MAX_FRAME_INDEX,
    MAX_TAKE_BYTES,
    MAX_TRACK_FRAMES,
    READABLE_VERSIONS,
    EngineFacts,
    FrameFlag,
    FrameRange,
    Take,
    TakeHeader,
    Track,
    load_take,
    make_header,
)
from handmocap.take.checks import Invalid, check_header

FLOAT_FIELDS = (
    "keypoints_2d",
    "keypoints_rel_depth",
    "world_landmarks",
    "confidence",
    "right_prob",
    "mano_pose",
    "mano_betas",
    "translation",
    "keypoints_3d",
    "rest_keypoints",
    "frame_pose",
    "frame_translation",
)
RECAPTURE = "; re-capture the video"


# --- helpers -----------------------------------------------------------------------------------
def _track(t=5, track_id=0, handedness="right", mano=False, **extra):
    rng = np.random.default_rng(track_id if isinstance(track_id, int) and track_id >= 0 else 0)
    if mano:
        extra = {
            "mano_pose": rng.normal(size=(t, 16, 3)),
            "mano_betas": rng.normal(size=10),
            "translation": rng.normal(size=(t, 3)),
            "keypoints_3d": rng.normal(size=(t, 21, 3)),
            "rest_keypoints": rng.normal(size=(21, 3)),
            "frame_pose": rng.normal(size=(t, 16, 3)),
            "frame_translation": rng.normal(size=(t, 3)),
            **extra,
        }
    values = {
        "frames": np.arange(t) * 2,
        "keypoints_2d": rng.uniform(0, 640, (t, 21, 2)),
        "keypoints_rel_depth": rng.normal(size=(t, 21)),
        "world_landmarks": rng.normal(scale=0.05, size=(t, 21, 3)),
        "confidence": rng.uniform(0, 1, (t, 21)),
        "right_prob": np.full(t, 0.9),
        "flags": np.full(t, FrameFlag.TRACKED, np.uint8),
        **extra,
    }
    return Track(track_id=track_id, handedness=handedness, **values)


def _take_header(**changes) -> TakeHeader:
    """A valid header with the fields ``changes`` (not checked until saved)."""
    header = make_header(
        "clip.mp4", 30.0, 640, 480, np.eye(3) * [500, 500, 1], "guess",
        engine=EngineFacts(device="cpu"),
    )  # fmt: skip
    return replace(header, **changes)


def _header(**changes) -> dict:
    """A valid header's JSON object with the keys ``changes``."""
    return {**_take_header().to_json(), **changes}


def _valid(folder: Path, name="take.npz") -> Path:
    """A valid take: track 0 keypoints only, track 1 (id 7, left) with the MANO fields and
    the per-frame fit."""
    take = Take(_take_header(), (_track(), _track(4, 7, "left", mano=True)))
    return take.save(folder / name)


def _members(path: Path) -> dict[str, bytes]:
    """Raw ``.npy`` bytes of every entry, by key (``track0.frames``)."""
    with zipfile.ZipFile(path) as zf:
        return {info.filename.removesuffix(".npy"): zf.read(info) for info in zf.infolist()}


def _npy(value: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=True)
    return buf.getvalue()


def _npz_name(key: str) -> str:
    return key if key.endswith((".npy", ".txt")) else f"{key}.npy"


def _write_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    """A zip of the entries ``members`` (key -> raw bytes; keys get ``.npy`` appended)."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for key, data in members.items():
            zf.writestr(_npz_name(key), data)
    return path


def _rewrite(src: Path, dst: Path, changes: dict[str, object]) -> Path:
    """A copy of the take ``src`` with entries replaced (array or raw bytes) or removed
    (None); entries are written under ``<key>.npy``."""
    members = _members(src)
    for key, value in changes.items():
        if value is None:
            members.pop(key)
        else:
            members[key] = value if isinstance(value, bytes) else _npy(value)
    return _write_zip(dst, members)


def _with_header(tmp_path: Path, header: object) -> Path:
    text = header if isinstance(header, str) else json.dumps(header)
    return _rewrite(_valid(tmp_path), tmp_path / "bad.npz", {"header": np.array(text)})


def _refused(path: Path, message: str) -> str:
    """load_take(path) raises HandmocapError whose text starts with the path and contains
    ``message`` (literal); returns the text."""
    with pytest.raises(HandmocapError) as info:
        load_take(path)
    text = str(info.value)
    assert text.startswith(str(path)), text
    assert message in text, text
    return text


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A hand-written .npy v1.0 header declaring any shape (no data follows)."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = -(10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --- damaged files -----------------------------------------------------------------------------
def test_zero_byte_take(tmp_path):
    path = tmp_path / "take.npz"
    path.write_bytes(b"")
    text = _refused(path, "is empty (0 bytes), not a readable take file")
    assert text.endswith("copy it again or re-capture the video")


@pytest.mark.parametrize("keep", [1, 21, 0.25, 0.5, 0.9, -22, -1])
def test_truncated_take(tmp_path, keep):
    data = _valid(tmp_path).read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path = tmp_path / "cut.npz"
    path.write_bytes(data[:cut])
    _refused(path, "is not a readable take file: it is truncated or not a take file (bad zip")


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory) -> bytes:
    return _valid(tmp_path_factory.mktemp("valid")).read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_truncated_anywhere_is_a_handmocap_error(valid_bytes, data):
    cut = data.draw(st.integers(0, len(valid_bytes) - 1))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cut.npz"
        path.write_bytes(valid_bytes[:cut])
        with pytest.raises(HandmocapError, match=re.escape(str(path))):
            load_take(path)


@settings(max_examples=100, deadline=None)
@given(junk=st.binary(min_size=1, max_size=2000))
def test_random_bytes_are_a_handmocap_error(junk):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "junk.npz"
        path.write_bytes(junk)
        with pytest.raises(HandmocapError, match=r"not a readable take file|not a take file"):
            load_take(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_flipped_byte_loads_or_is_a_handmocap_error(valid_bytes, data):
    """Any single damaged byte: either the take still reads (the byte was in padding) or
    the error is a HandmocapError naming the file; no other exception ever escapes."""
    at = data.draw(st.integers(0, len(valid_bytes) - 1))
    flip = data.draw(st.integers(1, 255))
    damaged = bytearray(valid_bytes)
    damaged[at] ^= flip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.npz"
        path.write_bytes(bytes(damaged))
        try:
            take = load_take(path)
        except HandmocapError as err:
            assert str(path) in str(err)
        else:
            assert isinstance(take, Take)


# --- the header --------------------------------------------------------------------------------
def test_header_not_json(tmp_path):
    path = _with_header(tmp_path, '{"format": "handmocap-take", ')
    _refused(
        path,
        "the header is not valid JSON (Expecting property name enclosed in double "
        "quotes, character 29); the take is damaged",
    )


@pytest.mark.parametrize("header", [[1, 2], "text", 3, None])
def test_header_not_an_object(tmp_path, header):
    path = _with_header(tmp_path, json.dumps(header))
    _refused(path, f"the header is a JSON {type(header).__name__}, not an object")


def test_header_entry_not_text(tmp_path):
    path = _rewrite(_valid(tmp_path), tmp_path / "bad.npz", {"header": np.zeros(3)})
    _refused(path, "the header is an array of float64 (3,); expected text")


@pytest.mark.parametrize(
    "name", ["format", "version", "source", "fps", "width", "height", "intrinsics", "hand_model"]
)
def test_missing_header_field(tmp_path, name):
    header = _header()
    del header[name]
    path = _with_header(tmp_path, header)
    expected = {
        "format": "is not a take file (format None)",
        "version": "is take format vNone; this handmocap reads v1 and v2.",
    }
    _refused(path, expected.get(name, f": the header has no {name!r} field{RECAPTURE}"))


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fps": 0.07}, "header fps is 0.07; expected 1..1000 frames per second"),
        ({"fps": NAN}, "header fps is nan; expected 1..1000 frames per second"),
        ({"fps": INF}, "header fps is inf; expected 1..1000 frames per second"),
        ({"fps": 0}, "header fps is 0; expected 1..1000 frames per second"),
        ({"fps": -30.0}, "header fps is -30.0; expected 1..1000"),
        ({"fps": 5000.0}, "header fps is 5000.0; expected 1..1000"),
        ({"fps": "30"}, "header fps is '30'; expected 1..1000"),
        ({"fps": True}, "header fps is True; expected 1..1000"),
        (
            {"fps": 0.07, "frame_range": {"start": 0, "end": None, "stride": 2}},
            "header fps is 0.07, a video rate of 0.14 with frame stride 2; expected 1..1000",
        ),
        ({"width": 640.0}, "header width is 640.0; expected a whole number of pixels 1..16384"),
        ({"width": "640"}, "header width is '640'; expected a whole number of pixels"),
        ({"width": 0}, "header width is 0; expected"),
        ({"width": True}, "header width is True; expected"),
        ({"height": 20000}, "header height is 20000; expected a whole number of pixels 1..16384"),
        ({"height": -480}, "header height is -480; expected"),
        ({"intrinsics": [[1, 0], [0, 1]]}, "header intrinsics is [[1, 0], [0, 1]]; expected a 3x3"),
        ({"intrinsics": "eye"}, "header intrinsics is 'eye'; expected a 3x3 matrix of numbers"),
        ({"intrinsics": [[500, 0, 320], [0, 500, 240], [0, 0, "1"]]}, "expected a 3x3 matrix"),
        (
            {"intrinsics": [[NAN, 0, 320], [0, 500, 240], [0, 0, 1]]},
            "header intrinsics [[nan, 0, 320], [0, 500, 240], [0, 0, 1]] holds NaN or infinite",
        ),
        (
            {"intrinsics": [[0, 0, 320], [0, 500, 240], [0, 0, 1]]},
            "has focal lengths fx=0, fy=500; expected positive pixels",
        ),
        ({"source": 5}, "header source is 5; expected text"),
        ({"intrinsics_source": ["guess"]}, "header intrinsics_source is ['guess']; expected text"),
        ({"hand_model": 3}, "header hand_model is 3; expected text or null"),
        ({"frame_range": "all"}, "header frame_range is 'all'; expected an object with start"),
        ({"frame_range": {"start": 0}}, "header frame_range is {'start': 0}; expected an object"),
        (
            {"frame_range": {"start": -1, "end": None, "stride": 1}},
            "header frame_range start is -1; expected a frame index 0..99999999",
        ),
        (
            {"frame_range": {"start": 5, "end": 5, "stride": 1}},
            "header frame_range end is 5; expected null or a frame index after start 5",
        ),
        (
            {"frame_range": {"start": 0, "end": None, "stride": 0}},
            "header frame_range stride is 0; expected a whole number >= 1",
        ),
        (
            {"frame_range": {"start": 0, "end": None, "stride": "2"}},
            "header frame_range stride is '2'; expected a whole number >= 1",
        ),
        ({"tracking_seconds": NAN}, "header tracking_seconds is NaN or infinite"),
        ({"version": "1"}, "is take format v'1'; this handmocap reads v1 and v2."),
        ({"version": 1.0}, "is take format v1.0; this handmocap reads v1 and v2."),
        ({"version": 3}, "is take format v3; this handmocap reads v1 and v2."),
        ({"version": True}, "is take format vTrue; this handmocap reads v1 and v2."),
        ({"format": "something-else"}, "is not a take file (format 'something-else')"),
    ],
)
def test_bad_header_field(tmp_path, changes, message):
    path = _with_header(tmp_path, _header(**changes))
    text = _refused(path, message)
    if "format" not in changes and "version" not in changes:
        assert text.startswith(f"{path}: header ") and text.endswith(RECAPTURE)


def test_the_header_check_takes_every_readable_version_and_no_other():
    for version in READABLE_VERSIONS:
        check_header(_header(version=version))
    for version in (0, 3, True, 2.0):
        with pytest.raises(Invalid, match=rf"^header version is {version!r}; expected 1 or 2$"):
            check_header(_header(version=version))


def test_low_sample_rate_with_a_stride_is_a_normal_take(tmp_path):
    """Every 60th frame of a 30 fps video: the take samples at 0.5 fps, the video is fine."""
    header = _take_header(fps=0.5, frame_range=FrameRange(0, None, 60))
    back = load_take(Take(header, (_track(),)).save(tmp_path / "take.npz"))
    assert back.header.fps == 0.5 and back.header.frame_range.stride == 60


# --- track entries -----------------------------------------------------------------------------
@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_non_finite_value_in_each_float_field(tmp_path, field, bad):
    src = _valid(tmp_path)
    value = np.load(src)[f"track1.{field}"].copy()
    value.flat[value.size // 2] = bad
    path = _rewrite(src, tmp_path / "bad.npz", {f"track1.{field}": value})
    text = _refused(
        path, f"{path}: track 1 {field} contains NaN or inf values; re-capture the video"
    )
    assert text.endswith(RECAPTURE)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.array([-1000, 2, 4, 6, 8]), "track 0 frames has index -1000; expected 0..99999999"),
        (
            np.array([0, 2, 4, 6, 10**12]),
            f"track 0 frames has index {10**12}; expected 0..99999999",
        ),
        (
            np.array([0, 2, 2, 6, 8]),
            "track 0 frames are not strictly increasing (frame 2 follows frame 2)",
        ),
        (np.array([0, 8, 4, 6, 9]), "frames are not strictly increasing (frame 4 follows frame 8)"),
        (np.array(["0", "2", "4", "6", "8"]), "track 0 frames has dtype <U1; expected int64"),
        (np.arange(5.0), "track 0 frames has dtype float64; expected int64"),
        (np.arange(5, dtype=np.int32), "track 0 frames has dtype int32; expected int64"),
        (np.zeros((5, 1), np.int64), "track 0 frames has shape (5, 1)"),
    ],
)
def test_bad_frames(tmp_path, frames, message):
    path = _rewrite(_valid(tmp_path), tmp_path / "bad.npz", {"track0.frames": frames})
    _refused(path, message)


@pytest.mark.parametrize(
    ("field", "at", "bad", "message"),
    [
        ("confidence", (0, 3), 1.5, "track 0 confidence has values outside [0, 1] (1.5)"),
        ("right_prob", (2,), -0.25, "track 0 right_prob has values outside [0, 1] (-0.25)"),
        ("flags", (1,), 16, "track 0 flags has unknown FrameFlag bits (0x10)"),
        ("flags", (1,), 255, "track 0 flags has unknown FrameFlag bits (0xf0)"),
    ],
)
def test_values_out_of_range(tmp_path, field, at, bad, message):
    src = _valid(tmp_path)
    value = np.load(src)[f"track0.{field}"].copy()
    value[at] = bad
    path = _rewrite(src, tmp_path / "bad.npz", {f"track0.{field}": value})
    _refused(path, message)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("track0.flags", np.full(5, 2, np.int64), "track 0 flags has dtype int64; expected uint8"),
        (
            "track0.keypoints_2d",
            np.zeros((5, 21, 2)),
            "keypoints_2d has dtype float64; expected float32",
        ),
        ("track0.keypoints_2d", np.zeros((5, 21, 2), bool), "keypoints_2d has dtype bool"),
        (
            "track1.mano_betas",
            np.zeros(9, np.float32),
            "track 1 mano_betas has shape (9,), expected (10,)",
        ),
        (
            "track1.rest_keypoints",
            np.zeros((21, 3, 1), np.float32),
            "has shape (21, 3, 1), expected (21, 3)",
        ),
    ],
)
def test_wrong_dtype_or_shape(tmp_path, key, value, message):
    path = _rewrite(_valid(tmp_path), tmp_path / "bad.npz", {key: value})
    _refused(path, message)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ("not json", "track 0 meta is not valid JSON"),
        (json.dumps([0, "right"]), "track 0 meta is a JSON list, not an object"),
        (json.dumps({"handedness": "right"}), "track 0 meta has no 'track_id'"),
        (json.dumps({"track_id": 0}), "track 0 meta has no 'handedness'"),
        (
            json.dumps({"track_id": "3", "handedness": "right"}),
            "track 0 track_id is '3'; expected an integer",
        ),
        (json.dumps({"track_id": -1, "handedness": "right"}), "track 0 track_id is -1"),
        (json.dumps({"track_id": True, "handedness": "right"}), "track 0 track_id is True"),
        (
            json.dumps({"track_id": 0, "handedness": "up"}),
            "track 0 handedness is 'up'; expected 'left' or 'right'",
        ),
    ],
)
def test_bad_track_meta(tmp_path, meta, message):
    path = _rewrite(_valid(tmp_path), tmp_path / "bad.npz", {"track0.meta": np.array(meta)})
    _refused(path, message)


def test_missing_track_entries(tmp_path):
    src = _valid(tmp_path)
    path = _rewrite(src, tmp_path / "a.npz", {"track0.flags": None})
    _refused(path, "track 0 has no flags; the take is incomplete")
    path = _rewrite(src, tmp_path / "b.npz", {"track1.meta": None})
    _refused(path, "track 1 has no meta; the take is incomplete")
    members = {k.replace("track1.", "track2."): v for k, v in _members(src).items()}
    path = _write_zip(tmp_path / "c.npz", members)
    _refused(path, "track 1 is missing but track 2 is there")


# --- hostile files -----------------------------------------------------------------------------
def _refused_quickly(path: Path, message: str) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        _refused(path, message)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0
    assert peak < 50 << 20, f"peak {peak / 2**20:.0f} MB while refusing"


def test_member_declaring_a_4_gib_track_is_refused_before_allocating(tmp_path):
    members = _members(_valid(tmp_path))
    members["track0.frames"] = _npy_header("<i8", (2**29,)) + bytes(4096)  # 4 GiB of int64
    path = _write_zip(tmp_path / "huge.npz", members)
    assert path.stat().st_size < 100_000
    _refused_quickly(
        path,
        f"track 0 frames has shape (536870912,) (536870912 frames); expected "
        f"(T,) with T <= {MAX_TRACK_FRAMES}",
    )


def test_member_declaring_a_4_gib_array_is_refused_before_allocating(tmp_path):
    members = _members(_valid(tmp_path))
    members["track0.keypoints_2d"] = _npy_header("<f4", (2**32 // 168, 21, 2)) + bytes(4096)
    path = _write_zip(tmp_path / "huge.npz", members)
    _refused_quickly(path, "track 0 keypoints_2d has shape (25565281, 21, 2), expected (5, 21, 2)")


@pytest.mark.parametrize("chars", [50_000_000, 1_000_000_000])  # 200 MB, 4 GB of text
def test_header_declaring_megabytes_of_text_is_refused(tmp_path, chars):
    members = _members(_valid(tmp_path))
    members["header"] = _npy_header(f"<U{chars}", ()) + bytes(4096)
    path = _write_zip(tmp_path / "huge.npz", members)
    _refused_quickly(path, "the header declares text of type <U")
    _refused(path, "; at most 100000 characters: not a take handmocap wrote, re-capture the video")


def test_array_header_declaring_a_4_gib_header_is_refused(tmp_path):
    """numpy reads as many header bytes as the .npy says; the reader gives it only 1 KB."""
    members = _members(_valid(tmp_path))
    members["track0.frames"] = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + bytes(8192)
    path = _write_zip(tmp_path / "huge.npz", members)
    _refused_quickly(
        path,
        "entry 'track0.frames' has a damaged array header (EOF: reading array "
        "header, expected 4294967295 bytes got 1012)",
    )


def test_zip_directory_declaring_4_gb_is_refused_before_decompressing(tmp_path):
    """The zip's own directory claims an entry unpacks to ~4 GB (a zip bomb's signature)."""
    data = bytearray(_valid(tmp_path).read_bytes())
    at = data.index(b"PK\x01\x02")  # first central directory record
    struct.pack_into("<I", data, at + 24, 0xF0000000)  # its uncompressed size
    path = tmp_path / "bomb.npz"
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as zf:
        total = sum(info.file_size for info in zf.infolist())
    assert total > 0xF0000000
    _refused_quickly(
        path,
        f"declares {total} bytes of uncompressed data, more than the "
        f"largest take ({MAX_TAKE_BYTES}); refusing to unpack it",
    )


def _directory_record(data: bytes, name: str) -> int:
    """Offset of the zip central directory record of entry ``name``."""
    at = data.index(b"PK\x01\x02")
    while data[at + 46 : at + 46 + len(name)] != name.encode():
        at = data.index(b"PK\x01\x02", at + 4)
    return at


def test_entry_size_disagreeing_with_its_array_header(tmp_path):
    take = Take(_take_header(), (_track(100),))  # keypoints_2d: 16 KB, more than one read
    data = bytearray(take.save(tmp_path / "take.npz").read_bytes())
    at = _directory_record(data, "track0.keypoints_2d.npy")
    (size,) = struct.unpack_from("<I", data, at + 24)
    struct.pack_into("<I", data, at + 24, size - 4)
    path = tmp_path / "short.npz"
    path.write_bytes(bytes(data))
    _refused(path, f"declares {size - 4} bytes but its array needs {size}; the file is damaged")


_UNPICKLED: list[str] = []


def _record(what: str) -> str:
    _UNPICKLED.append(what)
    return what


class _Trap:
    """Unpickling this records it: the take reader must never get that far."""

    def __reduce__(self):
        return (_record, ("unpickled",))


@pytest.mark.parametrize("key", ["track0.keypoints_2d", "header", "track0.meta"])
def test_object_arrays_are_refused_without_unpickling(tmp_path, key):
    value = np.empty(() if key != "track0.keypoints_2d" else (5, 21, 2), dtype=object)
    value[...] = _Trap()
    path = _rewrite(_valid(tmp_path), tmp_path / "pickle.npz", {key: value})
    _refused(path, f"entry {key!r} holds Python objects (pickle)")
    assert _UNPICKLED == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"notes": np.array("hello")}, "unexpected entry 'notes'; a take holds only 'header' and"),
        ({"track0.velocity": np.zeros(5, np.float32)}, "unexpected entry 'track0.velocity'"),
        ({"track00.meta": np.array("{}")}, "unexpected entry 'track00.meta'"),
        ({"readme.txt": b"hello"}, "unexpected entry 'readme.txt'; a take holds only .npy"),
    ],
)
def test_unknown_entries_are_refused(tmp_path, extra, message):
    """Decision: a take holds exactly what Take.save writes; anything else means the file
    was not written by this handmocap, so it is refused rather than silently ignored."""
    path = _rewrite(_valid(tmp_path), tmp_path / "extra.npz", extra)
    _refused(path, message)


def test_duplicate_entries_are_refused(tmp_path):
    members = _members(_valid(tmp_path))
    path = tmp_path / "dup.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "w") as zf:
            for key, data in members.items():
                zf.writestr(f"{key}.npy", data)
            zf.writestr("header.npy", members["header"])
    _refused(path, "holds the entry 'header.npy' twice; the file is damaged")


def test_other_zip_compression_is_refused(tmp_path):
    members = _members(_valid(tmp_path))
    path = _write_zip(tmp_path / "bz2.npz", members, zipfile.ZIP_BZIP2)
    _refused(path, "uses zip compression method 12; a take uses deflate")


def test_fortran_order_big_endian_and_stored_entries_are_read(tmp_path):
    """What other numpy writers produce is read exactly: column-major arrays, big-endian
    floats, an uncompressed (np.savez) archive."""
    src = _valid(tmp_path)
    kp = np.load(src)["track1.keypoints_2d"]
    changes = {
        "track1.keypoints_2d": np.asfortranarray(kp),
        "track1.world_landmarks": np.load(src)["track1.world_landmarks"].astype(">f4"),
    }
    members = _members(_rewrite(src, tmp_path / "f.npz", changes))
    path = _write_zip(tmp_path / "stored.npz", members, zipfile.ZIP_STORED)
    back, want = load_take(path), load_take(src)
    for name in ("keypoints_2d", "world_landmarks"):
        got = getattr(back.tracks[1], name)
        assert got.dtype == np.float32 and got.dtype.isnative
        np.testing.assert_array_equal(got, getattr(want.tracks[1], name))


# --- Track built by the engine -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"keypoints_2d": np.full((5, 21, 2), np.nan)},
            "track 0 keypoints_2d contains NaN or inf values",
        ),
        (
            {"world_landmarks": np.full((5, 21, 3), np.inf)},
            "track 0 world_landmarks contains NaN or inf",
        ),
        ({"frames": np.arange(5.0)}, "track 0 has frames of dtype float64; expected integers"),
        (
            {"frames": np.array([0, 1, 1, 2, 3])},
            "frames are not strictly increasing (frame 1 follows frame 1)",
        ),
        ({"frames": np.arange(5) - 1}, "track 0 frames has index -1; expected 0..99999999"),
        (
            {"confidence": np.full((5, 21), 2.0)},
            "track 0 confidence has values outside [0, 1] (2)",
        ),
        ({"flags": np.full(5, 32, np.uint8)}, "track 0 flags has unknown FrameFlag bits (0x20)"),
        ({"flags": np.full(5, 300)}, "track 0 flags has values outside 0..255"),
        ({"handedness": "both"}, "track 0 handedness is 'both'; expected 'left' or 'right'"),
        ({"track_id": -1}, "track -1 track_id is -1; expected an integer 0..2**31-1"),
        ({"track_id": 1.5}, "track_id is 1.5; expected an integer"),
        ({"right_prob": np.full(4, 0.5)}, "track 0 right_prob has shape (4,), expected (5,)"),
        (
            {"keypoints_2d": np.full((5, 21, 2), None)},
            "has keypoints_2d of dtype object; expected numbers",
        ),
        ({"frames": None}, "track 0 has no frames"),
        ({"mano_betas": np.full(10, np.nan)}, "track 0 mano_betas contains NaN or inf values"),
    ],
)
def test_engine_built_track_is_checked(changes, message):
    with pytest.raises(HandmocapError) as info:
        _track(**changes)
    assert message in str(info.value)
    assert str(info.value).endswith(
        "; re-capture the video (if it happens again, report it with the video)"
    )


def test_engine_style_track_passes():
    """What capture's _TrackBuilder builds: float32 slices, int64 frames, uint8 flags,
    float64 confidence."""
    xyz = np.random.default_rng(0).uniform(0, 600, (6, 21, 3)).astype(np.float32)
    tr = Track(
        track_id=0,
        handedness="left",
        frames=np.array([3, 4, 5, 9, 10, 11], np.int64),
        keypoints_2d=xyz[..., :2],
        keypoints_rel_depth=xyz[..., 2],
        world_landmarks=np.zeros((6, 21, 3), np.float32),
        confidence=np.full((6, 21), 0.3),
        right_prob=np.full(6, 0.2, np.float32),
        flags=np.array([1, 2, 2, 1, 6, 10], np.uint8),
    )
    assert len(tr) == 6 and tr.keypoints_2d.dtype == np.float32


# --- saving ------------------------------------------------------------------------------------
def test_save_refuses_a_nan_track_before_writing(tmp_path):
    path = _valid(tmp_path)
    before = path.read_bytes()
    tr = _track()
    tr.keypoints_2d[0, 0, 0] = np.nan  # arrays stay mutable after the checks at construction
    with pytest.raises(HandmocapError) as info:
        Take(_take_header(), (tr,)).save(path)
    assert str(info.value) == (
        f"cannot write the take to {path}: track 0 (id 0) keypoints_2d contains NaN or inf values"
    )
    assert path.read_bytes() == before and _listing(tmp_path) == ["take.npz"]


def test_save_refuses_values_beyond_float32(tmp_path):
    tr = _track(keypoints_rel_depth=np.full((5, 21), 1e39))
    with pytest.raises(HandmocapError, match="keypoints_rel_depth contains NaN or inf values"):
        Take(_take_header(), (tr,)).save(tmp_path / "take.npz")
    assert _listing(tmp_path) == []


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (_take_header(fps=float("nan")), "header fps is nan; expected 1..1000 frames per second"),
        (_take_header(fps=0.07), "header fps is 0.07; expected 1..1000 frames per second"),
        (_take_header(width=0), "header width is 0; expected a whole number of pixels 1..16384"),
        (
            _take_header(extras={"notes": {1, 2}}),
            "the header is not plain JSON (Object of type set is not JSON serializable)",
        ),
        (
            _take_header(frame_range=FrameRange(5, 5, 1)),
            "header frame_range end is 5; expected null or a frame index after start 5",
        ),
    ],
)
def test_save_refuses_a_bad_header(tmp_path, header, message):
    with pytest.raises(HandmocapError) as info:
        Take(header, (_track(),)).save(tmp_path / "take.npz")
    assert str(info.value) == f"cannot write the take to {tmp_path / 'take.npz'}: {message}"
    assert _listing(tmp_path) == []


def test_a_take_needs_a_typed_header(tmp_path):
    """A plain JSON-like dict (this one without a 'format' field) is no header: the take is
    refused when built, so nothing is written."""
    with pytest.raises(HandmocapError, match="a take's header must be a TakeHeader, got dict"):
        Take({"fps": 30.0}, (_track(),)).save(tmp_path / "take.npz")
    assert _listing(tmp_path) == []


def test_symlink_at_the_old_fixed_temp_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "take.npz.part.npz").symlink_to(victim)
    path = Take(_take_header(), (_track(),)).save(tmp_path / "take.npz")
    assert victim.read_bytes() == b"precious"
    assert len(load_take(path).tracks) == 1


def test_symlink_at_the_atomic_temp_name_is_not_followed(tmp_path, monkeypatch):
    """A link planted at the very name the writer tries first: creation is exclusive, so
    the writer takes the next name and the link's target is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    tokens = iter(["deadbeef", "0badf00d"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(tokens))
    planted = tmp_path / f".take.npz.{os.getpid()}-deadbeef.part.npz"
    planted.symlink_to(victim)
    path = Take(_take_header(), (_track(),)).save(tmp_path / "take.npz")
    assert victim.read_bytes() == b"precious"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert len(load_take(path).tracks) == 1
    assert _listing(tmp_path) == sorted(["take.npz", "victim.txt", planted.name])


def test_a_take_that_is_a_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "take.npz").symlink_to(victim)
    Take(_take_header(), (_track(),)).save(tmp_path / "take.npz")
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "take.npz").is_symlink()


def test_interrupted_save_leaves_the_old_take(tmp_path, monkeypatch):
    path = _valid(tmp_path)
    before = path.read_bytes()

    def interrupted(file, **arrays):
        file.write(b"PK\x03\x04 half a take")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Take(_take_header(), (_track(9),)).save(path)
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["take.npz"]


def test_disk_full_while_saving(tmp_path, monkeypatch):
    path = _valid(tmp_path)
    before = path.read_bytes()

    def full(file, **arrays):
        file.write(b"PK")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(HandmocapError) as info:
        Take(_take_header(), (_track(9),)).save(path)
    assert str(info.value) == f"cannot write the take to {path}: No space left on device"
    assert path.read_bytes() == before and _listing(tmp_path) == ["take.npz"]


def test_save_into_a_folder_that_is_missing(tmp_path):
    with pytest.raises(HandmocapError) as info:
        Take(_take_header(), ()).save(tmp_path / "no" / "take.npz")
    assert str(info.value) == (
        f"cannot write the take to {tmp_path / 'no' / 'take.npz'}: the "
        f"folder {tmp_path / 'no'} does not exist"
    )


# --- property: valid takes round-trip exactly --------------------------------------------------
F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
UNIT = st.floats(0, 1, width=32)


@st.composite
def _tracks(draw, track_id):
    t = draw(st.integers(0, 6))
    frames = sorted(draw(st.sets(st.integers(0, MAX_FRAME_INDEX - 1), min_size=t, max_size=t)))

    def arr(shape, elements=F32):
        return draw(hnp.arrays(np.float32, shape, elements=elements))

    mano = {}
    if draw(st.booleans()):
        mano = {
            "mano_pose": arr((t, 16, 3)),
            "mano_betas": arr(10),
            "translation": arr((t, 3)),
            "rest_keypoints": arr((21, 3)),
        }
        if draw(st.booleans()):
            mano["keypoints_3d"] = arr((t, 21, 3))
        if draw(st.booleans()):
            mano["frame_pose"] = arr((t, 16, 3))
            mano["frame_translation"] = arr((t, 3))
    return Track(
        track_id=track_id,
        handedness=draw(st.sampled_from(["left", "right"])),
        frames=np.array(frames, np.int64),
        keypoints_2d=arr((t, 21, 2)),
        keypoints_rel_depth=arr((t, 21)),
        world_landmarks=arr((t, 21, 3)),
        confidence=arr((t, 21), UNIT),
        right_prob=arr(t, UNIT),
        flags=draw(hnp.arrays(np.uint8, t, elements=st.integers(0, 15))),
        **mano,
    )


@st.composite
def _takes(draw):
    ids = draw(st.lists(st.integers(0, 2**31 - 1), max_size=3, unique=True))
    stride = draw(st.integers(1, 4))
    header = make_header(
        draw(st.text(max_size=20)),
        draw(st.floats(1, 1000)) / stride,
        draw(st.integers(1, 16384)),
        draw(st.integers(1, 16384)),
        np.array([[draw(st.floats(1, 1e5)), 0, 320], [0, draw(st.floats(1, 1e5)), 240], [0, 0, 1]]),
        draw(st.text(max_size=10)),
        engine=EngineFacts(device=draw(st.sampled_from(["cpu", "cuda"]))),
        frame_range=FrameRange(0, None, stride),
    )
    return Take(header, tuple(draw(_tracks(i)) for i in ids))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(take=_takes())
def test_valid_takes_round_trip_exactly(take):
    with tempfile.TemporaryDirectory() as folder:
        back = load_take(take.save(Path(folder) / "take.npz"))
    assert back.header == take.header
    assert len(back.tracks) == len(take.tracks)
    for got, want in zip(back.tracks, take.tracks, strict=True):
        assert (got.track_id, got.handedness) == (want.track_id, want.handedness)
        for name in (
            "frames",
            "keypoints_2d",
            "keypoints_rel_depth",
            "world_landmarks",
            "confidence",
            "right_prob",
            "flags",
            *FLOAT_FIELDS[5:],
        ):
            a, b = getattr(got, name), getattr(want, name)
            if b is None:
                assert a is None, name
            else:
                assert a.dtype == b.dtype and a.shape == b.shape, name
                assert a.tobytes() == b.tobytes(), name  # bit for bit, -0.0 included


def test_bounds_are_what_the_docs_say():
    assert MAX_TRACK_FRAMES == 1_000_000
    assert 2.6e9 < MAX_TAKE_BYTES < 2.8e9
    assert math.isclose(MAX_FRAME_INDEX, 1e8)
