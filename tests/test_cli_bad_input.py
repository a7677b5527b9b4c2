"""``handmocap capture`` with inputs that used to lose data or silently give wrong results
(issue 16 sections 1 and 5): outputs that are the input, mixed or damaged frame folders,
truncated videos, frame rates the file does not give, interrupted writes.

Each refused case asserts the exit code, the message, that the input is byte-identical and
that nothing (no output, no temporary file) was written. Runs are in-process through
``cli.main`` where possible (no interpreter start, no model load for refusals), on clips of
a few tiny frames, with ``--skip-mano``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handmocap.atomic import temp_name
from handmocap.errors import HandmocapError
from handmocap.inference import cli, overlay
from handmocap.inference.video import (
    MAX_PIXELS,
    MAX_SIDE,
    FrameRange,
    VideoSource,
    check_fps,
    read_image_header,
    video_fps,
)
from handmocap.take import Take, load_take, make_header

SIZE = (64, 48)  # width, height of every test frame


# --- helpers --------------------------------------------------------------------------------


def _write_video(path: Path, n: int, size=SIZE, fps: float = 24.0) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    rng = np.random.default_rng(0)
    for _ in range(n):
        w.write(rng.integers(90, 110, size=(size[1], size[0], 3), dtype=np.uint8))
    w.release()
    return path


def _write_frames(folder: Path, n: int, size=SIZE) -> Path:
    folder.mkdir(exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((size[1], size[0], 3), 100, np.uint8))
    return folder


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixels at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones included) with its content hash."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "link->" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def _run(capsys, *args) -> tuple[int, str]:
    """``handmocap`` in this process: (exit code, stderr)."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    return code, capsys.readouterr().err


def _parts(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".part" in p.name]


# MP4 boxes, just enough to move the index to the front and to zero a time scale.
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def _boxes(data: bytes, start: int = 0, end: int | None = None, nested: bool = True):
    """(offset, size, kind) of each box, and of the boxes inside containers if ``nested``."""
    end = len(data) if end is None else end
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        if size < 8:
            return
        yield i, size, kind
        if nested and kind in _CONTAINERS:
            yield from _boxes(data, i + 8, i + size)
        i += size


def _faststart(data: bytes) -> bytes:
    """The same MP4 with its index (moov) before the media data, as streamed files have it:
    cutting such a file leaves a readable but truncated video."""
    top = {kind: (i, size) for i, size, kind in _boxes(data, nested=False)}
    mi, ms = top[b"moov"]
    moov = bytearray(data[mi : mi + ms])
    for i, _, kind in _boxes(bytes(moov)):
        if kind == b"stco":  # chunk offsets move by the size of the moved index
            for j in range(struct.unpack(">I", moov[i + 12 : i + 16])[0]):
                o = i + 16 + 4 * j
                struct.pack_into(">I", moov, o, struct.unpack(">I", moov[o : o + 4])[0] + ms)
    fi, fs = top[b"ftyp"]
    return data[: fi + fs] + bytes(moov) + data[fi + fs : mi] + data[mi + ms :]


def _zero_time_scale(data: bytes) -> bytes:
    """The media header's time scale set to 0: OpenCV then reports a nonsense frame rate."""
    out = bytearray(data)
    for i, _, kind in _boxes(data):
        if kind == b"mdhd":
            struct.pack_into(">I", out, i + 8 + 4 + (16 if out[i + 8] == 1 else 8), 0)
    return bytes(out)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return _write_video(tmp_path / "clip.mp4", 4)


# --- section 1: an output that is an input or another output ------------------------------


