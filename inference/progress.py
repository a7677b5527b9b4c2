"""Progress reporting: a terminal bar, JSON lines for the Blender add-on, or nothing.

A run is a sequence of stages ("tracking", "mano_fit", "overlay", ...), each counting its
own units (frames) with its own rate and ETA. ``start`` opens the run and its first stage,
"tracking"; ``stage`` opens each later one; ``update(done)`` counts within the open stage.
Every progress report also carries ``overall``, the fraction of the whole run, which never
goes down: the stages share 0..1 by their expected cost in seconds (``SECONDS_PER_FRAME``),
re-split over what is left each time a stage opens, when its real size is known.

JSON lines (one object per line on stdout, flushed) carry an ``event`` key:

- ``start`` {frames, device, provider, width, height, fps, stage, unit, total, index,
  stages, overall}: the run begins, and with it the "tracking" stage (``stage``/``unit``/``total``/
  ``index``/``stages`` as in ``stage``).
- ``stage`` {stage, total, unit, index, stages, overall}: a later stage opens; ``index`` is
  its place in ``stages``, the list of stage names the run expects (it may grow).
- ``progress`` {stage, done, total, unit, frame, fps, eta_s, overall}: ``done`` of ``total``
  units of the open stage; ``fps`` is its rate in units per second; ``eta_s`` the stage's
  seconds left, null while unknown; ``frame`` the video frame index, or null.
- ``done`` {take, tracks, frames, seconds, fps, overall}, ``overall`` being 1.0.
- ``error`` {message}.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

FIRST_STAGE = "tracking"
# Expected cost of each stage in seconds per video frame (per hand-frame for "mano_fit",
# whose units are the frames of all tracks): MediaPipe on a CPU at ~35 fps; the MANO fit as
# measured on a 5,040-frame input (242 s); the overlay's second decode, draw and encode.
# They only decide how the stages share the overall fraction, never what is computed.
SECONDS_PER_FRAME = {"tracking": 0.03, "mano_fit": 0.048, "overlay": 0.01, "writing_take": 0.001}
DEFAULT_SECONDS_PER_FRAME = 0.01
# How often a bar or JSON line is written at most (per second); a stage's last unit always is.
UPDATES_PER_SECOND = 10.0


class Progress(Protocol):
    def start(self, total: int, **info: Any) -> None: ...
    def stage(self, name: str, total: int, unit: str = "frames") -> None: ...
    def update(self, done: int, frame: int | None = None) -> None: ...
    def finish(self, **summary: Any) -> None: ...
    def error(self, message: str) -> None: ...


class NoProgress:
    def start(self, total: int, **info: Any) -> None:
        pass

    def stage(self, name: str, total: int, unit: str = "frames") -> None:
        pass

    def update(self, done: int, frame: int | None = None) -> None:
        pass

    def finish(self, **summary: Any) -> None:
        pass

    def error(self, message: str) -> None:
        pass


def stage_label(name: str) -> str:
    """What the bar shows for a stage: mano_fit -> mano fit."""
    return name.replace("_", " ")


class StageClock:
    """The open stage, its rate and ETA, and the run's overall fraction (0..1, never down).

    ``frames`` is the run's frame count, used to estimate stages that have not opened yet.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.plan: list[str] = [FIRST_STAGE]
        self.index = 0
        self.name = FIRST_STAGE
        self.unit = "frames"
        self.total = 0
        self.done = 0
        self.base = 0.0  # overall when the open stage began
        self.span = 1.0  # its share of the overall fraction
        self.overall = 0.0
        self.started = time.perf_counter()

    def begin_run(self, frames: int, stages: Sequence[str] = ()) -> None:
        self.frames = max(0, int(frames))
        self.plan = [FIRST_STAGE, *(s for s in stages if s != FIRST_STAGE)]
        self.index, self.overall = 0, 0.0
        self._open(FIRST_STAGE, self.frames, "frames")

    def begin_stage(self, name: str, total: int, unit: str) -> None:
        later = self.plan[self.index + 1 :]
        if name in later:  # planned stages in between did not run: drop them
            del self.plan[self.index + 1 : self.index + 1 + later.index(name)]
        else:
            self.plan.insert(self.index + 1, name)
        self.index += 1
        self._open(name, max(0, int(total)), unit)

    def _open(self, name: str, total: int, unit: str) -> None:
        self.name, self.total, self.unit, self.done = name, total, unit, 0
        self.started = time.perf_counter()
        self.anchor: tuple[float, int] | None = None  # (time, done) of the first unit
        own = self._expected_seconds(name, total, unit)
        later = self.plan[self.index + 1 :]
        rest = sum(self._expected_seconds(s, self.frames, "frames") for s in later)
        self.base = self.overall
        self.span = (1.0 - self.base) * (own / (own + rest) if own + rest > 0 else 1.0)

    def _expected_seconds(self, name: str, units: int, unit: str) -> float:
        per = SECONDS_PER_FRAME.get(name, DEFAULT_SECONDS_PER_FRAME)
        return per * (units if unit == "frames" else self.frames)

    def advance(self, done: int) -> None:
        self.done = max(0, int(done))
        if self.anchor is None and self.done > 0:
            self.anchor = (time.perf_counter(), self.done)
        share = min(1.0, self.done / self.total) if self.total > 0 else 0.0
        self.overall = max(self.overall, min(1.0, self.base + self.span * share))

    def rate(self) -> float:
        """Units per second of the open stage (0 before the first unit): measured from its
        first unit on once there is a second, so a stage's set-up (loading a model, the
        first frame's warm-up) does not inflate its ETA."""
        now = time.perf_counter()
        if self.anchor is not None and self.done > self.anchor[1] and now > self.anchor[0]:
            return (self.done - self.anchor[1]) / (now - self.anchor[0])
        return self.done / max(now - self.started, 1e-9)

    def eta_s(self) -> float | None:
        """Seconds left in the open stage; None while unknown (nothing done yet, no total)."""
        if self.total <= 0:
            return None
        if self.done >= self.total:
            return 0.0
        rate = self.rate()
        return (self.total - self.done) / rate if self.done > 0 and rate > 0 else None

    def finished_stage(self) -> bool:
        return self.total > 0 and self.done >= self.total


