"""``handmocap capture`` / ``info`` as a user runs them: exit codes, messages, files."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from handmocap.errors import HandmocapError
from handmocap.inference.backend import choose_backend, probe_cuda
from handmocap.take import load_take


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "handmocap.inference", *map(str, args)],
                          capture_output=True, text=True, check=False, cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def blank_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "blank.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(12):
        w.write(rng.integers(90, 110, size=(120, 160, 3), dtype=np.uint8))
    w.release()
    return path


def test_no_hands_is_a_success_with_an_empty_take(blank_video, tmp_path):
    out = tmp_path / "take.npz"
    proc = _cli("capture", blank_video, "-o", out, "--overlay", tmp_path / "o.mp4")
    assert proc.returncode == 0, proc.stderr
    assert "no hands found in 12 frames" in proc.stderr
    take = load_take(out)
    assert take.tracks == () and take.header.engine.frames_read == 12
    assert (tmp_path / "o.mp4").is_file()


def test_jsonl_progress_for_the_addon(blank_video, tmp_path):
    proc = _cli("capture", blank_video, "-o", tmp_path / "t.npz", "--progress", "jsonl")
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["event"] for e in (events[0], events[-1])] == ["start", "done"]
    assert events[0]["frames"] == 12 and events[0]["provider"] == "CPUExecutionProvider"
    assert events[-1]["frames"] == 12 and events[-1]["tracks"] == 0
    assert all(e["event"] == "progress" for e in events[1:-1]) and events[-2]["done"] == 12


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["capture", "missing.mp4", "-o", "t.npz"], "video not found: missing.mp4", 1),
        (["capture", "notes.mp4", "-o", "t.npz"], "not a video file OpenCV can read", 1),
        (["capture", "BLANK", "-o", "no/such/dir/t.npz"], "does not exist", 1),
        (["capture", "BLANK", "-o", "t.npz", "--device", "tpu"], "invalid choice: 'tpu'", 2),
        (["capture", "BLANK", "-o", "t.npz", "--stride", "0"], "bad frame range", 1),
        (["capture", "BLANK", "-o", "t.npz", "--fov", "500"], "--fov must be 10..170", 1),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, blank_video, args, message, code):
    (tmp_path / "notes.mp4").write_text("this is not a video")
    proc = _cli(*[str(blank_video) if a == "BLANK" else a for a in args], cwd=tmp_path)
    assert proc.returncode == code
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_output_that_is_a_folder_is_refused_before_any_work(tmp_path, blank_video):
    proc = _cli("capture", blank_video, "-o", tmp_path)
    assert proc.returncode == 1 and "it is a folder" in proc.stderr
    assert "capturing" not in proc.stderr


def test_info_reports_device_and_models():
    proc = _cli("info", "--json")
    report = json.loads(proc.stdout)
    assert report["models_built"] is True
    assert report["device"] in ("cpu", "cuda") and report["provider"].endswith("ExecutionProvider")


def test_models_keeps_what_is_built_and_says_where(tmp_path):
    """`handmocap models` on the built cache: nothing is rebuilt (the IK network's recorded
    training time is the original one), every asset is named with its folder, exit 0."""
    proc = _cli("models")
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[handmocap] models:")]
    assert len(lines) == 4 and all(" ok (" in ln for ln in lines)


def test_models_with_the_registry_unreachable_is_one_message_and_leaves_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("HANDMOCAP_CACHE", str(tmp_path))
    monkeypatch.setenv("HANDMOCAP_NPM_REGISTRY", "http://127.0.0.1:9")  # discard port: refused
    proc = _cli("models")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: could not reach the npm registry at http://127.0.0.1:9/")
    assert "HANDMOCAP_NPM_REGISTRY" in proc.stderr and "Traceback" not in proc.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_backend_choice():
    assert choose_backend("cpu").providers == ("CPUExecutionProvider",)
    auto = choose_backend("auto")
    works, reason = probe_cuda()
    assert auto.device == ("cuda" if works else "cpu")
    if not works:
        assert reason in auto.reason
        with pytest.raises(
            HandmocapError, match="--device cuda was asked for but CUDA does not work"
        ):
            choose_backend("cuda")
    with pytest.raises(HandmocapError, match="unknown device 'tpu'"):
        choose_backend("tpu")