def _link(target: Path, link: Path, hard: bool) -> Path:
    (os.link if hard else os.symlink)(target, link)
    return link


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (
            lambda v, d: ["-o", v],
            "-o {v} is the same file as the input video {v}; writing it would replace the video",
        ),
        (lambda v, d: ["-o", d / "sub" / ".." / "clip.mp4"], "is the same file as the input video"),
        (
            lambda v, d: ["-o", _link(v, d / "take.npz", hard=False)],
            "is the same file as the input video",
        ),
        (
            lambda v, d: ["-o", _link(v, d / "take.npz", hard=True)],
            "is the same file as the input video",
        ),
        (
            lambda v, d: ["-o", d / "t.npz", "--overlay", v],
            "--overlay {v} is the same file as the input video",
        ),
        (
            lambda v, d: ["-o", d / "same.mp4", "--overlay", d / "same.mp4"],
            "-o {d}/same.mp4 and --overlay {d}/same.mp4 are the same file; give each output its "
            "own name",
        ),
        (
            lambda v, d: ["-o", d / "t.npz", "--overlay", _link(d / "t.npz", d / "o.mp4", False)],
            "are the same file",
        ),
    ],
    ids=[
        "o-is-input",
        "o-dotdot-input",
        "o-symlink",
        "o-hardlink",
        "overlay-is-input",
        "o-is-overlay",
        "overlay-links-to-o",
    ],
)
def test_an_output_that_is_the_input_or_the_other_output_is_refused(
    capsys, tmp_path, video, make_args, message
):
    (tmp_path / "sub").mkdir()
    args = make_args(video, tmp_path)
    before = _snapshot(tmp_path)
    code, err = _run(capsys, "capture", video, *args, "--skip-mano")
    assert code == 1, err
    assert message.format(v=video, d=tmp_path) in err
    assert _snapshot(tmp_path) == before  # the video byte-identical, links kept, nothing new
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda f, d: ["-o", f / "take.npz"], "-o {f}/take.npz is inside the input frame folder"),
        (
            lambda f, d: ["-o", d / "t.npz", "--overlay", f / "0001.png"],
            "--overlay {f}/0001.png is inside the input frame folder {f}",
        ),
        (
            lambda f, d: ["-o", d / "t.npz", "--overlay", f / "check.mp4"],
            "is inside the input frame folder",
        ),
        (lambda f, d: ["-o", f], "-o {f} is the input frame folder"),
        (
            lambda f, d: ["-o", _link(f / "0002.png", d / "take.npz", hard=True)],
            "-o {d}/take.npz is the same file as the frame {f}/0002.png of the input folder",
        ),
        (
            lambda f, d: ["-o", _link(f, d / "alias", hard=False) / "t.npz"],
            "is inside the input frame folder",
        ),
    ],
    ids=[
        "o-in-folder",
        "overlay-is-frame",
        "overlay-in-folder",
        "o-is-folder",
        "o-hardlink-to-frame",
        "o-through-symlinked-folder",
    ],
)
def test_an_output_in_or_of_the_frame_folder_is_refused(capsys, tmp_path, make_args, message):
    frames = _write_frames(tmp_path / "frames", 3)
    args = make_args(frames, tmp_path)
    before = _snapshot(tmp_path)
    code, err = _run(capsys, "capture", frames, *args, "--skip-mano")
    assert code == 1, err
    assert message.format(f=frames, d=tmp_path) in err
    assert _snapshot(tmp_path) == before


# --- section 5: numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fps", "nan"], "--fps must be a number of frames per second from 1 to 1000, got nan"),
        (["--fps", "inf"], "--fps must be a number of frames per second from 1 to 1000, got inf"),
        (
            ["--fps", "0.0001"],
            "--fps must be a number of frames per second from 1 to 1000, got 0.0001",
        ),
        (["--fps", "-1"], "--fps must be a number of frames per second from 1 to 1000, got -1"),
        (["--fps", "1e9"], "--fps must be a number of frames per second from 1 to 1000, got 1e+09"),
        (["--fov", "nan"], "--fov must be 10..170 degrees, got nan"),
        (["--fov=-inf"], "--fov must be 10..170 degrees, got -inf"),
        (["--max-hands", "0"], "--max-hands must be 1..4, got 0"),
        (["--max-hands", "5"], "--max-hands must be 1..4, got 5"),
        (["--threads", "-1"], "--threads must be 0 (every usable core) to 256, got -1"),
        (["--threads", "257"], "--threads must be 0 (every usable core) to 256, got 257"),
        (["--stride", "0"], "bad frame range: --stride must be 1 or more, got 0"),
        (["--start", "-1"], "bad frame range: --start must be 0 or more, got -1"),
        (
            ["--start", "3", "--end", "3"],
            "bad frame range: --end (3) must be greater than --start (3)",
        ),
    ],
)
def test_numbers_out_of_range_are_refused_before_any_work(capsys, tmp_path, video, flags, message):
    before = _snapshot(tmp_path)
    code, err = _run(capsys, "capture", video, "-o", tmp_path / "t.npz", *flags)
    assert (code, err.strip()) == (1, f"error: {message}")
    assert _snapshot(tmp_path) == before


