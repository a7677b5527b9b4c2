# SPDX-License-Identifier: GPL-3.0-or-later
"""Set Up Engine: create the engine's own Python environment from inside Blender.

No bpy and nothing outside the standard library, so plain pytest covers it. The engine runs
in its own interpreter (docs/architecture.md, "Engine boundary"); this module makes one: a venv
of Blender's own Python 3.11 in ``<target>/engine.staging``, the bundled engine wheel installed
into it under the bundled pins (``requirements/lock.txt`` as pip constraints), the engine's own
probe and ``handmocap models`` run in it, then the folder renamed to ``<target>/engine``. The
previous engine stays in place until the new one is verified. ``<target>/engine.json`` records
the sha256 of the inputs, so a second run with the same inputs only re-runs the probe.

:class:`SetupRunner` does this in a thread, each step in its own process group, with a
:class:`SetupProgress` snapshot the UI polls. The add-on's interpreter setting is never touched
here: a finished run hands back the new interpreter's path, and the caller stores it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

REQUIRED_PYTHON = (3, 11)
ACCELERATORS = ("auto", "cpu", "cuda")
ENGINE_MODULE = "handmocap.inference"
ENGINE_DIR = "engine"
STAGING_DIR = "engine.staging"
PREVIOUS_DIR = "engine.previous"
RECORD_FILE = "engine.json"
LOG_LINES = 50
NVIDIA_PROC = Path("/proc/driver/nvidia/version")

# Where pip finds torch for each choice. The lock pins torch without a local label
# (docs/architecture.md, "Environment facts"), so 2.13.0+cpu / +cu128 from these indexes
# satisfy the pin; PyPI stays the index for everything else.
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYTORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
DEFAULT_INDEX_ARGS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"cpu": ("--extra-index-url", PYTORCH_CPU_INDEX),
     "cuda": ("--extra-index-url", PYTORCH_CUDA_INDEX)}
)  # fmt: skip

ONLINE_ACCESS_OFF = (
    "Set Up Engine downloads Python packages, and Blender's online access is off: enable "
    "Preferences > System > Network > Allow Online Access, or set 'Engine Python' to an "
    "interpreter where handmocap is installed already (e.g. made with 'python3 build.py setup')"
)

# (what pip printed, what it means); the first match names the problem.
_NETWORK_PATTERNS = ("Could not find a version", "No matching distribution",
                     "NewConnectionError", "Network is unreachable", "Temporary failure in name "
                     "resolution", "Max retries exceeded", "ConnectTimeoutError",
                     "ReadTimeoutError", "ProxyError", "SSLError")  # fmt: skip
DISK_FULL_MESSAGE = (
    "the disk is full (No space left on device): free some space and press Set Up Engine again"
)
_DISK_FULL_PATTERNS = ("No space left on device", "ENOSPC", "[Errno 28]")


class SetupError(Exception):
    """Set-up cannot start or did not finish; the message names the problem and what to do.
    ``kind`` says which: offline, busy, python, network, disk_full, cancelled, verify, failed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class SetupInputs:
    """What a set-up is asked for.

    ``base_python`` is the interpreter the venv is made from (in Blender: its own
    ``sys.executable``, which must be Python 3.11). ``target`` holds ``engine/``,
    ``engine.staging/`` and ``engine.json`` (in Blender: the extension's user folder).
    ``wheel`` and ``requirements`` are the engine wheel and the pinned lock the extension
    bundles. ``accelerator`` is "auto", "cpu" or "cuda". ``pip_args``, when not empty, replace
    the index options of the choice (``index_args``) with the user's own (a studio mirror,
    ``--no-index --find-links ...``). ``online_access`` is Blender's Allow Online Access."""

    base_python: str
    target: Path
    wheel: Path
    requirements: Path
    accelerator: str = "auto"
    pip_args: tuple[str, ...] = ()
    online_access: bool = True
    index_args: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_INDEX_ARGS)


