"""The add-on's side of the engine boundary (blender_addon/engine.py, no bpy needed): a
capture runs as a child process read through JSON lines, progress comes through, and
cancelling kills the engine and everything it started and leaves no take behind."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

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
    assert _gone(grandchild)
    assert not take.exists()


def _gone(pid: int) -> bool:
    """Ended: no such process, or a zombie waiting for its new parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


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
    assert not info.has_stage("motion_prior")  # not built yet: the add-on shows no control
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
