"""Batch capture of many clips on Ray: ``handmocap batch INPUTS... -o OUT_DIR``
(docs/architecture.md, "Batch capture on Ray").

**Clips.** :func:`collect_clips` turns the inputs into clips: a video file (any file but a
``.txt``), a folder of frames (a folder that holds PNG/JPEG files), a folder to search (any
other folder: video files by their extension, :data:`VIDEO_SUFFIXES`, and frame folders,
at any depth; hidden entries and the output folder's overlays and thumbnails left out),
or a ``.txt`` file that lists any of these, one per line (blank lines and ``#`` comments
skipped, relative paths relative to the list). Each clip gets the output name
``<stem>-<hash>``: its file or folder name made safe, and the first 8 hex digits of the
sha256 of its absolute path (all 64 where two clips of a run would share a name), so
clips of the same name in other folders never collide.

**Outputs**, under OUT_DIR, per clip: ``<name>.npz`` (the take), ``<name>.json`` (its
sidecar, below), ``<name>.jpg`` (the thumbnail) and with ``--overlays``
``<name>.overlay.mp4``; for the run, ``report.json`` and ``report.html``
(:mod:`.batch_report`). Every file is
written through :func:`handmocap.atomic.atomic_output` (the take by ``Take.save``, which
uses it), the sidecar last: a clip killed half-way leaves its previous outputs or none.

**Resume.** A clip is skipped when its sidecar holds the same key: the sha256 of the
source's fingerprint (a file's size and modification time in ns; a frame folder's image
names, sizes and times) and the capture settings (every field of the ``CaptureConfig``,
``--overlays``, the engine and take format versions), and its take is there with the
sha256 the sidecar recorded (and its overlay, if asked for). ``--force`` captures every
clip again. A failed clip has no sidecar, so the next run tries it again.

**Ray.** One actor per worker (:class:`CaptureWorker`, ``--workers N``, each declaring
``--cpus-per-worker`` CPUs and, where CUDA works, a fraction of a GPU) loads the tracker's
networks once and captures the clips Ray's :class:`ray.util.ActorPool` hands it, one task
per clip. A worker process that dies is restarted once and its clip retried once
(``max_restarts=1``, ``max_task_retries=1``); a clip whose worker dies again is failed with
that message and a fresh worker takes the remaining clips. Without ``--address`` a local Ray
instance is started for the command (``ray.init``, no dashboard, usage stats off; its files
under ``$RAY_TMPDIR`` or ``/tmp/ray``) and shut down at the end; with it the command joins
that cluster, where every node must see INPUTS and OUT_DIR at the same paths and have
handmocap and its models installed. Nothing is started at all when every clip is up to date.

**Progress** (``--progress jsonl``): one JSON object per line on stdout, key ``event``:

- ``batch_start`` {clips, to_capture, skipped, workers, where, gpu_per_worker, out_dir}
- ``clip_skipped`` {clip, source, take}: up to date, not captured again
- ``clip_start`` {clip, pid, frames, device}: a worker process ``pid`` starts the clip (again,
  with another pid, when its first worker died)
- ``clip_progress`` {clip, pid, stage, done, total, unit}: a capture stage advances
  (tracking, mano_fit, motion_prior, overlay; at most a few a second per clip)
- ``clip_done`` {clip, status, ...}: the clip's line of the report (:class:`ClipResult`)
- ``done`` {clips, ok, failed, skipped, report, html, exit_code}
- ``error`` {message}: bad input, nothing was captured
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, fields, is_dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handmocap import __version__
from handmocap.atomic import atomic_output
from handmocap.errors import HandmocapError
from handmocap.models.webxr_asset import sha256_of

from .batch_report import (
    BatchDisplay,
    BatchSummary,
    ClipResult,
    NoDisplay,
    take_stats,
    write_report,
    write_thumbnail,
)

if TYPE_CHECKING:
    from .capture import CaptureConfig

# Extensions of the video files a searched folder yields (a file named on the command line
# or in a list is a clip whatever its extension).
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                  ".mts", ".m2ts", ".flv")  # fmt: skip
# Extensions of frames (as inference/video.py reads them) and of list files.
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
LIST_SUFFIX = ".txt"
OVERLAY_SUFFIX = ".overlay.mp4"
SIDECAR_FORMAT = "handmocap-batch-take"
SIDECAR_VERSION = 1
NAME_HASH_DIGITS = 8
# How often the driver looks at the progress events and redraws (seconds).
POLL_S = 0.25
# A worker sends at most this many progress events a second per clip (stage changes always).
EVENTS_PER_SECOND = 4.0
# The local instance's object store: results are small records, so the minimum Ray takes.
LOCAL_OBJECT_STORE_BYTES = 80 * 1024 * 1024


# --- clips ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One input of the batch: ``source`` absolute (links resolved), ``name`` its unique
    output name, ``is_folder`` a folder of frames rather than a video file."""

    source: Path
    name: str
    is_folder: bool


