"""MANO regression: IK network + refinement, on exact synthetic inputs and on bad input."""

import numpy as np
import pytest
import torch

from handmocap.inference.backend import choose_backend
from handmocap.inference.mano_fit import (
    FitConfig,
    anatomical_angles,
    angle_map,
    build_fitter,
    initial_translation,
    mapped_angles,
)
from handmocap.models.iknet import PoseSampler, fk
from handmocap.retarget.camera import intrinsics_from_fov, project
from handmocap.retarget.hand_skeleton import WEBXR_FOR_MANO
from handmocap.retarget.joint_limits import angles_to_local_rotations, limits_array, spread_signs
from handmocap.retarget.rotations import angle_between, axis_angle_to_matrix, mirror_rotations


@pytest.fixture(scope="module")
def fitter():
    return build_fitter(None, choose_backend("cpu"))[0]


def _observe(rig, rots, betas, wrist, k):
    """Exact 2D keypoints and MediaPipe-style relative depth (px scale) of a posed hand."""
    kp = fk(
        rig, torch.as_tensor(rots, dtype=torch.float32), torch.as_tensor(betas, dtype=torch.float32)
    )
    cam = kp.numpy().astype(np.float64)
    cam = cam - cam[:, :1] + wrist[:, None]
    uv = project(cam, k)
    rel_depth = (cam[..., 2] - cam[:, :1, 2]) * k[0, 0] / cam[:, :1, 2]
    return cam, uv, rel_depth


def test_round_trip_recovers_rotations_within_2_degrees(fitter, hands):
    """Random poses inside the limits -> model keypoints -> fit -> rotations (issue bar:
    median <= 2 degrees over the 15 finger joints)."""
    rng = np.random.default_rng(3)
    sampler = PoseSampler(hands["right"], seed=11)
    rots, _ = sampler.sample(40)
    # Orientations a camera sees: palm or back towards it, within 60 degrees.
    base = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    tilt = axis_angle_to_matrix(rng.normal(scale=0.5, size=(40, 3)))
    rots[:, 0] = tilt @ base
    betas = np.zeros((40, 10))
    k = intrinsics_from_fov(640, 480, 60.0)
    wrist = np.column_stack(
        [rng.uniform(-0.05, 0.05, 40), rng.uniform(0.0, 0.08, 40), rng.uniform(0.4, 0.6, 40)]
    )
    cam, uv, rel_depth = _observe(fitter.rigs["right"], rots, betas, wrist, k)
    fit = fitter.fit("right", uv, rel_depth, np.ones((40, 21)), k)
    err = np.degrees(angle_between(axis_angle_to_matrix(fit.pose[:, 1:]), rots[:, 1:]))
    glob = np.degrees(angle_between(axis_angle_to_matrix(fit.pose[:, 0]), rots[:, 0]))
    kp_mm = 1000 * np.linalg.norm(fit.keypoints_3d - cam, axis=-1)
    print(
        f"\nround trip: finger joints median {np.median(err):.2f} deg, "
        f"p90 {np.percentile(err, 90):.2f}; global median {np.median(glob):.2f}; "
        f"keypoints median {np.median(kp_mm):.2f} mm"
    )
    assert np.median(err) <= 2.0
    assert np.median(glob) <= 2.0


def test_left_hands_fit_as_mirrored_right_hands(fitter, hands):
    sampler = PoseSampler(hands["right"], seed=5)
    rots, _ = sampler.sample(12)
    base = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    rots[:, 0] = base
    rots_left = mirror_rotations(rots)
    k = intrinsics_from_fov(640, 480, 60.0)
    wrist = np.tile([0.0, 0.05, 0.5], (12, 1))
    cam, uv, rel_depth = _observe(fitter.rigs["left"], rots_left, np.zeros((12, 10)), wrist, k)
    fit = fitter.fit("left", uv, rel_depth, np.ones((12, 21)), k)
    assert np.median(1000 * np.linalg.norm(fit.keypoints_3d - cam, axis=-1)) < 3.0


def test_anatomical_angles_invert_the_limits_map(hands):
    hand = hands["right"]
    rng = np.random.default_rng(0)
    lim = limits_array()
    angles = lim[..., 0] + rng.uniform(size=(30, 25, 3)) * (lim[..., 1] - lim[..., 0])
    local = angles_to_local_rotations(
        angles, hand.rest_frames, spread_signs(hand.rest_frames, hand.rest_positions)
    )
    idx = WEBXR_FOR_MANO[1:]
    back = anatomical_angles(
        local[:, idx], hand.rest_frames[idx],
        spread_signs(hand.rest_frames, hand.rest_positions)[idx],
    )  # fmt: skip
    np.testing.assert_allclose(back, angles[:, idx], atol=1e-6)