def test_a_value_that_is_no_number_is_a_usage_error(capsys, tmp_path, video):
    code, err = _run(capsys, "capture", video, "-o", tmp_path / "t.npz", "--fps", "fast")
    assert code == 2 and "argument --fps: invalid float value: 'fast'" in err


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_check_fps_accepts_exactly_finite_rates_from_1_to_1000(value):
    if math.isfinite(value) and 1.0 <= value <= 1000.0:
        assert check_fps(value) == value
    else:
        with pytest.raises(HandmocapError, match="--fps must be a number of frames per second"):
            check_fps(value)


@pytest.mark.parametrize("reported", [0.0, -1.0, float("nan"), float("inf"), 0.5, 5000.0])
def test_a_video_without_a_usable_rate_needs_fps(reported):
    with pytest.raises(HandmocapError) as caught:
        video_fps(Path("clip.mp4"), reported, None)
    assert str(caught.value) == (
        f"clip.mp4: the file does not say its frame rate (it reports {reported:.3g}); pass --fps"
    )
    assert video_fps(Path("clip.mp4"), reported, 24.0) == 24.0


def test_the_container_rate_is_used_when_it_is_sane():
    assert video_fps(Path("clip.mp4"), 29.97, None) == 29.97
    assert video_fps(Path("clip.mp4"), 29.97, 25.0) == 25.0  # --fps overrides


def test_a_file_whose_time_scale_is_zero_needs_fps(capsys, tmp_path):
    path = tmp_path / "ts0.mp4"
    path.write_bytes(_zero_time_scale(_write_video(tmp_path / "v.mp4", 20).read_bytes()))
    before = _snapshot(tmp_path)
    code, err = _run(capsys, "capture", path, "-o", tmp_path / "t.npz", "--skip-mano")
    assert code == 1
    assert (
        f"error: {path}: the file does not say its frame rate (it reports 0.00195); "
        "pass --fps" in err
    )
    assert _snapshot(tmp_path) == before
    source = VideoSource(path, fps=20)  # with --fps it opens, and says what it could not read
    decoded = len(list(source))
    assert source.info.fps == 20.0 and decoded < 20 and source.frames_short == 20 - decoded


# --- section 5: frame folders ---------------------------------------------------------------


def test_a_folder_of_mixed_sizes_is_refused_naming_the_odd_frame(capsys, tmp_path):
    frames = _write_frames(tmp_path / "frames", 4)
    cv2.imwrite(str(frames / "0002.png"), np.zeros((60, 80, 3), np.uint8))
    before = _snapshot(tmp_path)
    code, err = _run(
        capsys,
        "capture",
        frames,
        "-o",
        tmp_path / "t.npz",
        "--skip-mano",
        "--overlay",
        tmp_path / "o.mp4",
    )
    assert code == 1
    assert err.strip() == (
        f"error: {frames}: frame 0002.png is 80x60 but the first frame 0000.png is 64x48; all "
        "frames of a folder must have one size (resizing would change the camera). Scale or "
        "crop them to one size."
    )
    assert _snapshot(tmp_path) == before


def test_a_mixed_size_jpeg_is_found_from_its_header(tmp_path):
    frames = _write_frames(tmp_path / "frames", 2)
    cv2.imwrite(str(frames / "0005.jpg"), np.zeros((50, 64, 3), np.uint8))
    with pytest.raises(HandmocapError, match=r"frame 0005\.jpg is 64x50 but the first frame"):
        VideoSource(frames)


