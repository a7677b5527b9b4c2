"""``python3 build.py bench identity_sweep``: identity on every two-hand render in the clip
cache, tracking only.

The ``two_hands`` suite scores a fixed list of renders with the whole capture and
MediaPipe beside it (minutes). A tracker or whole-clip rule is judged first on how many
identity switches it makes, and which frames slip depends on the last bits of a render's
pixels, so this suite runs every ``two_*`` render the cache holds (whatever other runs
rendered: other noise seeds, other scene seeds), each crossing and tutting render also
played forward and back five times (ten passes), with and without the de-occlusion
stage, no fit and no prior: about 3 min for 46 runs here. Its figures are counts over
whatever the cache holds, so compare runs of it on one cache (docs/architecture.md,
"Two interacting hands").
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .synth.cache import cache_root
from .synth.ground_truth import ClipGroundTruth, load_ground_truth
from .two_hands_eval import score_two_hands
from .two_hands_suite import REPEATS, played_back_and_forth

PLAYED_BACK = ("two_crossing", "two_tutting")  # layouts also played ten times


def cached_renders() -> list[tuple[str, Path, Path]]:
    """(name, mp4, npz) of every two-hand render in the clip cache, by name: layout, scene
    seed, Cycles noise seed, the size where not 640x480, ``_alone`` where the hands were
    also rendered alone, and the cache folder's key where two renders would still share a
    name (other frame counts)."""
    found: dict[str, tuple[Path, Path]] = {}
    for folder in sorted((cache_root() / "clips").glob("two_*-*")):
        mp4s, npzs = sorted(folder.glob("*.mp4")), sorted(folder.glob("*.npz"))
        if not mp4s or not npzs:
            continue  # a render still under way, or one that failed
        spec = load_ground_truth(npzs[0]).header.get("spec", {})
        layout = spec.get("layout", folder.name.split("-")[0])
        alone = "_alone" if spec.get("render_alone") else ""
        size = (spec.get("width"), spec.get("height"))
        small = "" if size == (640, 480) else f"_{size[0]}x{size[1]}"
        name = f"{layout}_scene{spec.get('seed')}_noise{spec.get('noise_seed')}{small}{alone}"
        if name in found:
            name = f"{name}_{folder.name.rsplit('-', 1)[-1][:6]}"
        found[name] = (mp4s[0], npzs[0])
    return [(name, *found[name]) for name in sorted(found)]


def _score(video: Path, truth: ClipGroundTruth, deocclusion: bool):
    from handmocap.inference.capture import CaptureConfig, capture
    from handmocap.inference.deocclusion import DeocclusionConfig
    from handmocap.inference.tracker import TrackerConfig

    tracker = TrackerConfig(deocclusion=DeocclusionConfig(enabled=deocclusion))
    take = capture(video, CaptureConfig(tracker=tracker, fit_mano=False)).take
    return score_two_hands(take, truth)


def suite_identity_sweep(ref: float):
    """Identity on every two-hand render in the clip cache, tracking only (no fit, no
    prior), with and without the de-occlusion stage: per render (and ten passes of each
    crossing and tutting render) identity switches, tracks per true hand, hand-frames two
    tracks share, the least-found hand's share of the frames a third of it shows; totals
    over all runs. Counts over whatever the cache holds: compare runs on one cache."""
    from .suites import Metric, Result

    metrics: list[Metric] = []
    totals = {True: [0, 0], False: [0, 0]}  # stage on/off -> [switches, runs with any]
    runs = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, mp4, npz in cached_renders():
            truth = load_ground_truth(npz)
            plays = [(name, mp4, truth)]
            if name.startswith(PLAYED_BACK):
                video = Path(tmp) / f"{name}_x{REPEATS}.mp4"
                plays.append((f"{name}_x{REPEATS}",
                              *played_back_and_forth(mp4, truth, REPEATS, video)))  # fmt: skip
            for label, video, clip_truth in plays:
                runs += 1
                for on in (True, False):
                    s = _score(video, clip_truth, on)
                    tag = f"{label}_{'with' if on else 'without'}_stage"
                    least = min(s.found_findable) if s.found_findable else float("nan")
                    metrics += [
                        Metric(f"{tag}_switches", s.switches, "switches",
                               f"{clip_truth.num_frames} frames"),
                        Metric(f"{tag}_tracks_per_hand",
                               "/".join(map(str, s.tracks_per_hand)), "tracks", "left/right"),
                        Metric(f"{tag}_duplicates", s.duplicates, "hand-frames"),
                        Metric(f"{tag}_least_found", round(least, 4), "share",
                               "the hand found least, frames with >= 1/3 of it visible"),
                    ]  # fmt: skip
                    totals[on][0] += s.switches
                    totals[on][1] += s.switches > 0
    for on in (True, False):
        tag = "with" if on else "without"
        metrics += [
            Metric(f"total_{tag}_stage_switches", totals[on][0], "switches", f"over {runs} runs"),
            Metric(f"total_{tag}_stage_runs_with_switches", totals[on][1], "runs",
                   f"of {runs}"),
        ]  # fmt: skip
    return Result("identity_sweep", suite_identity_sweep.__doc__.strip(), ref, tuple(metrics))


__all__ = ["cached_renders", "suite_identity_sweep"]
