"""What a batch run shows the TD: figures of each take, a thumbnail, the run's
``report.json`` / ``report.html``, and the terminal display while it runs (a bar, or the
JSON lines listed in :mod:`.batch`'s docstring) (docs/architecture.md, "Batch capture on
Ray").

The figures, as the report states them (:data:`DEFINITIONS`):

- **detection rate**: for each side (left, right) the take holds, the share of the captured
  frames on which a track of that side has a row that was seen (detected or tracked, not
  filled by the motion prior), averaged over the sides; 0 when no hand was found.
- **jitter**: the median over hands, keypoints and frames of ``|p(t+1) - 2 p(t) + p(t-1)|``,
  the 2D acceleration of the take's keypoints in pixels per frame^2 (a frame being a
  captured frame, after ``--stride``), only where three consecutive captured frames hold
  the hand. The keypoints are those the take moves the hand with: the fitted 3D keypoints
  projected through the take's intrinsics where MANO was fitted (after the motion prior),
  else the landmark network's 2D keypoints. None when no hand was seen on three
  consecutive frames.
- **worst-confidence frame**: the captured frame whose confidence is lowest, the confidence
  of a frame being the lowest over the take's sides of that side's mean keypoint confidence
  there (0 where a side has no row); the earliest on ties, the first frame when no hand was
  found. The thumbnail is the overlay (:mod:`.overlay`'s drawing) of that frame.

Numpy, OpenCV and the take only; the drawing pulls torch in (the mesh outline) only when a
take has MANO parameters.
"""

from __future__ import annotations

import html
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, TextIO
from urllib.parse import quote

import numpy as np

from handmocap import __version__
from handmocap.atomic import atomic_output
from handmocap.errors import HandmocapError
from handmocap.take import FrameFlag, FrameRange, Take, Track

REPORT_FORMAT = "handmocap-batch-report"
REPORT_VERSION = 1
# The thumbnail's width in pixels at most (it keeps the frame's aspect).
THUMBNAIL_WIDTH = 320

DEFINITIONS = {
    "detection_rate": (
        "per side (left, right) in the take, the share of captured frames on which a hand of "
        "that side was seen (detected or tracked, not filled by the motion prior), averaged "
        "over the sides; 0 when no hand was found"
    ),
    "jitter_px": (
        "median over hands, keypoints and frames of |p(t+1) - 2 p(t) + p(t-1)|: the 2D "
        "keypoint acceleration in pixels per frame^2 (captured frames, after --stride), over "
        "runs of three consecutive captured frames; keypoints as the take moves them (the "
        "fitted 3D keypoints projected through the intrinsics where MANO was fitted, else the "
        "landmarks); null when no hand was seen on three consecutive frames"
    ),
    "worst_frame": (
        "the captured frame with the lowest confidence (the lowest over the sides of the "
        "side's mean keypoint confidence, 0 where a side has no row); the thumbnail shows the "
        "overlay of that frame"
    ),
    "seconds": "wall-clock seconds of the clip on its worker: capture, take, thumbnail",
}

# Per-frame fields of a Track (sliced to one row for the thumbnail's mesh outline).
_ROW_FIELDS = ("frames", "keypoints_2d", "keypoints_rel_depth", "world_landmarks", "confidence",
               "right_prob", "flags", "mano_pose", "translation", "keypoints_3d", "frame_pose",
               "frame_translation")  # fmt: skip


@dataclass(frozen=True)
class TakeStats:
    """The figures of one take (module docstring for their definitions).

    Attributes:
        frames: captured frames read from the source.
        hands: tracks in the take.
        sides: the tracks' sides, in track order (``"left"``/``"right"``).
        detection_rate: in [0, 1].
        jitter_px: pixels per frame^2, or None.
        worst_frame: the video frame index of the worst-confidence frame, or None when no
            frame was read.
        worst_confidence: that frame's confidence, in [0, 1].
    """

    frames: int
    hands: int
    sides: tuple[str, ...]
    detection_rate: float
    jitter_px: float | None
    worst_frame: int | None
    worst_confidence: float


def captured_frames(take: Take) -> np.ndarray:
    """(N,) int64 video frame indices the capture read, from the header: the frame range's
    arithmetic sequence over the frames read plus the undecodable ones, less those."""
    header = take.header
    frame_range = header.frame_range or FrameRange()
    missing = set(header.missing_frames or ())
    count = int(header.engine.frames_read or 0) + len(missing)
    indices = frame_range.start + frame_range.stride * np.arange(count, dtype=np.int64)
    return indices[~np.isin(indices, list(missing))] if missing else indices


