"""The ``profile`` benchmark suite: a whole capture as a user runs it, against MediaPipe's
solution run the same way (docs/architecture.md, "Speed and threads").

- **End to end**: ``handmocap capture`` (MANO fit and motion prior on, the defaults) and a
  process running ``mp.solutions.hands`` over the same file, each a whole process from
  start to exit, alternated in pairs; medians of wall seconds and CPU seconds (user +
  system of the process and its threads, from ``wait4``). On the real office clip and on a
  two-hand rendered clip (the ``two_crossing`` render played forward and back, 470 frames,
  so that the hands cross ten times; de-occlusion on).
- **Under load**: the same pairs beside a CPU load the suite starts itself, one busy process
  per usable core (as a render beside the capture would be); the ratio to MediaPipe under
  load against the quiet ratio.
- **Where the time goes**: the parts of the capture from the take's ``timings``, start-up
  (interpreter and imports) and the rest (writing the take, exit) from the process's wall.
- **CPU by stage**: the same capture again with ``--skip-mano`` and with ``--skip-mano
  --no-deocclusion`` (whole processes, medians of CPU seconds): what tracking alone costs
  against MediaPipe's solution, and what the de-occlusion stage and the MANO stage (torch's
  import, the fit, the prior) add to it.
- **In one process**: the two-hand clip's tracking over frames decoded beforehand, and its
  tracks' MANO fits side by side in threads against one after the other (medians, wall and
  CPU): those parts alone, without the decoder, start-up and the other stages, for
  comparing changes to them.
- **The landmark network per crop**: the ported ONNX network under ONNX Runtime against the
  ``.tflite`` it was ported from under LiteRT's XNNPACK delegate (MediaPipe's runtime), one
  thread each, alternated blocks of calls on the same input.
- **Memory**: peak resident memory of a capture of a 21,080-frame input (the office clip at
  640x360, forward and back 17 times) against one of 2,480 frames.

``HANDMOCAP_BENCH_PROFILE_REPEATS`` sets the pairs per condition (default 3).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from handmocap.errors import HandmocapError

from .synth.cache import ROOT, cached_clip

OFFICE = ROOT.parent / "shared" / "data" / "real" / "one_hand_office.mp4"
LONG_CYCLES, SHORT_CYCLES = 17, 2  # forward-and-back passes of the office clip


@dataclass(frozen=True)
class ProcessRun:
    """One whole process: wall seconds, CPU seconds (user + system, its threads included),
    peak resident memory in MB (``VmHWM``, read every 20 ms)."""

    wall_s: float
    cpu_s: float
    peak_mb: float


def run_process(cmd: list[str]) -> ProcessRun:
    """Run ``cmd`` from the repository root to its exit and measure it."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        peak_kb = 0
        while True:  # VmHWM: the peak since exec (wait4's maxrss counts the forking parent)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise HandmocapError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): "
                                 f"{err.read()[-800:]}")  # fmt: skip
    peak_mb = peak_kb / 1024.0 if peak_kb else usage.ru_maxrss / 1024.0
    return ProcessRun(wall, usage.ru_utime + usage.ru_stime, peak_mb)


def _vm_hwm_kb(pid: int) -> int:
    """The process's peak resident memory so far in kB (0 where /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def engine_cmd(video: Path, take: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "handmocap.inference", "capture", str(video), "-o", str(take),
            "--progress", "none", *flags]  # fmt: skip


def mediapipe_cmd(video: Path) -> list[str]:
    return [sys.executable, "-m", "bench.mediapipe_reference", str(video)]


@contextlib.contextmanager
def cpu_load(processes: int) -> Iterator[None]:
    """``processes`` busy Python loops for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        time.sleep(0.5)  # let them take their cores
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def paired_runs(video: Path, take: Path, repeats: int) -> tuple[list[ProcessRun], list[ProcessRun]]:
    """``repeats`` alternated (engine, MediaPipe) pairs on ``video``."""
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(run_process(engine_cmd(video, take)))
        theirs.append(run_process(mediapipe_cmd(video)))
    return ours, theirs


def ping_pong(src: Path, dst: Path, cycles: int, size: tuple[int, int] | None = None) -> int:
    """Write ``src`` forward then backward ``cycles`` times into ``dst`` (MPEG-4 part 2),
    optionally scaled to ``size`` (w, h); returns the frame count."""
    cap = cv2.VideoCapture(str(src))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA) if size else bgr)
    cap.release()
    if len(frames) < 3:
        raise HandmocapError(f"cannot read {src} for the profile's inputs")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    loop = frames + frames[-2:0:-1]
    for _ in range(cycles):
        for bgr in loop:
            writer.write(bgr)
    writer.release()
    return len(loop) * cycles


