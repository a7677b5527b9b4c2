# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine boundary: the capture engine runs in its own Python (torch, onnxruntime and
mediapipe need not live in Blender's), as a child process that reports JSON lines.

No bpy here: the modal operator polls an :class:`EngineRun` from a timer, so Blender's UI
never waits on the engine, and a crash of the engine is a message, not a crashed Blender.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from handmocap.errors import HandmocapError
from handmocap.take import VERSION as TAKE_VERSION

ENGINE_MIN_VERSION = (0, 1, 0)
ENGINE_MODULE = "handmocap.inference"
ENV_ENGINE_PYTHON = "HANDMOCAP_ENGINE_PYTHON"


class EngineError(HandmocapError):
    """The engine cannot be used: not found, too old, models missing, or it failed."""


MOTION_PRIOR = "motion_prior"


@dataclass(frozen=True)
class SmoothingRange:
    """The motion prior's strength S as the engine takes it (``--smoothing``): ``minimum``
    (0, the per-frame fit) to ``maximum``, ``default`` when the flag is not given."""

    minimum: float
    maximum: float
    default: float

    def clamp(self, value: float) -> float:
        """``value`` brought into the range (a slider can hold a value from an older one)."""
        return min(self.maximum, max(self.minimum, float(value)))


SMOOTHING_BEFORE_CHECK = SmoothingRange(0.0, 4.0, 1.0)
"""What the Smoothing sliders hold until an engine reports its own range (the range of the
engine this add-on version ships with)."""


def _smoothing_range(report: Mapping) -> SmoothingRange | None:
    """The ``smoothing`` of an info report, or None when the engine has no motion prior or
    reports no usable range (then the add-on offers no smoothing control)."""
    stages, found = report.get("stages"), report.get("smoothing")
    if not isinstance(stages, Mapping) or stages.get(MOTION_PRIOR) is not True:
        return None
    if not isinstance(found, Mapping):
        return None
    values = [found.get(k) for k in ("min", "max", "default")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
               for v in values):  # fmt: skip
        return None
    low, high, default = (float(v) for v in values)
    if not 0.0 <= low <= default <= high or low == high:
        return None
    return SmoothingRange(low, high, default)


@dataclass(frozen=True)
class EngineInfo:
    """What ``handmocap info --json`` reports about an engine interpreter."""

    python: str
    version: str
    device: str | None
    device_note: str
    models_built: bool
    models_note: str
    take_version: int | None
    stages: Mapping[str, bool] = field(default_factory=dict)
    smoothing: SmoothingRange | None = None  # the motion prior's, None without the stage
    hands: tuple[str, ...] = ()  # the --hands choices; () for an engine without the flag

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", MappingProxyType(dict(self.stages)))

    def has_stage(self, name: str) -> bool:
        return bool(self.stages.get(name, False))

    def problems(self) -> list[str]:
        """Why a capture with this engine would fail (empty when it is ready)."""
        out = []
        if _version_tuple(self.version) < ENGINE_MIN_VERSION:
            want = ".".join(map(str, ENGINE_MIN_VERSION))
            out.append(f"the engine is version {self.version}; this add-on needs {want} or "
                       "later: update handmocap in the engine's environment")  # fmt: skip
        if self.take_version != TAKE_VERSION:
            out.append(
                f"the engine writes take format v{self.take_version}; this add-on reads "
                f"v{TAKE_VERSION}: use matching versions of the add-on and the engine"
            )
        if not self.models_built:
            out.append(f"the engine's models are not built ({self.models_note}): run "
                       "'python3 build.py models' in the handmocap folder")  # fmt: skip
        if self.device is None:
            out.append(f"no device can run the engine: {self.device_note}")
        return out

    def summary(self) -> str:
        models = "models built" if self.models_built else "models NOT built"
        return f"handmocap {self.version} on {self.device or 'no device'} ({models})"


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in str(text).split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def default_engine_python(addon_dir: Path) -> str:
    """The engine interpreter to use when the user set none: ``$HANDMOCAP_ENGINE_PYTHON``,
    else the project venv recorded when the extension was built, else ''."""
    env = os.environ.get(ENV_ENGINE_PYTHON, "")
    if env:
        return env
    recorded = addon_dir / "engine_defaults.json"
    if recorded.is_file():
        try:
            python = json.loads(recorded.read_text()).get("engine_python", "")
        except (OSError, ValueError):
            return ""
        if python and Path(python).is_file():
            return python
    return ""


def _check_python(python: str) -> Path:
    if not python:
        raise EngineError(
            "no engine interpreter is set: in Preferences > Add-ons > Hand Mocap, point "
            "'Engine Python' at the python of the environment where handmocap is installed"
        )
    path = Path(python).expanduser()
    if not path.is_file():
        raise EngineError(f"engine interpreter not found: {path} (set it in the add-on's "
                          "preferences)")  # fmt: skip
    if not os.access(path, os.X_OK):
        raise EngineError(f"engine interpreter {path} is not executable")
    return path


