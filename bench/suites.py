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

from .batch_suite import suite_batch
from .identity_sweep import suite_identity_sweep
from .prior_eval import pa_mpjpe_mm
from .profile_suite import suite_profile
from .synth.cache import ROOT, cached_clip
from .synth.ground_truth import load_ground_truth
from .two_hands_suite import suite_two_hands


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

    @classmethod
    def from_json(cls, data: dict) -> Result:
        """The result :meth:`to_json` wrote (a ``written`` time or other keys are ignored)."""
        return cls(data["suite"], data["description"], float(data["reference_s"]),
                   tuple(Metric(**m) for m in data["metrics"]))  # fmt: skip


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


OFFICE = ROOT.parent / "shared" / "data" / "real" / "one_hand_office.mp4"


def _engine_fps(video: Path, repeats: int = 2) -> tuple[float, float]:
    """Best-of-``repeats`` frames/s of our engine and of MediaPipe's solution, alternated so
    that both see the same machine load. Decode included for both."""
    from handmocap.inference.capture import CaptureConfig, capture
    from handmocap.inference.tracker import HandTracker, TrackerConfig

    from .mediapipe_reference import run_mediapipe_solution

    tracker_config = TrackerConfig()
    ours = theirs = 0.0
    for _ in range(repeats):
        # A fresh tracker each run (model load excluded: the add-on loads once per capture).
        # Tracking only: MediaPipe's solution does no MANO fit (the mano suite times that).
        result = capture(video, CaptureConfig(fit_mano=False), tracker=HandTracker(tracker_config))
        ours = max(ours, result.fps)
        theirs = max(theirs, run_mediapipe_solution(video, max_hands=2).fps)
    return ours, theirs


def _looped_video(source: Path, frames: int, size: int, dest: Path) -> Path:
    import cv2

    cap = cv2.VideoCapture(str(source))
    clip = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        clip.append(cv2.resize(img, (size, size)))
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"mp4v"), 24.0, (size, size))
    for i in range(frames):
        writer.write(clip[i % len(clip)])
    writer.release()
    return dest


_PEAK_RSS = """
import resource, sys
from pathlib import Path
from handmocap.inference.capture import capture
from handmocap.take import FrameRange
from handmocap.inference.capture import CaptureConfig
config = CaptureConfig(frames=FrameRange(0, int(sys.argv[2])), fit_mano=False)
r = capture(Path(sys.argv[1]), config)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, r.fps)
"""


def _peak_rss_mb(video: Path, frames: int) -> tuple[float, float]:
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(video), str(frames)],
                          capture_output=True, text=True, check=False, cwd=ROOT)  # fmt: skip
    if proc.returncode != 0:
        raise HandmocapError(f"peak-memory run failed: {proc.stderr[-1500:]}")
    rss, fps = proc.stdout.split()
    return float(rss), float(fps)


