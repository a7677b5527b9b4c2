"""Progress that tells the truth (issue 16 section 6): every stage after tracking reports its
own count and ETA, on the terminal bar and in the JSON lines the Blender add-on reads, and
the add-on's overall fraction never jumps back at a stage boundary."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from handmocap.errors import HandmocapError
from handmocap.inference import capture as capture_mod
from handmocap.inference import mano_fit
from handmocap.inference import progress as progress_mod
from handmocap.inference.progress import BarProgress, JsonlProgress, NoProgress, StageClock
from handmocap.take import Track

ROOT = Path(__file__).resolve().parents[1]


def _events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _run(progress, frames=100, mano=150, overlay=True) -> None:
    """A capture's sequence of calls: tracking, the MANO fit, the overlay, finish."""
    progress.start(frames, stages=["mano_fit", "overlay"] if overlay else ["mano_fit"],
                   device="cpu", provider="CPUExecutionProvider")  # fmt: skip
    for done in range(1, frames + 1):
        progress.update(done, done - 1)
    progress.stage("mano_fit", mano, "frames")
    for done in range(0, mano + 1, 10):
        progress.update(done)
    progress.update(mano)
    if overlay:
        progress.stage("overlay", frames, "frames")
        progress.update(frames)
    progress.finish(take="t.npz", tracks=2, frames=frames, seconds=1.0, fps=100.0)


def _overalls(events: list[dict]) -> list[float]:
    return [e["overall"] for e in events if "overall" in e]


def test_jsonl_reports_each_stage_with_a_rising_overall_that_ends_at_one():
    out = io.StringIO()
    _run(JsonlProgress(out, per_second=1e9))
    events = _events(out)
    start, last = events[0], events[-1]
    assert start["event"] == "start" and start["frames"] == 100
    assert start["provider"] == "CPUExecutionProvider"  # the fields the add-on read stay
    assert (start["stage"], start["unit"], start["total"], start["index"]) == (
        "tracking", "frames", 100, 0)  # fmt: skip
    assert start["stages"] == ["tracking", "mano_fit", "overlay"]
    stages = [e for e in events if e["event"] == "stage"]
    assert [(e["stage"], e["total"], e["index"]) for e in stages] == [
        ("mano_fit", 150, 1), ("overlay", 100, 2)]  # fmt: skip
    progress = [e for e in events if e["event"] == "progress"]
    assert {e["stage"] for e in progress} == {"tracking", "mano_fit", "overlay"}
    for name, total in (("tracking", 100), ("mano_fit", 150), ("overlay", 100)):
        own = [e for e in progress if e["stage"] == name]
        assert own[-1]["done"] == own[-1]["total"] == total and own[-1]["eta_s"] == 0.0
        assert [e["done"] for e in own] == sorted(e["done"] for e in own)
    overall = _overalls(events)
    assert overall == sorted(overall) and overall[0] == 0.0
    assert last == {"event": "done", "take": "t.npz", "tracks": 2, "frames": 100,
                    "seconds": 1.0, "fps": 100.0, "overall": 1.0}  # fmt: skip
    assert progress[-1]["overall"] == 1.0
    # The MANO stage has a real share of the bar: it does not start at 0 or end at 1.
    mano = [e["overall"] for e in progress if e["stage"] == "mano_fit"]
    assert 0.2 < mano[0] < mano[-1] < 0.95


def test_the_eta_is_unknown_rather_than_zero_when_a_stage_opens():
    """The bug: "5040/5040, eta 0" for the whole MANO stage. Now the MANO stage counts its
    own units from 0, with no ETA until it has done some."""
    out = io.StringIO()
    progress = JsonlProgress(out, per_second=1e9)
    progress.start(5040, stages=["mano_fit"])
    progress.update(5040, 5039)
    progress.stage("mano_fit", 5040, "frames")
    progress.update(0)
    events = _events(out)
    assert events[1]["eta_s"] == 0.0 and events[1]["done"] == 5040  # tracking: really done
    assert events[2]["event"] == "stage" and "eta_s" not in events[2]
    assert (events[3]["stage"], events[3]["done"], events[3]["total"]) == ("mano_fit", 0, 5040)
    assert events[3]["eta_s"] is None
    time.sleep(0.01)
    progress.update(100)
    eta = _events(out)[-1]["eta_s"]
    assert isinstance(eta, float) and eta > 0