def test_the_fits_angle_map_gives_the_anatomical_angles_of_both_sides(hands):
    hand = hands["right"]
    idx = WEBXR_FOR_MANO[1:]
    frames = hand.rest_frames[idx]
    signs = spread_signs(hand.rest_frames, hand.rest_positions)[idx]
    rng = np.random.default_rng(2)
    lim = limits_array()[idx]
    # Inside and well beyond the limits (up to 40 degrees over), as during a fit.
    angles = lim[..., 0] - 40 + rng.uniform(size=(20, 15, 3)) * (lim[..., 1] - lim[..., 0] + 80)
    local = angles_to_local_rotations(angles, frames, signs).astype(np.float32)
    mirror = np.diag([-1.0, 1.0, 1.0]).astype(np.float32)
    s32 = signs.astype(np.float32)
    expected = anatomical_angles(local.astype(np.float64), frames, signs)
    for mirrored, rots in ((False, local), (True, mirror @ local @ mirror)):
        seen = mapped_angles(rots, angle_map(frames, mirrored), s32)
        np.testing.assert_allclose(seen, expected, atol=2e-3)  # degrees, float32


def test_initial_translation_solves_exact_projections():
    k = intrinsics_from_fov(640, 480, 60.0)
    rng = np.random.default_rng(1)
    rel = rng.normal(scale=0.04, size=(5, 21, 3))
    rel[:, 0] = 0
    wrist = np.column_stack(
        [rng.uniform(-0.1, 0.1, 5), rng.uniform(-0.1, 0.1, 5), rng.uniform(0.3, 0.9, 5)]
    )
    uv = project(rel + wrist[:, None], k)
    np.testing.assert_allclose(initial_translation(rel, uv, np.ones((5, 21)), k), wrist, atol=1e-9)


def test_bad_config_is_a_clear_error():
    from handmocap.errors import HandmocapError

    with pytest.raises(HandmocapError, match="iterations"):
        FitConfig(iterations=-1).validated()


@pytest.mark.blender
@pytest.mark.render
def test_capture_fills_the_mano_fields_and_draws_the_mesh(tmp_path):
    import cv2

    from bench.synth.cache import cached_clip
    from bench.synth.ground_truth import load_ground_truth
    from handmocap.inference.capture import CaptureConfig, capture
    from handmocap.take import load_take

    mp4, npz = cached_clip("demo")
    gt = load_ground_truth(npz)
    overlay = tmp_path / "overlay.mp4"
    result = capture(mp4, CaptureConfig(fov_deg=gt.header["spec"]["fov_deg"]), overlay=overlay)
    take = load_take(result.take.save(tmp_path / "take.npz"))
    assert take.header.hand_model.startswith("handmocap-open-hand")
    (track,) = take.tracks
    assert track.mano_pose.shape == (48, 16, 3) and track.mano_betas.shape == (10,)
    # The take carries the skeleton its rotations turn: posing the rest keypoints with the
    # MANO rotations (plain kinematics, no hand model) gives the fitted keypoints (0.1 mm).
    np.testing.assert_allclose(track.rest_keypoints[0], 0.0, atol=1e-9)
    np.testing.assert_allclose(_pose_rest(track), track.keypoints_3d, atol=1e-4)
    # The fitted keypoints project onto the detected 2D keypoints (median within 4% of the hand).
    uv = project(track.keypoints_3d.astype(np.float64), take.header.intrinsics)
    size = np.linalg.norm(np.ptp(track.keypoints_2d, axis=1), axis=-1)
    assert np.median(np.linalg.norm(uv - track.keypoints_2d, axis=-1) / size[:, None]) < 0.04
    cap = cv2.VideoCapture(str(overlay))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 48
    ok, img = cap.read()
    # The mesh outline is the only strongly green thing (skin, backdrop and skeleton are not).
    bgr = img.astype(int)
    greenish = bgr[..., 1] - np.maximum(bgr[..., 0], bgr[..., 2]) > 40
    assert ok and greenish.sum() > 100