def suite_engine(ref: float) -> Result:
    """Detection + landmark tracking: our throughput against MediaPipe's solution (same
    clip, same run, decode included), 2D accuracy against rendered ground truth, and peak
    memory on a 20,000-frame input."""
    from handmocap.inference.capture import CaptureConfig, capture

    from .mediapipe_reference import detections_from_take, run_mediapipe_solution, score_2d

    metrics = []
    videos = [("office_1280x720", OFFICE)] if OFFICE.is_file() else []
    videos.append(("demo_512", cached_clip("demo")[0]))
    for label, video in videos:
        ours, theirs = _engine_fps(video)
        metrics += [
            Metric(f"{label}_ours_fps", round(ours, 1), "frames/s", "CPU, decode included"),
            Metric(
                f"{label}_mediapipe_fps",
                round(theirs, 1),
                "frames/s",
                "mp.solutions.hands video mode",
            ),
            Metric(f"{label}_speedup_vs_mediapipe", round(ours / theirs, 2), "x", "target >= 1.5"),
        ]
    for preset in ("demo", "two_crossing"):
        mp4, npz = cached_clip(preset)
        gt = load_ground_truth(npz)
        take = capture(mp4, CaptureConfig(fit_mano=False)).take
        frames = detections_from_take(take, gt.num_frames)
        ours = score_2d(frames, gt.keypoints_px, gt.visibility, gt.handedness, 60.0)
        theirs = score_2d(run_mediapipe_solution(mp4, 2).frames, gt.keypoints_px, gt.visibility,
                          gt.handedness, 60.0)  # fmt: skip
        for who, s in (("ours", ours), ("mediapipe", theirs)):
            metrics += [
                Metric(f"{preset}_{who}_detection_rate", round(s.detection_rate, 4), "share"),
                Metric(f"{preset}_{who}_median_2d_error", round(s.median_px, 2), "px", "vs truth"),
                Metric(
                    f"{preset}_{who}_handedness_accuracy", round(s.handedness_accuracy, 4), "share"
                ),
            ]
    with tempfile.TemporaryDirectory() as tmp:
        long = _looped_video(cached_clip("demo")[0], 20_000, 256, Path(tmp) / "long.mp4")
        short_rss, _ = _peak_rss_mb(long, 1_000)
        long_rss, long_fps = _peak_rss_mb(long, 20_000)
    metrics += [
        Metric("peak_rss_1000_frames", round(short_rss, 1), "MB", "looped demo clip at 256 px"),
        Metric("peak_rss_20000_frames", round(long_rss, 1), "MB", f"{long_fps:.0f} fps"),
        Metric("rss_growth_per_1000_frames", round((long_rss - short_rss) / 19, 2), "MB",
               "the take's own arrays are ~0.6 MB per 1000 frames"),
    ]  # fmt: skip
    return Result("engine", suite_engine.__doc__.strip(), ref, tuple(metrics))