def _median(runs: list[ProcessRun], field: str) -> float:
    return float(statistics.median(getattr(r, field) for r in runs))


def _import_seconds(repeats: int = 3) -> float:
    """Best-of wall seconds of a process that starts Python and imports the capture."""
    cmd = [sys.executable, "-c", "import handmocap.inference.cli, handmocap.inference.capture"]
    return min(run_process(cmd).wall_s for _ in range(repeats))


def _timings(take: Path) -> dict[str, float]:
    with np.load(take, allow_pickle=False) as raw:
        header = json.loads(str(raw["header"]))
    return {k: float(v) for k, v in header.get("timings", {}).items()}


def suite_profile(ref: float):
    """A whole capture against MediaPipe's solution, both as whole processes: end to end on
    the office clip (MANO fit and motion prior on) and on a two-hand rendered clip
    (de-occlusion on), quiet and beside a CPU load the suite starts; where the time goes;
    peak memory on a 21,080-frame input (see bench/profile_suite.py)."""
    from handmocap.inference.threads import usable_cores

    from .suites import Metric, Result

    repeats = int(os.environ.get("HANDMOCAP_BENCH_PROFILE_REPEATS", "3"))
    metrics: list[Metric] = []
    tmp = Path(tempfile.mkdtemp(prefix="hmprof"))
    take = tmp / "take.npz"
    crossing, _ = cached_clip("two_crossing", noise_seed=0)
    two_hands = tmp / "two_crossing_x5.mp4"
    n_two = ping_pong(crossing, two_hands, 5)
    clips = [("two_hands", two_hands, f"two_crossing forward and back 5x, {n_two} frames")]
    if OFFICE.is_file():
        clips.insert(0, ("office", OFFICE, "real, 621 frames, 1280x720, one hand"))
    else:
        metrics.append(
            Metric("office", "absent", "", f"{OFFICE} not found: office figures skipped")
        )
    load = usable_cores()
    quiet_ratio: dict[str, float] = {}
    for condition in ("quiet", "load"):
        with cpu_load(load) if condition == "load" else contextlib.nullcontext():
            for name, video, note in clips:
                ours, theirs = paired_runs(video, take, repeats)
                wall_ratio = _median(theirs, "wall_s") / _median(ours, "wall_s")
                cpu_ratio = _median(ours, "cpu_s") / _median(theirs, "cpu_s")
                # Each pair's own ratios: how far one run from the next moves the figure on
                # this shared machine.
                walls = _spread([t.wall_s / o.wall_s for o, t in zip(ours, theirs, strict=True)])
                cpus = _spread([o.cpu_s / t.cpu_s for o, t in zip(ours, theirs, strict=True)])
                tag = f"{name}_{condition}"
                where = "quiet" if condition == "quiet" else f"beside {load} busy processes"
                metrics += [
                    Metric(f"{tag}_engine_wall_s", round(_median(ours, "wall_s"), 2), "s",
                           f"median of {repeats}, whole process; {note}"),
                    Metric(f"{tag}_mediapipe_wall_s", round(_median(theirs, "wall_s"), 2), "s",
                           "mp.solutions.hands, whole process"),
                    Metric(f"{tag}_engine_cpu_s", round(_median(ours, "cpu_s"), 2), "s"),
                    Metric(f"{tag}_mediapipe_cpu_s", round(_median(theirs, "cpu_s"), 2), "s"),
                    Metric(f"{tag}_speed_vs_mediapipe", round(wall_ratio, 3), "x",
                           f"MediaPipe wall / ours, {where} (bar >= 1.5 quiet); "
                           f"pairs {walls}"),
                    Metric(f"{tag}_cpu_vs_mediapipe", round(cpu_ratio, 3), "x",
                           f"our CPU seconds / MediaPipe's (bar <= 1); pairs {cpus}"),
                ]  # fmt: skip
                if condition == "quiet":
                    quiet_ratio[name] = wall_ratio
                    metrics += _profile_metrics(name, ours, take)
                    metrics += _stage_cpu_metrics(name, video, take, ours, theirs, repeats)
                else:
                    kept = wall_ratio / quiet_ratio[name]
                    note = "speed vs MediaPipe: loaded / quiet (bar >= 0.75)"
                    metrics.append(Metric(f"{name}_load_ratio_vs_quiet", round(kept, 3), "x", note))
    metrics += _in_process_metrics("two_hands", two_hands, repeats)
    metrics += _network_metrics()
    metrics += _memory_metrics(tmp, take)
    return Result("profile", suite_profile.__doc__ or "", ref, tuple(metrics))


