"""Streamed frames from a video file or a folder of images, decoded in a reader thread.

Never the whole clip in memory: a bounded queue holds a few decoded frames, so decode
overlaps inference and memory stays flat however long the input is.

Inputs that would silently give wrong results are refused or reported:

- a video whose container gives no usable frame rate needs ``fps`` (``--fps``);
- a video that ends before the frame count its header declares (a truncated file) sets
  :attr:`VideoSource.frames_short` and adds a warning;
- in an image folder, entries named like images that are not (hidden ``._x.png`` files,
  folders, files whose first bytes are not PNG/JPEG) are skipped with one warning; an image
  that fails to decode is a missing frame (no data, the frame numbering is kept); images of
  different sizes, or larger than :data:`MAX_SIDE` / :data:`MAX_PIXELS`, are refused before
  any frame is decoded (sizes come from the PNG/JPEG headers, a few bytes per file).

Warnings go to :attr:`VideoSource.warnings` and to the ``handmocap.inference.video`` logger.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from handmocap.errors import HandmocapError
from handmocap.take import FPS_RANGE, FrameRange

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Frame rates accepted from --fps or from a container: those a take may hold.
FPS_MIN, FPS_MAX = FPS_RANGE
# The largest image decoded: a header declaring more is refused before decoding.
MAX_SIDE = 8192  # pixels, either side
MAX_PIXELS = 64_000_000  # width * height
# How many names a warning lists before "and N more".
_LISTED = 5

_log = logging.getLogger(__name__)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                       0xCF})  # fmt: skip
_JPEG_MAX_SEGMENTS = 4096


@dataclass(frozen=True)
class VideoInfo:
    """What the source says about itself. ``frame_count`` may be an estimate for files
    (0 = unknown); ``fps`` in frames per second."""

    path: Path
    width: int
    height: int
    fps: float
    frame_count: int
    is_folder: bool


def check_fps(value: float, flag: str = "--fps") -> float:
    """``value`` if it is a finite frame rate in FPS_MIN..FPS_MAX, else HandmocapError."""
    if not (math.isfinite(value) and FPS_MIN <= value <= FPS_MAX):
        raise HandmocapError(
            f"{flag} must be a number of frames per second from {FPS_MIN:g} to {FPS_MAX:g}, "
            f"got {value:g}"
        )
    return float(value)


def video_fps(path: Path, reported: float, override: float | None) -> float:
    """The frame rate to use for a video file: ``override`` (``--fps``) when given, else the
    container's ``reported`` rate when it is usable; else HandmocapError asking for --fps."""
    if override is not None:
        return check_fps(override)
    if math.isfinite(reported) and FPS_MIN <= reported <= FPS_MAX:
        return float(reported)
    raise HandmocapError(
        f"{path}: the file does not say its frame rate (it reports {reported:.3g}); pass --fps"
    )


def _frame_count(reported: float) -> int:
    """The container's frame count, 0 when it is missing or nonsense."""
    if not math.isfinite(reported) or reported < 0 or reported > 1e9:
        return 0
    return int(reported)


# --- image headers ------------------------------------------------------------------------


def image_kind(head: bytes) -> str | None:
    """'png' or 'jpeg' from a file's first bytes, None for anything else."""
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    return None