def suite_mano(ref: float) -> Result:
    """MANO regression on rendered clips with ground truth (true field of view given):
    PA-MPJPE of MediaPipe's world landmarks, of the IK network alone and after refinement;
    per-joint rotation error against the rendered rotations; time per frame of each stage;
    and what fitting adds to the engine's time on the real office video."""
    import time

    from handmocap.inference.backend import choose_backend
    from handmocap.inference.capture import CaptureConfig, capture
    from handmocap.inference.mano_fit import build_fitter, lift_keypoints
    from handmocap.retarget.rotations import angle_between, axis_angle_to_matrix

    fitter, _ = build_fitter(None, choose_backend("cpu"))
    metrics = []
    for preset in ("demo", "two_crossing"):
        mp4, npz = cached_clip(preset)
        gt = load_ground_truth(npz)
        take = capture(
            mp4, CaptureConfig(fit_mano=False, fov_deg=gt.header["spec"]["fov_deg"])
        ).take
        k = gt.intrinsics.astype(np.float64)
        errs: dict[str, list[np.ndarray]] = {"mediapipe_world": [], "ik": [], "refined": []}
        rot: dict[str, list[np.ndarray]] = {
            "ik_fingers": [],
            "refined_fingers": [],
            "refined_global": [],
        }
        ik_s = fit_s = 0.0
        frames = 0
        for tr in take.tracks:
            h = gt.handedness.index(tr.handedness)
            truth = gt.keypoints_cam[tr.frames, h].astype(np.float64)
            truth_rot = axis_angle_to_matrix(gt.mano_pose[tr.frames, h])
            started = time.perf_counter()
            ik_rot, _ = fitter.ik(
                lift_keypoints(tr.keypoints_2d, tr.keypoints_rel_depth, k), tr.handedness
            )
            ik_s += time.perf_counter() - started
            started = time.perf_counter()
            fit = fitter.fit(
                tr.handedness, tr.keypoints_2d, tr.keypoints_rel_depth, tr.confidence, k
            )
            fit_s += time.perf_counter() - started
            frames += len(tr)
            errs["mediapipe_world"].append(
                pa_mpjpe_mm(tr.world_landmarks.astype(np.float64), truth)
            )
            errs["ik"].append(pa_mpjpe_mm(fit.ik_keypoints_3d, truth))
            errs["refined"].append(pa_mpjpe_mm(fit.keypoints_3d, truth))
            rot["ik_fingers"].append(np.degrees(angle_between(ik_rot[:, 1:], truth_rot[:, 1:])))
            fitted = axis_angle_to_matrix(fit.pose)
            rot["refined_fingers"].append(
                np.degrees(angle_between(fitted[:, 1:], truth_rot[:, 1:]))
            )
            rot["refined_global"].append(np.degrees(angle_between(fitted[:, 0], truth_rot[:, 0])))
        pa = {name: float(np.mean(np.concatenate(v))) for name, v in errs.items()}
        for name in errs:
            note = f"mean over {frames} hand-frames"
            metrics.append(Metric(f"{preset}_pa_mpjpe_{name}", round(pa[name], 2), "mm", note))
        lower = round(1 - pa["refined"] / pa["mediapipe_world"], 3)
        metrics.append(
            Metric(f"{preset}_refined_vs_mediapipe_world", lower, "share lower", "target >= 0.20")
        )
        for name, v in rot.items():
            e = np.concatenate([x.ravel() for x in v])
            prefix = f"{preset}_rotation_error_{name}"
            metrics.append(Metric(f"{prefix}_median", round(float(np.median(e)), 2), "deg"))
            metrics.append(Metric(f"{prefix}_p90", round(float(np.percentile(e, 90)), 2), "deg"))
        metrics.append(Metric(f"{preset}_ik_ms_per_frame", round(1000 * ik_s / frames, 3), "ms"))
        metrics.append(
            Metric(f"{preset}_refinement_ms_per_frame", round(1000 * fit_s / frames, 3), "ms")
        )
    if OFFICE.is_file():
        from handmocap.inference.tracker import HandTracker, TrackerConfig

        engine = capture(OFFICE, tracker=HandTracker(TrackerConfig())).take.header.engine
        share = engine.mano_seconds / engine.tracking_seconds
        seconds = {"tracking": engine.tracking_seconds, "mano": engine.mano_seconds}
        per_frame = {k: round(1000 * s / engine.frames_read, 2) for k, s in seconds.items()}
        metrics += [
            Metric("office_tracking_ms_per_frame", per_frame["tracking"], "ms"),
            Metric("office_mano_ms_per_frame", per_frame["mano"], "ms", "IK + refinement + set-up"),
            Metric("office_mano_share_of_engine_time", round(share, 3), "share", "target <= 0.30"),
        ]  # fmt: skip
    return Result("mano", suite_mano.__doc__.strip(), ref, tuple(metrics))