def test_a_bad_mano_folder_is_refused_before_any_work(tmp_path):
    import subprocess
    import sys

    (tmp_path / "mano").mkdir()
    (tmp_path / "mano" / "MANO_RIGHT.pkl").write_bytes(b"not a pickle")
    (tmp_path / "mano" / "MANO_LEFT.pkl").write_bytes(b"not a pickle")
    for folder, message in ((tmp_path / "none", "does not exist"), (tmp_path / "mano", "corrupt")):
        cmd = [sys.executable, "-m", "handmocap.inference", "capture", "missing.mp4",
               "-o", str(tmp_path / "t.npz"), "--mano-dir", str(folder)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_a_missing_fit_asset_fails_fast_naming_the_build_command(tmp_path, monkeypatch):
    """Capture never builds an asset (no npm, no training): a missing one is a clear error
    naming the command that builds it, raised before the first frame is tracked."""
    import cv2

    from handmocap.errors import AssetError
    from handmocap.inference.capture import CaptureConfig, capture
    from handmocap.inference.mano_fit import fit_assets
    from handmocap.inference.tracker import HandTracker, TrackerConfig
    from handmocap.models import webxr_asset
    from handmocap.models.hand_model import built_open_hand_model

    tracker = HandTracker(TrackerConfig(device="cpu"))  # its networks from the real cache
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (64, 64))
    for _ in range(3):
        writer.write(np.zeros((64, 64, 3), np.uint8))
    writer.release()
    empty = tmp_path / "empty-cache"
    monkeypatch.setenv("HANDMOCAP_CACHE", str(empty))

    def no_download(*args, **kwargs):
        raise AssertionError("capture downloaded an asset")

    monkeypatch.setattr(webxr_asset, "_download", no_download)
    with pytest.raises(AssetError, match=r"open hand model is not built.*python3 build\.py models"):
        built_open_hand_model()
    with pytest.raises(AssetError, match=r"WebXR hand .*python3 build\.py models"):
        webxr_asset.built_webxr_hand()
    with pytest.raises(AssetError, match=r"open hand model.*python3 build\.py models"):
        fit_assets(None)
    steps = []
    monkeypatch.setattr(tracker, "step", lambda rgb: steps.append(rgb) or [])
    with pytest.raises(AssetError, match=r"open hand model.*python3 build\.py models"):
        capture(video, CaptureConfig(), tracker=tracker)
    assert not steps  # refused before the first frame was tracked
    assert not empty.exists()  # and nothing was built


def test_ik_training_is_deterministic(hands):
    from handmocap.models.hand_model import ensure_open_hand_model
    from handmocap.models.iknet import TrainingConfig, train
    from handmocap.models.iknet_build import load_rig

    rig = load_rig(ensure_open_hand_model().folder, "right")
    cfg = TrainingConfig(steps=15, batch=64)
    a, b = (train(rig, hands["right"], cfg, log=lambda *_: None) for _ in range(2))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = train(rig, hands["right"], TrainingConfig(steps=15, batch=64, seed=1), log=lambda *_: None)
    assert any(
        not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )


def _pose_rest(track):
    """(T, 21, 3): the track's rest keypoints posed by its MANO pose at its translation."""
    from handmocap.retarget.hand_skeleton import MANO21_FOR_MEDIAPIPE, MEDIAPIPE_21_PARENTS
    from handmocap.retarget.kinematics import forward_kinematics
    from handmocap.retarget.rotations import axis_angle_to_matrix

    rot = axis_angle_to_matrix(track.mano_pose.astype(np.float64))
    local = np.tile(np.eye(3), (len(rot), 21, 1, 1))
    for k in range(21):
        if MANO21_FOR_MEDIAPIPE[k] < 16:  # tips have no rotation of their own
            local[:, k] = rot[:, MANO21_FOR_MEDIAPIPE[k]]
    eye = np.broadcast_to(np.eye(3), (len(rot), 3, 3))
    rest = track.rest_keypoints.astype(np.float64)
    _, pts = forward_kinematics(
        np.array(MEDIAPIPE_21_PARENTS), rest, local, eye, track.translation.astype(np.float64)
    )
    return pts


def test_a_translation_rate_of_zero_is_a_clear_error():
    from handmocap.errors import HandmocapError

    with pytest.raises(HandmocapError, match="lr_translation"):
        FitConfig(lr_translation=0.0).validated()


