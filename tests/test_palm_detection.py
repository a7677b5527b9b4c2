"""Detector pre/post-processing on hand-made cases (pure numpy, no network)."""

import numpy as np
import pytest

from handmocap.inference import palm_detection as pd
from handmocap.inference.palm_detection import ANCHORS, Letterbox, Palm


def test_anchor_layout():
    assert ANCHORS.shape == (2016, 2)
    # Stride 8: a 24x24 grid, 2 anchors per cell, row-major from the top-left.
    np.testing.assert_allclose(ANCHORS[0], [0.5 / 24, 0.5 / 24])
    np.testing.assert_allclose(ANCHORS[1], ANCHORS[0])
    np.testing.assert_allclose(ANCHORS[2], [1.5 / 24, 0.5 / 24])
    np.testing.assert_allclose(ANCHORS[48], [0.5 / 24, 1.5 / 24])
    # Strides 16, 16, 16 share one 12x12 grid with 6 anchors per cell.
    np.testing.assert_allclose(ANCHORS[1152:1158], np.tile([0.5 / 12, 0.5 / 12], (6, 1)))
    np.testing.assert_allclose(ANCHORS[-1], [11.5 / 12, 11.5 / 12])


def test_decode_is_linear_around_the_anchor():
    raw = np.zeros((2016, 18))
    scores = np.full(2016, -10.0)
    k = 1152 + 6 * (12 * 5 + 7)  # stride-16 cell (row 5, column 7): centre (7.5, 5.5) * 16 px
    raw[k, :4] = [19.2, -9.6, 48.0, 96.0]  # 19.2 px right, 9.6 px up, 48 x 96 px box
    raw[k, 4:6] = [0.0, 30.0]  # keypoint 0: 30 px below the anchor
    scores[k] = 2.0
    boxes, kps, s = pd.decode(raw, scores, min_score=0.5)
    assert boxes.shape == (1, 4) and kps.shape == (1, 7, 2)
    cx, cy = 7.5 * 16 + 19.2, 5.5 * 16 - 9.6
    np.testing.assert_allclose(boxes[0], [cx - 24, cy - 48, cx + 24, cy + 48], atol=1e-9)
    np.testing.assert_allclose(kps[0, 0], [7.5 * 16, 5.5 * 16 + 30], atol=1e-9)
    assert s[0] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_scores_are_clipped_before_the_sigmoid():
    raw = np.zeros((2016, 18))
    scores = np.full(2016, -1e6)
    scores[0] = 1e6
    _, _, s = pd.decode(raw, scores, min_score=0.5)
    assert np.isfinite(s).all() and s[0] == pytest.approx(1.0)


def test_weighted_nms_merges_a_cluster_and_keeps_a_separate_box():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    kps = np.zeros((3, 7, 2))
    kps[:, 0] = [[0, 0], [3, 3], [55, 55]]
    scores = np.array([0.9, 0.6, 0.8])
    out = pd.weighted_nms(boxes, kps, scores, iou_threshold=0.3, max_out=4)
    assert len(out) == 2
    merged_box, merged_kp, merged_score = out[0]
    np.testing.assert_allclose(merged_box, (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5)
    np.testing.assert_allclose(merged_kp[0], [1.2, 1.2])
    assert merged_score == 0.9
    assert out[1][2] == 0.8
    assert len(pd.weighted_nms(boxes, kps, scores, 0.3, max_out=1)) == 1


def test_letterbox_of_a_720p_frame():
    img = np.zeros((720, 1280, 3), np.uint8)
    img[:, :640] = 255
    x, lb = pd.letterbox(img)
    assert x.shape == (192, 192, 3) and x.dtype == np.float32
    assert lb.scale == pytest.approx(0.15) and lb.pad_x == 0 and lb.pad_y == 42
    assert (
        x[41, 10].max() == 0.0
        and x[42, 10].min() == 1.0
        and x[149, 10].min() == 1.0
        and x[150, 10].max() == 0.0
    )
    np.testing.assert_allclose(
        lb.to_image(np.array([[96.0, 42.0], [192.0, 150.0]])), [[640, 0], [1280, 720]]
    )


@pytest.mark.parametrize(
    ("wrist", "knuckle", "rotation", "centre"),
    [
        ((100, 200), (100, 150), 0.0, (100, 145)),  # fingers up: shift up by half the box
        ((100, 200), (150, 200), np.pi / 2, (130, 175)),  # fingers right: shift right
        ((100, 200), (100, 250), np.pi, (100, 205)),  # fingers down
    ],
)
def test_palm_roi_rotation_shift_and_scale(wrist, knuckle, rotation, centre):
    kps = np.zeros((7, 2))
    kps[0], kps[2] = wrist, knuckle
    palm = Palm(box=np.array([70.0, 145.0, 130.0, 205.0]), keypoints=kps, score=0.9)
    roi = palm.roi()
    assert roi.rotation == pytest.approx(rotation, abs=1e-12) or abs(roi.rotation) == pytest.approx(
        np.pi
    )
    assert (roi.cx, roi.cy) == pytest.approx(centre)
    assert roi.size == pytest.approx(60 * 2.6)


def test_postprocess_maps_back_to_image_pixels():
    raw = np.zeros((2016, 18))
    scores = np.full(2016, -10.0)
    scores[0] = 5.0
    lb = Letterbox(scale=0.5, pad_x=0.0, pad_y=10.0)
    palms = pd.postprocess(raw, scores, lb, pd.PalmConfig())
    assert len(palms) == 1
    anchor_px = ANCHORS[0] * 192
    np.testing.assert_allclose(palms[0].keypoints[0], (anchor_px - [0, 10]) / 0.5)