def suite_retarget(ref: float) -> Result:
    """Retargeting: the rotations the renderer drew each clip with go through the solver onto
    Mixamo-, Unreal- and Rigify-named test rigs (random rolls, 25 deg rest curl, own
    proportions); each bone's posed direction is compared with the rendered keypoints and its
    flexion axis with the render-time joint frames. Speed: both hands of a 32-bone rig over
    10,000 frames (target < 2 s)."""
    from handmocap.models.webxr_asset import ensure_webxr_hand
    from handmocap.models.webxr_hand import load_webxr_hand
    from handmocap.retarget.mano_rest import default_rest_keypoints
    from handmocap.retarget.rig_profiles import PROFILES_BY_ID, detect_rig
    from handmocap.retarget.solver import HandRetargeter

    from .retarget_eval import ground_truth_errors
    from .rigs import build_test_rig, known_poses, side_flex_axes

    files = ensure_webxr_hand()
    hands = {s: load_webxr_hand(files.glb(s), s) for s in ("left", "right")}
    metrics = []
    for preset in ("demo", "two_crossing"):
        gt = load_ground_truth(cached_clip(preset)[1])
        for profile in ("mixamo", "unreal", "rigify_metarig"):
            for e in ground_truth_errors(gt, hands, profile):
                key = f"{preset}_{profile}_{e.side}"
                metrics += [
                    Metric(f"{key}_direction_median", round(float(np.median(e.direction_deg)), 3),
                           "deg", "target <= 3"),
                    Metric(f"{key}_direction_max", round(float(e.direction_deg.max()), 3), "deg",
                           "target <= 8"),
                    Metric(f"{key}_twist_median", round(float(np.median(e.twist_deg)), 2), "deg",
                           "target <= 5"),
                    Metric(f"{key}_twist_max", round(float(e.twist_deg.max()), 2), "deg"),
                ]  # fmt: skip
    rest = {s: default_rest_keypoints(s) for s in ("left", "right")}
    rig = build_test_rig(PROFILES_BY_ID["unreal"], rest, side_flex_axes(hands["right"]), 0)
    mapping = detect_rig(rig.spec.bone_names)
    frames = 10_000
    base = known_poses(hands["right"], n_random=96)
    solvers = {s: HandRetargeter(rig.spec, mapping.hands[s]) for s in ("left", "right")}
    pose = {s: np.resize(base[s], (frames, 16, 3)) for s in solvers}
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        bones = sum(len(solvers[s].solve(pose[s]).bone_names) for s in solvers)
        best = min(best, time.perf_counter() - started)
    metrics += [
        Metric("solve_bones", bones, "bones", "both hands, wrist included"),
        Metric("solve_10000_frames_s", round(best, 3), "s", "best of 3; target < 2"),
        Metric("solve_ratio_to_reference", round(best / ref, 2), "x reference"),
    ]
    return Result("retarget", suite_retarget.__doc__.strip(), ref, tuple(metrics))


def suite_keyframes(ref: float) -> Result:
    """Writing captured animation into Blender: 2 hands x 20 bones x 10,000 frames of
    quaternion keys (1.6 million keys on 160 F-curves) with the add-on's bulk writer, against
    a keyframe_insert loop. The loop is timed on 2 bones over the same 10,000 frames (8 of
    the 160 curves: each curve costs the same and they do not interact) and scaled by 20.
    Targets: bulk < 3 s and >= 50x faster."""
    import bpy

    from blender_addon.armature_io import create_armature
    from blender_addon.keyframes import ActionWriter
    from handmocap.models.webxr_asset import ensure_webxr_hand
    from handmocap.models.webxr_hand import load_webxr_hand
    from handmocap.retarget.mano_rest import default_rest_keypoints
    from handmocap.retarget.rig_profiles import PROFILES_BY_ID, detect_rig
    from handmocap.retarget.solver import BonePoses

    from .rigs import build_test_rig, side_flex_axes

    files = ensure_webxr_hand()
    right = load_webxr_hand(files.glb("right"), "right")
    rest = {s: default_rest_keypoints(s) for s in ("left", "right")}
    spec = build_test_rig(PROFILES_BY_ID["unreal"], rest, side_flex_axes(right), 0).spec
    mapping = detect_rig(spec.bone_names)
    frames = np.arange(1, 10_001, dtype=np.float64)
    rng = np.random.default_rng(0)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    obj = create_armature(spec, "bench_rig")
    poses = []
    for side, hand in sorted(mapping.hands.items()):
        bones = tuple(b for r, b in hand.bones.items() if r != "forearm")  # 20 per hand
        q = rng.normal(size=(len(frames), len(bones), 4))
        poses.append(BonePoses(side, bones, q / np.linalg.norm(q, axis=-1, keepdims=True)))
    bones_total = sum(len(p.bone_names) for p in poses)
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        for p in poses:
            ActionWriter(obj, f"bulk_{p.side}", assign=False).bone_curves(p, frames)
        best = min(best, time.perf_counter() - started)
    keys = bones_total * 4 * len(frames)
    sample = poses[0].bone_names[:2]
    started = time.perf_counter()
    for k, name in enumerate(sample):
        pb = obj.pose.bones[name]
        pb.rotation_mode = "QUATERNION"
        for t, f in enumerate(frames):
            pb.rotation_quaternion = poses[0].rotations[t, k].tolist()
            pb.keyframe_insert("rotation_quaternion", frame=f)
    insert_sample = time.perf_counter() - started
    insert_full = insert_sample * bones_total / len(sample)
    return Result("keyframes", suite_keyframes.__doc__.strip(), ref, (
        Metric("bones", bones_total, "bones"),
        Metric("keys", keys, "keys"),
        Metric("bulk_write_s", round(best, 3), "s", "best of 2; target < 3"),
        Metric("bulk_ratio_to_reference", round(best / ref, 2), "x reference"),
        Metric("keyframe_insert_2_bones_s", round(insert_sample, 2), "s"),
        Metric("keyframe_insert_all_bones_s", round(insert_full, 1), "s", "scaled from 2 bones"),
        Metric("speedup", round(insert_full / best, 1), "x", "target >= 50"),
    ))  # fmt: skip