def _spread(ratios: list[float]) -> str:
    """The lowest and highest of ``ratios``, as text."""
    return f"{min(ratios):.3f}-{max(ratios):.3f}"


def _profile_metrics(name: str, ours: list[ProcessRun], take: Path) -> list:
    """Where the last quiet run's time went (the take's timings, seconds)."""
    from .suites import Metric

    timings = _timings(take)
    startup = _import_seconds()
    parts = ("models", "tracking", "settle_tracks", "fit_models", "mano_fit", "motion_prior")
    inside = sum(timings.get(k, 0.0) for k in parts)
    wall = ours[-1].wall_s
    out = [Metric(f"{name}_part_startup_s", round(startup, 3), "s",
                  "Python start and imports (a separate process, best of 3)")]  # fmt: skip
    for part, value in timings.items():
        out.append(Metric(f"{name}_part_{part}_s", round(value, 3), "s",
                          f"{100 * value / wall:.1f}% of the whole process"))  # fmt: skip
    out.append(Metric(f"{name}_part_rest_s", round(wall - startup - inside, 3), "s",
                      "backend choice, video open, writing the take, exit"))  # fmt: skip
    out.append(Metric(f"{name}_peak_memory_mb", round(ours[-1].peak_mb, 1), "MB"))
    return out


def _stage_cpu_metrics(name: str, video: Path, take: Path, full: list[ProcessRun],
                       mediapipe: list[ProcessRun], repeats: int) -> list:  # fmt: skip
    """CPU seconds of the capture without the MANO stage and without both it and the
    de-occlusion stage (``repeats`` alternated runs each, medians), the stages' shares
    by difference with the full capture's ``full`` runs, and tracking alone against
    MediaPipe's ``mediapipe`` runs."""
    from .suites import Metric

    no_mano, tracking = [], []
    for _ in range(repeats):
        no_mano.append(run_process(engine_cmd(video, take, "--skip-mano")))
        tracking.append(run_process(engine_cmd(video, take, "--skip-mano", "--no-deocclusion")))
    cpu_full, cpu_no_mano = _median(full, "cpu_s"), _median(no_mano, "cpu_s")
    cpu_tracking, cpu_mp = _median(tracking, "cpu_s"), _median(mediapipe, "cpu_s")
    note = f"median of {repeats} whole processes"
    return [
        Metric(f"{name}_cpu_no_mano_s", round(cpu_no_mano, 2), "s", f"--skip-mano, {note}"),
        Metric(f"{name}_cpu_tracking_only_s", round(cpu_tracking, 2), "s",
               f"--skip-mano --no-deocclusion, {note}"),
        Metric(f"{name}_cpu_mano_stage_s", round(cpu_full - cpu_no_mano, 2), "s",
               "full capture less --skip-mano: the fit and the prior"),
        Metric(f"{name}_cpu_deocclusion_stage_s", round(cpu_no_mano - cpu_tracking, 2), "s",
               "--skip-mano less --skip-mano --no-deocclusion"),
        Metric(f"{name}_tracking_only_cpu_vs_mediapipe", round(cpu_tracking / cpu_mp, 3), "x",
               "tracking alone (the same two networks as MediaPipe's) against its solution"),
    ]  # fmt: skip


def _in_process_metrics(name: str, video: Path, repeats: int) -> list:
    """Two parts of a capture timed alone in one process (no decoder, start-up or other
    stage in the figure): the tracking of ``video``'s frames decoded beforehand
    (``HandTracker.step``), and the MANO fit of its tracks side by side in threads, as a
    capture runs them, against one after the other (what Python's lock costs the threads,
    docs/architecture.md, "Speed and threads"). Medians of ``repeats`` runs, alternated,
    wall and CPU seconds."""
    from handmocap.inference.capture import CaptureConfig, capture
    from handmocap.inference.fit_settings import fit_assets
    from handmocap.inference.mano_fit import load_fitter
    from handmocap.inference.threads import blas_threads, map_beside, opencv_threads, side_pool
    from handmocap.inference.tracker import HandTracker, TrackerConfig
    from handmocap.inference.video import VideoSource

    from .suites import Metric

    frames = [rgb for _, rgb in VideoSource(video)]  # the engine's own reader, RGB
    models = HandTracker(TrackerConfig())
    take = capture(video, CaptureConfig(fit_mano=False), tracker=models).take
    fitter = load_fitter(fit_assets(None), models.backend)
    k = take.header.intrinsics

    def fit(track) -> None:
        fitter.fit(track.handedness, track.keypoints_2d, track.keypoints_rel_depth,
                   track.confidence, k)  # fmt: skip

    def track() -> None:
        tracker = HandTracker(TrackerConfig(), models.palm, models.landmarker)
        with opencv_threads(1):
            for frame in frames:
                tracker.step(frame)

    def threads() -> None:
        with blas_threads(1):
            map_beside(side_pool(len(take.tracks)), fit, take.tracks)

    def one_by_one() -> None:
        with blas_threads(1):
            for t in take.tracks:
                fit(t)

    runs: dict[str, list[tuple[float, float]]] = {"tracking": [], "fit_threads": [],
                                                  "fit_one_by_one": []}  # fmt: skip
    for _ in range(repeats):
        for key, fn in (("tracking", track), ("fit_threads", threads),
                        ("fit_one_by_one", one_by_one)):  # fmt: skip
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            runs[key].append((time.perf_counter() - wall, time.process_time() - cpu))
    out = []
    for key, values in runs.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        note = f"in process, median of {repeats}; {len(frames)} frames, {len(take.tracks)} tracks"
        out += [Metric(f"{name}_in_process_{key}_wall_s", round(wall, 3), "s", note),
                Metric(f"{name}_in_process_{key}_cpu_s", round(cpu, 3), "s")]  # fmt: skip
    return out


