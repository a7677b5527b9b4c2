"""Crops, the crop <-> image maps, landmark projection and the tracking ROI."""

import cv2
import numpy as np
import pytest

from handmocap.inference import hand_landmarks as lm
from handmocap.inference.geometry import Roi, apply_affine, hand_rotation


def test_an_axis_aligned_roi_of_crop_size_copies_the_image_exactly():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    roi = Roi(cx=150.0, cy=130.0, size=224.0, rotation=0.0)
    crop = lm.preprocess(img, [roi])[0]
    np.testing.assert_array_equal(np.round(crop * 255).astype(np.uint8), img[18:242, 38:262])


def test_a_quarter_turn_roi_rotates_the_crop():
    img = np.zeros((224, 224, 3), np.uint8)
    img[10, 112] = 255  # a dot above the centre
    roi = Roi(112.0, 112.0, 224.0, np.pi / 2)  # the hand points right: image right -> crop up
    img2 = np.zeros_like(img)
    img2[112, 213] = 255  # a dot right of the centre ...
    crop = lm.preprocess(img2, [roi])[0]
    y, x = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    assert (x, y) == (112, 10)  # ... lands above the centre of the crop


def test_crop_and_image_maps_are_inverse():
    roi = Roi(321.0, 123.0, 97.0, 0.83)
    pts = np.random.default_rng(1).uniform(0, 224, size=(21, 2))
    back = apply_affine(roi.crop_from_image(224), apply_affine(roi.image_from_crop(224), pts))
    np.testing.assert_allclose(back, pts, atol=1e-10)


def test_postprocess_projects_crop_pixels_and_rotates_world_landmarks():
    roi = Roi(200.0, 100.0, 112.0, np.pi / 2)  # half-size crop, hand pointing right
    raw = np.zeros((1, 21, 3))
    raw[0, 0] = [112, 0, 8]  # top centre of the crop ...
    world = np.zeros((1, 21, 3))
    world[0, 0] = [0.0, -0.05, 0.01]  # 5 cm "up" in the crop's frame
    (hand,) = lm.postprocess(
        raw.reshape(1, 63), np.array([[0.9]]), np.array([[0.2]]), world.reshape(1, 63), [roi]
    )
    np.testing.assert_allclose(
        hand.image_xyz[0], [256.0, 100.0, 4.0], atol=1e-9
    )  # ... is image right
    np.testing.assert_allclose(hand.world_xyz[0], [0.05, 0.0, 0.01], atol=1e-12)
    assert hand.presence == pytest.approx(0.9) and hand.right_prob == pytest.approx(0.2)


def test_tracking_roi_from_an_upright_hand():
    xy = np.zeros((21, 2))
    xy[:, 0] = np.linspace(80, 120, 21)
    xy[:, 1] = np.linspace(300, 200, 21)
    xy[0] = [100, 300]
    xy[9] = [100, 240]
    roi = lm.roi_from_landmarks(xy)
    assert roi.rotation == pytest.approx(0.0)
    sub = xy[lm.TRACKING_SUBSET]
    height = np.ptp(sub[:, 1])
    assert roi.size == pytest.approx(2.0 * max(np.ptp(sub[:, 0]), height))
    assert roi.cy == pytest.approx((sub[:, 1].min() + sub[:, 1].max()) / 2 - 0.1 * height)


def test_hand_rotation_convention():
    assert hand_rotation(np.array([0, 0]), np.array([0, -1])) == pytest.approx(0.0)
    assert hand_rotation(np.array([0, 0]), np.array([1, 0])) == pytest.approx(np.pi / 2)
    assert hand_rotation(np.array([0, 0]), np.array([-1, 0])) == pytest.approx(-np.pi / 2)


def test_crop_matches_opencv_pixel_centres():
    """A dot at an image pixel lands at the corresponding crop pixel (no half-pixel drift)."""
    img = np.zeros((400, 400, 3), np.uint8)
    img[150, 250] = 255
    roi = Roi(200.0, 200.0, 112.0, 0.0)  # 2x zoom
    crop = (lm.preprocess(img, [roi])[0, ..., 0] * 255).astype(np.float64)
    y, x = np.unravel_index(np.argmax(crop), crop.shape)
    # Pixel centre (250.5, 150.5) maps to crop ((250.5-144)*2, (150.5-144)*2) = (213, 13).
    assert (x, y) in {(212, 12), (212, 13), (213, 12), (213, 13)}
    assert cv2.__version__