PRIOR_CLIPS = ("demo", "two_crossing", "occluded", "fast", "two_tutting")
PRIOR_SWEEP = (0.5, 1.0, 1.5, 2.0, 3.0)
INFILL_RUNS = (5, 10, 15, 20, 30)


def _prior_clip_metrics(preset: str, smoothings: tuple[float, ...]) -> list[Metric]:
    """Per-frame fit vs the prior at each strength on one rendered clip (tracks pooled,
    weighted by their frames)."""
    from handmocap.inference.capture import CaptureConfig, capture
    from handmocap.inference.motion_prior import DEFAULT_SMOOTHING, PriorConfig

    from . import prior_eval as pe

    mp4, npz = cached_clip(preset)
    gt = load_ground_truth(npz)
    config = CaptureConfig(fov_deg=gt.header["spec"]["fov_deg"], prior=PriorConfig(0.0))
    take = capture(mp4, config).take

    def truth(tr):
        h = gt.handedness.index(tr.handedness)
        return pe.TrackTruth(gt.keypoints_cam[tr.frames, h].astype(np.float64),
                             gt.mano_pose[tr.frames, h].astype(np.float64))  # fmt: skip

    def pooled(tracks, measure) -> dict[str, float]:
        """Means over the tracks weighted by their frames; counts summed."""
        rows = [(len(tr), measure(tr, truth(tr))) for tr in tracks]
        keys = set.intersection(*(set(m) for _, m in rows))
        total = sum(n for n, _ in rows)
        return {k: sum(m[k] for _, m in rows) if k == "infilled_frames"
                else sum(n * m[k] for n, m in rows) / total for k in sorted(keys)}  # fmt: skip

    metrics = []
    base = pooled(take.tracks, pe.track_metrics)
    marks = pooled(take.tracks, lambda tr, t: pe.landmark_metrics(tr, t, take.header.intrinsics))
    for name, value in marks.items():
        metrics.append(Metric(f"{preset}_{name}", round(value, 3), "deg"))

    def placement(tracks) -> float:
        return pooled(tracks, lambda tr, t: pe.placement_metrics(
            tr, t, take.header.intrinsics))["placement_2d_px"]  # fmt: skip

    for s in smoothings:
        tracks, seconds = pe.smooth_take(take, s)
        got = pooled(tracks, pe.track_metrics)
        tag = "default" if s == DEFAULT_SMOOTHING else f"S{s:g}"
        if s == DEFAULT_SMOOTHING:
            metrics += [
                Metric(f"{preset}_placement_2d_px_perframe", round(placement(take.tracks), 2),
                       "px", "median keypoint distance in the picture, per-frame fit"),
                Metric(f"{preset}_placement_2d_px_prior", round(placement(tracks), 2), "px",
                       f"smoothing {s:g}; the hand's place kept, unlike PA-MPJPE"),
            ]  # fmt: skip
            for name, value in got.items():
                if name in base:
                    metrics.append(Metric(f"{preset}_{name}_perframe", round(base[name], 3), ""))
                metrics.append(Metric(f"{preset}_{name}_prior", round(value, 3), "",
                                      f"smoothing {s:g}"))  # fmt: skip
            if "pa_mpjpe_infilled_mm" in got:
                ratio = got["pa_mpjpe_infilled_mm"] / got["pa_mpjpe_mm"]
                metrics.append(Metric(f"{preset}_infilled_vs_visible_error", round(ratio, 3),
                                      "x", "target <= 1.5"))  # fmt: skip
            metrics.append(Metric(f"{preset}_prior_ms", round(1000 * seconds, 1), "ms"))
        ratio = got["accel_error_mm"] / base["accel_error_mm"]
        metrics.append(Metric(f"{preset}_accel_ratio_{tag}", round(ratio, 3), "x per-frame",
                              f"smoothing {s:g}; target <= 0.333"))  # fmt: skip
        metrics.append(Metric(f"{preset}_flexion_error_median_{tag}",
                              round(got["flexion_error_median_deg"], 2), "deg",
                              f"smoothing {s:g}"))  # fmt: skip
        metrics.append(Metric(f"{preset}_pa_mpjpe_{tag}", round(got["pa_mpjpe_mm"], 2), "mm"))
    if preset in ("demo", "fast") and len(take.tracks) == 1:
        metrics += _infill_runs(preset, take, truth)
    if preset == "demo":
        metrics += _addon_reduce_keys(take, (0.0, *smoothings))
    return metrics


