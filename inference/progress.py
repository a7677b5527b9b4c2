"""Progress reporting: a terminal bar, JSON lines for the Blender add-on, or nothing.

JSON lines (one object per line on stdout, flushed) carry an ``event`` key:
``start`` {frames, device, provider, width, height, fps}, ``progress`` {done, total,
frame, fps, eta_s}, ``done`` {take, tracks, frames, seconds, fps}, ``error`` {message}.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol, TextIO


class Progress(Protocol):
    def start(self, total: int, **info: Any) -> None: ...
    def update(self, done: int, frame: int) -> None: ...
    def finish(self, **summary: Any) -> None: ...
    def error(self, message: str) -> None: ...


class NoProgress:
    def start(self, total: int, **info: Any) -> None:
        pass

    def update(self, done: int, frame: int) -> None:
        pass

    def finish(self, **summary: Any) -> None:
        pass

    def error(self, message: str) -> None:
        pass


class _Timed:
    def __init__(self) -> None:
        self.total = 0
        self.started = time.perf_counter()

    def rate(self, done: int) -> tuple[float, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        fps = done / elapsed
        eta = (self.total - done) / fps if fps > 0 and self.total else float("nan")
        return fps, eta


class JsonlProgress(_Timed):
    """Machine-readable progress, throttled to at most ``per_second`` updates a second."""

    def __init__(self, stream: TextIO | None = None, per_second: float = 10.0):
        super().__init__()
        self.stream = stream or sys.stdout
        self.min_gap = 1.0 / per_second
        self.last = 0.0

    def _emit(self, event: str, **data: Any) -> None:
        self.stream.write(json.dumps({"event": event, **data}) + "\n")
        self.stream.flush()

    def start(self, total: int, **info: Any) -> None:
        self.total, self.started = total, time.perf_counter()
        self._emit("start", frames=total, **info)

    def update(self, done: int, frame: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.min_gap and done != self.total:
            return
        self.last = now
        fps, eta = self.rate(done)
        self._emit("progress", done=done, total=self.total, frame=frame, fps=round(fps, 2),
                   eta_s=None if eta != eta else round(eta, 1))  # fmt: skip

    def finish(self, **summary: Any) -> None:
        self._emit("done", **summary)

    def error(self, message: str) -> None:
        self._emit("error", message=message)


class BarProgress(_Timed):
    """A one-line bar with frames/s and ETA on stderr."""

    def __init__(self, stream: TextIO | None = None, width: int = 30):
        super().__init__()
        self.stream = stream or sys.stderr
        self.width = width
        self.last = 0.0

    def start(self, total: int, **info: Any) -> None:
        self.total, self.started = total, time.perf_counter()
        details = ", ".join(f"{k} {v}" for k, v in info.items())
        self.stream.write(f"capturing {total} frames ({details})\n")

    def update(self, done: int, frame: int) -> None:
        now = time.perf_counter()
        if now - self.last < 0.1 and done != self.total:
            return
        self.last = now
        fps, eta = self.rate(done)
        filled = int(self.width * done / self.total) if self.total else 0
        eta_text = "--:--" if eta != eta else f"{int(eta // 60)}:{int(eta % 60):02d}"
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{self.total} frames  {fps:5.1f} fps  ETA {eta_text} ")
        self.stream.flush()

    def finish(self, **summary: Any) -> None:
        self.stream.write("\n")

    def error(self, message: str) -> None:
        self.stream.write("\n")


def make_progress(kind: str) -> Progress:
    if kind == "jsonl":
        return JsonlProgress()
    if kind == "bar":
        return BarProgress()
    return NoProgress()