def _side_confidence(take: Take, frames: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per side: ((N,) mean keypoint confidence, 0 where absent; (N,) bool seen) over
    ``frames``, the best of that side's tracks on each frame."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for track in take.tracks:
        side = str(track.handedness.value)
        conf, seen = out.setdefault(side, (np.zeros(len(frames)), np.zeros(len(frames), bool)))
        where = np.searchsorted(frames, track.frames)
        inside = where < len(frames)
        inside[inside] &= frames[where[inside]] == track.frames[inside]
        rows = np.flatnonzero(inside)
        at = where[rows]
        conf[at] = np.maximum(conf[at], track.confidence[rows].mean(axis=1))
        observed = (track.flags[rows] & FrameFlag.INFILLED) == 0
        seen[at] |= observed
    return out


def track_keypoints_px(track: Track, intrinsics: np.ndarray) -> np.ndarray:
    """(T, 21, 2) pixels: the fitted 3D keypoints projected where MANO was fitted, else the
    landmark network's 2D keypoints (the module docstring, "jitter")."""
    if track.keypoints_3d is None:
        return np.asarray(track.keypoints_2d, np.float64)
    from handmocap.retarget.camera import project

    return project(np.asarray(track.keypoints_3d, np.float64), intrinsics)


def jitter_px(take: Take) -> float | None:
    """The take's jitter in pixels per frame^2 (module docstring), or None."""
    stride = (take.header.frame_range or FrameRange()).stride
    values = []
    for track in take.tracks:
        if len(track) < 3:
            continue
        p = track_keypoints_px(track, take.header.intrinsics)
        steps = np.diff(track.frames)
        consecutive = (steps[:-1] == stride) & (steps[1:] == stride)  # (T - 2,)
        if not consecutive.any():
            continue
        accel = p[2:] - 2.0 * p[1:-1] + p[:-2]  # (T - 2, 21, 2)
        values.append(np.linalg.norm(accel[consecutive], axis=-1).ravel())
    if not values:
        return None
    return float(np.median(np.concatenate(values)))


def take_stats(take: Take) -> TakeStats:
    """The figures of ``take`` (module docstring)."""
    frames = captured_frames(take)
    sides = _side_confidence(take, frames)
    if sides and len(frames):
        detection = float(np.mean([seen.mean() for _, seen in sides.values()]))
        per_frame = np.min(np.stack([conf for conf, _ in sides.values()]), axis=0)
    else:
        detection = 0.0
        per_frame = np.zeros(len(frames))
    worst = int(np.argmin(per_frame)) if len(frames) else None
    return TakeStats(
        frames=int(take.header.engine.frames_read or len(frames)),
        hands=len(take.tracks),
        sides=tuple(str(t.handedness.value) for t in take.tracks),
        detection_rate=round(detection, 4),
        jitter_px=None if (j := jitter_px(take)) is None else round(j, 4),
        worst_frame=None if worst is None else int(frames[worst]),
        worst_confidence=0.0 if worst is None else round(float(per_frame[worst]), 4),
    )


# --- thumbnail ---------------------------------------------------------------------------------


def _one_row(track: Track, row: int) -> Track:
    """``track`` cut to its row ``row`` (a one-frame track, checked like any other)."""
    cut = {name: getattr(track, name)[row : row + 1] for name in _ROW_FIELDS
           if getattr(track, name) is not None}  # fmt: skip
    return replace(track, **cut)


def write_thumbnail(source: Path, take: Take, frame: int, path: Path, *, fps: float | None = None,
                    mano_dir: Path | None = None, confidence: float | None = None,
                    width: int = THUMBNAIL_WIDTH) -> Path:  # fmt: skip
    """A small JPEG of the overlay of ``take`` on video frame ``frame`` of ``source``, drawn
    with :mod:`.overlay`'s functions (skeleton, label, mesh outline, de-occlusion
    silhouette), the frame read with :class:`.video.VideoSource`; at most ``width`` pixels
    wide. Written through :func:`atomic_output`.

    Raises:
        HandmocapError: the frame cannot be read, or the file cannot be written.
    """
    import cv2

    from handmocap.retarget.camera import project

    from .overlay import _draw_hand, _draw_outline, _draw_silhouette, _label, _mesh_vertices
    from .video import VideoSource

    reader = VideoSource(source, FrameRange(frame, frame + 1, 1), fps=fps, log_warnings=False)
    frames = iter(reader)
    try:
        rgb = next(frames, (None, None))[1]
    finally:
        frames.close()  # stops the reader thread
    if rgb is None:
        raise HandmocapError(f"cannot read frame {frame} of {source} for the thumbnail")
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    scale = max(1, round(max(img.shape[:2]) / 640))
    for track in take.tracks:
        rows = np.flatnonzero(track.frames == frame)
        if not len(rows):
            continue
        row = int(rows[0])
        if track.mano_pose is not None:
            mesh = _mesh_vertices(_one_row(track, row), mano_dir)
            if mesh is not None:
                _draw_outline(img, project(mesh[0][0], take.header.intrinsics), mesh[1])
        if track.flags[row] & FrameFlag.DEOCCLUDED:
            _draw_silhouette(img, track.keypoints_2d[row])
        _draw_hand(img, track, row, scale)
    if not take.tracks:
        label = f"frame {frame}: no hands"
    else:
        label = f"frame {frame}" + ("" if confidence is None else f" conf {confidence:.2f}")
    _label(img, label, scale)
    h, w = img.shape[:2]
    if w > width:
        img = cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    with atomic_output(Path(path), suffix=".jpg") as tmp:
        if not cv2.imwrite(str(tmp), img, [cv2.IMWRITE_JPEG_QUALITY, 85]):
            raise HandmocapError(f"cannot write the thumbnail {path}: OpenCV refused it")
    return Path(path)


# --- per-clip result and the report ------------------------------------------------------------


@dataclass(frozen=True)
class ClipResult:
    """One clip's line of the report (and of its take's sidecar). Paths of outputs are file
    names in the batch's output folder; ``status`` is ``"ok"`` or ``"failed"``.

    Attributes:
        name: the clip's output name (``<stem>-<hash>``).
        source: the clip's absolute path.
        status: ``"ok"`` or ``"failed"``.
        skipped: its take was already there for this source and these settings.
        take, overlay, thumbnail: output file names, or None.
        frames ... worst_confidence: :class:`TakeStats` (0 / None when failed).
        seconds: wall-clock seconds on the worker (0 when skipped: see the sidecar).
        device: where the networks ran.
        warnings: what the source did not deliver and what could not be drawn.
        error: why the clip failed, or None.
        pid: the worker process that captured it, or None.
    """

    name: str
    source: str
    status: str
    skipped: bool = False
    take: str | None = None
    overlay: str | None = None
    thumbnail: str | None = None
    frames: int = 0
    hands: int = 0
    sides: tuple[str, ...] = ()
    detection_rate: float | None = None
    jitter_px: float | None = None
    worst_frame: int | None = None
    worst_confidence: float | None = None
    seconds: float = 0.0
    device: str | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None
    pid: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["sides"], out["warnings"] = list(self.sides), list(self.warnings)
        return out

    @classmethod
    def from_json(cls, data: Any) -> ClipResult:
        """From :meth:`to_json`'s object (a sidecar). Raises ValueError on anything else."""
        if not isinstance(data, Mapping):
            raise ValueError("not an object")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("sides", "warnings"):
            items = values.get(name, [])
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                raise ValueError(f"{name} must be a list of strings")
            values[name] = tuple(items)
        for name in ("name", "source", "status"):
            if not isinstance(values.get(name), str):
                raise ValueError(f"{name} must be a string")
        return cls(**values)

    @classmethod
    def failed(cls, name: str, source: str, error: str, seconds: float = 0.0,
               pid: int | None = None) -> ClipResult:  # fmt: skip
        return cls(name, source, "failed", error=error, seconds=round(seconds, 3), pid=pid)


@dataclass(frozen=True)
class BatchSummary:
    """The run as a whole: clip counts, wall-clock seconds and where it ran."""

    clips: int
    ok: int
    failed: int
    skipped: int
    wall_seconds: float
    workers: int
    where: str  # "local Ray instance" or the cluster's address
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def captured(self) -> int:
        return self.clips - self.skipped

    def to_json(self) -> dict[str, Any]:
        per_minute = (self.captured * 60.0 / self.wall_seconds) if self.wall_seconds > 0 else None
        return {"clips": self.clips, "ok": self.ok, "failed": self.failed,
                "skipped": self.skipped, "captured": self.captured,
                "wall_seconds": round(self.wall_seconds, 3),
                "clips_per_minute": None if per_minute is None else round(per_minute, 3),
                "workers": self.workers, "where": self.where, **dict(self.extra)}  # fmt: skip


def report_json(results: Sequence[ClipResult], summary: BatchSummary,
                settings: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The object written to ``report.json``."""
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "engine_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "summary": summary.to_json(),
        "definitions": DEFINITIONS,
        "settings": dict(settings),
        "clips": [r.to_json() for r in results],
    }


def _cell(value: Any, digits: int = 2, scale: float = 1.0, suffix: str = "") -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value * scale:.{digits}f}{suffix}" if math.isfinite(value) else "&ndash;"
    return html.escape(str(value)) + suffix


_CSS = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
tr.failed{background:#fde8e8}td.num{text-align:right}img{display:block}
.src{color:#666;font-size:85%}.warn{color:#8a5a00;font-size:85%}dt{font-weight:bold}"""


def report_html(report: Mapping[str, Any]) -> str:
    """``report.html`` from :func:`report_json`'s object: a summary, the definitions, and a
    table with one row per clip (thumbnails by relative file name)."""
    s = report["summary"]
    rows = []
    for c in report["clips"]:
        thumb = (f'<img src="{html.escape(quote(c["thumbnail"]))}" alt="worst frame">'
                 if c.get("thumbnail") else "")  # fmt: skip
        status = "skipped (up to date)" if c["skipped"] else c["status"]
        notes = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in c["warnings"])
        if c.get("error"):
            notes = f"<div>{html.escape(c['error'])}</div>" + notes
        take = f'<a href="{html.escape(quote(c["take"]))}">take</a>' if c.get("take") else ""
        overlay = (f' <a href="{html.escape(quote(c["overlay"]))}">overlay</a>'
                   if c.get("overlay") else "")  # fmt: skip
        sides = ", ".join(c["sides"])
        rows.append(
            f'<tr class="{html.escape(c["status"])}"><td>{thumb}</td>'
            f'<td>{html.escape(c["name"])}<div class="src">{html.escape(c["source"])}</div>'
            f"{take}{overlay}</td><td>{html.escape(status)}</td>"
            f'<td class="num">{c["frames"]}</td>'
            f'<td class="num">{c["hands"]}{" (" + html.escape(sides) + ")" if sides else ""}</td>'
            f'<td class="num">{_cell(c["detection_rate"], 1, 100.0, " %")}</td>'
            f'<td class="num">{_cell(c["jitter_px"], 3)}</td>'
            f'<td class="num">{_cell(c["worst_frame"])}</td>'
            f'<td class="num">{_cell(c["seconds"], 1)}</td><td>{notes}</td></tr>'
        )
    definitions = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
        for k, v in report["definitions"].items()
    )
    per_minute = s["clips_per_minute"]
    rate = "" if per_minute is None else f", {per_minute:.2f} clips per minute"
    skipped = f" ({s['skipped']} up to date, skipped)" if s["skipped"] else ""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>handmocap batch report'
        f"</title><style>{_CSS}</style></head><body>\n<h1>handmocap batch report</h1>\n"
        f"<p>{s['clips']} clips: {s['ok']} ok{skipped}, "
        f"{s['failed']} failed; {s['wall_seconds']:.1f} s on {s['workers']} worker(s), "
        f"{html.escape(str(s['where']))}{rate}. Created {html.escape(report['created'])} by "
        f"handmocap {html.escape(report['engine_version'])}.</p>\n"
        "<table><tr><th>worst frame</th><th>clip</th><th>status</th><th>frames</th>"
        "<th>hands</th><th>detection rate</th><th>jitter (px/frame&sup2;)</th>"
        "<th>worst frame #</th><th>seconds</th><th>error / warnings</th></tr>\n"
        + "\n".join(rows)
        + f"\n</table>\n<h2>Definitions</h2><dl>{definitions}</dl>\n</body></html>\n"
    )