def test_a_track_longer_than_the_window_is_fitted_in_windows_with_one_shape(hands):
    """Memory stays flat on long videos because a long track is fitted window by window:
    a 120-frame track through 32-frame windows recovers its joints as well as the one-piece
    fit does (median within 1 degree of it, and <= 3 degrees of the truth), with one shape
    for the whole track, and progress still ends at 1."""
    from dataclasses import replace

    whole = build_fitter(None, choose_backend("cpu"))[0]
    windowed = build_fitter(None, choose_backend("cpu"), replace(whole.config, window=32))[0]
    rng = np.random.default_rng(8)
    rots, _ = PoseSampler(hands["right"], seed=21).sample(120)
    base = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    rots[:, 0] = axis_angle_to_matrix(rng.normal(scale=0.4, size=(120, 3))) @ base
    betas = np.tile(rng.normal(scale=0.8, size=10), (120, 1))
    k = intrinsics_from_fov(640, 480, 60.0)
    wrist = np.column_stack([np.zeros(120), np.full(120, 0.04), np.full(120, 0.5)])
    _, uv, rel_depth = _observe(whole.rigs["right"], rots, betas, wrist, k)
    fractions: list[float] = []
    fits = {
        "whole": whole.fit("right", uv, rel_depth, np.ones((120, 21)), k),
        "windows": windowed.fit("right", uv, rel_depth, np.ones((120, 21)), k,
                                on_progress=fractions.append),
    }  # fmt: skip
    err = {
        name: np.median(np.degrees(angle_between(axis_angle_to_matrix(f.pose[:, 1:]), rots[:, 1:])))
        for name, f in fits.items()
    }
    print(f"\nwindowed fit: whole {err['whole']:.2f} deg, windows {err['windows']:.2f} deg")
    assert fits["windows"].pose.shape == (120, 16, 3)
    assert fits["windows"].keypoints_3d.shape == (120, 21, 3)
    assert fits["windows"].betas.shape == (10,)
    assert err["windows"] <= 3.0
    assert err["windows"] <= err["whole"] + 1.0
    # The same hand in the same place as the one-piece fit (depth and size trade off
    # in one view, so both sit ~30 mm from the truth's absolute position).
    apart = fits["windows"].keypoints_3d - fits["whole"].keypoints_3d
    apart_mm = 1000 * np.linalg.norm(apart, axis=-1)
    print(f"windows vs whole: keypoints median {np.median(apart_mm):.2f} mm")
    assert np.median(apart_mm) < 5.0
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


@pytest.mark.render
def test_a_capture_with_the_fit_and_the_prior_never_imports_torch(tmp_path):
    """torch costs a second of CPU and ~180 MB to import; the fit is numpy
    (docs/architecture.md, "Speed and threads"). A whole capture of the two-hand smoke clip
    in a fresh process, MANO fit and motion prior on, leaves torch unimported."""
    import subprocess
    import sys

    from bench.synth.cache import cached_clip

    mp4, _ = cached_clip("smoke")
    script = (
        "import sys\n"
        "from handmocap.inference.capture import CaptureConfig, capture\n"
        f"result = capture({str(mp4)!r}, CaptureConfig())\n"
        "assert any(t.mano_pose is not None for t in result.take.tracks), 'nothing was fitted'\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, check=True)  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


def test_the_fit_gives_the_same_numbers_every_time(fitter, hands):
    """One track fitted three times, with other arrays allocated in between (numpy's
    float32 arctan2 on strided input once gave results 1 ulp apart by where the array lay in
    memory, and 120 Adam steps made 0.04 rad of that): the same poses to the bit."""
    rng = np.random.default_rng(21)
    sampler = PoseSampler(hands["right"], seed=21)
    rots, _ = sampler.sample(60)
    rots[:, 0] = axis_angle_to_matrix(rng.normal(scale=0.5, size=(60, 3))) @ np.array(
        [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    )
    k = intrinsics_from_fov(640, 480, 60.0)
    wrist = np.tile([0.0, 0.05, 0.5], (60, 1))
    _, uv, rel_depth = _observe(fitter.rigs["right"], rots, np.zeros((60, 10)), wrist, k)
    uv = uv + rng.normal(scale=3.0, size=uv.shape)  # landmark-like noise: limits come into play
    poses = []
    for size in (7, 70_001, 333):
        _ = [np.empty(size * (i + 1), np.float32) for i in range(8)]
        poses.append(fitter.fit("right", uv, rel_depth, np.ones((60, 21)), k).pose)
    for pose in poses[1:]:
        np.testing.assert_array_equal(pose, poses[0])


def test_degenerate_tracks_fit_to_finite_numbers(fitter):
    """What the tracker can hand the fit at its worst: a one-frame track, a track whose
    keypoints all have zero confidence, and a frame whose 21 keypoints lie on one pixel
    with no depth (hand size 0 px). The numpy fit floors every length it divides by, as
    the torch fit did, so each gives finite poses and keypoints, never NaN."""
    k = intrinsics_from_fov(640, 480, 60.0)
    rng = np.random.default_rng(5)
    uv = rng.uniform(200, 300, size=(3, 21, 2))
    depth = rng.normal(scale=5.0, size=(3, 21))
    uv[1] = 250.0
    depth[1] = 0.0
    cases = [
        ("left", uv[:1], depth[:1], np.ones((1, 21))),
        ("right", uv[:1], depth[:1], np.zeros((1, 21))),
        ("right", uv, depth, np.ones((3, 21))),
    ]
    for side, points, rel_depth, conf in cases:
        fit = fitter.fit(side, points, rel_depth, conf, k)
        assert fit.pose.shape == (len(points), 16, 3)
        assert np.isfinite(fit.pose).all() and np.isfinite(fit.keypoints_3d).all()
        assert np.isfinite(fit.translation).all() and np.isfinite(fit.betas).all()