def _network_metrics(calls: int = 50, blocks: int = 4) -> list:
    """Milliseconds per crop of the landmark network, one thread: the port under ONNX
    Runtime against the original ``.tflite`` under LiteRT's XNNPACK delegate, alternated
    blocks of ``calls`` calls, median over all calls."""
    from handmocap.inference.backend import choose_backend, create_session
    from handmocap.models.mediapipe_port import built_mediapipe_models

    from .suites import Metric

    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        return [Metric("landmark_network", "absent", "", "tflite_runtime not installed")]
    files = built_mediapipe_models()
    session = create_session(files.hand_landmark, choose_backend("cpu"), threads=1)
    litert = Interpreter(model_path=str(files.tflite("hand_landmark")), num_threads=1)
    litert.allocate_tensors()
    slot = litert.get_input_details()[0]["index"]
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)

    def run_onnx() -> None:
        session.run(None, {"image": x})

    def run_litert() -> None:
        litert.set_tensor(slot, x)
        litert.invoke()

    times: dict[str, list[float]] = {"onnx": [], "litert": []}
    for fn in (run_onnx, run_litert):  # warm-up
        for _ in range(5):
            fn()
    for _ in range(blocks):
        for key, fn in (("onnx", run_onnx), ("litert", run_litert)):
            for _ in range(calls):
                started = time.perf_counter()
                fn()
                times[key].append(1000 * (time.perf_counter() - started))
    onnx_ms, litert_ms = statistics.median(times["onnx"]), statistics.median(times["litert"])
    note = f"one thread, median of {calls * blocks} calls"
    return [
        Metric("landmark_network_onnxruntime_ms", round(onnx_ms, 2), "ms", note),
        Metric("landmark_network_litert_ms", round(litert_ms, 2), "ms",
               "the .tflite the port read, XNNPACK, " + note),
        Metric("landmark_network_onnxruntime_vs_litert", round(litert_ms / onnx_ms, 3), "x",
               "LiteRT's time / ours (above 1: ours is faster)"),
    ]  # fmt: skip


def _memory_metrics(tmp: Path, take: Path) -> list:
    """Peak memory of a long and a short capture of the same footage."""
    from .suites import Metric

    source = OFFICE if OFFICE.is_file() else cached_clip("demo")[0]
    peaks = {}
    for label, cycles in (("short", SHORT_CYCLES), ("long", LONG_CYCLES)):
        video = tmp / f"{label}.mp4"
        frames = ping_pong(source, video, cycles, size=(640, 360) if source == OFFICE else None)
        run = run_process(engine_cmd(video, take))
        peaks[label] = (frames, run)
        video.unlink()
    (n_short, short), (n_long, long) = peaks["short"], peaks["long"]
    return [
        Metric("memory_short_frames", n_short, "frames", f"{source.name} forward and back"),
        Metric("memory_short_peak_mb", round(short.peak_mb, 1), "MB", f"{short.wall_s:.0f} s"),
        Metric("memory_long_frames", n_long, "frames"),
        Metric("memory_long_peak_mb", round(long.peak_mb, 1), "MB", f"{long.wall_s:.0f} s"),
        Metric("memory_growth_mb_per_1000_frames",
               round(1000 * (long.peak_mb - short.peak_mb) / (n_long - n_short), 2), "MB",
               "peak memory's growth with the input's length"),
    ]  # fmt: skip


__all__ = ["ProcessRun", "cpu_load", "ping_pong", "run_process", "suite_profile"]