def test_an_unknown_total_gives_no_eta_and_no_overall_jump():
    clock = StageClock()
    clock.begin_run(0)
    clock.advance(10)
    assert clock.eta_s() is None and clock.overall == 0.0


def test_a_stage_set_up_does_not_inflate_its_eta(monkeypatch):
    """10 s loading a model, then 10 frames a second: once two reports are in, the ETA is
    the 8 s the frames need, not the 48 s an average since the stage opened would say."""
    now = [0.0]
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: now[0])
    clock = StageClock()
    clock.begin_run(100)
    now[0] = 10.0
    clock.advance(10)
    assert clock.eta_s() == pytest.approx(90.0)  # one point: the average so far
    now[0] = 11.0
    clock.advance(20)
    assert clock.eta_s() == pytest.approx(8.0) and clock.rate() == pytest.approx(10.0)


def test_jsonl_is_throttled_but_always_reports_the_end_of_a_stage():
    out = io.StringIO()
    _run(JsonlProgress(out, per_second=0.001))  # only the first and each stage's last
    progress = [e for e in _events(out) if e["event"] == "progress"]
    assert [(e["stage"], e["done"]) for e in progress] == [
        ("tracking", 1), ("tracking", 100), ("mano_fit", 0), ("mano_fit", 150),
        ("mano_fit", 150), ("overlay", 100)]  # fmt: skip


_NAMES = st.sampled_from(["mano_fit", "overlay", "writing_take", "other"])
_OPENED = st.tuples(_NAMES, st.integers(0, 800), st.sampled_from(["frames", "chunks"]),
                    st.lists(st.integers(0, 1000), max_size=6))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    frames=st.integers(0, 500),
    plan=st.lists(_NAMES, max_size=3, unique=True),
    opened=st.lists(_OPENED, max_size=4),
)
def test_overall_never_goes_back_and_stays_in_0_1(frames, plan, opened):
    """Any stages, planned or not, skipped or repeated, with any counts (even past the
    total or going back): the overall fraction rises or stays, within 0..1."""
    out = io.StringIO()
    progress = JsonlProgress(out, per_second=1e9)
    progress.start(frames, stages=plan)
    progress.update(frames)
    for name, total, unit, counts in opened:
        progress.stage(name, total, unit)
        for done in counts:
            progress.update(done)
    progress.finish()
    overall = _overalls(_events(out))
    assert overall == sorted(overall) and all(0.0 <= x <= 1.0 for x in overall)
    assert overall[-1] == 1.0
    for e in _events(out):
        if e["event"] == "progress":
            assert e["eta_s"] is None or e["eta_s"] >= 0


def test_the_last_planned_stage_done_fills_the_bar_exactly():
    out = io.StringIO()
    _run(JsonlProgress(out, per_second=1e9), frames=37, mano=0, overlay=False)
    progress = [e for e in _events(out) if e["event"] == "progress"]
    # an empty MANO stage (no frames) still ends the run at 1.0, on the done event
    assert progress[-1]["stage"] == "mano_fit" and _events(out)[-1]["overall"] == 1.0


def test_bar_shows_the_stage_name_count_and_eta():
    out = io.StringIO()
    bar = BarProgress(out, width=10)
    bar.start(4, stages=["mano_fit"], device="cpu")
    bar.update(4, 3)
    bar.stage("mano_fit", 7, "chunks")
    time.sleep(0.11)  # past the bar's throttle
    bar.update(3)
    bar.finish()
    text = out.getvalue()
    lines = text.split("\n")
    first, tracking, (opened, fitting) = lines[0], lines[1][1:], lines[2].split("\r")[1:3]
    assert first == "capturing 4 frames (device cpu)"
    assert tracking.startswith("[tracking] [##########] 4/4 frames ") and "ETA 0:00" in tracking
    assert opened.startswith("[mano fit] [..........] 0/7 chunks ") and "ETA --:--" in opened
    assert fitting.startswith("[mano fit] [####......] 3/7 chunks ") and "chunks/s" in fitting
    assert "ETA --:--" not in fitting and "ETA 0:00" in fitting  # 3 chunks in ~0.1 s


def test_no_progress_accepts_stages():
    NoProgress().stage("mano_fit", 3, "frames")  # the protocol's new method, a no-op


# ---- the MANO fit's callback -------------------------------------------------------------


