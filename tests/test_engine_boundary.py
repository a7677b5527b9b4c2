"""The add-on's side of the engine boundary (blender_addon/engine.py, no bpy needed): a
capture runs as a child process read through JSON lines, progress comes through, and
cancelling kills the engine and everything it started and leaves no take behind."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from processes import process_gone

ROOT = Path(__file__).resolve().parents[1]


def _engine_module():
    # engine.py is plain Python; load it without the add-on package (whose __init__ needs bpy)
    spec = importlib.util.spec_from_file_location("hm_engine", ROOT / "blender_addon" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


engine = _engine_module()


def _fake(tmp_path: Path, script: str) -> Path:
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\n" + script + "\n")
    python.chmod(0o755)
    return python


def _poll_until(run, predicate, timeout_s=60.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        run.poll()
        if predicate(run):
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out; status {run.status!r}, error {run.error!r}")


def test_cancel_kills_the_engine_and_its_children(tmp_path):
    """The fake engine starts a grandchild and waits; cancel ends both (process group)."""
    pids = tmp_path / "pids"
    python = _fake(
        tmp_path,
        f"""
sleep 300 &
echo $! > {pids}
echo '{{"event": "start", "frames": 100, "device": "cpu"}}'
echo '{{"event": "progress", "done": 10, "total": 100, "fps": 20.0, "eta_s": 4.5}}'
wait""",
    )
    take = tmp_path / "take.npz"
    run = engine.EngineRun(engine.CaptureRequest(str(python), tmp_path, take))
    _poll_until(run, lambda r: r.done == 10)
    assert (
        run.fraction == pytest.approx(0.1) and "10/100" in run.status and "4 s left" in run.status
    )
    grandchild = int(pids.read_text())
    run.cancel()
    assert run.finished and run.error == "capture cancelled" and run.take_path is None
    assert run.process.returncode is not None
    time.sleep(0.2)
    assert process_gone(grandchild)
    assert not take.exists()


def test_an_error_event_is_the_message(tmp_path):
    python = _fake(
        tmp_path, """echo '{"event": "error", "message": "video has no frames"}'; exit 1"""
    )
    run = engine.EngineRun(engine.CaptureRequest(str(python), tmp_path, tmp_path / "t.npz"))
    _poll_until(run, lambda r: r.finished)
    assert run.error == "video has no frames"


def test_query_engine_names_what_is_wrong(tmp_path):
    with pytest.raises(engine.EngineError, match="engine interpreter not found"):
        engine.query_engine(str(tmp_path / "nope"))
    with pytest.raises(engine.EngineError, match="no engine interpreter is set"):
        engine.query_engine("")
    not_engine = _fake(tmp_path, 'echo "/usr/bin/python3: No module named handmocap" >&2; exit 1')
    with pytest.raises(engine.EngineError, match="has no handmocap engine installed"):
        engine.query_engine(str(not_engine))


def test_the_real_engine_reports_and_can_be_cancelled(tmp_path):
    """This project's engine: info says it is ready; a capture of the demo clip reports
    progress and, cancelled after its first progress line, stops at once."""
    from bench.synth.cache import cached_clip

    info = engine.query_engine(sys.executable, "cpu")
    assert info.problems() == [] and info.has_stage("mano_fit")
    # the motion prior, with the range its Smoothing slider gets (the CLI's contract: 0..4)
    assert info.has_stage("motion_prior") and info.has_stage("deocclusion")
    assert info.hands == ("both", "left", "right")  # the add-on sends --hands for one side
    span = info.smoothing
    assert (span.minimum, span.maximum) == (0.0, 4.0) and 0.0 < span.default <= 4.0, span
    video = cached_clip("demo")[0]
    take = tmp_path / "take.npz"
    run = engine.EngineRun(engine.CaptureRequest(sys.executable, video, take, device="cpu"))
    _poll_until(run, lambda r: r.done > 0 or r.finished, timeout_s=120)
    assert not run.finished and run.total == 48
    started = time.monotonic()
    run.cancel()
    assert time.monotonic() - started < 5.0
    assert run.error == "capture cancelled" and not take.exists()
    json.dumps(run.status)  # plain text for the status bar


def test_a_video_without_a_frame_rate_can_be_captured_from_blender(tmp_path):
    """The engine refuses a video that does not state its frame rate and asks for --fps;
    the add-on says which panel field that is, and passes the field on as --fps."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    message = f"{video}: the file does not say its frame rate (it reports 0); pass --fps"
    python = _fake(tmp_path, f"echo '{json.dumps({'event': 'error', 'message': message})}'; exit 1")
    request = engine.CaptureRequest(python=str(python), video=video, take_path=tmp_path / "t.npz")
    run = engine.EngineRun(request)
    _poll_until(run, lambda r: r.finished)
    assert run.error.endswith("(it reports 0); set Video frame rate in the capture panel")
    assert "--fps" not in request.command()
    with_rate = engine.CaptureRequest(python=str(python), video=video,
                                      take_path=tmp_path / "t.npz", fps=29.97)  # fmt: skip
    assert with_rate.command()[-2:] == ["--fps", "29.97"]


