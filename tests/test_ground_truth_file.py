"""The ground-truth npz: round trip, validation, projection."""

import json

import numpy as np
import pytest

from bench.synth.ground_truth import (
    FORMAT,
    VERSION,
    ClipGroundTruth,
    Visibility,
    intrinsics_from_fov,
    load_ground_truth,
    project,
)
from handmocap.errors import HandmocapError


def _clip(t=3, h=2, height=48, width=64) -> ClipGroundTruth:
    rng = np.random.default_rng(0)
    k = intrinsics_from_fov(width, height, 60.0)
    cam = rng.uniform([-0.1, -0.1, 0.4], [0.1, 0.1, 0.6], size=(t, h, 21, 3))
    return ClipGroundTruth(
        header={
            "format": FORMAT,
            "version": VERSION,
            "num_frames": t,
            "width": width,
            "height": height,
        },
        intrinsics=k,
        handedness=("left", "right")[:h],
        keypoints_cam=cam.astype(np.float32),
        keypoints_px=project(cam, k).astype(np.float32),
        visibility=np.zeros((t, h, 21), np.int8),
        joint_local_quat=np.tile(np.array([1.0, 0, 0, 0], np.float32), (t, h, 25, 1)),
        wrist_rotation=np.tile(np.eye(3, dtype=np.float32), (t, h, 1, 1)),
        wrist_position=cam[:, :, 0].astype(np.float32),
        mano_pose=np.zeros((t, h, 16, 3), np.float32),
        segmentation=np.zeros((t, height, width), np.uint8),
    )


def test_round_trip_without_pickle(tmp_path):
    clip = _clip()
    path = clip.save(tmp_path / "clip.npz")
    with np.load(path, allow_pickle=False) as raw:  # would raise if anything were pickled
        assert json.loads(str(raw["header"]))["format"] == FORMAT
    back = load_ground_truth(path)
    assert back.handedness == ("left", "right")
    np.testing.assert_array_equal(back.keypoints_px, clip.keypoints_px)
    assert back.num_frames == 3 and back.num_hands == 2


def test_validation_names_the_problem(tmp_path):
    clip = _clip()
    path = clip.save(tmp_path / "clip.npz")
    with np.load(path) as raw:
        content = dict(raw)
    content["visibility"] = content["visibility"][:, :, :20]
    np.savez(tmp_path / "bad_shape.npz", **content)
    with pytest.raises(
        HandmocapError, match=r"visibility has shape \(3, 2, 20\), expected \(3, 2, 21\)"
    ):
        load_ground_truth(tmp_path / "bad_shape.npz")
    content = dict(np.load(path))
    content["header"] = np.array(json.dumps({"format": FORMAT, "version": 99}))
    np.savez(tmp_path / "future.npz", **content)
    with pytest.raises(HandmocapError, match="v99"):
        load_ground_truth(tmp_path / "future.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(HandmocapError, match="not a readable ground-truth file"):
        load_ground_truth(tmp_path / "junk.npz")


def _resaved(path, tmp_path, name, version=None, code=None):
    """A copy of the npz at ``path`` with another header version and/or one visibility code."""
    content = dict(np.load(path))
    header = json.loads(str(content["header"]))
    if version is not None:
        header["version"] = version
    content["header"] = np.array(json.dumps(header))
    if code is not None:
        content["visibility"] = content["visibility"].copy()
        content["visibility"][1, 0, 5] = code
    np.savez(tmp_path / name, **content)
    return tmp_path / name


def test_version_1_files_stay_readable_and_object_occlusion_needs_version_2(tmp_path):
    path = _clip().save(tmp_path / "clip.npz")
    old = load_ground_truth(_resaved(path, tmp_path, "v1.npz", version=1))
    assert old.header["version"] == 1 and old.header["occluder"] is None
    object_code = int(Visibility.OCCLUDED_BY_OBJECT)
    assert object_code == 4
    with pytest.raises(HandmocapError, match=r"unknown codes \[4\]"):
        load_ground_truth(_resaved(path, tmp_path, "v1_object.npz", version=1, code=object_code))
    new = load_ground_truth(_resaved(path, tmp_path, "v2_object.npz", code=object_code))
    assert VERSION == 2 and new.visibility[1, 0, 5] == object_code
    with pytest.raises(HandmocapError, match=r"unknown codes \[7\]"):
        load_ground_truth(_resaved(path, tmp_path, "v2_bad.npz", code=7))


def test_projection_in_pixels():
    k = intrinsics_from_fov(512, 512, 90.0)
    assert k[0, 0] == pytest.approx(256.0)
    px = project(np.array([[0.0, 0.0, 1.0], [0.5, -0.25, 1.0], [0.1, 0.1, 0.2]]), k)
    np.testing.assert_allclose(px, [[256, 256], [384, 192], [384, 384]], atol=1e-9)