def write_report(out_dir: Path, results: Sequence[ClipResult], summary: BatchSummary,
                 settings: Mapping[str, Any]) -> tuple[Path, Path]:  # fmt: skip
    """Write ``out_dir/report.json`` and ``out_dir/report.html``, each atomically; returns
    their paths."""
    report = report_json(results, summary, settings)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    for path, text in ((json_path, json.dumps(report, indent=2) + "\n"),
                       (html_path, report_html(report))):  # fmt: skip
        with atomic_output(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return json_path, html_path


# --- what the terminal shows -------------------------------------------------------------------


class BatchDisplay(Protocol):
    """What the driver tells the terminal: the run's start, each skipped clip, the workers'
    events, each finished clip, a periodic tick (to redraw), the end, or an error."""

    def begin(self, **info: Any) -> None: ...
    def skipped(self, result: ClipResult) -> None: ...
    def event(self, event: Mapping[str, Any]) -> None: ...
    def clip_done(self, result: ClipResult) -> None: ...
    def tick(self) -> None: ...
    def finish(self, **summary: Any) -> None: ...
    def error(self, message: str) -> None: ...


class NoDisplay:
    def begin(self, **info: Any) -> None:
        pass

    def skipped(self, result: ClipResult) -> None:
        pass

    def event(self, event: Mapping[str, Any]) -> None:
        pass

    def clip_done(self, result: ClipResult) -> None:
        pass

    def tick(self) -> None:
        pass

    def finish(self, **summary: Any) -> None:
        pass

    def error(self, message: str) -> None:
        pass


class JsonlDisplay(NoDisplay):
    """The events of :mod:`.batch`'s docstring, one JSON object per line (flushed)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def _emit(self, event: str, **data: Any) -> None:
        self.stream.write(json.dumps({"event": event, **data}) + "\n")
        self.stream.flush()

    def begin(self, **info: Any) -> None:
        self._emit("batch_start", **info)

    def skipped(self, result: ClipResult) -> None:
        self._emit("clip_skipped", clip=result.name, source=result.source, take=result.take)

    def event(self, event: Mapping[str, Any]) -> None:
        self._emit(**event)

    def clip_done(self, result: ClipResult) -> None:
        data = result.to_json()
        self._emit("clip_done", clip=data.pop("name"), **data)

    def finish(self, **summary: Any) -> None:
        self._emit("done", **summary)

    def error(self, message: str) -> None:
        self._emit("error", message=message)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


class BarDisplay(NoDisplay):
    """A bar over the clips on stderr, with the frames done and the clips in progress; a
    line per finished clip above it."""

    def __init__(self, stream: TextIO | None = None, width: int = 24, columns: int = 118):
        self.stream = stream or sys.stderr
        self.width, self.columns = width, columns
        self.total = self.done = self.failed = self.frames = 0
        # clip -> (stage, done, total, frames tracked so far)
        self.running: dict[str, tuple[str, int, int, int]] = {}
        self.started = time.perf_counter()
        self.drawn = False

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * self.columns + "\r")
            self.drawn = False

    def begin(self, **info: Any) -> None:
        self.total = int(info["to_capture"])
        self.started = time.perf_counter()
        skipped = f", {info['skipped']} up to date (skipped)" if info["skipped"] else ""
        where = f" on {info['workers']} worker(s), {info['where']}" if self.total else ""
        self.stream.write(f"batch: {info['clips']} clips{skipped}, {self.total} to capture"
                          f"{where}\n")  # fmt: skip
        self.stream.flush()

    def event(self, event: Mapping[str, Any]) -> None:
        clip = str(event.get("clip"))
        if event["event"] == "clip_start":
            self.running[clip] = ("tracking", 0, int(event.get("frames") or 0), 0)
        elif event["event"] == "clip_progress":
            stage, done = str(event["stage"]), int(event["done"])
            tracked = self.running.get(clip, ("", 0, 0, 0))[3]
            tracked = max(tracked, done) if stage == "tracking" else tracked
            self.running[clip] = (stage, done, int(event["total"]), tracked)

    def clip_done(self, result: ClipResult) -> None:
        self.running.pop(result.name, None)
        self.done += 1
        self.frames += result.frames
        self._clear()
        if result.ok:
            rate = "" if result.detection_rate is None else f", {result.detection_rate:.0%} seen"
            jitter = "" if result.jitter_px is None else f", jitter {result.jitter_px:.2f} px/f^2"
            line = (f"  ok      {result.name}: {result.frames} frames, {result.hands} hand(s)"
                    f"{rate}{jitter}, {result.seconds:.1f} s")  # fmt: skip
        else:
            self.failed += 1
            line = f"  FAILED  {result.name}: {result.error}"
        self.stream.write(line[: self.columns * 3] + "\n")
        self.tick()

    def tick(self) -> None:
        if not self.total:
            return
        share = min(1.0, self.done / self.total)
        filled = int(self.width * share)
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        frames = self.frames + sum(r[3] for r in self.running.values())
        running = "  ".join(f"{c[:20]} {s.replace('_', ' ')} {d}/{t}"
                            for c, (s, d, t, _) in self.running.items())  # fmt: skip
        failed = f", {self.failed} failed" if self.failed else ""
        text = (f"[batch] [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                f"clips{failed}, {frames} frames  ETA {_fmt_eta(eta)}  {running}")  # fmt: skip
        self.stream.write("\r" + text[: self.columns].ljust(self.columns))
        self.stream.flush()
        self.drawn = True

    def finish(self, **summary: Any) -> None:
        self._clear()
        self.stream.flush()

    def error(self, message: str) -> None:
        self._clear()


def make_display(kind: str) -> BatchDisplay:
    """``bar``, ``jsonl`` or ``none``."""
    if kind == "jsonl":
        return JsonlDisplay()
    if kind == "bar":
        return BarDisplay()
    return NoDisplay()
