"""The take file: round trip without pickle, optional MANO fields, validation messages."""

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from handmocap.errors import HandmocapError
from handmocap.sides import Side
from handmocap.take import (
    FORMAT,
    VERSION,
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
    return make_header(
        "clip.mp4", 30.0, 640, 480, np.eye(3), "guess", engine=EngineFacts(device="cpu")
    )


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
    for version in (3, 0):
        content["header"] = np.array(json.dumps({**_header().to_json(), "version": version}))
        np.savez(tmp_path / f"v{version}.npz", **content)
        with pytest.raises(
            HandmocapError,
            match=rf"is take format v{version}; this handmocap reads v1 and v2\. Re-capture",
        ):
            load_take(tmp_path / f"v{version}.npz")
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
        "format": FORMAT, "version": 2, "source": "clip.mp4", "fps": 15.0, "width": 640,
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


# --- v2: the per-frame fit the motion prior started from ---------------------------------------
def _fitted_track(t=6, **changes):
    """A track after the MANO stage and the motion prior: rows 2 and 3 infilled, the
    per-frame fit kept in frame_pose / frame_translation (float32, as the engine builds it)."""
    rng = np.random.default_rng(3)
    flags = np.full(t, FrameFlag.TRACKED, np.uint8)
    flags[2:4] = FrameFlag.INFILLED
    fields = {
        "mano_pose": rng.normal(scale=0.3, size=(t, 16, 3)).astype(np.float32),
        "mano_betas": rng.normal(size=10).astype(np.float32),
        "translation": rng.normal(scale=0.1, size=(t, 3)).astype(np.float32),
        "keypoints_3d": rng.normal(scale=0.05, size=(t, 21, 3)).astype(np.float32),
        "rest_keypoints": rng.normal(scale=0.05, size=(21, 3)).astype(np.float32),
        "frame_pose": rng.normal(scale=0.3, size=(t, 16, 3)).astype(np.float32),
        "frame_translation": rng.normal(scale=0.1, size=(t, 3)).astype(np.float32),
        **changes,
    }
    return replace(_track(t, **fields), flags=flags)


def _with_header_version(src, dst, version, drop=()):
    """A copy of the take ``src`` whose header says ``version``, without the entries ``drop``."""
    with np.load(src, allow_pickle=False) as raw:
        content = {k: raw[k] for k in raw.files if k not in drop}
    content["header"] = np.array(json.dumps({**json.loads(str(content["header"])),
                                             "version": version}))  # fmt: skip
    np.savez_compressed(dst, **content)
    return dst


def test_the_per_frame_fit_round_trips_exactly(tmp_path):
    tr = _fitted_track()
    path = Take(_header(), (tr,)).save(tmp_path / "take.npz")
    with np.load(path, allow_pickle=False) as raw:
        assert json.loads(str(raw["header"]))["version"] == VERSION == 2
        assert raw["track0.frame_pose"].dtype == np.float32
    back = load_take(path).tracks[0]
    for name in ("frame_pose", "frame_translation", "mano_pose", "translation", "flags"):
        got, want = getattr(back, name), getattr(tr, name)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), name
    assert back.frame_pose.shape == (6, 16, 3) and back.frame_translation.shape == (6, 3)
    assert list(back.flags & FrameFlag.INFILLED) == [0, 0, 8, 8, 0, 0]


def test_a_v1_take_still_loads_without_the_per_frame_fit(tmp_path):
    """A v1 file as the v1 engine wrote it: header version 1, no frame_pose/frame_translation."""
    tr = _fitted_track(frame_pose=None, frame_translation=None)
    v2 = Take(_header(), (tr, _track(3, 7, "left"))).save(tmp_path / "v2.npz")
    path = _with_header_version(v2, tmp_path / "v1.npz", 1)
    with np.load(path, allow_pickle=False) as raw:
        assert json.loads(str(raw["header"]))["version"] == 1
        assert not any(k.endswith((".frame_pose", ".frame_translation")) for k in raw.files)
    back = load_take(path)
    assert back.header == _header()
    assert back.tracks[0].frame_pose is None and back.tracks[0].frame_translation is None
    assert back.tracks[0].mano_pose.tobytes() == tr.mano_pose.tobytes()
    assert back.tracks[1].mano_pose is None and len(back.tracks[1]) == 3


def test_a_v1_take_with_the_per_frame_fit_is_refused(tmp_path):
    v2 = Take(_header(), (_fitted_track(),)).save(tmp_path / "v2.npz")
    path = _with_header_version(v2, tmp_path / "v1.npz", 1)
    with pytest.raises(HandmocapError) as info:
        load_take(path)
    assert str(info.value).startswith(
        f"{path}: track 0 has frame_pose, which take format v1 does not have (it came in v2)"
    )
    # without frame_pose, frame_translation alone is refused for the same reason
    path = _with_header_version(v2, tmp_path / "v1b.npz", 1, drop=("track0.frame_pose",))
    with pytest.raises(HandmocapError, match="track 0 has frame_translation, which take format v1"):
        load_take(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mano_pose": None}, "track 0 has frame_pose but no mano_pose"),
        ({"frame_translation": None}, "track 0 has frame_pose but no frame_translation"),
        ({"frame_pose": None}, "track 0 has frame_translation but no frame_pose"),
        (
            {"frame_pose": np.zeros((6, 15, 3), np.float32)},
            "track 0 frame_pose has shape (6, 15, 3), expected (6, 16, 3)",
        ),
        (
            {"frame_translation": np.zeros((5, 3), np.float32)},
            "track 0 frame_translation has shape (5, 3), expected (6, 3)",
        ),
        (
            {"frame_pose": np.full((6, 16, 3), np.nan, np.float32)},
            "track 0 frame_pose contains NaN or inf values",
        ),
    ],
)
def test_a_bad_per_frame_fit_is_refused_when_built_and_when_loaded(tmp_path, changes, message):
    with pytest.raises(HandmocapError, match=re.escape(message)):
        _fitted_track(**changes)
    good = Take(_header(), (_fitted_track(),)).save(tmp_path / "good.npz")
    with np.load(good, allow_pickle=False) as raw:
        content = {k: raw[k] for k in raw.files}
    for name, value in changes.items():
        if value is None:
            del content[f"track0.{name}"]
        else:
            content[f"track0.{name}"] = value
    np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(HandmocapError) as info:
        load_take(tmp_path / "bad.npz")
    assert str(info.value).startswith(f"{tmp_path / 'bad.npz'}: {message}")