@dataclass(frozen=True)
class ClipOutputs:
    """Where a clip's files go (all in the output folder)."""

    take: Path
    sidecar: Path
    thumbnail: Path
    overlay: Path

    @classmethod
    def of(cls, out_dir: Path, name: str) -> ClipOutputs:
        return cls(out_dir / f"{name}.npz", out_dir / f"{name}.json", out_dir / f"{name}.jpg",
                   out_dir / f"{name}{OVERLAY_SUFFIX}")  # fmt: skip


def _is_frame_folder(folder: Path) -> bool:
    try:
        return any(
            e.is_file() and not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in FRAME_SUFFIXES
            for e in os.scandir(folder)
        )  # fmt: skip
    except OSError as err:
        raise HandmocapError(f"cannot read the folder {folder}: {err.strerror or err}") from err


def _search(folder: Path, out_dir: Path | None) -> list[tuple[Path, bool]]:
    """Video files and frame folders under ``folder``, sorted, as ``(path, is_folder)``.
    Hidden entries are left out, and so is what a batch wrote: the output folder
    ``out_dir`` is never a frame folder (its thumbnails are JPEGs) and its overlay videos
    are not clips."""
    found: list[tuple[Path, bool]] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        keep = []
        for d in sorted(dirs):
            sub = here / d
            if d.startswith("."):
                continue
            if sub.resolve() != out_dir and _is_frame_folder(sub):
                found.append((sub, True))
            else:
                keep.append(d)
        dirs[:] = keep
        in_out_dir = here.resolve() == out_dir
        for f in sorted(files):
            if f.startswith(".") or os.path.splitext(f)[1].lower() not in VIDEO_SUFFIXES:
                continue
            if not (in_out_dir and f.endswith(OVERLAY_SUFFIX)):
                found.append((here / f, False))
    return sorted(found)


def _list_entries(list_file: Path) -> list[Path]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise HandmocapError(f"cannot read the list {list_file}: {err}") from err
    entries = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        path = Path(text).expanduser()
        path = path if path.is_absolute() else list_file.parent / path
        if not path.exists():
            raise HandmocapError(f"{list_file}, line {number}: {text} does not exist; fix the "
                                 "line or remove it")  # fmt: skip
        entries.append(path)
    return entries


def _safe_stem(path: Path) -> str:
    stem = path.name if path.is_dir() else path.stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "clip"
    return stem[:60]


def clip_names(sources: Sequence[Path]) -> list[str]:
    """``<stem>-<hash>`` for each absolute source: the stem made safe and the first
    :data:`NAME_HASH_DIGITS` hex digits of the sha256 of the path, all 64 for any name that
    two different sources would share (or that differs from another only by case)."""
    digests = [hashlib.sha256(str(s).encode()).hexdigest() for s in sources]
    names = [f"{_safe_stem(s)}-{d[:NAME_HASH_DIGITS]}" for s, d in zip(sources, digests,
                                                                        strict=True)]  # fmt: skip
    seen: dict[str, int] = {}
    for n in names:
        seen[n.lower()] = seen.get(n.lower(), 0) + 1
    return [n if seen[n.lower()] == 1 else f"{_safe_stem(s)}-{d}"
            for n, s, d in zip(names, sources, digests, strict=True)]  # fmt: skip


