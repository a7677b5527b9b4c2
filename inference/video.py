"""Streamed frames from a video file or a folder of images, decoded in a reader thread.

Never the whole clip in memory: a bounded queue holds a few decoded frames, so decode
overlaps inference and memory stays flat however long the input is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from handmocap.errors import HandmocapError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class FrameRange:
    """Which frames to read: ``start`` inclusive, ``end`` exclusive (None = to the end),
    every ``stride``-th frame."""

    start: int = 0
    end: int | None = None
    stride: int = 1

    def validated(self) -> FrameRange:
        if self.start < 0 or self.stride < 1 or (self.end is not None and self.end <= self.start):
            raise HandmocapError(
                f"bad frame range start={self.start} end={self.end} stride={self.stride}: "
                "need 0 <= start < end and stride >= 1"
            )
        return self


@dataclass(frozen=True)
class VideoInfo:
    """What the source says about itself. ``frame_count`` may be an estimate for files."""

    path: Path
    width: int
    height: int
    fps: float
    frame_count: int
    is_folder: bool


class VideoSource:
    """Open a video file or an image folder; iterate ``(frame_index, rgb uint8 (H, W, 3))``."""

    def __init__(self, path: Path, frame_range: FrameRange | None = None, fps: float | None = None,
                 queue_size: int = 8):  # fmt: skip
        self.path = Path(path)
        self.range = (frame_range or FrameRange()).validated()
        self.queue_size = queue_size
        if not self.path.exists():
            raise HandmocapError(f"video not found: {self.path}")
        if self.path.is_dir():
            self._images = sorted(
                p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not self._images:
                raise HandmocapError(f"the folder {self.path} holds no PNG or JPEG frames")
            first = cv2.imread(str(self._images[0]))
            if first is None:
                raise HandmocapError(f"cannot read the image {self._images[0]}")
            h, w = first.shape[:2]
            self.info = VideoInfo(self.path, w, h, float(fps or 30.0), len(self._images), True)
        else:
            self._images = []
            cap = cv2.VideoCapture(str(self.path))
            opened = cap.isOpened()
            ok, first = cap.read() if opened else (False, None)
            if not ok or first is None:
                cap.release()
                why = "it has no frames" if opened else "it is not a video file OpenCV can read"
                raise HandmocapError(
                    f"cannot decode {self.path}: {why}. Convert it to MP4 (H.264) or pass a "
                    "folder of PNG/JPEG frames."
                )
            h, w = first.shape[:2]
            rate = float(fps or cap.get(cv2.CAP_PROP_FPS) or 30.0)
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            cap.release()
            self.info = VideoInfo(self.path, w, h, rate, count, False)
        if self.range.start >= max(self.info.frame_count, 1) and self.info.frame_count:
            raise HandmocapError(
                f"--start {self.range.start} is past the end of {self.path} "
                f"({self.info.frame_count} frames)"
            )

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
                item = q.get()
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
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _wanted(self, index: int) -> bool:
        r = self.range
        return index >= r.start and (index - r.start) % r.stride == 0

    def _read(self, q: queue.Queue, stop: threading.Event) -> None:
        try:
            end = self.range.end
            if self.info.is_folder:
                for index, path in enumerate(self._images):
                    if end is not None and index >= end:
                        break
                    if not self._wanted(index):
                        continue
                    bgr = cv2.imread(str(path))
                    if bgr is None:
                        raise HandmocapError(f"cannot read the image {path}")
                    if not self._put(q, stop, (index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))):
                        return
            else:
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
                            return
                        index += 1
                finally:
                    cap.release()
        except Exception as err:  # handed to the consumer, which re-raises it
            self._put(q, stop, err)
            return
        self._put(q, stop, None)
