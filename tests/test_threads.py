"""The thread policy (inference/threads.py): pools, side-by-side maps, session settings."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from handmocap.inference import threads
from handmocap.inference.backend import Network, choose_backend
from handmocap.inference.threads import (
    CoreShare,
    beside,
    blas_threads,
    map_beside,
    resolve_threads,
    side_pool,
    usable_cores,
)


def test_threads_resolve_to_the_usable_cores_or_what_was_asked():
    assert usable_cores() >= 1
    assert resolve_threads(0) == usable_cores()
    assert resolve_threads(3) == 3
    assert resolve_threads(-2) == usable_cores()
    assert side_pool(1) is None
    assert side_pool(3).workers == 2
    assert side_pool(3) is side_pool(3)  # one pool per size, shared


def test_map_beside_keeps_item_order_and_uses_the_calling_thread_and_the_pool():
    seen: dict[int, str] = {}

    def slow_square(x: int) -> int:
        time.sleep(0.02)
        seen[x] = threading.current_thread().name
        return x * x

    items = list(range(9))
    assert map_beside(side_pool(3), slow_square, items) == [x * x for x in items]
    names = set(seen.values())
    assert threading.current_thread().name in names
    assert any(n.startswith("handmocap") for n in names)
    assert map_beside(None, slow_square, items) == [x * x for x in items]


def test_map_beside_raises_the_first_error_after_all_started_calls_finished():
    finished = []

    def fail_on_two(x: int) -> int:
        time.sleep(0.01 * x)
        if x == 2:
            raise ValueError("bad item 2")
        finished.append(x)
        return x

    with pytest.raises(ValueError, match="bad item 2"):
        map_beside(side_pool(2), fail_on_two, list(range(6)))
    settled = len(finished)
    time.sleep(0.1)
    assert len(finished) == settled  # nothing still running after the call returned
    assert settled < 5  # no new item started after the error


def test_beside_without_a_pool_runs_now_and_keeps_the_error_for_result():
    assert beside(None, lambda: 7).result() == 7
    future = beside(None, lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        future.result()
    assert beside(side_pool(2), lambda: 8).result(timeout=5) == 8


def test_opencv_threads_are_set_for_the_block_and_restored():
    import cv2

    from handmocap.inference.threads import opencv_threads

    before = cv2.getNumThreads()
    with opencv_threads(1):
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == before


def test_blas_threads_are_set_for_the_block_and_restored():
    from threadpoolctl import threadpool_info

    def blas() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas()
    assert before  # numpy's own BLAS is found
    with blas_threads(1):
        assert blas() == [1] * len(before)
    assert blas() == before


def _relu_model(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "relu.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_a_network_gives_the_same_rows_alone_split_or_beside_other_work(tmp_path):
    """Rows split across the cores, run on one thread beside other work, or as one batch:
    the same outputs in the same order."""
    net = Network(_relu_model(tmp_path), choose_backend("cpu"), threads=2)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    want = np.maximum(x, 0)
    for alone in (True, False):
        (got,) = net.run("x", x, alone=alone)
        np.testing.assert_array_equal(got, want)
    (one,) = net.run("x", x[:1])
    np.testing.assert_array_equal(one, want[:1])
    single = Network(_relu_model(tmp_path), choose_backend("cpu"), threads=1)
    assert single.pool is None
    np.testing.assert_array_equal(single.run("x", x)[0], want)


def test_the_landmarker_gives_the_same_hands_with_its_crops_split_across_the_cores():
    """Crops split across the cores (each thread cutting, running and reading its own) give
    the hands one thread gives for the whole batch, in the same order, from one frame or
    one image per crop: image pixels within 1e-3 px (the one-thread session in both)."""
    import cv2

    from bench.synth.cache import cached_clip
    from handmocap.inference.geometry import Roi
    from handmocap.inference.hand_landmarks import HandLandmarker
    from handmocap.models.mediapipe_port import built_mediapipe_models

    mp4, _ = cached_clip("two_crossing")
    ok, bgr = cv2.VideoCapture(str(mp4)).read()
    assert ok
    frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = frame.shape[:2]
    rois = [Roi(w * (0.3 + 0.2 * k), h * 0.5, h * 0.4, 0.3 * k - 0.3) for k in range(3)]
    model = built_mediapipe_models().hand_landmark
    split = HandLandmarker(model, choose_backend("cpu"), threads=2)
    whole = HandLandmarker(model, choose_backend("cpu"), threads=1)
    assert split.network.side_by_side(3) == [slice(0, 2), slice(2, 3)]
    for image in (frame, [frame, frame[::-1].copy(), frame[:, ::-1].copy()]):
        got, want = split.estimate(image, rois), whole.estimate(image, rois)
        assert [g.roi for g in got] == rois
        for g, e in zip(got, want, strict=True):
            np.testing.assert_allclose(g.image_xyz, e.image_xyz, atol=1e-3)
            assert abs(g.presence - e.presence) < 1e-5


def test_sessions_wait_without_spinning_on_the_threads_asked(tmp_path):
    from handmocap.inference.backend import create_session

    sess = create_session(_relu_model(tmp_path), choose_backend("cpu"), threads=3)
    opts = sess.get_session_options()
    assert opts.intra_op_num_threads == 3
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


STAT = """cpu  10 0 10 100 0 0 0 0 0 0
cpu0 {u0} 0 {s0} 500 7 1 2 {st0} 0 0
cpu1 100 0 100 900 0 0 0 0 0 0
intr 12345
"""


def test_busy_ticks_count_only_our_cpus_and_leave_out_idle_and_iowait():
    text = STAT.format(u0=40, s0=10, st0=5)
    # cpu0: user 40 + system 10 + irq 1 + softirq 2 + steal 5 (another VM had the core)
    assert threads._busy_ticks({0}, text) == 58
    assert threads._busy_ticks({0, 1}, text) == 58 + 200
    assert threads._busy_ticks({5}, text) == 0


def test_core_share_is_busy_time_of_our_cpus_less_our_own(tmp_path, monkeypatch):
    """Between two reads 1 s apart, cpu0 was busy 150 ticks (1.5 s at 100 ticks/s) and this
    process used 0.5 s of CPU: other programs kept 1.0 core busy."""
    stat = tmp_path / "stat"
    stat.write_text(STAT.format(u0=40, s0=10, st0=0))
    clock = {"now": 100.0, "own": 2.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(
        threads.os, "times", lambda: type("T", (), {"user": clock["own"], "system": 0.0})()
    )
    monkeypatch.setattr(threads, "_usable_cpu_ids", lambda: {0})
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    share = CoreShare(interval_s=0.5, stat_path=str(stat))
    share.tick = 100
    stat.write_text(STAT.format(u0=140, s0=60, st0=0))
    clock.update(now=100.2, own=2.5)
    assert share.others() == 0.0, "read again only after interval_s"
    clock["now"] = 101.0
    assert share.others() == pytest.approx(1.0)
    assert share.contended(), "2 cores, 1 busy with others: fewer than 1.5 free"
    stat.write_text(STAT.format(u0=160, s0=60, st0=0))
    clock.update(now=102.0, own=2.7)  # 20 ticks busy, all of them ours
    assert share.others() == pytest.approx(0.0)
    assert not share.contended()


def test_without_proc_stat_other_programs_count_as_idle(tmp_path):
    share = CoreShare(interval_s=0.0, stat_path=str(tmp_path / "missing"))
    assert share.others() == 0.0 and not share.contended()


@pytest.mark.skipif(not threads.os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
@pytest.mark.skipif(usable_cores() > 4, reason="busy loops on every core of a big machine")
def test_busy_programs_on_every_core_are_seen():
    """One busy process per usable core: within two readings the share sees at least half
    of them taken by others (each loop wants a whole one)."""
    import subprocess
    import sys

    share = CoreShare(interval_s=0.3)
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(usable_cores())]  # fmt: skip
    try:
        time.sleep(0.4)
        share.others()
        time.sleep(0.4)
        busy = share.others()
    finally:
        for p in loops:
            p.kill()
            p.wait()
    assert busy >= 0.5 * usable_cores()
    assert share.contended()


def test_a_call_alone_runs_on_one_thread_while_the_cores_are_contended(tmp_path, monkeypatch):
    """One row that would use every core goes to the one-thread session while other
    programs keep the cores busy; rows split across the cores stay split (independent calls
    meet once, not at every operation)."""
    net = Network(_relu_model(tmp_path), choose_backend("cpu"), threads=2)
    used = []
    for attr in ("session", "_narrow"):
        sess = getattr(net, attr)
        monkeypatch.setattr(
            net,
            attr,
            type(
                "Spy",
                (),
                {"run": lambda self, out, feed, s=sess, a=attr: used.append(a) or s.run(out, feed)},
            )(),
        )
    x = np.ones((2, 4), np.float32)
    monkeypatch.setattr(threads.core_share(), "contended", lambda: True)
    net.run("x", x[:1])
    assert used == ["_narrow"]
    used.clear()
    net.run("x", x)
    assert used == ["_narrow", "_narrow"], "two rows: one one-thread call each, side by side"
    monkeypatch.setattr(threads.core_share(), "contended", lambda: False)
    used.clear()
    net.run("x", x[:1])
    assert used == ["session"]


def _capture(preset: str, threads: int, fit_mano: bool):
    from bench.synth.cache import cached_clip
    from handmocap.inference.capture import CaptureConfig, capture
    from handmocap.inference.tracker import TrackerConfig

    mp4, _ = cached_clip(preset)
    config = CaptureConfig(tracker=TrackerConfig(device="cpu", threads=threads), fit_mano=fit_mano)
    return capture(mp4, config).take


@pytest.mark.parametrize(("preset", "fit_mano"), [("demo", False), ("two_crossing", True)])
def test_a_capture_is_the_same_on_one_thread_and_side_by_side(preset: str, fit_mano: bool):
    """Work run side by side (the palm detector beside the landmarks, two hands' crops and
    the de-occlusion stage's cleaned crops on two threads, two tracks fitted at once) gives
    the take that one thread gives: same tracks and frames, keypoints within 0.01 px, MANO
    poses within 1e-4 rad."""
    one, two = (_capture(preset, threads, fit_mano) for threads in (1, 2))
    assert len(one.tracks) == len(two.tracks) >= 1
    for a, b in zip(one.tracks, two.tracks, strict=True):
        assert a.handedness == b.handedness
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.flags, b.flags)
        np.testing.assert_allclose(a.keypoints_2d, b.keypoints_2d, atol=0.01)
        if fit_mano:
            np.testing.assert_allclose(a.mano_pose, b.mano_pose, atol=1e-4)
    assert one.header.engine.timings["landmarks"] > 0


def test_capture_threads_flag_reaches_the_networks(tmp_path):
    """``handmocap capture --threads 1`` builds one-thread networks with no side pool."""
    from handmocap.inference.capture import tracker_config
    from handmocap.inference.cli import _capture_config, _parser
    from handmocap.inference.tracker import build_models

    args = _parser().parse_args(["capture", "clip.mp4", "-o", str(tmp_path / "t.npz"),
                                      "--threads", "1", "--device", "cpu"])  # fmt: skip
    config = tracker_config(_capture_config(args))
    assert config.threads == 1
    palm, landmarker = build_models(config)
    assert landmarker.network.threads == palm.network.threads == 1
    assert landmarker.network.pool is None