@dataclass(frozen=True)
class SetupPlan:
    """A set-up with every choice made: the accelerator (``cpu``/``cuda``) and why, the pip
    options and where they came from, and the folders."""

    inputs: SetupInputs
    accelerator: str
    accelerator_reason: str
    index_args: tuple[str, ...]
    index_reason: str

    @property
    def engine_dir(self) -> Path:
        return Path(self.inputs.target) / ENGINE_DIR

    @property
    def staging_dir(self) -> Path:
        return Path(self.inputs.target) / STAGING_DIR

    @property
    def record_path(self) -> Path:
        return Path(self.inputs.target) / RECORD_FILE

    @property
    def probe_device(self) -> str:
        """The ``--device`` the verify step asks the engine's probe for."""
        return "cuda" if self.accelerator == "cuda" else "auto"

    def fingerprint(self) -> dict:
        """What ``engine.json`` records: the inputs an installed engine was made from."""
        return {
            "wheel": Path(self.inputs.wheel).name,
            "wheel_sha256": file_sha256(Path(self.inputs.wheel)),
            "requirements_sha256": file_sha256(Path(self.inputs.requirements)),
            "accelerator": self.accelerator,
            # a digest, not the text: a mirror URL in the user's pip arguments may hold a token
            "index_args_sha256": hashlib.sha256(
                json.dumps(list(self.index_args)).encode()
            ).hexdigest(),
        }


@dataclass(frozen=True)
class SetupProgress:
    """One snapshot of a set-up for the UI. ``fraction`` is of the whole set-up, 0..1.
    ``python`` is the new engine interpreter, set only when it finished without error."""

    step: str = "not started"
    fraction: float = 0.0
    log_tail: tuple[str, ...] = ()
    running: bool = False
    finished: bool = False
    error: str | None = None
    error_kind: str | None = None
    python: str | None = None
    fast: bool = False  # finished from engine.json without pip
    accelerator: str = ""
    accelerator_reason: str = ""
    index_reason: str = ""

    def summary(self) -> str:
        """One line for a status bar."""
        if self.error:
            return f"Engine set-up failed: {self.error}"
        if self.finished:
            return "Engine set up" + (" (already up to date)" if self.fast else "")
        return f"Setting up the engine: {self.step} ({100 * self.fraction:.0f}%)"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def venv_python(venv: Path, windows: bool | None = None) -> Path:
    """The interpreter of a venv: ``Scripts/python.exe`` on Windows, else ``bin/python``."""
    windows = os.name == "nt" if windows is None else windows
    return Path(venv) / ("Scripts/python.exe" if windows else "bin/python")


def bundled_inputs(addon_dir: Path) -> tuple[Path | None, Path | None]:
    """The engine wheel and the lock that ``build.py addon`` puts in the zip's ``engine/``
    folder (None for one that is missing, e.g. in a source checkout)."""
    folder = Path(addon_dir) / "engine"
    wheels = sorted(folder.glob("handmocap-*.whl"))
    lock = folder / "lock.txt"
    return (wheels[-1] if wheels else None), (lock if lock.is_file() else None)


def detect_nvidia(
    which: Callable[[str], str | None] = shutil.which, proc_file: Path = NVIDIA_PROC
) -> str | None:
    """Why this machine looks like it has an NVIDIA driver, or None when it does not."""
    if proc_file.is_file():
        return f"NVIDIA driver found ({proc_file})"
    found = which("nvidia-smi")
    if found:
        return f"NVIDIA driver found (nvidia-smi at {found})"
    return None


def make_plan(inputs: SetupInputs, detect: Callable[[], str | None] = detect_nvidia) -> SetupPlan:
    """Resolve the accelerator and the pip options; raises SetupError for a bad choice or a
    missing bundled file."""
    choice = str(inputs.accelerator).lower()
    if choice not in ACCELERATORS:
        raise SetupError("failed", f"unknown accelerator {inputs.accelerator!r}: choose one "
                         f"of {', '.join(ACCELERATORS)}")  # fmt: skip
    for what, path in (("engine wheel", inputs.wheel), ("requirements file", inputs.requirements)):
        if not path or not Path(path).is_file():
            raise SetupError("failed", f"the {what} is missing ({path}): reinstall the "
                             "extension zip built by 'python3 build.py addon'")  # fmt: skip
    if choice == "auto":
        found = detect()
        accelerator, reason = (
            ("cuda", f"auto: {found}")
            if found
            else ("cpu", "auto: no NVIDIA driver found (no nvidia-smi, no /proc/driver/nvidia)")
        )
    else:
        accelerator, reason = choice, f"{choice} chosen in the preferences"
    if inputs.pip_args:
        index_args, index_reason = tuple(inputs.pip_args), "your pip arguments"
    else:
        index_args = tuple(inputs.index_args.get(accelerator, ()))
        index_reason = f"the default for {accelerator}" + (
            f": {' '.join(index_args)}" if index_args else "")  # fmt: skip
    return SetupPlan(inputs, accelerator, reason, index_args, index_reason)