def _jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the first start-of-frame segment; ``f`` is just past FF D8."""
    for _ in range(_JPEG_MAX_SEGMENTS):
        if f.read(1) != b"\xff":
            return None  # not at a marker: damaged
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            return None
        m = marker[0]
        if m == 0x01 or 0xD0 <= m <= 0xD7:  # markers without a segment
            continue
        if m in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        raw = f.read(2)
        if len(raw) < 2 or (length := int.from_bytes(raw, "big")) < 2:
            return None
        if m in _JPEG_SOF:
            sof = f.read(5)  # precision, height, width
            if len(sof) < 5:
                return None
            height, width = struct.unpack(">HH", sof[1:5])
            return (width, height) if width and height else None
        f.seek(length - 2, os.SEEK_CUR)
    return None


def read_image_header(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """``(kind, (width, height))`` of a PNG or JPEG from its header, reading a few bytes.

    ``kind`` is None when the file is not a PNG or JPEG at all; the size is None when the
    magic bytes are right but the header is damaged. Raises OSError if it cannot be read."""
    with open(path, "rb") as f:
        head = f.read(24)
        kind = image_kind(head)
        if kind == "png":
            if len(head) < 24 or head[12:16] != b"IHDR":
                return kind, None
            width, height = struct.unpack(">II", head[16:24])
            return kind, ((width, height) if width and height else None)
        if kind == "jpeg":
            f.seek(2)
            return kind, _jpeg_size(f)
        return None, None


def _listed(items: list[str]) -> str:
    more = len(items) - _LISTED
    return ", ".join(items[:_LISTED]) + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class _Image:
    path: Path
    size: tuple[int, int] | None  # (width, height) from the header; None = header damaged


class VideoSource:
    """Open a video file or an image folder; iterate ``(frame_index, rgb uint8 (H, W, 3))``.

    After (or during) iteration:

    - ``warnings``: human-readable warnings, in order (also logged);
    - ``frames_short``: for a video file that ended early, how many frames of the requested
      range its header declares but the stream did not hold (0 otherwise);
    - ``missing_frames``: indices of folder frames that could not be decoded (not yielded);
    - ``skipped_files``: names in a folder that look like frames but are not images.

    Args:
        path: a video file or a folder of PNG/JPEG frames (sorted by name).
        frame_range: which frames to read.
        fps: frames per second; for a folder (default 30), or overriding a file's rate.
        queue_size: decoded frames buffered ahead of the consumer.
        log_warnings: also send warnings to the logger (the overlay's second pass does not).
    """

    def __init__(self, path: Path, frame_range: FrameRange | None = None, fps: float | None = None,
                 queue_size: int = 8, log_warnings: bool = True):  # fmt: skip
        self.path = Path(path)
        self.range = (frame_range or FrameRange()).validated()
        self.queue_size = queue_size
        self.log_warnings = log_warnings
        self.warnings: list[str] = []
        self.frames_short = 0
        self.missing_frames: list[int] = []
        self.skipped_files: list[str] = []
        # Seconds the consumer waited for frames, and the reader thread spent decoding.
        self.wait_seconds = 0.0
        self.decode_seconds = 0.0
        self._images: list[_Image] = []
        if fps is not None:
            check_fps(fps)
        if not self.path.exists():
            raise HandmocapError(f"video not found: {self.path}")
        if self.path.is_dir():
            self.info = self._open_folder(fps)
        else:
            self.info = self._open_file(fps)

    # --- opening ---------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.log_warnings:
            _log.warning(message)

    def _check_start(self, count: int) -> None:
        if count and self.range.start >= count:
            raise HandmocapError(
                f"--start {self.range.start} is past the end of {self.path} ({count} frames)"
            )

    def _open_file(self, fps: float | None) -> VideoInfo:
        cap = cv2.VideoCapture(str(self.path))
        try:
            opened = cap.isOpened()
            ok, first = cap.read() if opened else (False, None)
            if not ok or first is None:
                why = "it has no frames" if opened else "it is not a video file OpenCV can read"
                raise HandmocapError(
                    f"cannot decode {self.path}: {why}. Convert it to MP4 (H.264) or pass a "
                    "folder of PNG/JPEG frames."
                )
            h, w = first.shape[:2]
            rate = video_fps(self.path, float(cap.get(cv2.CAP_PROP_FPS)), fps)
            count = _frame_count(float(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        finally:
            cap.release()
        self._check_start(count)
        return VideoInfo(self.path, w, h, rate, count, False)

    def _list_folder(self) -> list[_Image]:
        images: list[_Image] = []
        why: list[str] = []  # "name (reason)" of each skipped entry
        for entry in sorted(os.scandir(self.path), key=lambda e: e.name):
            if os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
                continue  # notes.txt, .DS_Store: plainly not frames
            reason = None
            if entry.name.startswith("."):
                reason = "a hidden file"
            elif not entry.is_file():
                reason = "not a file"
            else:
                try:
                    kind, size = read_image_header(Path(entry.path))
                except OSError:
                    kind, size = "unreadable", None  # a frame we cannot open: a missing frame
                if kind is None:
                    reason = "not a PNG or JPEG file"
                else:
                    images.append(_Image(Path(entry.path), size))
            if reason:
                self.skipped_files.append(entry.name)
                why.append(f"{entry.name} ({reason})")
        if why:
            self._warn(f"{self.path}: skipped {len(why)} entries that are not frames: "
                       f"{_listed(why)}")  # fmt: skip
        return images

    def _check_sizes(self) -> _Image:
        """Refuse oversized or mixed-size frames in the range; returns the first frame with a
        readable header (the reference size)."""
        first: _Image | None = None
        for index, image in enumerate(self._images):
            if self.range.end is not None and index >= self.range.end:
                break
            if not self._wanted(index) or image.size is None:
                continue
            w, h = image.size
            if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
                raise HandmocapError(
                    f"{image.path} declares {w}x{h} pixels, more than this engine decodes "
                    f"({MAX_SIDE}x{MAX_SIDE} and {MAX_PIXELS // 1_000_000} Mpixel at most): "
                    "scale the frames down, or remove the file if it is damaged"
                )
            if first is None:
                first = image
            elif image.size != first.size:
                fw, fh = first.size
                raise HandmocapError(
                    f"{self.path}: frame {image.path.name} is {w}x{h} but the first frame "
                    f"{first.path.name} is {fw}x{fh}; all frames of a folder must have one size "
                    "(resizing would change the camera). Scale or crop them to one size."
                )
        if first is None:
            raise HandmocapError(
                f"the folder {self.path} holds no readable PNG or JPEG frame in the range"
            )
        return first

    def _open_folder(self, fps: float | None) -> VideoInfo:
        self._images = self._list_folder()
        if not self._images:
            raise HandmocapError(f"the folder {self.path} holds no PNG or JPEG frames")
        self._check_start(len(self._images))
        first = self._check_sizes()
        # Decode it once for the size as decoded (EXIF orientation may turn the header's).
        bgr = cv2.imread(str(first.path), cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2] if bgr is not None else first.size[::-1]
        return VideoInfo(self.path, w, h, float(fps or 30.0), len(self._images), True)

    # --- reading ---------------------------------------------------------------------------

    def expected_frames(self) -> int:
        """How many frames iteration will yield (from the container's frame count)."""
        end = (
            self.info.frame_count
            if self.range.end is None
            else min(self.range.end, self.info.frame_count)
        )
        return max(0, -(-(end - self.range.start) // self.range.stride))

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        q: queue.Queue = queue.Queue(maxsize=self.queue_size)
        stop = threading.Event()
        reader = threading.Thread(target=self._read, args=(q, stop), daemon=True)
        reader.start()
        try:
            while True:
                waited = time.perf_counter()
                item = q.get()
                self.wait_seconds += time.perf_counter() - waited
                if item is None:
                    break
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()
            while reader.is_alive():  # unblock a reader waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    reader.join(timeout=0.05)

    def _put(self, q: queue.Queue, stop: threading.Event, item) -> bool:
        waited = time.perf_counter()
        try:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            self.decode_seconds -= time.perf_counter() - waited

    def _wanted(self, index: int) -> bool:
        r = self.range
        return index >= r.start and (index - r.start) % r.stride == 0

    def _read(self, q: queue.Queue, stop: threading.Event) -> None:
        started = time.perf_counter()
        try:
            self._read_all(q, stop)
        finally:  # the reader's busy time: its whole run less the waits in _put
            self.decode_seconds += time.perf_counter() - started

    def _read_all(self, q: queue.Queue, stop: threading.Event) -> None:
        try:
            read = self._read_folder if self.info.is_folder else self._read_file
            if not read(q, stop):
                return
        except Exception as err:  # handed to the consumer, which re-raises it
            self._put(q, stop, err)
            return
        self._put(q, stop, None)

    def _decode(self, image: _Image) -> np.ndarray | None:
        """RGB (H, W, 3) uint8, or None when the image cannot be decoded."""
        if image.size is None:
            return None
        bgr = cv2.imread(str(image.path), cv2.IMREAD_COLOR)
        if bgr is None:
            return None
        if bgr.shape[:2] != (self.info.height, self.info.width):
            h, w = bgr.shape[:2]
            raise HandmocapError(
                f"{self.path}: frame {image.path.name} decodes to {w}x{h} but the first frame is "
                f"{self.info.width}x{self.info.height}; all frames of a folder must have one "
                "size. Scale or crop them to one size."
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _read_folder(self, q: queue.Queue, stop: threading.Event) -> bool:
        end = self.range.end
        missing: list[str] = []
        for index, image in enumerate(self._images):
            if end is not None and index >= end:
                break
            if not self._wanted(index):
                continue
            rgb = self._decode(image)
            if rgb is None:
                self.missing_frames.append(index)
                missing.append(f"frame {index} ({image.path.name})")
                continue
            if not self._put(q, stop, (index, rgb)):
                return False
        if missing:
            self._warn(f"{self.path}: {len(missing)} frames could not be decoded and have no "
                       f"hand data: {_listed(missing)}")  # fmt: skip
        return True

    def _read_file(self, q: queue.Queue, stop: threading.Event) -> bool:
        end = self.range.end
        cap = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while end is None or index < end:
                if not self._wanted(index):
                    if not cap.grab():  # skip without decoding the pixels
                        break
                    index += 1
                    continue
                ok, bgr = cap.read()
                if not ok:
                    break
                if not self._put(q, stop, (index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))):
                    return False
                index += 1
        finally:
            cap.release()
        self._check_length(index)
        return True

    def _check_length(self, ended_at: int) -> None:
        """Warn when the stream ended before the frame count its header declares."""
        declared = self.info.frame_count
        wanted_end = declared if self.range.end is None else min(self.range.end, declared)
        if declared and ended_at < wanted_end:
            self.frames_short = wanted_end - ended_at
            self._warn(
                f"{self.path} ended after {ended_at} frames but its header declares {declared}: "
                f"the file may be truncated or damaged ({self.frames_short} frames of the range "
                "are missing at the end)"
            )