def _addon_reduce_keys(take, smoothings: tuple[float, ...]) -> list[Metric]:
    """The share of keys "Reduce keys" at 1 deg removes in Blender (the add-on's own
    apply_take and reduce_keys on a WebXR hand rig) from the take re-solved at each
    strength."""
    from handmocap.inference.motion_prior import DEFAULT_SMOOTHING, PriorConfig, resolve_take

    from .addon_keys import reduced_share

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in smoothings:
            path = resolve_take(take, PriorConfig(s))[0].save(Path(tmp) / f"s{s:g}.npz")
            before, after = reduced_share(path)
            tag = "perframe" if s == 0 else "default" if s == DEFAULT_SMOOTHING else f"S{s:g}"
            note = f"{before} keys; smoothing {s:g}; target >= 0.60"
            share = round(1 - after / before, 3)
            out.append(Metric(f"demo_addon_reduce_keys_removed_{tag}", share, "share", note))
    return out


def _infill_runs(preset: str, take, truth) -> list[Metric]:
    """Hide runs of 5..30 frames in the middle of the track (rows dropped before the
    prior) and compare the error on the filled frames with the visible ones."""
    from handmocap.inference.motion_prior import PriorConfig, smooth_tracks
    from handmocap.take import FrameFlag

    from . import prior_eval as pe

    tr = take.tracks[0]
    h = take.header
    out = []
    for length in INFILL_RUNS:
        start = (len(tr) - length) // 2
        holed = pe.drop_run(tr, start, length)
        config = PriorConfig(max_gap_s=10.0)  # fill every run, to see the error grow
        (filled,), _ = smooth_tracks((holed,), h.fps, 1, h.intrinsics, config)
        m = pe.track_metrics(filled, truth(filled))
        hidden = (filled.flags & FrameFlag.INFILLED) > 0
        if not hidden.any():
            continue
        ratio = m["pa_mpjpe_infilled_mm"] / m["pa_mpjpe_mm"]
        note = f"PA-MPJPE {m['pa_mpjpe_infilled_mm']:.1f} mm on the run"
        out.append(Metric(f"{preset}_infill_{length}_frames_error_ratio", round(ratio, 3),
                          "x visible", note))  # fmt: skip
    return out