# -- the motion prior: what the engine reports, what the add-on sends --------------------------

READY = {"version": "0.1.0", "take_version": 2, "device": "cpu", "models_built": True}


def _info(tmp_path: Path, report: dict):
    """EngineInfo of a stand-in engine whose ``info --json`` prints ``report``."""
    folder = tmp_path / f"engine{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    return engine.query_engine(str(_fake(folder, f"echo '{json.dumps(report)}'")))


def test_the_smoothing_range_is_read_only_from_an_engine_with_the_motion_prior(tmp_path):
    stages = {"mano_fit": True, "deocclusion": False, "motion_prior": True}
    span = {"min": 0.0, "max": 4.0, "default": 1.5}
    info = _info(tmp_path, {**READY, "stages": stages, "smoothing": span})
    assert info.has_stage("motion_prior")
    assert info.smoothing == engine.SmoothingRange(0.0, 4.0, 1.5)
    # an engine before the stage reports neither
    assert _info(tmp_path, {**READY, "stages": {"mano_fit": True}}).smoothing is None
    # a range without the stage, the stage without a range, or a range that makes no
    # slider (not numbers, the default outside it, empty, negative) offers no control
    off = {**stages, "motion_prior": False}
    for report in ({"stages": off, "smoothing": span}, {"stages": stages},
                   {"stages": stages, "smoothing": {**span, "max": "4"}},
                   {"stages": stages, "smoothing": {**span, "default": 5.0}},
                   {"stages": stages, "smoothing": {"min": 2.0, "max": 2.0, "default": 2.0}},
                   {"stages": stages, "smoothing": {**span, "min": -1.0}},
                   {"stages": stages, "smoothing": [0, 4, 1]}):  # fmt: skip
        assert _info(tmp_path, {**READY, **report}).smoothing is None, report


def test_smoothing_is_passed_to_the_engine_only_when_set(tmp_path):
    base = engine.CaptureRequest(python="py", video=tmp_path / "v.mp4", take_path=tmp_path / "t")
    assert "--smoothing" not in base.command()
    for value, text in ((2.5, "2.5"), (0.0, "0.0"), (1, "1.0")):  # 0 = off, said explicitly
        cmd = replace(base, smoothing=value).command()
        assert cmd[cmd.index("--smoothing") + 1] == text and cmd.count("--smoothing") == 1
    span = engine.SmoothingRange(0.0, 4.0, 1.0)
    assert (span.clamp(-1), span.clamp(2.25), span.clamp(9)) == (0.0, 2.25, 4.0)


def test_one_side_is_sent_as_hands_with_both_hands_followed(tmp_path):
    """Left or Right in the panel: the engine follows two hands and keeps the chosen side
    (``--max-hands 1`` kept the best palm of either side)."""
    base = engine.CaptureRequest(python="py", video=tmp_path / "v.mp4", take_path=tmp_path / "t")
    assert "--hands" not in base.command()
    cmd = replace(base, hands="left").command()
    assert cmd[cmd.index("--hands") + 1] == "left" and cmd[cmd.index("--max-hands") + 1] == "2"


def test_a_re_solve_runs_smooth_on_the_take_and_reports_like_a_capture(tmp_path):
    """``handmocap smooth TAKE -o NEW --smoothing S --progress jsonl``: the stand-in copies
    the take to -o and reports as the engine does; the run ends with the new take."""
    take = tmp_path / "take.npz"
    take.write_bytes(b"a take")
    script = """[ "$3 $5 $7" = "smooth -o --smoothing" ] || exit 9
cp "$4" "$6"
echo '{"event": "start", "frames": 48, "stage": "tracking"}'
sleep 1
echo '{"event": "stage", "stage": "motion_prior", "total": 1, "unit": "tracks"}'
echo '{"event": "progress", "stage": "motion_prior", "done": 1, "total": 1, "overall": 0.9}'
sleep 1
echo '{"event": "done", "take": "'"$6"'", "overall": 1.0}'"""
    python = _fake(tmp_path, script)
    new = tmp_path / "new.npz"
    request = engine.SmoothRequest(str(python), take, new, 2.0)
    assert request.command()[1:] == ["-m", "handmocap.inference", "smooth", str(take), "-o",
                                     str(new), "--smoothing", "2.0", "--progress",
                                     "jsonl"]  # fmt: skip
    run = engine.EngineRun(request)
    statuses = []
    _poll_until(run, lambda r: statuses.append(r.status) or r.finished)
    assert run.error is None and run.take_path == new and new.read_bytes() == b"a take"
    # each state seen while the stand-in pauses after it
    assert {"re-solving the motion prior", "solving the motion prior 100%"} <= set(statuses)
    assert run.fraction == 1.0
    assert run.status == "re-solve finished"


