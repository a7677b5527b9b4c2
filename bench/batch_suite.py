"""The ``batch`` benchmark suite: ``handmocap batch`` on a local Ray instance with 1 and 2
workers against ``handmocap capture`` run once per clip, one after another, on the same
clips in the same run (docs/architecture.md, "Batch capture on Ray").

Every figure is end to end, as a TD sees it: process start, Ray's start and shutdown, each
worker's model load, the captures, the report. The clips are copies of the ``smoke`` clip
(4 frames, 192x192, two hands), captured with the default settings (MANO fit and motion
prior); ``HANDMOCAP_BENCH_BATCH_CLIPS`` sets how many (default 6).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from handmocap.errors import HandmocapError

from .synth.cache import ROOT, cached_clip

CLIPS_ENV = "HANDMOCAP_BENCH_BATCH_CLIPS"
DEFAULT_CLIPS = 6
WORKERS = (1, 2)


def _clip_count() -> int:
    text = os.environ.get(CLIPS_ENV, "").strip()
    try:
        count = int(text) if text else DEFAULT_CLIPS
    except ValueError:
        raise HandmocapError(f"{CLIPS_ENV} must be an integer, got {text!r}") from None
    if count < 2:
        raise HandmocapError(f"{CLIPS_ENV} must be 2 or more, got {count}")
    return count


def _engine(args: list[str], env: dict[str, str]) -> float:
    """Seconds of one ``python -m handmocap.inference`` run; a failure is an error."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "handmocap.inference", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise HandmocapError(f"handmocap {args[0]} failed ({proc.returncode}): "
                             f"{proc.stderr[-1500:]}")  # fmt: skip
    return seconds


def suite_batch(ref: float):
    """Batch capture on Ray: clips per minute of `handmocap batch` (local Ray instance,
    models loaded once per worker) with 1 and 2 workers against one `handmocap capture`
    process per clip run one after another; copies of the smoke clip, default settings,
    same run; end to end (start-up included)."""
    from .suites import Metric, Result

    count = _clip_count()
    mp4, _ = cached_clip("smoke")
    ray_tmp = tempfile.mkdtemp(prefix="hmray", dir="/tmp")  # Ray's socket paths are short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    seconds: dict[str, float] = {}
    per_clip: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            clips = []
            for i in range(count):
                clips.append(folder / "clips" / f"clip_{i:02d}.mp4")
                clips[-1].parent.mkdir(exist_ok=True)
                shutil.copy(mp4, clips[-1])
            (folder / "sequential").mkdir()
            started = time.perf_counter()
            for clip in clips:
                take = folder / "sequential" / f"{clip.stem}.npz"
                _engine(["capture", str(clip), "-o", str(take), "--progress", "none"], env)
            seconds["sequential"] = time.perf_counter() - started
            for workers in WORKERS:
                out = folder / f"ray_{workers}"
                seconds[f"ray_{workers}"] = _engine(
                    ["batch", *map(str, clips), "-o", str(out), "--workers", str(workers),
                     "--progress", "none"], env,
                )  # fmt: skip
                report = json.loads((out / "report.json").read_text())
                if report["summary"]["ok"] != count:
                    raise HandmocapError(f"batch with {workers} worker(s): {report['summary']}")
                per_clip[f"ray_{workers}"] = statistics.median(
                    c["seconds"] for c in report["clips"]
                )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    def per_minute(key: str) -> float:
        return count * 60.0 / seconds[key]

    seq = per_minute("sequential")
    metrics = [
        Metric("clips", count, "clips", "copies of smoke: 4 frames, 192x192, two hands"),
        Metric("sequential_clips_per_minute", round(seq, 2), "clips/min",
               f"{seconds['sequential']:.1f} s, one `handmocap capture` process per clip"),
        Metric("sequential_s_per_clip_ratio_to_reference",
               round(seconds["sequential"] / count / ref, 2), "x reference"),
    ]  # fmt: skip
    for workers in WORKERS:
        key = f"ray_{workers}"
        metrics += [
            Metric(f"ray_{workers}_workers_clips_per_minute", round(per_minute(key), 2),
                   "clips/min", f"{seconds[key]:.1f} s end to end"),
            Metric(f"ray_{workers}_workers_ratio_to_sequential", round(per_minute(key) / seq, 2),
                   "x sequential", "clips per minute, same run"),
            Metric(f"ray_{workers}_workers_median_clip_s", round(per_clip[key], 2), "s",
                   "one clip on a warm worker (the report's seconds)"),
            Metric(f"ray_{workers}_workers_s_per_clip_ratio_to_reference",
                   round(seconds[key] / count / ref, 2), "x reference"),
        ]  # fmt: skip
    metrics.append(
        Metric("ray_2_to_1_workers", round(seconds["ray_1"] / seconds["ray_2"], 2), "x",
               f"{os.cpu_count()} CPU cores")
    )  # fmt: skip
    return Result("batch", suite_batch.__doc__.strip(), ref, tuple(metrics))
