"""The ground-truth npz: round trip, validation, projection."""

import dataclasses
import json

import numpy as np
import pytest

from bench.synth.ground_truth import (
    ALONE_MARGIN_PX,
    FORMAT,
    VERSION,
    ClipGroundTruth,
    Visibility,
    alone_image_name,
    hands_meet,
    intrinsics_from_fov,
    load_alone_rgb,
    load_ground_truth,
    project,
)
from handmocap.errors import HandmocapError


def _clip(t=3, h=2, height=48, width=64) -> ClipGroundTruth:
    """A small clip whose hands overlap on frame 1: hand 0 partly behind hand 1 there."""
    rng = np.random.default_rng(0)
    k = intrinsics_from_fov(width, height, 60.0)
    cam = rng.uniform([-0.1, -0.1, 0.4], [0.1, 0.1, 0.6], size=(t, h, 21, 3))
    amodal = np.zeros((t, h, height, width), bool)
    for i in range(h):
        amodal[:, i, 10:30, 5 + 20 * i : 25 + 20 * i] = True
    amodal[1, :h, 10:30, 20:40] = True  # frame 1: hand 0 reaches under hand 1
    segmentation = np.zeros((t, height, width), np.uint8)
    for i in range(h):  # the later hand is in front
        segmentation[amodal[:, i]] = i + 1
    return ClipGroundTruth(
        header={
            "format": FORMAT,
            "version": VERSION,
            "num_frames": t,
            "width": width,
            "height": height,
            "alone_frames": [1] if h > 1 else [],
            "alone_dir": "clip_alone",
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
        segmentation=segmentation,
        amodal=amodal,
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
    assert back.amodal.dtype == np.bool_
    np.testing.assert_array_equal(back.amodal, clip.amodal)
    np.testing.assert_array_equal(back.segmentation, clip.segmentation)
    assert back.header["alone_frames"] == [1] and back.header["alone_dir"] == "clip_alone"
    # Hand 0 is partly hidden on frame 1: its amodal mask holds more than its visible one.
    assert back.amodal[1, 0].sum() > (back.segmentation[1] == 1).sum()


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
    assert VERSION == 3 and new.visibility[1, 0, 5] == object_code
    with pytest.raises(HandmocapError, match=r"unknown codes \[7\]"):
        load_ground_truth(_resaved(path, tmp_path, "v2_bad.npz", code=7))


def _without(path, tmp_path, name, *keys, version=None, **header_changes):
    """A copy of the npz at ``path`` without the arrays ``keys``, header changed."""
    content = dict(np.load(path))
    header = json.loads(str(content["header"]))
    for key in keys:
        if key in content:
            del content[key]
        else:
            header.pop(key, None)
    header.update(header_changes)
    if version is not None:
        header["version"] = version
    content["header"] = np.array(json.dumps(header))
    np.savez(tmp_path / name, **content)
    return tmp_path / name


def test_version_2_files_load_without_the_amodal_truth(tmp_path):
    path = _clip().save(tmp_path / "clip.npz")
    old = load_ground_truth(
        _without(path, tmp_path, "v2.npz", "amodal", "alone_frames", "alone_dir", version=2)
    )
    assert old.header["version"] == 2 and old.amodal is None
    assert old.header["alone_frames"] is None and old.header["alone_dir"] is None
    assert load_alone_rgb(tmp_path / "v2.npz", old, 1, 0) is None
    # Saving a clip without amodal masks writes no such array.
    with np.load(old.save(tmp_path / "resaved.npz")) as raw:
        assert "amodal" not in raw.files


def test_version_3_amodal_truth_is_checked(tmp_path):
    clip = _clip()
    path = clip.save(tmp_path / "clip.npz")
    with pytest.raises(HandmocapError, match="lacks the field 'amodal'"):
        load_ground_truth(_without(path, tmp_path, "no_amodal.npz", "amodal"))
    content = dict(np.load(path))
    content["amodal"] = content["amodal"][:, :, :, :-1]
    np.savez(tmp_path / "narrow.npz", **content)
    with pytest.raises(HandmocapError, match=r"amodal is bool \(3, 2, 48, 63\), expected bool"):
        load_ground_truth(tmp_path / "narrow.npz")
    content = dict(np.load(path))
    content["amodal"] = content["amodal"].copy()
    content["amodal"][1, 1, 15, 30] = False  # a pixel where hand 1 is visible
    np.savez(tmp_path / "holed.npz", **content)
    with pytest.raises(HandmocapError, match="hand 1's amodal mask misses visible pixels"):
        load_ground_truth(tmp_path / "holed.npz")
    for frames in ([3], [1, 1], [2, 1], "1"):
        bad = _without(path, tmp_path, "frames.npz", alone_frames=frames)
        with pytest.raises(HandmocapError, match="alone_frames"):
            load_ground_truth(bad)
    with pytest.raises(HandmocapError, match="alone_dir"):
        load_ground_truth(_without(path, tmp_path, "no_dir.npz", "alone_dir"))
    # A two-hand clip rendered without hands alone (ClipSpec.render_alone off): no amodal.
    header = {**clip.header, "alone_frames": None, "alone_dir": None}
    plain = dataclasses.replace(clip, amodal=None, header=header)
    gt = load_ground_truth(plain.save(tmp_path / "plain.npz"))
    assert gt.amodal is None and gt.header["alone_frames"] is None


def test_hands_rendered_alone_load_as_rgb(tmp_path):
    import cv2

    clip = _clip()
    path = clip.save(tmp_path / "clip.npz")
    gt = load_ground_truth(path)
    folder = tmp_path / "clip_alone"
    folder.mkdir()
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    cv2.imwrite(str(folder / alone_image_name(1, 0)), bgr)
    rgb = load_alone_rgb(path, gt, 1, 0)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 2] == 200).all() and (rgb[..., :2] == 0).all()
    assert alone_image_name(1, 0) == "h0_00001.png"
    assert load_alone_rgb(path, gt, 0, 0) is None  # not a frame with alone renders
    assert load_alone_rgb(path, gt, 1, 5) is None  # no such hand
    with pytest.raises(HandmocapError, match=r"h1_00001\.png is missing"):
        load_alone_rgb(path, gt, 1, 1)


def test_hands_meet_within_the_margin_or_when_one_is_hidden():
    labels = np.zeros((60, 80), np.uint8)
    labels[10:50, 5:20] = 1
    assert not hands_meet(labels, 1)
    labels[10:50, 20 + ALONE_MARGIN_PX + 1 : 60] = 2  # 11 px apart
    assert not hands_meet(labels, 2)
    labels[10:50, 20 + ALONE_MARGIN_PX - 1] = 2  # 9 px apart
    assert hands_meet(labels, 2)
    assert hands_meet(np.where(labels == 2, 0, labels), 2)  # hand 1 shows nowhere


def test_projection_in_pixels():
    k = intrinsics_from_fov(512, 512, 90.0)
    assert k[0, 0] == pytest.approx(256.0)
    px = project(np.array([[0.0, 0.0, 1.0], [0.5, -0.25, 1.0], [0.1, 0.1, 0.2]]), k)
    np.testing.assert_allclose(px, [[256, 256], [384, 192], [384, 384]], atol=1e-9)