def query_engine(python: str, device: str = "auto", timeout_s: float = 180.0) -> EngineInfo:
    """Ask an interpreter's handmocap what it is. Raises EngineError saying what is wrong."""
    path = _check_python(python)
    try:
        proc = subprocess.run(
            [str(path), "-m", ENGINE_MODULE, "info", "--json", "--device", device],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise EngineError(f"the engine at {path} did not answer within {timeout_s:.0f} s") from None
    except OSError as err:
        raise EngineError(f"cannot start the engine at {path}: {err.strerror or err}") from err
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        if "No module named" in last:
            raise EngineError(f"{path} has no handmocap engine installed ({last}); install it "
                              "with 'python3 build.py setup' in the handmocap folder")  # fmt: skip
        raise EngineError(f"the engine at {path} failed: {last}")
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise EngineError(f"the engine at {path} gave no readable report; it may be too "
                          "old: update handmocap in that environment") from None  # fmt: skip
    return EngineInfo(
        python=str(path),
        version=str(report.get("version", "0")),
        device=report.get("device"),
        device_note=report.get("device_reason") or report.get("device_error", ""),
        models_built=bool(report.get("models_built")),
        models_note=report.get("models_error", report.get("models_folder", "")),
        take_version=report.get("take_version"),
        stages=report.get("stages", {}),
        smoothing=_smoothing_range(report),
        hands=tuple(str(h) for h in report.get("hands", ()) if isinstance(h, str)),
    )


# The engine's messages name its command-line flags; in Blender the same setting is a field.
_FLAG_IN_PANEL = {"pass --fps": "set Video frame rate in the capture panel"}


def in_blender_terms(message: str) -> str:
    """An engine error message with its command-line advice said as the panel's field."""
    for flag, field_text in _FLAG_IN_PANEL.items():
        message = message.replace(flag, field_text)
    return message


@dataclass(frozen=True)
class CaptureRequest:
    """One capture run. Frames are video frame indices (end exclusive, None = to the end).
    ``smoothing`` is the motion prior's strength (``--smoothing``), None to leave the flag
    out (an engine without the stage, or its own default)."""

    python: str
    video: Path
    take_path: Path
    device: str = "auto"
    start: int = 0
    end: int | None = None
    stride: int = 1
    max_hands: int = 2
    hands: str = "both"  # or "left"/"right": one side (``--hands``)
    mano_dir: Path | None = None
    fov_deg: float | None = None
    fps: float | None = None  # the video's frame rate, where the file does not state it
    smoothing: float | None = None

    label = "capture"  # what the run is called in its messages
    doing = "capturing"

    @property
    def source(self) -> Path:
        """The input the engine reads."""
        return Path(self.video)

    def missing_source(self) -> str:
        return f"video not found: {self.video}"

    def failure(self, code: int, tail: str) -> str:
        """The message for an engine that ended without a result or an error event."""
        return f"the engine stopped unexpectedly (exit code {code}): {tail}"

    def command(self) -> list[str]:
        cmd = [str(self.python), "-m", ENGINE_MODULE, "capture", str(self.video),
               "-o", str(self.take_path), "--progress", "jsonl", "--device", self.device,
               "--start", str(self.start), "--stride", str(self.stride),
               "--max-hands", str(self.max_hands)]  # fmt: skip
        if self.end is not None:
            cmd += ["--end", str(self.end)]
        if self.hands != "both":
            cmd += ["--hands", self.hands]
        if self.mano_dir:
            cmd += ["--mano-dir", str(self.mano_dir)]
        if self.fov_deg:
            cmd += ["--fov", str(self.fov_deg)]
        if self.fps:
            cmd += ["--fps", repr(float(self.fps))]
        if self.smoothing is not None:
            cmd += ["--smoothing", repr(float(self.smoothing))]
        return cmd


@dataclass(frozen=True)
class SmoothRequest:
    """One re-solve of a take's motion prior (``handmocap smooth``): no video, no networks.
    ``take_path`` is the new take (never the input ``take``)."""

    python: str
    take: Path
    take_path: Path
    smoothing: float

    label = "re-solve"
    doing = "re-solving the motion prior"

    @property
    def source(self) -> Path:
        return Path(self.take)

    def missing_source(self) -> str:
        return f"take not found: {self.take}"

    def failure(self, code: int, tail: str) -> str:
        if "invalid choice: 'smooth'" in tail:  # argparse of an engine before the stage
            return (f"the engine at {self.python} has no motion prior (no 'smooth' command): "
                    "update handmocap in the engine's environment")  # fmt: skip
        return f"the engine stopped unexpectedly (exit code {code}): {tail}"

    def command(self) -> list[str]:
        return [str(self.python), "-m", ENGINE_MODULE, "smooth", str(self.take),
                "-o", str(self.take_path), "--smoothing", repr(float(self.smoothing)),
                "--progress", "jsonl"]  # fmt: skip


class EngineRun:
    """A capture (or a re-solve, :class:`SmoothRequest`) in a child process. Call
    :meth:`poll` often (it never blocks); when :attr:`finished`, read :attr:`take_path` or
    :attr:`error`."""

    def __init__(self, request: CaptureRequest | SmoothRequest):
        python = _check_python(request.python)
        if not request.source.exists():
            raise EngineError(request.missing_source())
        self.request = request
        self.events: queue.Queue[dict] = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self.done = 0
        self.total = 0
        self.overall: float | None = None  # the engine's fraction of the whole run, if sent
        self.status = "starting the engine"
        self.error: str | None = None
        self.take_path: Path | None = None
        self.finished = False
        self.cancelled = False
        self._done_event: dict | None = None
        try:
            self.process = subprocess.Popen(
                [str(python), *request.command()[1:]],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True, bufsize=1, start_new_session=sys.platform != "win32",
            )  # fmt: skip
        except OSError as err:
            raise EngineError(f"cannot start the engine: {err.strerror or err}") from err
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                self.stderr_tail.append(line)
                continue
            if isinstance(event, dict):
                self.events.put(event)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            if line.strip():
                self.stderr_tail.append(line.rstrip())

    @property
    def fraction(self) -> float:
        if self.overall is not None:
            return self.overall
        return min(1.0, self.done / self.total) if self.total else 0.0

    def poll(self) -> bool:
        """Take in what the engine reported; True once the run has ended (any way)."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            self._handle(event)
        if not self.finished and self.process.poll() is not None:
            for t in self._threads:
                t.join(timeout=2.0)
            while not self.events.empty():
                self._handle(self.events.get_nowait())
            self._conclude()
        return self.finished

    # What the status text calls each engine stage (an unknown one: its name).
    STAGE_TEXT = {"tracking": "tracking", "mano_fit": "fitting MANO",
                  MOTION_PRIOR: "solving the motion prior", "overlay": "drawing the overlay",
                  "writing_take": "writing the take"}  # fmt: skip

    @staticmethod
    def _left(eta: object) -> str:
        """', 42 s left' / ', 1:05 left' from an ETA in seconds; '' when there is none."""
        if not isinstance(eta, int | float) or isinstance(eta, bool) or not eta >= 0:
            return ""
        if eta < 60:
            return f", {eta:.0f} s left"
        return f", {int(eta // 60)}:{int(eta % 60):02d} left"

    def _take_overall(self, event: dict) -> None:
        overall = event.get("overall")
        if isinstance(overall, int | float) and not isinstance(overall, bool):
            # never backwards, even if lines arrive out of step
            self.overall = max(self.overall or 0.0, min(1.0, max(0.0, float(overall))))

    def _handle(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start":
            self.total = int(event.get("frames") or 0)
            device = event.get("device")
            self.status = self.request.doing + (f" on {device}" if device else "")
            self._take_overall(event)
        elif kind == "stage":
            self.done, self.total = 0, int(event.get("total") or 0)
            name = str(event.get("stage", ""))
            self.status = self.STAGE_TEXT.get(name, name.replace("_", " "))
            self._take_overall(event)
        elif kind == "progress":
            self.done = int(event.get("done", self.done))
            self.total = int(event.get("total", self.total) or self.total)
            self._take_overall(event)
            stage = event.get("stage", "tracking")
            if stage == "tracking":
                fps = event.get("fps")
                self.status = f"frame {self.done}/{self.total}, {fps} fps"
            else:
                share = min(1.0, self.done / self.total) if self.total else 0.0
                name = self.STAGE_TEXT.get(str(stage), str(stage).replace("_", " "))
                self.status = f"{name} {100 * share:.0f}%"
            self.status += self._left(event.get("eta_s"))
        elif kind == "done":
            self._done_event = event
            self._take_overall(event)
        elif kind == "error":
            self.error = in_blender_terms(str(event.get("message", "the engine reported an error")))

    def _conclude(self) -> None:
        self.finished = True
        code = self.process.returncode
        if self.cancelled:
            self.error = f"{self.request.label} cancelled"
        elif code == 0 and self._done_event is not None and Path(self.request.take_path).is_file():
            self.take_path = Path(self.request.take_path)
            self.status = f"{self.request.label} finished"
            return
        elif self.error is None:
            tail = " | ".join(list(self.stderr_tail)[-3:]) or "no message"
            self.error = self.request.failure(code, tail)
        Path(self.request.take_path).unlink(missing_ok=True)

    def cancel(self, grace_s: float = 2.0) -> None:
        """Stop the engine (and anything it started) and discard its output."""
        if self.finished:
            return
        self.cancelled = True
        try:
            if sys.platform != "win32":
                os.killpg(self.process.pid, signal.SIGTERM)
            else:
                self.process.terminate()
            self.process.wait(timeout=grace_s)
        except (ProcessLookupError, PermissionError):
            pass
        except subprocess.TimeoutExpired:
            if sys.platform != "win32":
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.kill()
            self.process.wait(timeout=grace_s)
        self.poll()