def _prior_office_metrics() -> list[Metric]:
    """The real office clip: calm-third jitter of MediaPipe's world landmarks, the per-frame
    fit and the prior; keys removed; the stage's share of the whole capture."""
    from handmocap.inference.capture import CaptureConfig, capture
    from handmocap.inference.motion_prior import DEFAULT_SMOOTHING, PriorConfig

    from . import prior_eval as pe

    started = time.perf_counter()
    take = capture(OFFICE, CaptureConfig(prior=PriorConfig(0.0))).take
    capture_s = time.perf_counter() - started
    tracks, prior_s = pe.smooth_take(take, DEFAULT_SMOOTHING)
    tr = max(take.tracks, key=len)
    sm = max(tracks, key=len)
    return [
        Metric("office_calm_jitter_mediapipe_world", round(pe.calm_third_jitter_mm(
            tr.world_landmarks.astype(np.float64)), 3), "mm/frame^2"),
        Metric("office_calm_jitter_perframe", round(pe.calm_third_jitter_mm(
            tr.keypoints_3d.astype(np.float64)), 3), "mm/frame^2"),
        Metric("office_calm_jitter_prior", round(pe.calm_third_jitter_mm(
            sm.keypoints_3d.astype(np.float64)), 3), "mm/frame^2", "target <= 0.8"),
        Metric("office_keys_removed_perframe", round(pe.keys_removed(
            tr.frames, tr.mano_pose.astype(np.float64)), 3), "share"),
        Metric("office_keys_removed_prior", round(pe.keys_removed(
            sm.frames, sm.mano_pose.astype(np.float64)), 3), "share"),
        Metric("office_capture_s", round(capture_s, 2), "s", "per-frame capture, whole"),
        Metric("office_prior_s", round(prior_s, 3), "s"),
        Metric("office_prior_share_of_capture", round(prior_s / capture_s, 4), "share",
               "target <= 0.20"),
    ]  # fmt: skip


def _prior_long_track() -> list[Metric]:
    """10,000 frames of one track (the demo's per-frame fit repeated), timed, and the
    stage's peak Python allocation per frame at 1,000 and 10,000 frames (flat = linear)."""
    import tracemalloc
    from dataclasses import replace

    from handmocap.inference.capture import CaptureConfig, capture
    from handmocap.inference.motion_prior import PriorConfig, smooth_tracks
    from handmocap.take import ROW_FIELDS

    mp4, npz = cached_clip("demo")
    fov = load_ground_truth(npz).header["spec"]["fov_deg"]
    take = capture(mp4, CaptureConfig(fov_deg=fov, prior=PriorConfig(0.0))).take
    tr = take.tracks[0]
    out = []
    for n in (1_000, 10_000):
        idx = np.arange(n) % len(tr)
        rows = {k: getattr(tr, k)[idx] for k in ROW_FIELDS if getattr(tr, k) is not None}
        long = replace(tr, **{**rows, "frames": np.arange(n)})
        args = ((long,), take.header.fps, 1, take.header.intrinsics, PriorConfig())
        started = time.perf_counter()
        smooth_tracks(*args)
        seconds = time.perf_counter() - started
        tracemalloc.start()
        smooth_tracks(*args)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out.append(Metric(f"prior_{n}_frames_s", round(seconds, 3), "s", "target < 10 at 10,000"))
        out.append(Metric(f"prior_{n}_frames_peak_kb_per_frame", round(peak / n / 1024, 2), "KB"))
    return out