def collect_clips(inputs: Sequence[Path], out_dir: Path | None = None) -> list[Clip]:
    """The clips the inputs name (module docstring), in order, each source once.

    Args:
        inputs: video files, frame folders, folders to search, ``.txt`` lists of them.
        out_dir: the batch's output folder: never a frame folder, and the overlay videos
            in it are not clips.

    Raises:
        HandmocapError: an input or a listed path does not exist, a list cannot be read,
            or no clip was found.
    """
    out_dir = None if out_dir is None else Path(out_dir).resolve()
    found: list[tuple[Path, bool]] = []
    lists_seen: set[Path] = set()

    def add(path: Path, named: bool) -> None:
        if not path.exists():
            raise HandmocapError(f"input not found: {path}")
        if path.is_dir():
            if path.resolve() != out_dir and _is_frame_folder(path):
                found.append((path, True))
            else:
                found.extend(_search(path, out_dir))
        elif path.suffix.lower() == LIST_SUFFIX and named:
            real = path.resolve()
            if real in lists_seen:
                return
            lists_seen.add(real)
            for entry in _list_entries(path):
                add(entry, named=True)
        else:
            found.append((path, False))

    for item in inputs:
        add(Path(item).expanduser(), named=True)
    unique: dict[Path, bool] = {}
    for path, is_folder in found:
        unique.setdefault(path.resolve(), is_folder)
    if not unique:
        shown = ", ".join(str(p) for p in inputs)
        raise HandmocapError(f"no clips found in {shown}: give video files, folders of PNG/JPEG "
                             f"frames, folders holding them ({', '.join(VIDEO_SUFFIXES[:5])} "
                             "...) or a .txt list of them")  # fmt: skip
    sources = list(unique)
    return [Clip(s, n, unique[s]) for s, n in zip(sources, clip_names(sources), strict=True)]


# --- resume key -------------------------------------------------------------------------------