def _eta_text(eta: float | None) -> str:
    if eta is None or not math.isfinite(eta):
        return "--:--"
    return f"{int(eta // 60)}:{int(eta % 60):02d}"


class JsonlProgress:
    """Machine-readable progress, throttled to at most ``per_second`` updates a second."""

    def __init__(self, stream: TextIO | None = None, per_second: float = UPDATES_PER_SECOND):
        self.stream = stream or sys.stdout
        self.min_gap = 1.0 / per_second
        self.last = -math.inf
        self.clock = StageClock()

    def _emit(self, event: str, **data: Any) -> None:
        self.stream.write(json.dumps({"event": event, **data}) + "\n")
        self.stream.flush()

    def _where(self) -> dict[str, Any]:
        c = self.clock
        return {"stage": c.name, "total": c.total, "unit": c.unit, "index": c.index,
                "stages": list(c.plan)}  # fmt: skip

    def start(self, total: int, stages: Sequence[str] = (), **info: Any) -> None:
        self.clock.begin_run(total, stages)
        self.last = -math.inf
        self._emit("start", frames=total, **info, **self._where(), overall=0.0)

    def stage(self, name: str, total: int, unit: str = "frames") -> None:
        self.clock.begin_stage(name, total, unit)
        self.last = -math.inf
        self._emit("stage", **self._where(), overall=round(self.clock.overall, 4))

    def update(self, done: int, frame: int | None = None) -> None:
        c = self.clock
        c.advance(done)
        now = time.perf_counter()
        if now - self.last < self.min_gap and not c.finished_stage():
            return
        self.last = now
        eta = c.eta_s()
        self._emit("progress", stage=c.name, done=c.done, total=c.total, unit=c.unit,
                   frame=frame, fps=round(c.rate(), 2),
                   eta_s=None if eta is None else round(eta, 1),
                   overall=round(c.overall, 4))  # fmt: skip

    def finish(self, **summary: Any) -> None:
        self._emit("done", **summary, overall=1.0)

    def error(self, message: str) -> None:
        self._emit("error", message=message)


class BarProgress:
    """One line per stage on stderr: "[mano fit] [#####.....] 3/7 frames  2.1 fps  ETA 0:42"."""

    def __init__(self, stream: TextIO | None = None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.last = -math.inf
        self.drawn = False
        self.clock = StageClock()

    def start(self, total: int, stages: Sequence[str] = (), **info: Any) -> None:
        self.clock.begin_run(total, stages)
        details = ", ".join(f"{k} {v}" for k, v in info.items())
        self.stream.write(f"capturing {total} frames ({details})\n")
        self.drawn = False

    def stage(self, name: str, total: int, unit: str = "frames") -> None:
        if self.drawn:
            self.stream.write("\n")
        self.clock.begin_stage(name, total, unit)
        self._draw()

    def update(self, done: int, frame: int | None = None) -> None:
        self.clock.advance(done)
        if time.perf_counter() - self.last < 1.0 / UPDATES_PER_SECOND:
            if not self.clock.finished_stage():
                return
        self._draw()

    def _draw(self) -> None:
        c = self.clock
        self.last = time.perf_counter()
        share = min(1.0, c.done / c.total) if c.total > 0 else 0.0
        filled = int(self.width * share)
        bar = "#" * filled + "." * (self.width - filled)
        rate_unit = "fps" if c.unit == "frames" else f"{c.unit}/s"
        self.stream.write(f"\r[{stage_label(c.name)}] [{bar}] {c.done}/{c.total} {c.unit}  "
                          f"{c.rate():5.1f} {rate_unit}  ETA {_eta_text(c.eta_s())} ")  # fmt: skip
        self.stream.flush()
        self.drawn = True

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
