"""Streamed decoding: files and image folders, ranges, and every kind of bad input."""

import threading

import cv2
import numpy as np
import pytest

from handmocap.errors import HandmocapError
from handmocap.inference.video import VideoSource
from handmocap.take import FrameRange


def _write_video(path, n, size=(64, 48), fps=25.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(n):
        img = np.full((size[1], size[0], 3), 0, np.uint8)
        img[:, :, 2] = (i * 8) % 256  # red channel encodes the frame index
        w.write(img)
    w.release()
    return path


def test_video_file_with_range_and_stride(tmp_path):
    src = VideoSource(_write_video(tmp_path / "v.mp4", 20), FrameRange(start=3, end=15, stride=4))
    assert (src.info.width, src.info.height, src.info.fps, src.info.frame_count) == (
        64,
        48,
        25.0,
        20,
    )
    got = list(src)
    assert [i for i, _ in got] == [3, 7, 11] == list(range(3, 15, 4))
    assert src.expected_frames() == 3
    for i, rgb in got:
        assert rgb.shape == (48, 64, 3) and abs(int(rgb[..., 0].mean()) - i * 8) <= 3  # RGB order


def test_image_folder_sorted_by_name(tmp_path):
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), np.full((8, 8, 3), i * 50, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    src = VideoSource(tmp_path, fps=12)
    assert src.info.is_folder and src.info.fps == 12 and src.info.frame_count == 3
    assert [int(rgb.mean()) for _, rgb in src] == [0, 50, 100]


def test_stopping_early_does_not_hang(tmp_path):
    """Leaving the loop early ends the reader thread, though it is blocked on a full queue.
    The loop runs in a thread of its own, so a hang fails the test instead of hanging it."""
    src = VideoSource(_write_video(tmp_path / "v.mp4", 60), queue_size=2)
    before = set(threading.enumerate())
    seen: list[int] = []

    def stop_early() -> None:
        frames = iter(src)
        for i, _ in frames:
            seen.append(i)
            if i == 3:
                break
        frames.close()  # what dropping the loop's iterator does: the source's clean-up

    consumer = threading.Thread(target=stop_early, daemon=True)
    consumer.start()
    consumer.join(timeout=20.0)
    assert not consumer.is_alive(), "stopping early hung: the reader thread never finished"
    assert seen == [0, 1, 2, 3]
    assert set(threading.enumerate()) <= before, "the reader thread outlived the loop"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.mp4", "video not found"),
        (
            lambda p: (p / "notes.mp4").write_text("not a video") and p / "notes.mp4",
            "cannot decode",
        ),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no PNG or JPEG frames"),
    ],
)
def test_bad_inputs_name_the_problem(tmp_path, make, message):
    with pytest.raises(HandmocapError, match=message):
        VideoSource(make(tmp_path))


def test_an_empty_video_file(tmp_path):
    path = _write_video(tmp_path / "empty.mp4", 0)
    with pytest.raises(HandmocapError, match="cannot decode"):
        VideoSource(path)


def test_bad_ranges(tmp_path):
    path = _write_video(tmp_path / "v.mp4", 10)
    with pytest.raises(HandmocapError, match="bad frame range"):
        VideoSource(path, FrameRange(start=5, end=5))
    with pytest.raises(HandmocapError, match="bad frame range"):
        VideoSource(path, FrameRange(stride=0))
    with pytest.raises(HandmocapError, match="past the end"):
        VideoSource(path, FrameRange(start=50))