def suite_prior(ref: float) -> Result:
    """Motion prior vs the per-frame MANO fit, same takes, same run: on rendered clips with
    ground truth (the demo, the two-hand crossing, a hand hidden behind a board, fast
    finger taps, fast tutting sweeps) PA-MPJPE, acceleration error of the wrist-relative
    keypoints, where the hand sits in the picture (2D, translation and global rotation
    kept), finger flexion-angle error and jitter against the landmarks' own, error on
    filled frames, share of keys "Reduce keys" removes at 1 deg, for the default strength
    and a sweep; infill error against hidden-run length; on the real office clip
    calm-third jitter against MediaPipe's world landmarks and the stage's share of the
    capture; 10,000 frames timed."""
    from handmocap.inference.motion_prior import DEFAULT_SMOOTHING

    sweep = tuple(sorted({*PRIOR_SWEEP, DEFAULT_SMOOTHING}))
    metrics: list[Metric] = []
    for preset in PRIOR_CLIPS:
        metrics += _prior_clip_metrics(preset, sweep)
    if OFFICE.is_file():
        metrics += _prior_office_metrics()
    metrics += _prior_long_track()
    return Result("prior", suite_prior.__doc__.strip(), ref, tuple(metrics))


NOISE_SEEDS = (0, 1)


def suite_render_spread(ref: float) -> Result:
    """How much render noise moves the figures the tests assert: the demo and crossing clips
    rendered with Cycles seeds 0 and 1 (same scene, other pixels, as on another CPU);
    per seed our engine and MediaPipe's solution against the truth, and ours / MediaPipe.
    Tests take their margins from the spread seen here."""
    from handmocap.inference.capture import capture

    from .mediapipe_reference import detections_from_take, run_mediapipe_solution, score_2d

    metrics = []
    for preset in ("demo", "two_crossing"):
        ours_rates, theirs_rates, ratios, handed = [], [], [], []
        for seed in NOISE_SEEDS:
            mp4, npz = cached_clip(preset, noise_seed=seed)
            gt = load_ground_truth(npz)
            take = capture(mp4).take
            ours = score_2d(detections_from_take(take, gt.num_frames), gt.keypoints_px,
                            gt.visibility, gt.handedness, 60.0)  # fmt: skip
            run = run_mediapipe_solution(mp4, max_hands=2)
            theirs = score_2d(run.frames, gt.keypoints_px, gt.visibility, gt.handedness, 60.0)
            ours_rates.append(ours.detection_rate)
            theirs_rates.append(theirs.detection_rate)
            ratios.append(ours.detection_rate / max(theirs.detection_rate, 1e-9))
            handed.append(ours.handedness_accuracy)
            metrics += [
                Metric(f"{preset}_seed{seed}_detection_rate", round(ours.detection_rate, 4),
                       "share", f"MediaPipe {theirs.detection_rate:.4f}"),
                Metric(f"{preset}_seed{seed}_median_2d_error", round(ours.median_px, 2), "px",
                       f"MediaPipe {theirs.median_px:.2f}"),
                Metric(f"{preset}_seed{seed}_tracks", len(take.tracks), "tracks",
                       ", ".join(t.handedness for t in take.tracks)),
            ]  # fmt: skip
        metrics += [
            Metric(f"{preset}_detection_rate_min_max",
                   f"{min(ours_rates):.4f}..{max(ours_rates):.4f}", "share", "ours"),
            Metric(f"{preset}_mediapipe_detection_rate_min_max",
                   f"{min(theirs_rates):.4f}..{max(theirs_rates):.4f}", "share", "MediaPipe"),
            Metric(f"{preset}_detection_ratio_to_mediapipe_min",
                   round(min(ratios), 4), "x MediaPipe", "ours / MediaPipe, worst seed"),
            Metric(f"{preset}_handedness_accuracy_min", round(min(handed), 4), "share"),
        ]  # fmt: skip
    return Result("render_spread", suite_render_spread.__doc__.strip(), ref, tuple(metrics))


SUITES: dict[str, Callable[[float], Result]] = {
    "render": suite_render,
    "realism": suite_realism,
    "engine": suite_engine,
    "mano": suite_mano,
    "retarget": suite_retarget,
    "keyframes": suite_keyframes,
    "render_spread": suite_render_spread,
    "prior": suite_prior,
    "two_hands": suite_two_hands,
    "identity_sweep": suite_identity_sweep,
    "batch": suite_batch,
    "profile": suite_profile,
}

__all__ = ["SUITES", "Metric", "Result", "reference_seconds"]
