"""``handmocap batch``: clips from inputs, names, the resume key, the report's figures, and
whole runs on a local Ray instance (docs/architecture.md, "Batch capture on Ray").

The Ray runs use the ``smoke`` clip (4 frames, two hands) as an MP4 and as a folder of PNG
frames, a corrupt file and a clip without hands, each run in its own process (as a TD runs
it), with Ray's files under a short folder in /tmp (its socket paths are length-limited).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from handmocap.errors import HandmocapError
from handmocap.inference import batch
from handmocap.inference.batch import (
    Clip,
    ClipJob,
    ClipOutputs,
    batch_settings,
    clip_names,
    collect_clips,
    resume_key,
    source_fingerprint,
    up_to_date,
    write_sidecar,
)
from handmocap.inference.batch_report import (
    BatchSummary,
    ClipResult,
    jitter_px,
    report_html,
    report_json,
    take_stats,
)
from handmocap.take import EngineFacts, FrameFlag, FrameRange, Take, Track, load_take, make_header

NAME = re.compile(r"^[A-Za-z0-9._-]+-[0-9a-f]{8}$")


def _png(path: Path, value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))
    return path


def _file(path: Path, data: bytes = b"not really a video") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- inputs and names (no Ray) -----------------------------------------------------------------


def test_inputs_become_clips_in_order_each_source_once(tmp_path):
    shoot = tmp_path / "shoot"
    video = _file(shoot / "take1.mp4")
    other = _file(shoot / "b" / "Take2.MOV")
    frames = shoot / "b" / "frames"
    _png(frames / "0001.png")
    _png(frames / "0002.png")
    _file(shoot / ".cache" / "hidden.mp4")  # hidden: not searched
    _file(shoot / "notes.txt")  # inside a searched folder a .txt is neither clip nor list
    _file(shoot / "out" / "take1-0123abcd.overlay.mp4")  # a batch's outputs are not clips
    _png(shoot / "out" / "take1-0123abcd.jpg")  # its thumbnails are not a folder of frames
    loose = _file(tmp_path / "loose.bin")  # named explicitly: a clip whatever its extension
    listing = tmp_path / "lists" / "clips.txt"
    listing.parent.mkdir()
    listing.write_text(f"# the shoot's extra takes\n\n../loose.bin\n{other}\n")
    clips = collect_clips([shoot, listing, loose], out_dir=shoot / "out")
    assert [(c.source, c.is_folder) for c in clips] == [
        (other.resolve(), False),
        (frames.resolve(), True),
        (video.resolve(), False),
        (loose.resolve(), False),
    ]
    assert all(NAME.match(c.name) for c in clips), [c.name for c in clips]
    assert [c.name.rsplit("-", 1)[0] for c in clips] == ["Take2", "frames", "take1", "loose"]
    # a frame folder named directly is one clip, not a folder to search
    assert [c.is_folder for c in collect_clips([frames])] == [True]
    # the output folder as the input: its own outputs are still not clips
    _file(shoot / "out" / "new.mp4")
    assert [c.source.name for c in collect_clips([shoot / "out"], shoot / "out")] == ["new.mp4"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: [d / "missing.mp4"], "input not found"),
        (lambda d: [d], "no clips found"),
        (lambda d: [_file(d / "l.txt", b"# ok\nnot_there.mp4\n")], "l.txt, line 2: not_there"),
    ],
)
def test_bad_inputs_are_named(tmp_path, make, message):
    with pytest.raises(HandmocapError, match=message):
        collect_clips(make(tmp_path))


def test_names_of_clips_with_one_stem_do_not_collide(tmp_path, monkeypatch):
    a, b = tmp_path / "day1" / "take.mp4", tmp_path / "day2" / "take.mp4"
    names = clip_names([a, b])
    assert len(set(names)) == 2 and all(NAME.match(n) for n in names)
    assert clip_names([a]) == names[:1]  # stable: the name depends on the path only
    monkeypatch.setattr(batch, "NAME_HASH_DIGITS", 0)  # every short name the same: "take-"
    long = clip_names([a, b])
    assert len(set(long)) == 2 and all(re.fullmatch(r"take-[0-9a-f]{64}", n) for n in long)


def test_resume_key_follows_the_source_and_the_settings(tmp_path):
    from handmocap.inference.capture import CaptureConfig
    from handmocap.inference.motion_prior import PriorConfig

    video = Clip(_file(tmp_path / "v.mp4").resolve(), "v-00000000", False)
    folder = Clip(tmp_path / "f", "f-00000000", True)
    _png(folder.source / "0001.png")
    settings = batch_settings(CaptureConfig(), overlays=False)
    json.dumps(settings)  # JSON values only
    key = resume_key(source_fingerprint(video), settings)
    assert key == resume_key(source_fingerprint(video), batch_settings(CaptureConfig(), False))
    assert key != resume_key(source_fingerprint(video), batch_settings(CaptureConfig(), True))
    smoother = CaptureConfig(prior=PriorConfig(smoothing=2.0))
    assert key != resume_key(source_fingerprint(video), batch_settings(smoother, False))
    st = video.source.stat()
    os.utime(video.source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert key != resume_key(source_fingerprint(video), settings)
    before = source_fingerprint(folder)
    _png(folder.source / "0002.png")
    assert source_fingerprint(folder) != before and source_fingerprint(folder)["frames"] == 2


def test_importing_the_batch_driver_loads_neither_torch_nor_ray():
    code = ("import sys, handmocap.inference.batch, handmocap.inference.cli; "
            "print(sorted({'torch', 'ray'} & set(sys.modules)))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert proc.stdout.strip() == "[]"


def test_without_ray_installed_the_message_says_how_to_install_it(monkeypatch, tmp_path):
    from handmocap.inference.capture import CaptureConfig

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    config = batch.BatchConfig(out_dir=tmp_path, capture=CaptureConfig())
    with pytest.raises(HandmocapError, match=r"pip install 'ray==2\.60\.0'"):
        with batch.ray_session(config, 1):
            pass


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.mp4"], "input not found: missing.mp4"),
        (["clip.mp4", "--workers", "0"], "--workers must be 1..1024"),
        (["clip.mp4", "--fov", "500"], "--fov must be 10..170"),
        (["frames", "-o", "frames/out"], "inside the frame folder"),
    ],
)
def test_bad_input_exits_1_before_any_work(tmp_path, args, message):
    _file(tmp_path / "clip.mp4")
    _png(tmp_path / "frames" / "0001.png")
    out = [] if "-o" in args else ["-o", "out"]
    proc = subprocess.run([sys.executable, "-m", "handmocap.inference", "batch", *args, *out],
                          capture_output=True, text=True, cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "frames" / "out").exists()


# --- figures of a take (no Ray) ----------------------------------------------------------------


def _track(frames, xy, track_id=0, side="right", confidence=0.9, flags=None, **extra):
    """A track whose 21 keypoints sit at ``xy`` (one (x, y) per frame) plus a fixed spread."""
    t = len(frames)
    kp = np.zeros((t, 21, 2)) + np.asarray(xy, float).reshape(t, 1, 2) + np.arange(21)[:, None]
    conf = np.broadcast_to(np.asarray(confidence, float).reshape(-1, 1), (t, 21)).copy()
    flags = np.full(t, FrameFlag.TRACKED) if flags is None else flags
    return Track(
        track_id=track_id, handedness=side, frames=np.asarray(frames), keypoints_2d=kp,
        keypoints_rel_depth=np.zeros((t, 21)), world_landmarks=np.zeros((t, 21, 3)),
        confidence=conf, right_prob=np.full(t, 0.9 if side == "right" else 0.1),
        flags=np.asarray(flags, np.uint8), **extra,
    )  # fmt: skip


def _take(tracks, frames_read, frame_range=None, k=None):
    header = make_header("clip.mp4", 30.0, 640, 480, np.eye(3) if k is None else k, "guess",
                         frame_range=frame_range,
                         engine=EngineFacts(device="cpu", frames_read=frames_read))  # fmt: skip
    return Take(header, tuple(tracks))


def test_jitter_is_the_median_2d_acceleration_over_consecutive_frames():
    # x = t^2 (frames t = 0..3 counted in captured frames, stride 2): acceleration 2 px/f^2;
    # after the gap (video frames 14, 16) the hand jumps, which must not count.
    t = np.arange(4.0)
    xy = [(x * x, 100.0) for x in t] + [(500.0, 10.0), (0.0, 400.0)]
    track = _track([0, 2, 4, 6, 14, 16], xy)
    take = _take([track], frames_read=9, frame_range=FrameRange(0, None, 2))
    assert jitter_px(take) == pytest.approx(2.0)
    # where MANO was fitted, the take moves the hand by its fitted 3D keypoints: projected
    # through the intrinsics (here z = 2 m, f = 100 px: x = 50 * X), not the landmarks
    xyz = np.zeros((6, 21, 3))
    xyz[..., 2] = 2.0
    xyz[:4, :, 0] = (3.0 * t * t / 50.0)[:, None]  # 6 px/f^2 once projected
    fitted = _take([_track([0, 2, 4, 6, 14, 16], xy, keypoints_3d=xyz)], 9, FrameRange(0, None, 2),
                   k=np.diag([100.0, 100.0, 1.0]))  # fmt: skip
    assert jitter_px(fitted) == pytest.approx(6.0)
    assert jitter_px(_take([_track([0, 1], [(0, 0), (5, 5)])], 2)) is None  # never 3 in a row


def test_detection_rate_and_worst_frame():
    # 6 captured frames. Right hand: rows on 0..3, the one on frame 3 filled by the prior and
    # the one on frame 1 weak; left hand: on every frame, confident.
    right = _track([0, 1, 2, 3], [(10, 10)] * 4, confidence=[0.9, 0.4, 0.9, 0.2],
                   flags=[FrameFlag.DETECTED, FrameFlag.TRACKED, FrameFlag.TRACKED,
                          FrameFlag.INFILLED])  # fmt: skip
    left = _track(list(range(6)), [(300, 10)] * 6, track_id=1, side="left", confidence=0.95)
    stats = take_stats(_take([right, left], frames_read=6))
    assert stats.detection_rate == pytest.approx(round((3 / 6 + 6 / 6) / 2, 4))
    assert (stats.hands, stats.sides, stats.frames) == (2, ("right", "left"), 6)
    assert (stats.worst_frame, stats.worst_confidence) == (4, 0.0)  # the right hand is gone
    only_weak = take_stats(_take([right], frames_read=4))
    assert (only_weak.worst_frame, only_weak.worst_confidence) == (3, 0.2)
    empty = take_stats(_take([], frames_read=5))
    assert (empty.detection_rate, empty.jitter_px, empty.worst_frame) == (0.0, None, 0)


def test_report_escapes_names_and_messages():
    bad = ClipResult.failed("a<b>-12345678", "/x/a<b>.mp4", "cannot decode: 'x' & <y>")
    good = ClipResult("ok-87654321", "/x/ok.mp4", "ok", take="ok-87654321.npz",
                      thumbnail="ok-87654321.jpg", frames=4, hands=2, sides=("left", "right"),
                      detection_rate=0.75, jitter_px=1.5, worst_frame=2, seconds=3.0)  # fmt: skip
    assert ClipResult.from_json(json.loads(json.dumps(good.to_json()))) == good
    summary = BatchSummary(2, 1, 1, 0, 10.0, 2, "local Ray instance")
    report = report_json([bad, good], summary, {"overlays": False})
    page = report_html(report)
    assert "<b>" not in page and "a&lt;b&gt;" in page and "&amp; &lt;y&gt;" in page
    assert '<img src="ok-87654321.jpg"' in page and "75.0 %" in page and "1.500" in page
    assert "px/frame" in page and report["definitions"]["jitter_px"] in json.dumps(report)
    assert report["summary"]["clips_per_minute"] == pytest.approx(12.0)


def test_sidecar_decides_what_is_up_to_date(tmp_path):
    from handmocap.inference.capture import CaptureConfig

    source = _file(tmp_path / "in" / "v.mp4").resolve()
    out = tmp_path / "out"
    out.mkdir()
    clip = Clip(source, "v-12345678", False)
    outputs = ClipOutputs.of(out, clip.name)
    settings = batch_settings(CaptureConfig(), False)
    fingerprint = source_fingerprint(clip)
    key = resume_key(fingerprint, settings)
    job = ClipJob(clip, out, key, fingerprint, settings, False)
    _take([], frames_read=3).save(outputs.take)
    result = ClipResult(clip.name, str(source), "ok", take=outputs.take.name, frames=3)
    write_sidecar(outputs, job, result)
    assert up_to_date(clip, outputs, key, overlays=False) == ClipResult(
        clip.name, str(source), "ok", skipped=True, take=outputs.take.name, frames=3
    )
    assert up_to_date(clip, outputs, "another key", overlays=False) is None
    assert up_to_date(clip, outputs, key, overlays=True) is None  # no overlay was written
    _take([], frames_read=4).save(outputs.take)  # the take is not the one recorded
    assert up_to_date(clip, outputs, key, overlays=False) is None
    write_sidecar(outputs, job, result)
    outputs.sidecar.write_text('{"format": "handmocap-batch-take", "version": 1, "key"')
    assert up_to_date(clip, outputs, key, overlays=False) is None  # damaged: capture again
    assert not list(out.glob(".*.part*"))


# --- whole runs on a local Ray instance ---------------------------------------------------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """smoke.mp4, frames_smoke/ (its frames as PNG), corrupt.mp4 (random bytes) and
    blank.mp4 (6 frames of grey noise, no hands)."""
    from bench.synth.cache import cached_clip

    mp4, _ = cached_clip("smoke")
    folder = tmp_path_factory.mktemp("clips")
    shutil.copy(mp4, folder / "smoke.mp4")
    frames = folder / "frames_smoke"
    frames.mkdir()
    cap = cv2.VideoCapture(str(mp4))
    count = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        cv2.imwrite(str(frames / f"{count:04d}.png"), bgr)
        count += 1
    cap.release()
    assert count == 4
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(7).bytes(4096))
    writer = cv2.VideoWriter(str(folder / "blank.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 24,
                             (160, 120))  # fmt: skip
    rng = np.random.default_rng(0)
    for _ in range(6):
        writer.write(rng.integers(90, 110, size=(120, 160, 3), dtype=np.uint8))
    writer.release()
    return folder


@pytest.fixture(scope="module")
def ray_env():
    """The environment of a batch run: Ray's files under a short folder in /tmp."""
    tmp = tempfile.mkdtemp(prefix="hmray", dir="/tmp")
    yield {**os.environ, "RAY_TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    shutil.rmtree(tmp, ignore_errors=True)


def _batch(env, *args, timeout=300):
    cmd = [sys.executable, "-m", "handmocap.inference", "batch", *map(str, args),
           "--progress", "jsonl"]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)  # fmt: skip
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, events, time.perf_counter() - started


