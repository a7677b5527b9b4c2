"""The benchmark suites. Each takes the reference workload's seconds and returns a Result."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from handmocap.errors import HandmocapError

from .synth.cache import ROOT, cached_clip
from .synth.ground_truth import load_ground_truth


@dataclass(frozen=True)
class Metric:
    name: str
    value: float | int | str
    unit: str
    note: str = ""


@dataclass(frozen=True)
class Result:
    suite: str
    description: str
    reference_s: float
    metrics: tuple[Metric, ...]

    def to_json(self) -> dict:
        return {
            "suite": self.suite,
            "description": self.description,
            "reference_s": self.reference_s,
            "metrics": [asdict(m) for m in self.metrics],
        }


def reference_seconds(repeats: int = 5) -> float:
    """Best-of-``repeats`` time of a fixed CPU workload (float64 matrix products on 2 threads
    and a scalar Python loop), used to turn timings into machine-independent ratios."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(384, 384))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        m = a
        for _ in range(40):
            m = np.tanh(m @ a)
        acc = 0.0
        for i in range(200_000):
            acc += i * 1e-9
        best = min(best, time.perf_counter() - started)
    return best


def _render_seconds_per_frame(size: int, frames: int) -> float:
    """Fresh render (no cache) of the demo preset at size x size; s/frame excluding set-up,
    as the renderer itself measures it."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "bench.synth.render_clip", "--preset", "demo", "--quiet",
               "--frames", str(frames), "--size", f"{size}x{size}", "--out", tmp]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise HandmocapError(f"render at {size}px failed: {proc.stderr[-1500:]}")
        gt = load_ground_truth(Path(tmp) / "demo.npz")
        return float(gt.header["render"]["seconds_per_frame"])


def suite_render(ref: float) -> Result:
    """Synthetic renderer speed: Cycles CPU, 16 samples, denoised, at 256 and 512 px."""
    metrics = []
    for size in (256, 512):
        spf = _render_seconds_per_frame(size, frames=6)
        metrics += [
            Metric(
                f"render_{size}px_s_per_frame", round(spf, 3), "s/frame", "6 frames, demo scene"
            ),
            Metric(f"render_{size}px_ratio_to_reference", round(spf / ref, 2), "x reference"),
        ]
    return Result("render", suite_render.__doc__.strip(), ref, tuple(metrics))


def suite_realism(ref: float) -> Result:
    """Do renders look like hands? MediaPipe's own solution (video mode) on rendered clips:
    detection rate, 2D landmark error against ground truth, handedness, throughput."""
    from .mediapipe_reference import run_mediapipe_solution, score_2d

    metrics = []
    for preset in ("demo", "two_crossing"):
        mp4, npz = cached_clip(preset)
        gt = load_ground_truth(npz)
        run = run_mediapipe_solution(mp4, max_hands=2)
        s = score_2d(run.frames, gt.keypoints_px, gt.visibility, gt.handedness, match_px=60.0)
        size = f"{gt.header['width']}x{gt.header['height']}"
        metrics += [
            Metric(f"{preset}_detection_rate", round(s.detection_rate, 4), "share",
                   f"{gt.num_frames} frames x {gt.num_hands} hand(s), {size}"),
            Metric(f"{preset}_median_2d_error", round(s.median_px, 2), "px", "all 21 keypoints"),
            Metric(f"{preset}_median_2d_error_visible", round(s.median_visible_px, 2), "px",
                   "keypoints visible in the truth"),
            Metric(f"{preset}_p90_2d_error", round(s.p90_px, 2), "px"),
            Metric(f"{preset}_handedness_accuracy", round(s.handedness_accuracy, 4), "share"),
            Metric(f"{preset}_mediapipe_fps", round(run.fps, 1), "frames/s",
                   f"decode included; {round(ref * run.fps, 2)} frames per reference unit"),
        ]  # fmt: skip
    return Result("realism", suite_realism.__doc__.strip(), ref, tuple(metrics))


SUITES: dict[str, Callable[[float], Result]] = {
    "render": suite_render,
    "realism": suite_realism,
}

__all__ = ["SUITES", "Metric", "Result", "reference_seconds"]