@pytest.mark.parametrize("first", [True, False])
def test_an_image_declaring_a_huge_size_is_refused_before_decoding(capsys, tmp_path, first):
    frames = _write_frames(tmp_path / "frames", 3)
    name = "0000.png" if first else "0001.png"
    (frames / name).write_bytes(_png_header_only(100_000, 100_000))
    before = _snapshot(tmp_path)
    started = time.perf_counter()
    code, err = _run(capsys, "capture", frames, "-o", tmp_path / "t.npz", "--skip-mano")
    assert time.perf_counter() - started < 5.0  # never tries to decode 30 GB
    assert code == 1
    assert err.strip() == (
        f"error: {frames / name} declares 100000x100000 pixels, more than this engine decodes "
        f"({MAX_SIDE}x{MAX_SIDE} and {MAX_PIXELS // 1_000_000} Mpixel at most): scale the "
        "frames down, or remove the file if it is damaged"
    )
    assert _snapshot(tmp_path) == before


def _messy_folder(tmp_path: Path) -> Path:
    """Five frames, 0002.png corrupt (right header, broken data), and three entries that are
    not frames: a macOS ``._`` file, a folder named like a frame, a text file named .png."""
    frames = _write_frames(tmp_path / "frames", 5)
    good = (frames / "0002.png").read_bytes()
    (frames / "0002.png").write_bytes(good[:33] + b"\x00" * 200)
    (frames / "._0001.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (frames / "0003b.png").mkdir()
    (frames / "0004b.png").write_text("not an image")
    (frames / "notes.txt").write_text("not named like a frame: ignored without a word")
    return frames


def test_a_messy_folder_skips_non_images_and_keeps_the_frame_numbering(tmp_path):
    source = VideoSource(_messy_folder(tmp_path))
    assert source.skipped_files == ["._0001.png", "0003b.png", "0004b.png"]
    assert source.info.frame_count == 5
    assert [i for i, _ in source] == [0, 1, 3, 4]  # frame 2 is missing, 3 stays 3
    assert source.missing_frames == [2]
    assert source.warnings == [
        f"{tmp_path / 'frames'}: skipped 3 entries that are not frames: ._0001.png (a hidden "
        "file), 0003b.png (not a file), 0004b.png (not a PNG or JPEG file)",
        f"{tmp_path / 'frames'}: 1 frames could not be decoded and have no hand data: frame 2 "
        "(0002.png)",
    ]


def test_a_messy_folder_captures_with_warnings(capsys, tmp_path):
    frames = _messy_folder(tmp_path)
    before = _snapshot(frames)
    out, over = tmp_path / "t.npz", tmp_path / "o.mp4"
    code, err = _run(capsys, "capture", frames, "-o", out, "--overlay", over, "--skip-mano")
    assert code == 0, err
    assert "warning: " + f"{frames}: skipped 3 entries that are not frames: ._0001.png" in err
    assert (
        f"warning: {frames}: 1 frames could not be decoded and have no hand data: frame 2 "
        "(0002.png)" in err
    )
    assert _snapshot(frames) == before
    assert load_take(out).header.engine.frames_read == 4
    cap = cv2.VideoCapture(str(over))  # the overlay keeps the timing: a stand-in for frame 2
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()
    assert _parts(tmp_path) == []


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from([".png", ".jpg"]))
def test_header_sizes_match_the_decoded_images(tmp_path_factory, width, height, suffix):
    path = tmp_path_factory.mktemp("h") / f"x{suffix}"
    cv2.imwrite(str(path), np.zeros((height, width, 3), np.uint8))
    assert read_image_header(path) == (suffix[1:].replace("jpg", "jpeg"), (width, height))


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=64))
def test_header_reading_never_fails_on_junk(tmp_path_factory, junk):
    path = tmp_path_factory.mktemp("j") / "x.png"
    for prefix in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"):
        path.write_bytes(prefix + junk)
        kind, size = read_image_header(path)
        assert kind in (None, "png", "jpeg")
        assert size is None or (size[0] > 0 and size[1] > 0)


# --- section 5: truncated video -------------------------------------------------------------