def _by_source(report):
    return {Path(c["source"]).name: c for c in report["clips"]}


@pytest.fixture(scope="module")
def first_run(clips, ray_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "takes"
    proc, events, seconds = _batch(ray_env, clips, "-o", out, "--workers", "2", "--overlays")
    return out, proc, events, seconds


def test_four_clips_give_three_takes_and_one_error(first_run, clips):
    out, proc, events, seconds = first_run
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["summary"] | {"wall_seconds": 0, "clips_per_minute": 0} == {
        "clips": 4, "ok": 3, "failed": 1, "skipped": 0, "captured": 4, "wall_seconds": 0,
        "clips_per_minute": 0, "workers": 2, "where": "local Ray instance",
        "cpus_per_worker": 1.0, "gpu_per_worker": 0.0,
    }  # fmt: skip
    clip = _by_source(report)
    assert clip["corrupt.mp4"]["status"] == "failed"
    assert "not a video file OpenCV can read" in clip["corrupt.mp4"]["error"]
    assert clip["corrupt.mp4"]["take"] is None
    assert sorted(p.name.rsplit("-", 1)[0] for p in out.glob("*.npz")) == [
        "blank", "frames_smoke", "smoke"]  # fmt: skip
    for name in ("smoke.mp4", "frames_smoke"):
        c = clip[name]
        take = load_take(out / c["take"])
        assert c["status"] == "ok" and c["hands"] == len(take.tracks) == 2
        assert c["frames"] == 4 and c["detection_rate"] >= 0.75
        assert c["jitter_px"] is not None and 0.0 <= c["jitter_px"] < 50.0
        assert c["jitter_px"] == pytest.approx(jitter_px(take), abs=1e-4)
        assert c["worst_frame"] in range(4) and 0.0 < c["worst_confidence"] <= 1.0
        assert take.tracks[0].mano_pose is not None  # the capture options' defaults: MANO
        assert (out / c["overlay"]).stat().st_size > 0
    blank = clip["blank.mp4"]
    assert (blank["status"], blank["hands"], blank["detection_rate"]) == ("ok", 0, 0.0)
    assert load_take(out / blank["take"]).tracks == ()
    page = (out / "report.html").read_text()
    for c in report["clips"]:
        if c["status"] == "ok":
            assert cv2.imread(str(out / c["thumbnail"])).shape[1] <= 320
            assert f'src="{c["thumbnail"]}"' in page
            assert (out / f"{c['name']}.json").is_file()  # the sidecar
    assert "not a video file OpenCV can read" in page and "px/frame" in page
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files
    kinds = [e["event"] for e in events]
    assert kinds[0] == "batch_start" and kinds[-1] == "done" and kinds.count("clip_done") == 4
    assert events[-1]["exit_code"] == 3 and events[-1]["failed"] == 1
    starts = {e["clip"]: e["pid"] for e in events if e["event"] == "clip_start"}
    assert len(starts) == 3 and all(pid != os.getpid() for pid in starts.values())
    print(f"first run: {seconds:.1f} s")


def test_a_rerun_skips_the_finished_clips(first_run, clips, ray_env):
    out = first_run[0]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*") if p.suffix != ".json"}
    proc, events, seconds = _batch(ray_env, clips, "-o", out, "--workers", "2", "--overlays")
    assert proc.returncode == 3, proc.stderr[-3000:]
    skipped = {e["source"] for e in events if e["event"] == "clip_skipped"}
    assert {Path(s).name for s in skipped} == {"smoke.mp4", "frames_smoke", "blank.mp4"}
    assert not [e for e in events if e["event"] == "clip_start"]  # nothing captured again
    report = json.loads((out / "report.json").read_text())
    clip = _by_source(report)
    assert clip["corrupt.mp4"]["status"] == "failed"  # a failed clip is tried again
    assert all(clip[Path(s).name]["skipped"] and clip[Path(s).name]["status"] == "ok"
               for s in skipped)  # fmt: skip
    assert clip["smoke.mp4"]["hands"] == 2  # the figures come back from the sidecar
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*") if p.suffix != ".json"}
    changed = {n for n in before if before[n] != after.get(n)}
    assert changed == {"report.html"}, changed
    # every clip up to date: no Ray at all, exit 0
    good = [clips / "smoke.mp4", clips / "frames_smoke", clips / "blank.mp4"]
    proc, events, quick = _batch(ray_env, *good, "-o", out, "--overlays")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert events[0]["where"] == "nothing to capture" and events[-1]["skipped"] == 3
    # other settings are another take: nothing is skipped
    proc, events, _ = _batch(ray_env, clips / "corrupt.mp4", *good, "-o", out, "--skip-mano",
                             "--workers", "2")  # fmt: skip
    assert proc.returncode == 3 and events[0]["skipped"] == 0 and events[0]["to_capture"] == 4
    print(f"rerun: {seconds:.1f} s, rerun with nothing to do: {quick:.1f} s")


def test_a_killed_worker_still_ends_with_every_good_clip_done(clips, ray_env, tmp_path):
    out = tmp_path / "takes"
    cmd = [sys.executable, "-m", "handmocap.inference", "batch", clips / "smoke.mp4",
           clips / "frames_smoke", clips / "blank.mp4", "-o", out, "--workers", "2",
           "--progress", "jsonl"]  # fmt: skip
    started = time.perf_counter()
    events, killed = [], None
    with open(tmp_path / "stderr.txt", "w+") as err:
        proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=err,
                                text=True, env=ray_env)  # fmt: skip
        try:
            for line in proc.stdout:
                event = json.loads(line)
                events.append(event)
                if killed is None and event.get("stage") == "mano_fit":  # mid-clip: fitting
                    os.kill(event["pid"], signal.SIGKILL)
                    killed = event
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        err.seek(0)
        stderr = err.read()
    assert killed is not None, f"no clip reached the MANO fit: {events} {stderr[-2000:]}"
    assert code == 0, stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [c["status"] for c in report["clips"]] == ["ok"] * 3
    assert report["summary"]["ok"] == 3 and report["summary"]["failed"] == 0
    for c in report["clips"]:
        assert load_take(out / c["take"]).header.engine.frames_read == c["frames"]
    # the killed clip was started again by another worker process (Ray's restart and retry)
    pids = [e["pid"] for e in events if e["event"] == "clip_start" and e["clip"] == killed["clip"]]
    assert len(pids) == 2 and pids[0] == killed["pid"] and pids[1] != killed["pid"], pids
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    print(f"killed-worker run: {time.perf_counter() - started:.1f} s")