def source_fingerprint(clip: Clip) -> dict[str, Any]:
    """What identifies the clip's content cheaply: a file's size and mtime (ns); a frame
    folder's frame count and a digest of its image files' names, sizes and mtimes."""
    try:
        if not clip.is_folder:
            st = clip.source.stat()
            return {"kind": "file", "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        h = hashlib.sha256()
        count = 0
        for e in sorted(os.scandir(clip.source), key=lambda e: e.name):
            if os.path.splitext(e.name)[1].lower() in FRAME_SUFFIXES:
                st = e.stat()
                h.update(f"{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                count += 1
        return {"kind": "folder", "frames": count, "digest": h.hexdigest()}
    except OSError as err:
        raise HandmocapError(f"cannot read {clip.source}: {err.strerror or err}") from err


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def batch_settings(capture: CaptureConfig, overlays: bool) -> dict[str, Any]:
    """The settings that decide a clip's outputs, as JSON values (part of the resume key)."""
    from handmocap.take import VERSION as TAKE_VERSION

    return {"capture": _jsonable(capture), "overlays": bool(overlays),
            "engine_version": __version__, "take_version": TAKE_VERSION}  # fmt: skip


def resume_key(fingerprint: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """sha256 (hex) of the source's fingerprint and the settings."""
    text = json.dumps({"source": fingerprint, "settings": settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """A sidecar's object, or None when it is missing, damaged or of another format."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if (not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT
            or data.get("version") != SIDECAR_VERSION):  # fmt: skip
        return None
    return data


def up_to_date(clip: Clip, outputs: ClipOutputs, key: str, overlays: bool) -> ClipResult | None:
    """The clip's recorded result when its outputs are there for ``key`` (module docstring,
    "Resume"), marked skipped; else None."""
    data = read_sidecar(outputs.sidecar)
    if data is None or data.get("key") != key or data.get("source") != str(clip.source):
        return None
    if not outputs.take.is_file() or (overlays and not outputs.overlay.is_file()):
        return None
    try:
        if sha256_of(outputs.take) != data.get("take_sha256"):
            return None
        result = ClipResult.from_json(data.get("result"))
    except (OSError, TypeError, ValueError):
        return None
    if not result.ok:
        return None
    thumbnail = result.thumbnail if outputs.thumbnail.is_file() else None
    return replace(result, skipped=True, thumbnail=thumbnail)


def write_sidecar(outputs: ClipOutputs, job: ClipJob, result: ClipResult) -> None:
    """The clip's sidecar (atomically): its key and what it was made from, the take's
    sha256, and the clip's result."""
    data = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "key": job.key,
            "source": str(job.clip.source), "fingerprint": job.fingerprint,
            "settings": job.settings, "take_sha256": sha256_of(outputs.take),
            "result": result.to_json()}  # fmt: skip
    with atomic_output(outputs.sidecar) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# --- the worker -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipJob:
    """What a worker is handed for one clip."""

    clip: Clip
    out_dir: Path
    key: str
    fingerprint: Mapping[str, Any]
    settings: Mapping[str, Any]
    overlay: bool


class _EventProgress:
    """The capture's :class:`.progress.Progress`, sent to the driver as events through a
    Ray queue (throttled; a lost event is never an error)."""

    def __init__(self, events: Any, clip: str, pid: int):
        self.events, self.clip, self.pid = events, clip, pid
        self.stage_name, self.total, self.unit = "tracking", 0, "frames"
        self.last = -math.inf

    def _send(self, event: str, **data: Any) -> None:
        if self.events is None:
            return
        try:
            self.events.put_nowait({"event": event, "clip": self.clip, "pid": self.pid, **data})
        except Exception:  # the driver went away or the queue is gone: progress is optional
            self.events = None

    def start(self, total: int, **info: Any) -> None:
        self.stage_name, self.total, self.unit = "tracking", int(total), "frames"
        self._send("clip_start", frames=int(total), device=info.get("device"))

    def stage(self, name: str, total: int, unit: str = "frames") -> None:
        self.stage_name, self.total, self.unit = name, int(total), unit
        self.last = time.monotonic()
        self._send("clip_progress", stage=name, done=0, total=int(total), unit=unit)

    def update(self, done: int, frame: int | None = None) -> None:
        now = time.monotonic()
        if now - self.last < 1.0 / EVENTS_PER_SECOND and done < self.total:
            return
        self.last = now
        self._send("clip_progress", stage=self.stage_name, done=int(done), total=self.total,
                   unit=self.unit)  # fmt: skip

    def finish(self, **summary: Any) -> None:
        pass

    def error(self, message: str) -> None:
        pass


class CaptureWorker:
    """A Ray actor (wrapped by :func:`run_batch`): builds the tracker's networks once, then
    captures one clip per :meth:`capture_clip` call with a fresh :class:`.tracker.HandTracker`
    over them. Never raises for a clip: a failure is a failed :class:`ClipResult`."""

    def __init__(self, config: CaptureConfig, threads: int):
        self.pid = os.getpid()
        self.config = config
        self.setup_error: str | None = None
        try:
            from .capture import tracker_config
            from .tracker import build_models

            self.tracker_config = replace(tracker_config(config), threads=threads)
            self.palm, self.landmarker = build_models(self.tracker_config)
        except Exception as err:  # reported with every clip rather than as a dead actor
            why = str(err) if isinstance(err, HandmocapError) else f"{type(err).__name__}: {err}"
            self.setup_error = f"the worker could not start: {why}"

    def capture_clip(self, job: ClipJob, events: Any = None) -> ClipResult:
        """Capture ``job``'s clip, sending progress to the Ray queue ``events`` (or none)."""
        started = time.perf_counter()
        name, source = job.clip.name, str(job.clip.source)
        try:
            return self._capture(job, events, started)
        except HandmocapError as err:
            message = str(err)
        except Exception as err:  # an engine bug on this clip must not stop the others
            message = f"{type(err).__name__}: {err}"
        return ClipResult.failed(name, source, message, time.perf_counter() - started, self.pid)

    def _capture(self, job: ClipJob, events: Any, started: float) -> ClipResult:
        if self.setup_error:
            raise HandmocapError(self.setup_error)
        from .capture import capture
        from .tracker import HandTracker

        outputs = ClipOutputs.of(job.out_dir, job.clip.name)
        progress = _EventProgress(events, job.clip.name, self.pid)
        tracker = HandTracker(self.tracker_config, self.palm, self.landmarker)
        overlay = outputs.overlay if job.overlay else None
        result = capture(job.clip.source, self.config, progress, overlay=overlay, tracker=tracker)
        result.take.save(outputs.take)
        stats = take_stats(result.take)
        warnings = list(result.take.header.warnings or ())
        thumbnail = None
        if stats.worst_frame is not None:
            try:
                write_thumbnail(job.clip.source, result.take, stats.worst_frame,
                                outputs.thumbnail, fps=self.config.fps,
                                mano_dir=self.config.mano_dir,
                                confidence=stats.worst_confidence)  # fmt: skip
                thumbnail = outputs.thumbnail.name
            except HandmocapError as err:
                warnings.append(f"no thumbnail: {err}")
        done = ClipResult(
            name=job.clip.name, source=str(job.clip.source), status="ok",
            take=outputs.take.name, overlay=outputs.overlay.name if overlay else None,
            thumbnail=thumbnail, frames=stats.frames, hands=stats.hands, sides=stats.sides,
            detection_rate=stats.detection_rate, jitter_px=stats.jitter_px,
            worst_frame=stats.worst_frame, worst_confidence=stats.worst_confidence,
            seconds=round(time.perf_counter() - started, 3),
            device=result.take.header.engine.device, warnings=tuple(warnings), pid=self.pid,
        )  # fmt: skip
        write_sidecar(outputs, job, done)
        return done


# --- the driver -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchConfig:
    """How a batch runs (the capture settings are ``capture``, shared by every clip).

    Attributes:
        out_dir: the output folder (created if missing).
        capture: the capture settings of every clip.
        overlays: also write each clip's overlay video.
        workers: Ray actors capturing at once; None = the CPUs Ray has divided by
            ``cpus_per_worker``, at most one per clip to capture.
        cpus_per_worker: CPUs each worker declares (and the threads its networks use).
        address: a running Ray cluster to join; None starts a local instance.
        force: capture every clip again, even when its take is up to date.
    """

    out_dir: Path
    capture: CaptureConfig
    overlays: bool = False
    workers: int | None = None
    cpus_per_worker: float = 1.0
    address: str | None = None
    force: bool = False

    def validated(self) -> BatchConfig:
        if self.workers is not None and not 1 <= self.workers <= 1024:
            raise HandmocapError(f"--workers must be 1..1024, got {self.workers}")
        if not (math.isfinite(self.cpus_per_worker) and 0 < self.cpus_per_worker <= 256):
            raise HandmocapError(
                f"--cpus-per-worker must be more than 0 and at most 256, got {self.cpus_per_worker}"
            )
        self.capture.validated()
        return self


@dataclass(frozen=True)
class BatchOutcome:
    results: tuple[ClipResult, ...]
    summary: BatchSummary
    report_json: Path
    report_html: Path

    @property
    def failed(self) -> int:
        return self.summary.failed


def _prepare_out_dir(out_dir: Path, clips: Sequence[Clip]) -> Path:
    """Create the output folder; refuse one that is a file, not writable, or inside (or the
    same as) a frame folder of the batch."""
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise HandmocapError(f"-o {out_dir} is a file; give a folder for the takes and report")
    real = out_dir.resolve()
    for clip in clips:
        if clip.is_folder and (real == clip.source or real.is_relative_to(clip.source)):
            raise HandmocapError(f"-o {out_dir} is inside the frame folder {clip.source}; write "
                                 "the outputs outside every input folder of frames")  # fmt: skip
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HandmocapError(f"cannot create -o {out_dir}: {err.strerror or err}") from err
    if not os.access(out_dir, os.W_OK):
        raise HandmocapError(f"cannot write to -o {out_dir}: permission denied")
    sources = {c.source for c in clips}
    for clip in clips:
        for path in vars(ClipOutputs.of(real, clip.name)).values():
            if path in sources:
                raise HandmocapError(f"the output {path} would replace the input clip of that "
                                     "name; write the outputs to another folder")  # fmt: skip
    return real


def _check_assets(config: CaptureConfig) -> None:
    """The tracker's networks and the fit's files exist (before any Ray worker starts)."""
    from handmocap.models.mediapipe_port import built_mediapipe_models

    built_mediapipe_models()
    if config.fit_mano:
        from .mano_fit import fit_assets

        fit_assets(config.mano_dir)


# The Ray release the lock pins (requirements/lock.txt) and pyproject's `batch` extra names.
RAY_VERSION = "2.60.0"


@dataclass(frozen=True)
class RayPlan:
    """Where the workers run and what each declares."""

    where: str
    workers: int
    cpus_per_worker: float
    gpu_per_worker: float


def _quiet_ray_env() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")


@contextmanager
def ray_session(config: BatchConfig, clips: int) -> Iterator[RayPlan]:
    """Start a local Ray instance (or join ``config.address``) for the block, and plan the
    workers: how many, and the CPUs and GPU fraction each declares (a GPU share only where
    CUDA works: probed here for a local instance; on a cluster, where it has GPUs and
    ``--device`` is not ``cpu``). A local instance is shut down when the block ends."""
    _quiet_ray_env()
    try:
        import ray
    except ImportError:
        raise HandmocapError(
            "handmocap batch runs on Ray, which is not installed in this environment: "
            f"pip install 'ray=={RAY_VERSION}' (or handmocap[batch]), or run "
            "`python3 build.py setup`, which installs it"
        ) from None

    device = config.capture.tracker.device
    cuda = False
    if config.address is None and device != "cpu":
        from .backend import choose_backend, probe_cuda

        if device == "cuda":
            choose_backend("cuda")  # fails now, naming why, if CUDA does not work here
        cuda = probe_cuda()[0]
    started_here = not ray.is_initialized()
    try:
        if not started_here:
            where = "the Ray session of this process"
        elif config.address is None:
            want = config.workers or max(1, int((os.cpu_count() or 1) / config.cpus_per_worker))
            cpus = max(os.cpu_count() or 1, math.ceil(want * config.cpus_per_worker))
            ray.init(num_cpus=cpus, num_gpus=None if cuda else 0, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES)  # fmt: skip
            where = "local Ray instance"
        else:
            ray.init(address=config.address, log_to_driver=False, logging_level=logging.ERROR)
            cuda = device != "cpu"
            where = f"Ray cluster {config.address}"
    except Exception as err:  # Ray raises ConnectionError, RuntimeError, ValueError ...
        what = ("start a local Ray instance" if config.address is None
                else f"join the Ray cluster at {config.address}")  # fmt: skip
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HandmocapError(f"cannot {what}: {first}") from err
    try:
        resources = ray.cluster_resources()
        cpus_total = float(resources.get("CPU", 1.0))
        workers = config.workers or max(1, int(cpus_total / config.cpus_per_worker))
        workers = max(1, min(workers, clips))
        gpus = float(resources.get("GPU", 0.0)) if cuda else 0.0
        gpu_share = math.floor(min(1.0, gpus / workers) * 10_000) / 10_000 if gpus > 0 else 0.0
        yield RayPlan(where, workers, config.cpus_per_worker, gpu_share)
    finally:
        if started_here:
            ray.shutdown()


def _drain(events: Any, display: BatchDisplay) -> None:
    try:
        count = events.qsize()
        items = events.get_nowait_batch(count) if count else []
    except Exception:  # the queue's actor is gone: progress is not essential
        return
    for item in items:
        display.event(item)


def _run_on_ray(
    jobs: Sequence[ClipJob],
    config: BatchConfig,
    plan: RayPlan,
    display: BatchDisplay,
    on_result: Callable[[ClipResult], None],
) -> None:
    """Capture ``jobs`` on ``plan.workers`` actors through an ActorPool; every job ends in
    exactly one ``on_result`` call."""
    import ray
    from ray.util import ActorPool
    from ray.util.queue import Queue

    events = Queue(actor_options={"num_cpus": 0})
    threads = max(1, int(plan.cpus_per_worker))
    worker_class = ray.remote(CaptureWorker).options(
        num_cpus=plan.cpus_per_worker, num_gpus=plan.gpu_per_worker,
        max_restarts=1, max_task_retries=1,
    )  # fmt: skip

    def new_worker() -> Any:
        return worker_class.remote(config.capture, threads)

    pool = ActorPool([new_worker() for _ in range(plan.workers)])
    in_flight: dict[Any, ClipJob] = {}  # ObjectRef -> its job, to name a clip whose worker died
    finished: set[str] = set()

    def dispatch(actor: Any, job: ClipJob) -> Any:
        ref = actor.capture_clip.remote(job, events)
        in_flight[ref] = job
        return ref

    def record(result: ClipResult) -> None:
        if result.name not in finished:
            finished.add(result.name)
            on_result(result)

    for job in jobs:
        pool.submit(dispatch, job)
    while pool.has_next():
        try:
            result = pool.get_next_unordered(timeout=POLL_S)
        except TimeoutError:
            _drain(events, display)
            display.tick()
            continue
        except ray.exceptions.RayError as err:
            # A worker died again after its one restart (or the task could not run): fail the
            # clip(s) it held, and give the pool a fresh worker for the clips still waiting.
            for ref, job in list(in_flight.items()):
                ready, _ = ray.wait([ref], timeout=0)
                if not ready:
                    continue
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as died:
                    del in_flight[ref]
                    why = str(died).strip().splitlines()[0] if str(died).strip() else repr(died)
                    message = ("its worker process died (Ray restarts a worker once and "
                               f"retries its clip once): {why}")  # fmt: skip
                    record(ClipResult.failed(job.clip.name, str(job.clip.source), message))
            if isinstance(err, ray.exceptions.ActorDiedError):
                pool.push(new_worker())
            continue
        for ref, job in list(in_flight.items()):
            if job.clip.name == result.name:
                del in_flight[ref]
        _drain(events, display)
        record(result)
    _drain(events, display)
    for job in jobs:  # the pool ran out of workers: nothing may go unreported
        if job.clip.name not in finished:
            record(ClipResult.failed(job.clip.name, str(job.clip.source),
                                     "not captured: no worker was left to run it"))  # fmt: skip
    events.shutdown()  # the workers end with their handles (and a local instance with it)


def run_batch(inputs: Sequence[Path], config: BatchConfig,
              display: BatchDisplay | None = None) -> BatchOutcome:  # fmt: skip
    """Capture every clip of ``inputs`` (module docstring) and write the report.

    Bad input (no clips, a missing input, an unusable output folder, missing models, Ray
    that cannot start or be joined) raises :class:`HandmocapError` before any clip runs; a
    clip that fails is a failed :class:`ClipResult` and the others go on.
    """
    config = config.validated()
    display = display or NoDisplay()
    started = time.perf_counter()
    out_dir_given = Path(config.out_dir).expanduser()
    clips = collect_clips(inputs, out_dir=out_dir_given)
    out_dir = _prepare_out_dir(out_dir_given, clips)
    settings = batch_settings(config.capture, config.overlays)
    results: dict[str, ClipResult] = {}
    jobs: list[ClipJob] = []
    for clip in clips:
        fingerprint = source_fingerprint(clip)
        key = resume_key(fingerprint, settings)
        done = None if config.force else up_to_date(clip, ClipOutputs.of(out_dir, clip.name),
                                                    key, config.overlays)  # fmt: skip
        if done is not None:
            results[clip.name] = done
        else:
            jobs.append(ClipJob(clip, out_dir, key, fingerprint, settings, config.overlays))
    if jobs and config.address is None:
        _check_assets(config.capture)

    begin = {"clips": len(clips), "to_capture": len(jobs), "skipped": len(results),
             "out_dir": str(out_dir)}  # fmt: skip
    plan = RayPlan("nothing to capture", 0, config.cpus_per_worker, 0.0)

    def on_result(result: ClipResult) -> None:
        results[result.name] = result
        display.clip_done(result)

    if jobs:
        # Ray prints its raylet's messages ("a worker died ...") on sys.stdout: send them to
        # stderr, so that stdout holds only the JSON lines (the display keeps the real one).
        with ray_session(config, len(jobs)) as plan, redirect_stdout(sys.stderr):
            display.begin(**begin, workers=plan.workers, where=plan.where,
                          gpu_per_worker=plan.gpu_per_worker)  # fmt: skip
            for clip in clips:
                if clip.name in results:
                    display.skipped(results[clip.name])
            _run_on_ray(jobs, config, plan, display, on_result)
    else:
        display.begin(**begin, workers=0, where=plan.where, gpu_per_worker=0.0)
        for clip in clips:
            display.skipped(results[clip.name])
    ordered = tuple(results[c.name] for c in clips)
    failed = sum(not r.ok for r in ordered)
    summary = BatchSummary(
        clips=len(clips), ok=len(clips) - failed, failed=failed,
        skipped=sum(r.skipped for r in ordered), wall_seconds=time.perf_counter() - started,
        workers=plan.workers, where=plan.where,
        extra={"cpus_per_worker": plan.cpus_per_worker, "gpu_per_worker": plan.gpu_per_worker},
    )  # fmt: skip
    report_json, report_html = write_report(out_dir, ordered, summary, settings)
    return BatchOutcome(ordered, summary, report_json, report_html)
