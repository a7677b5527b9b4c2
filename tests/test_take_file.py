"""The take file: round trip without pickle, optional MANO fields, validation messages."""

import json
from dataclasses import replace

import numpy as np
import pytest

from handmocap.errors import HandmocapError
from handmocap.sides import Side
from handmocap.take import (
    FORMAT,
    EngineFacts,
    FrameFlag,
    FrameRange,
    Take,
    Track,
    load_take,
    make_header,
)


def _track(t=5, track_id=0, handedness="right", **extra):
    rng = np.random.default_rng(track_id)
    return Track(
        track_id=track_id, handedness=handedness, frames=np.arange(t) * 2,
        keypoints_2d=rng.uniform(0, 640, (t, 21, 2)), keypoints_rel_depth=rng.normal(size=(t, 21)),
        world_landmarks=rng.normal(scale=0.05, size=(t, 21, 3)), confidence=np.ones((t, 21)),
        right_prob=np.full(t, 0.9), flags=np.full(t, FrameFlag.TRACKED, np.uint8), **extra,
    )  # fmt: skip


def _header():
    return make_header("clip.mp4", 30.0, 640, 480, np.eye(3), "guess",
                       engine=EngineFacts(device="cpu"))


def test_round_trip(tmp_path):
    take = Take(_header(), (_track(), _track(3, 7, "left")))
    path = take.save(tmp_path / "take.npz")
    with np.load(path, allow_pickle=False) as raw:
        assert json.loads(str(raw["header"]))["format"] == FORMAT
    back = load_take(path)
    assert [t.track_id for t in back.tracks] == [0, 7]
    assert back.tracks[1].handedness == "left" and len(back.tracks[1]) == 3
    np.testing.assert_allclose(back.tracks[0].keypoints_2d, take.tracks[0].keypoints_2d, rtol=1e-6)
    assert back.tracks[0].mano_pose is None  # filled by the MANO stage later
    assert back.header.intrinsics_source == "guess"


def test_mano_fields_round_trip(tmp_path):
    tr = _track(
        4,
        mano_pose=np.zeros((4, 16, 3)),
        mano_betas=np.zeros(10),
        translation=np.ones((4, 3)),
        rest_keypoints=np.arange(63.0).reshape(21, 3),
    )
    back = load_take(Take(_header(), (tr,)).save(tmp_path / "t.npz"))
    assert back.tracks[0].mano_pose.shape == (4, 16, 3) and back.tracks[0].keypoints_3d is None
    np.testing.assert_array_equal(back.tracks[0].rest_keypoints, tr.rest_keypoints)


def test_a_take_with_no_hands(tmp_path):
    back = load_take(Take(_header(), ()).save(tmp_path / "empty.npz"))
    assert back.tracks == ()


def test_validation(tmp_path):
    path = Take(_header(), (_track(),)).save(tmp_path / "take.npz")
    content = dict(np.load(path))
    content["track0.keypoints_2d"] = content["track0.keypoints_2d"][:, :20]
    np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(
        HandmocapError, match=r"keypoints_2d has shape \(5, 20, 2\), expected \(5, 21, 2\)"
    ):
        load_take(tmp_path / "bad.npz")
    content = dict(np.load(path))
    content["header"] = np.array(json.dumps({**_header().to_json(), "version": 2}))
    np.savez(tmp_path / "v2.npz", **content)
    with pytest.raises(HandmocapError, match="v2; this handmocap reads v1"):
        load_take(tmp_path / "v2.npz")
    with pytest.raises(HandmocapError, match="not found"):
        load_take(tmp_path / "nothing.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(HandmocapError, match="not a readable take file"):
        load_take(tmp_path / "junk.npz")


def test_unwritable_path_is_a_clear_error(tmp_path):
    with pytest.raises(HandmocapError, match="cannot write the take"):
        Take(_header(), ()).save(tmp_path / "no" / "such" / "folder" / "take.npz")


def test_the_header_json_keeps_the_keys_and_values_the_engine_writes(tmp_path):
    """What capture() writes, typed: the file holds the same JSON object as before the header
    was typed (version 1), and loading it gives the typed header back."""
    header = make_header(
        "clip.mp4", 15.0, 640, 480, np.eye(3), "user", hand_model="handmocap-open-hand-1",
        frame_range=FrameRange(10, None, 2),
        engine=EngineFacts(engine_version="0.1.0", device="cpu", provider="CPUExecutionProvider",
                           frames_read=12, detector_runs=3, detected_frames=4,
                           tracking_seconds=1.25, mano_seconds=0.5),
        warnings=["clip.mp4 ended early"], frames_short=2, missing_frames=[7],
    )  # fmt: skip
    want = {
        "format": FORMAT, "version": 1, "source": "clip.mp4", "fps": 15.0, "width": 640,
        "height": 480, "intrinsics": np.eye(3).tolist(), "intrinsics_source": "user",
        "hand_model": "handmocap-open-hand-1", "engine_version": "0.1.0", "device": "cpu",
        "provider": "CPUExecutionProvider", "frame_range": {"start": 10, "end": None, "stride": 2},
        "frames_read": 12, "detector_runs": 3, "detected_frames": 4, "tracking_seconds": 1.25,
        "mano_seconds": 0.5, "warnings": ["clip.mp4 ended early"], "frames_short": 2,
        "missing_frames": [7],
    }  # fmt: skip
    path = Take(header, ()).save(tmp_path / "take.npz")
    with np.load(path, allow_pickle=False) as raw:
        assert json.loads(str(raw["header"])) == want
    back = load_take(path).header
    assert back == header and back.frame_range.stride == 2 and back.engine.frames_read == 12
    assert back.warnings == ("clip.mp4 ended early",) and back.missing_frames == (7,)
    assert back.intrinsics.dtype == np.float64 and not back.intrinsics.flags.writeable


def test_header_fields_this_version_does_not_know_survive_a_round_trip(tmp_path):
    """A newer engine's field, and an engine fact of a type this version does not know, load
    into ``extras`` (read-only) and are written back as they were; the stages an engine
    records load typed."""
    path = Take(_header(), ()).save(tmp_path / "take.npz")
    content = dict(np.load(path))
    data = {**json.loads(str(content["header"])), "prior": {"model": "m", "steps": 3},
            "device": {"name": "cuda", "index": 0},
            "stages": {"mano_fit": {"iterations": 40}}}  # fmt: skip
    content["header"] = np.array(json.dumps(data))
    np.savez(tmp_path / "newer.npz", **content)
    header = load_take(tmp_path / "newer.npz").header
    assert header.engine.device is None
    assert header.engine.stages == {"mano_fit": {"iterations": 40}}
    assert dict(header.extras) == {"prior": {"model": "m", "steps": 3},
                                   "device": {"name": "cuda", "index": 0}}  # fmt: skip
    with pytest.raises(TypeError):
        header.extras["prior"] = None
    again = Take(header, ()).save(tmp_path / "again.npz")
    with np.load(again, allow_pickle=False) as raw:
        assert json.loads(str(raw["header"])) == data
    with pytest.raises(HandmocapError, match=r"extras repeat its own fields: \['fps'\]"):
        replace(_header(), extras={"fps": 30.0})


def test_a_tracks_handedness_is_a_side():
    track = _track(handedness="left")
    assert track.handedness is Side.LEFT and track.handedness == "left"
    with pytest.raises(HandmocapError, match="handedness is 'Left'; expected 'left' or 'right'"):
        _track(handedness="Left")