def test_a_truncated_video_says_how_many_frames_it_lacks(capsys, tmp_path):
    whole = _faststart(_write_video(tmp_path / "whole.mp4", 60).read_bytes())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) * 15 // 100])
    source = VideoSource(cut)
    decoded = len(list(source))
    assert 0 < decoded < 60 and source.info.frame_count == 60
    assert source.frames_short == 60 - decoded
    assert source.warnings == [
        f"{cut} ended after {decoded} frames but its header declares 60: the file may be "
        f"truncated or damaged ({60 - decoded} frames of the range are missing at the end)"
    ]
    digest = hashlib.sha256(cut.read_bytes()).hexdigest()
    code, err = _run(capsys, "capture", cut, "-o", tmp_path / "t.npz", "--skip-mano")
    assert code == 0, err
    assert f"warning: {cut} ended after {decoded} frames but its header declares 60" in err
    assert hashlib.sha256(cut.read_bytes()).hexdigest() == digest


def test_a_range_inside_the_decoded_part_gives_no_warning(tmp_path):
    whole = _faststart(_write_video(tmp_path / "whole.mp4", 60).read_bytes())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) * 15 // 100])
    source = VideoSource(cut, FrameRange(0, 2))
    assert len(list(source)) == 2 and source.warnings == [] and source.frames_short == 0


# --- section 1: interrupted and killed writers ----------------------------------------------


def _empty_take(video: Path) -> Take:
    k = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    return Take(make_header(video, 24.0, SIZE[0], SIZE[1], k, "user"), ())


def _interrupt_on_frame(monkeypatch, n: int, interrupt) -> None:
    """Make the overlay's n-th frame label call ``interrupt()``."""
    calls = {"n": 0}
    label = overlay._label

    def patched(img, text, scale):
        calls["n"] += 1
        if calls["n"] == n:
            interrupt()
        label(img, text, scale)

    monkeypatch.setattr(overlay, "_label", patched)


def test_an_interrupted_overlay_leaves_no_temporary_file(monkeypatch, tmp_path, video):
    target = tmp_path / "o.mp4"
    target.write_bytes(b"the previous overlay")

    def ctrl_c():
        raise KeyboardInterrupt

    _interrupt_on_frame(monkeypatch, 3, ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        overlay.write_overlay(video, _empty_take(video), target)
    assert _parts(tmp_path) == []
    assert target.read_bytes() == b"the previous overlay"


def test_a_dead_writers_temporary_file_is_removed_by_the_next_run(tmp_path, video):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "o.mp4"
    stale = temp_name(target, ".mp4", pid=dead.pid)
    stale.write_bytes(b"half an overlay")
    overlay.write_overlay(video, _empty_take(video), target)
    assert not stale.exists() and _parts(tmp_path) == []
    cap = cv2.VideoCapture(str(target))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()


def test_sigterm_during_the_overlay_exits_143_and_leaves_nothing(
    capsys, monkeypatch, tmp_path, video
):
    previous = signal.getsignal(signal.SIGTERM)
    _interrupt_on_frame(monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    before = _snapshot(tmp_path)
    code, err = _run(
        capsys,
        "capture",
        video,
        "-o",
        tmp_path / "t.npz",
        "--overlay",
        tmp_path / "o.mp4",
        "--skip-mano",
    )
    assert (code, err.strip().splitlines()[-1]) == (143, "terminated")
    assert _snapshot(tmp_path) == before  # no take, no overlay, no temporary file
    assert signal.getsignal(signal.SIGTERM) == previous


def test_the_addon_cancel_signal_ends_a_real_engine_cleanly(tmp_path):
    """The add-on cancels with SIGTERM to the engine's process group (SIGKILL 2 s later):
    the engine must end by itself within that grace, with 143, writing nothing."""
    video = _write_video(tmp_path / "long.mp4", 400)
    before = _snapshot(tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "handmocap.inference",
            "capture",
            str(video),
            "-o",
            str(tmp_path / "t.npz"),
            "--overlay",
            str(tmp_path / "o.mp4"),
            "--progress",
            "jsonl",
            "--skip-mano",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for line in proc.stdout:  # wait until it is tracking
            if json.loads(line)["event"] == "progress":
                break
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=2.0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = proc.stderr.read()
    assert (code, err.strip().splitlines()[-1]) == (143, "terminated"), err
    assert _snapshot(tmp_path) == before