def classify_failure(step: str, lines: Sequence[str], code: int) -> SetupError:
    """The message for a step that exited with ``code``, from what it printed."""
    text = "\n".join(lines)
    last = next((ln for ln in reversed(lines) if ln.strip()), "no output")
    if any(p in text for p in _DISK_FULL_PATTERNS):
        return SetupError("disk_full", f"{step}: {DISK_FULL_MESSAGE}")
    if any(p in text for p in _NETWORK_PATTERNS):
        return SetupError(
            "network",
            f"{step}: the package registry could not be reached or has no matching package "
            f"({last.strip()}): check the internet connection or proxy (pip honours "
            "https_proxy), or give your mirror in 'Extra pip arguments' (e.g. --index-url URL)",
        )
    return SetupError("failed", f"{step} failed (exit code {code}): {last.strip()}")


def _kill_group(proc: subprocess.Popen, grace_s: float = 1.0) -> None:
    """End ``proc`` and everything it started (its process group / session)."""
    if proc.poll() is not None:
        return
    try:
        if sys.platform != "win32":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.CTRL_BREAK_EVENT)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None:
        try:
            if sys.platform != "win32":
                os.killpg(proc.pid, signal.SIGKILL)
            else:  # taskkill /T ends the whole tree
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)],
                               capture_output=True, check=False)  # fmt: skip
            proc.wait(timeout=grace_s)
        except (ProcessLookupError, PermissionError, OSError, subprocess.TimeoutExpired):
            pass


# Shares of the whole set-up per step: (name, start, end).
STEPS = (
    ("checking Python", 0.0, 0.02),
    ("creating the environment", 0.02, 0.10),
    ("installing packages", 0.10, 0.80),
    ("verifying the engine", 0.80, 0.85),
    ("building the hand models", 0.85, 0.97),
    ("switching to the new engine", 0.97, 1.0),
)
_STEP_RANGE = {name: (a, b) for name, a, b in STEPS}

_ACTIVE_LOCK = threading.Lock()
_ACTIVE: set[str] = set()  # targets with a set-up running, across runners


class _Cancelled(Exception):
    pass