class _IdentityIK:
    """Stands in for the IK network (not needed to test the refinement loop's callback)."""

    def __call__(self, world: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
        t = world.shape[0]
        return np.tile(np.eye(3), (t, 16, 1, 1)), np.zeros((t, 10))


@pytest.fixture(scope="module")
def small_fitter():
    """The real fitter if the IK network is built, else the real refinement with an
    identity IK start (the callback lives in the refinement loop)."""
    from handmocap.inference.backend import choose_backend

    config = mano_fit.FitConfig(iterations=12)
    try:
        return mano_fit.build_fitter(None, choose_backend("cpu"), config)[0]
    except HandmocapError:
        pass
    try:
        from handmocap.models.hand_model import ensure_open_hand_model
        from handmocap.models.iknet_build import load_rig
        from handmocap.models.webxr_asset import ensure_webxr_hand
        from handmocap.models.webxr_hand import load_webxr_hand
        from handmocap.retarget.joint_limits import spread_signs

        files = ensure_open_hand_model()
        hand = load_webxr_hand(ensure_webxr_hand().right, "right")
    except HandmocapError as err:
        pytest.skip(f"the hand model is not built in the cache ({err})")
    rigs = {side: load_rig(files.folder, side) for side in ("left", "right")}
    signs = spread_signs(hand.rest_frames, hand.rest_positions)
    return mano_fit.ManoFitter(_IdentityIK(), rigs, hand.rest_frames, signs, config)


def _hand_observations(fitter, frames: int):
    from handmocap.models.iknet import fk
    from handmocap.retarget.camera import intrinsics_from_fov, project

    k = intrinsics_from_fov(320, 240, 60.0)
    rots = torch.as_tensor(np.tile(np.eye(3), (frames, 16, 1, 1)), dtype=torch.float32)
    kp = fk(fitter.rigs["right"], rots, torch.zeros(frames, 10)).numpy().astype(np.float64)
    wrist = np.column_stack([np.linspace(-0.03, 0.03, frames), np.full(frames, 0.02),
                             np.full(frames, 0.5)])  # fmt: skip
    cam = kp - kp[:, :1] + wrist[:, None]
    uv = project(cam, k)
    rel_depth = (cam[..., 2] - cam[:, :1, 2]) * k[0, 0] / cam[:, :1, 2]
    return uv, rel_depth, np.ones((frames, 21)), k


def test_fit_reports_each_step_up_to_one_without_changing_the_result(small_fitter, monkeypatch):
    uv, rel_depth, conf, k = _hand_observations(small_fitter, 8)
    plain = small_fitter.fit("right", uv, rel_depth, conf, k)
    monkeypatch.setattr(mano_fit, "PROGRESS_INTERVAL_S", 0.0)  # every step
    seen: list[float] = []
    reported = small_fitter.fit("right", uv, rel_depth, conf, k, on_progress=seen.append)
    steps = small_fitter.config.iterations
    assert seen == [(i + 1) / steps for i in range(steps)]
    for name in ("pose", "betas", "translation", "keypoints_3d"):
        np.testing.assert_array_equal(getattr(reported, name), getattr(plain, name))


def test_fit_reports_at_most_ten_times_a_second_and_always_the_end(small_fitter, monkeypatch):
    uv, rel_depth, conf, k = _hand_observations(small_fitter, 8)
    times: list[float] = []
    seen: list[float] = []

    def note(fraction: float) -> None:
        times.append(time.perf_counter())
        seen.append(fraction)

    started = time.perf_counter()
    small_fitter.fit("right", uv, rel_depth, conf, k, on_progress=note)
    elapsed = time.perf_counter() - started
    assert seen[-1] == 1.0 and seen == sorted(set(seen))
    assert len(seen) <= elapsed / mano_fit.PROGRESS_INTERVAL_S + 2
    assert all(b - a >= mano_fit.PROGRESS_INTERVAL_S for a, b in pairwise(times[:-1]))


@dataclass
class _FakeFit:
    pose: np.ndarray
    betas: np.ndarray
    translation: np.ndarray
    keypoints_3d: np.ndarray
    rest_keypoints: np.ndarray


class _FakeFitter:
    """Reports a quarter, half and all of each track, as the real fit does."""

    def fit(self, side, uv, rel_depth, confidence, k, on_progress=None):
        for fraction in (0.25, 0.5, 1.0):
            on_progress(fraction)
        t = uv.shape[0]
        return _FakeFit(np.zeros((t, 16, 3)), np.zeros(10), np.zeros((t, 3)),
                        np.zeros((t, 21, 3)), np.zeros((21, 3)))  # fmt: skip


def _track(track_id: int, frames: int) -> Track:
    return Track(track_id, "right", np.arange(frames, dtype=np.int64),
                 np.zeros((frames, 21, 2)), np.zeros((frames, 21)), np.zeros((frames, 21, 3)),
                 np.ones((frames, 21)), np.ones(frames, np.float32),
                 np.zeros(frames, np.uint8))  # fmt: skip


def test_capture_counts_the_fitted_frames_of_all_tracks():
    out = io.StringIO()
    progress = JsonlProgress(out, per_second=1e9)
    progress.start(40, stages=["mano_fit"])
    progress.update(40, 39)
    tracks = (_track(0, 40), _track(1, 12))
    progress.stage("mano_fit", sum(len(t) for t in tracks), "frames")
    fitted = capture_mod._fit_tracks(_FakeFitter(), tracks, np.eye(3), progress)
    assert all(t.mano_pose is not None for t in fitted)
    mano = [e for e in _events(out) if e["event"] == "progress" and e["stage"] == "mano_fit"]
    assert [e["done"] for e in mano] == [10, 20, 40, 43, 46, 52]
    assert all(e["total"] == 52 and e["frame"] is None for e in mano)
    assert mano[-1]["overall"] == 1.0


# ---- the add-on reads the events ---------------------------------------------------------


def _engine_module():
    # as tests/test_engine_boundary.py: engine.py loads without the add-on package (bpy)
    spec = importlib.util.spec_from_file_location("hm_engine", ROOT / "blender_addon" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def engine_run(tmp_path):
    engine = _engine_module()
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    run = engine.EngineRun(engine.CaptureRequest(str(python), tmp_path, tmp_path / "t.npz"))
    yield run
    run.process.wait(timeout=5)


def test_the_addon_shows_the_stage_and_a_fraction_that_never_drops(engine_run):
    out = io.StringIO()
    _run(JsonlProgress(out, per_second=1e9))
    fractions, statuses = [], []
    for event in _events(out):
        engine_run._handle(event)
        fractions.append(engine_run.fraction)
        statuses.append(engine_run.status)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "frame 100/100" in statuses[100] and statuses[101] == "fitting MANO"
    assert statuses[102] == "fitting MANO 0%"  # nothing done yet: no time left shown
    assert any(s.startswith("fitting MANO 53%, ") and s.endswith(" s left") for s in statuses)
    assert "drawing the overlay 100%, 0 s left" in statuses


def test_the_addon_status_names_the_stage_and_time_left(engine_run):
    run = engine_run
    run._handle({"event": "start", "frames": 5040, "device": "cpu"})
    run._handle({"event": "progress", "done": 5040, "total": 5040, "fps": 30.0, "eta_s": 0.0,
                 "stage": "tracking", "overall": 0.38})  # fmt: skip
    assert run.status == "frame 5040/5040, 30.0 fps, 0 s left" and run.fraction == 0.38
    run._handle({"event": "stage", "stage": "mano_fit", "total": 5040, "overall": 0.38})
    assert (run.status, run.done, run.total, run.fraction) == ("fitting MANO", 0, 5040, 0.38)
    run._handle({"event": "progress", "stage": "mano_fit", "done": 2167, "total": 5040,
                 "eta_s": 42.4, "overall": 0.65})  # fmt: skip
    assert run.status == "fitting MANO 43%, 42 s left" and run.fraction == 0.65
    run._handle({"event": "progress", "stage": "mano_fit", "done": 2500, "total": 5040,
                 "eta_s": 125.0, "overall": 0.6})  # fmt: skip
    assert run.status == "fitting MANO 50%, 2:05 left" and run.fraction == 0.65
    run._handle({"event": "progress", "stage": "future_step", "done": 1, "total": 4})
    assert run.status == "future step 25%"


def test_the_addon_still_reads_an_engine_without_stages(engine_run):
    """An older engine: no stage, no overall; the fraction is done / total as before."""
    run = engine_run
    run._handle({"event": "start", "frames": 100, "device": "cpu"})
    run._handle({"event": "progress", "done": 10, "total": 100, "fps": 20.0, "eta_s": 4.5})
    assert run.fraction == pytest.approx(0.1) and run.status == "frame 10/100, 20.0 fps, 4 s left"