def test_a_re_solve_names_a_missing_take_and_an_engine_without_the_stage(tmp_path):
    with pytest.raises(engine.EngineError, match=r"take not found: .*gone\.npz"):
        engine.EngineRun(engine.SmoothRequest(sys.executable, tmp_path / "gone.npz",
                                              tmp_path / "new.npz", 1.0))  # fmt: skip
    take = tmp_path / "take.npz"
    take.write_bytes(b"a take")
    # what argparse of an engine before the stage says, and its exit code
    usage = "handmocap: error: argument command: invalid choice: 'smooth' (choose from "
    old = _fake(tmp_path, f"""echo "usage: handmocap [-h] {{capture,info}} ..." >&2
echo "{usage}'capture', 'info')" >&2
exit 2""")  # fmt: skip
    new = tmp_path / "new.npz"
    new.write_bytes(b"")  # created empty, as the add-on does (new_take_path)
    run = engine.EngineRun(engine.SmoothRequest(str(old), take, new, 1.0))
    _poll_until(run, lambda r: r.finished)
    assert run.error == (f"the engine at {old} has no motion prior (no 'smooth' command): "
                         "update handmocap in the engine's environment")  # fmt: skip
    assert not new.exists() and take.read_bytes() == b"a take"


@pytest.mark.blender
def test_the_panel_shows_smoothing_only_for_an_engine_with_the_motion_prior(monkeypatch, tmp_path):
    """The capture panel's Smoothing slider and the cleanup panel's Re-solve row are drawn
    when the checked engine (of the interpreter the preferences name) reports the stage;
    not before a check, not for an engine without it, not after the preferences moved to
    another interpreter. The capture sends the slider's value only then, clamped."""
    pytest.importorskip("bpy")
    from types import SimpleNamespace

    import blender_addon.engine as addon_engine
    from blender_addon import capture_op
    from blender_addon.panel import HM_PT_capture, HM_PT_cleanup
    from blender_addon.preferences import EngineCheck

    drawn: list[str] = []

    class Layout:  # what draw touches: records the properties and operators drawn
        def prop(self, _data, name, **_):
            drawn.append(name)

        def operator(self, name, **_):
            drawn.append(name)

        def row(self, **_):
            return self

        column = row

        def label(self, **_):
            pass

        template_ID = label

    python = str(_fake(tmp_path, "exit 1"))
    prefs = SimpleNamespace(engine_python=python)
    settings = SimpleNamespace(source="FILE", prior_smoothing=6.5)
    context = SimpleNamespace(
        scene=SimpleNamespace(handmocap=settings),
        preferences=SimpleNamespace(addons={"blender_addon": SimpleNamespace(preferences=prefs)}),
    )  # fmt: skip
    panel = SimpleNamespace(layout=Layout())

    def shown(info) -> tuple[bool, bool, float | None]:
        monkeypatch.setattr(EngineCheck, "info", info)
        drawn.clear()
        HM_PT_capture.draw(panel, context)
        HM_PT_cleanup.draw(panel, context)
        resolve = {"resolve_smoothing", "handmocap.resolve_prior"} <= set(drawn)
        return "prior_smoothing" in drawn, resolve, capture_op.capture_smoothing(context)

    def info(stages: dict, span=None):
        return addon_engine.EngineInfo(python, "0.1.0", "cpu", "", True, "", 2, stages, span)

    span = addon_engine.SmoothingRange(0.0, 4.0, 1.0)
    with_prior = info({"mano_fit": True, "motion_prior": True}, span)
    assert shown(with_prior) == (True, True, 4.0)  # 6.5 from an older range, clamped
    assert shown(None) == (False, False, None)
    assert shown(info({"mano_fit": True, "motion_prior": False})) == (False, False, None)
    assert shown(info({"mano_fit": True})) == (False, False, None)
    prefs.engine_python = str(tmp_path / "another" / "python")
    assert shown(with_prior) == (False, False, None)
    # the rest of both panels is drawn either way
    assert {"use_nla", "handmocap.capture", "handmocap.recapture_range"} <= set(drawn)