class SetupRunner:
    """One set-up at a time, in a thread. :meth:`start`, then :meth:`snapshot` from a timer;
    :meth:`cancel` ends the running step's process group and removes the staging folder."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress = SetupProgress()
        self._log: deque[str] = deque(maxlen=LOG_LINES)
        self._proc: subprocess.Popen | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._plan: SetupPlan | None = None
        self._expected_packages = 1
        self._collected = 0  # pip's "Collecting" lines so far

    # -- public --------------------------------------------------------------------------
    def start(self, inputs: SetupInputs) -> SetupPlan:
        """Begin a set-up in the background; raises SetupError (kind "busy", "offline", or a
        bad input) when it cannot start."""
        if not inputs.online_access:
            raise SetupError("offline", ONLINE_ACCESS_OFF)
        plan = make_plan(inputs)
        key = str(Path(inputs.target).resolve())
        with _ACTIVE_LOCK:
            if self.running or key in _ACTIVE:
                raise SetupError("busy", "an engine set-up is already running: wait for it "
                                 "to finish, or press Cancel Set-Up")  # fmt: skip
            _ACTIVE.add(key)
        self._cancel.clear()
        with self._lock:
            self._log.clear()
        self._plan = plan
        self._expected_packages = max(1, _count_requirements(Path(inputs.requirements)))
        self._set(step="starting", fraction=0.0, running=True, finished=False, error=None,
                  error_kind=None, python=None, fast=False, accelerator=plan.accelerator,
                  accelerator_reason=plan.accelerator_reason,
                  index_reason=plan.index_reason)  # fmt: skip
        self._thread = threading.Thread(target=self._run, args=(plan, key), daemon=True)
        self._thread.start()
        return plan

    @property
    def running(self) -> bool:
        return self._progress.running

    def snapshot(self) -> SetupProgress:
        with self._lock:
            return replace(self._progress, log_tail=tuple(self._log))

    def cancel(self) -> None:
        """Stop the set-up: the running step's process group is killed, staging removed."""
        if not self.running:
            return
        self._cancel.set()
        proc = self._proc
        if proc is not None:
            _kill_group(proc)

    def wait(self, timeout_s: float = 600.0) -> SetupProgress:
        """Block until the set-up ends (scripts and tests only)."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.snapshot()

    # -- internals -----------------------------------------------------------------------
    def _set(self, **changes) -> None:
        with self._lock:
            self._progress = replace(self._progress, **changes)

    def _log_line(self, line: str) -> None:
        with self._lock:  # snapshot() copies the deque under the same lock
            self._log.append(line)

    def _step(self, name: str, within: float = 0.0) -> None:
        a, b = _STEP_RANGE[name]
        self._set(step=name, fraction=a + (b - a) * min(1.0, max(0.0, within)))

    def _run(self, plan: SetupPlan, key: str) -> None:
        final: dict = {"running": False, "finished": True}
        try:
            python = self._setup(plan)
            final.update(step="done", fraction=1.0, python=str(python))
        except _Cancelled:
            message = "set-up cancelled; the previous engine (if any) is unchanged"
            final.update(error=message, error_kind="cancelled")
        except SetupError as err:
            final.update(error=err.message, error_kind=err.kind)
        except OSError as err:
            disk_full = err.errno == errno.ENOSPC
            final.update(error=DISK_FULL_MESSAGE if disk_full else f"{self._progress.step}: {err}",
                         error_kind="disk_full" if disk_full else "failed")  # fmt: skip
        except Exception as err:  # the UI polls this thread: every end must be reported
            final.update(error=f"{self._progress.step}: unexpected {type(err).__name__}: {err}",
                         error_kind="failed")  # fmt: skip
        finally:
            if final.get("error_kind"):
                self._discard_staging(plan)
            with _ACTIVE_LOCK:  # free the folder before the UI can see the end
                _ACTIVE.discard(key)
                self._set(**final)

    def _discard_staging(self, plan: SetupPlan) -> None:
        shutil.rmtree(plan.staging_dir, ignore_errors=True)

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise _Cancelled

    def _exec(
        self, step: str, cmd: Sequence[str | Path], on_line: Callable[[str], None] | None = None
    ) -> list[str]:
        """Run ``cmd`` in its own process group, its lines into the log; returns its lines.
        Raises _Cancelled or the classified SetupError."""
        self._check_cancel()
        self._log_line("$ " + " ".join(str(c) for c in cmd))
        kwargs: dict = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PIP_NO_INPUT": "1",
               "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
        env.pop("PYTHONPATH", None)  # Blender's own paths must not leak into the engine
        env.pop("PYTHONHOME", None)
        try:
            proc = subprocess.Popen(
                [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
                bufsize=1, env=env, **kwargs,
            )  # fmt: skip
        except OSError as err:
            raise SetupError("failed", f"{step}: cannot start {cmd[0]}: "
                             f"{err.strerror or err}") from err  # fmt: skip
        self._proc = proc
        if self._cancel.is_set():  # cancelled while starting
            _kill_group(proc)
        lines: list[str] = []
        try:
            for raw in proc.stdout:
                line = raw.rstrip()
                if not line:
                    continue
                lines.append(line)
                del lines[:-400]
                self._log_line(line)
                if on_line is not None:
                    on_line(line)
            code = proc.wait()
        finally:
            proc.stdout.close()
            self._proc = None
        self._check_cancel()
        if code != 0:
            raise classify_failure(step, lines, code)
        return lines

    def _setup(self, plan: SetupPlan) -> Path:
        inputs = plan.inputs
        self._step("checking Python")
        self._check_python(inputs.base_python)
        fingerprint = plan.fingerprint()
        engine_python = venv_python(plan.engine_dir)
        if _read_record(plan.record_path) == fingerprint and engine_python.is_file():
            self._log_line("engine.json matches the bundled engine: verifying it")
            try:
                report = self._verify(plan, engine_python)
            except SetupError as err:
                self._log_line(f"the installed engine failed its check ({err.message}): "
                                 "setting it up again")  # fmt: skip
            else:
                if not report.get("models_built"):
                    self._models(engine_python)
                self._set(fast=True)
                return engine_python

        self._step("creating the environment")
        self._discard_staging(plan)
        Path(inputs.target).mkdir(parents=True, exist_ok=True)
        self._exec("creating the environment",
                   [inputs.base_python, "-m", "venv", plan.staging_dir])  # fmt: skip
        staged = venv_python(plan.staging_dir)
        if not staged.is_file():
            raise SetupError("failed", f"creating the environment made no {staged}: Blender's "
                             "Python may lack the venv module")  # fmt: skip

        self._step("installing packages")
        self._collected = 0
        self._exec("installing packages", [
            staged, "-m", "pip", "install", "--progress-bar", "off",
            "-c", inputs.requirements, *plan.index_args, inputs.wheel,
        ], on_line=self._pip_line)  # fmt: skip

        self._verify(plan, staged)
        self._models(staged)

        self._step("switching to the new engine")
        self._check_cancel()
        plan.record_path.unlink(missing_ok=True)  # no record may vouch for a half-swapped engine
        _swap_in(plan.staging_dir, plan.engine_dir, Path(inputs.target) / PREVIOUS_DIR)
        _write_json_atomic(plan.record_path, fingerprint)
        return engine_python

    def _pip_line(self, line: str) -> None:
        """pip's progress from its lines: Collecting/Using cached count against the lock's
        packages, then installing, then done."""
        a, b = _STEP_RANGE["installing packages"]
        if line.startswith("Collecting ") or line.startswith("Processing "):
            self._collected += 1
            within = 0.7 * min(1.0, self._collected / self._expected_packages)
        elif line.startswith("Installing collected packages"):
            within = 0.8
        elif line.startswith("Successfully installed"):
            within = 1.0
        else:
            return
        self._set(fraction=max(self._progress.fraction, a + (b - a) * within))

    def _check_python(self, python: str) -> None:
        if not python:
            raise SetupError("python", "no base Python given: Set Up Engine needs Blender's "
                             "own Python (sys.executable)")  # fmt: skip
        lines = self._exec("checking Python", [python, "-c",
                           "import sys; print('%d.%d.%d' % sys.version_info[:3])"])  # fmt: skip
        found = lines[-1].strip() if lines else "unknown"
        want = ".".join(map(str, REQUIRED_PYTHON))
        if not re.fullmatch(re.escape(want) + r"\.\d+", found):
            raise SetupError(
                "python",
                f"the engine needs Python {want}, and {python} is Python {found}: use Blender "
                f"4.2 or later (which ships Python {want}), or set 'Engine Python' to a "
                f"Python {want} environment where handmocap is installed",
            )

    def _verify(self, plan: SetupPlan, python: Path) -> dict:
        self._step("verifying the engine")
        lines = self._exec("verifying the engine", [python, "-m", ENGINE_MODULE, "info",
                           "--json", "--device", plan.probe_device])  # fmt: skip
        report = None
        for line in reversed(lines):
            try:
                report = json.loads(line)
                break
            except ValueError:
                continue
        if not isinstance(report, dict):
            raise SetupError("verify", "the new engine gave no readable report: "
                             f"{lines[-1] if lines else 'no output'}")  # fmt: skip
        device = report.get("device")
        note = report.get("device_reason") or report.get("device_error", "")
        self._log_line(f"engine probe: device {device}, provider {report.get('provider')}")
        if plan.accelerator == "cuda" and device != "cuda":
            raise SetupError(
                "verify",
                f"the engine was installed for CUDA but cannot run on the GPU ({note}): update "
                "the NVIDIA driver, or choose CPU as the accelerator and set up again",
            )
        if device is None:
            raise SetupError("verify", f"no device can run the new engine: {note}")
        return report

    def _models(self, python: Path) -> None:
        self._step("building the hand models")
        self._exec("building the hand models", [python, "-m", ENGINE_MODULE, "models"])


def _count_requirements(path: Path) -> int:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return 1
    return sum(1 for ln in text.splitlines() if ln.split("#", 1)[0].strip())


def _read_record(path: Path) -> dict | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _swap_in(staging: Path, engine: Path, previous: Path) -> None:
    """``staging`` becomes ``engine`` by renames; the old engine is put back if that fails and
    removed once the new one is in place. (A venv is used here only through ``python -m``,
    which works after the rename; its console scripts keep the staging path.)"""
    shutil.rmtree(previous, ignore_errors=True)
    had_old = engine.exists()
    if had_old:
        os.replace(engine, previous)
    try:
        os.replace(staging, engine)
    except OSError:
        if had_old:
            os.replace(previous, engine)
        raise
    shutil.rmtree(previous, ignore_errors=True)
