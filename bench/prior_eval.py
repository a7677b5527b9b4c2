"""What the motion prior changes, measured against rendered ground truth (numpy only).

Every figure compares the per-frame MANO fit (strength 0) with the prior's result on the
same take: keypoint error (PA-MPJPE, mm), acceleration error (mm/frame^2), flexion-angle
error and jitter (degrees), error on filled frames, and the keys "Reduce keys" keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from handmocap.inference.mano_fit import lift_keypoints
from handmocap.inference.motion_prior import PriorConfig, smooth_tracks
from handmocap.retarget.camera import project
from handmocap.retarget.curves import reduce_bones
from handmocap.retarget.hand_skeleton import MEDIAPIPE_21_PARENTS
from handmocap.retarget.rotations import angle_between, axis_angle_to_matrix, matrix_to_quat
from handmocap.take import ROW_FIELDS, FrameFlag, Take, Track

# The 15 finger joints whose flexion an animator keys: every keypoint with a parent and a
# child (not the wrist, not the tips).
_PARENTS = np.array(MEDIAPIPE_21_PARENTS)
_TIPS = (4, 8, 12, 16, 20)
FLEX_JOINTS = np.array([k for k in range(1, 21) if k not in _TIPS])


def pa_mpjpe_mm(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(T, K) per-keypoint error in mm after the best similarity alignment per frame."""
    a = pred - pred.mean(1, keepdims=True)
    b = truth - truth.mean(1, keepdims=True)
    u, s, vt = np.linalg.svd(np.einsum("tki,tkj->tij", a, b))
    d = np.sign(np.linalg.det(u @ vt))
    s[:, 2] *= d
    u[:, :, 2] *= d[:, None]
    r = u @ vt
    scale = s.sum(1) / (a**2).sum((1, 2))
    return 1000 * np.linalg.norm(scale[:, None, None] * a @ r - b, axis=-1)


def flexion_angles(kp: np.ndarray) -> np.ndarray:
    """(T, 21, 3) keypoints -> (T, 15) degrees: the angle between each finger joint's
    incoming and outgoing bone (0 = straight), scale- and position-free."""
    a = kp[:, FLEX_JOINTS] - kp[:, _PARENTS[FLEX_JOINTS]]
    b = kp[:, FLEX_JOINTS + 1] - kp[:, FLEX_JOINTS]
    cos = (a * b).sum(-1) / np.maximum(
        np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12
    )
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _triples(frames: np.ndarray) -> np.ndarray:
    """Start rows of three consecutive video frames (second differences are defined)."""
    return np.flatnonzero(frames[2:] - frames[:-2] == 2)


def second_difference(frames: np.ndarray, x: np.ndarray) -> np.ndarray:
    i = _triples(frames)
    return x[i] - 2 * x[i + 1] + x[i + 2]


def accel_error_mm(frames: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean |acceleration - true acceleration| of the wrist-relative keypoints (T, 21, 3) m
    (the hand's articulation and turn; the wrist's depth is a monocular guess), mm/frame^2."""
    rel = lambda x: x - x[:, :1]  # noqa: E731
    diff = second_difference(frames, rel(pred)) - second_difference(frames, rel(truth))
    return float(1000 * np.linalg.norm(diff, axis=-1).mean())


def angle_jitter(frames: np.ndarray, angles: np.ndarray) -> float:
    """Mean |second difference| of joint angles (T, J) degrees, deg/frame^2."""
    return float(np.abs(second_difference(frames, angles)).mean())


def keys_removed(frames: np.ndarray, pose: np.ndarray, tolerance_deg: float = 1.0) -> float:
    """Share of the finger joints' keys "Reduce keys" removes at ``tolerance_deg`` (the
    add-on's Douglas-Peucker on each joint's rotation curve; a bone's rotation is the
    MANO joint's up to constant rest offsets, which keep angles)."""
    quats = matrix_to_quat(axis_angle_to_matrix(pose[:, 1:]))
    keep = reduce_bones(frames.astype(np.float64), quats, tolerance_deg)
    return float(1.0 - np.mean([k.mean() for k in keep]))


def calm_third_jitter_mm(kp: np.ndarray) -> float:
    """Jitter while the hand is calm: split the clip in thirds, take the one whose centred
    keypoints (T, 21, 3) m move least, and return the mean |second difference| there,
    mm/frame^2. Centred, so MediaPipe's hand-centred world landmarks compare directly."""
    x = kp - kp.mean(axis=1, keepdims=True)
    thirds = np.array_split(x, 3)
    calm = min(thirds, key=lambda seg: np.linalg.norm(np.diff(seg, axis=0), axis=-1).mean())
    return float(1000 * np.linalg.norm(np.diff(calm, 2, axis=0), axis=-1).mean())


@dataclass(frozen=True)
class TrackTruth:
    """Ground truth on a track's frames: keypoints (T, 21, 3) m and MANO pose (T, 16, 3)."""

    keypoints: np.ndarray
    pose: np.ndarray


def track_metrics(track: Track, truth: TrackTruth) -> dict[str, float]:
    """The figures of one track against its truth (rows aligned with the track's frames)."""
    observed = (track.flags & FrameFlag.INFILLED) == 0
    kp = track.keypoints_3d.astype(np.float64)
    pa = pa_mpjpe_mm(kp, truth.keypoints).mean(axis=1)
    flex_err = np.abs(flexion_angles(kp) - flexion_angles(truth.keypoints))[observed]
    fingers = np.degrees(
        angle_between(
            axis_angle_to_matrix(track.mano_pose[:, 1:]), axis_angle_to_matrix(truth.pose[:, 1:])
        )
    )
    out = {
        "pa_mpjpe_mm": float(pa[observed].mean()),
        "accel_error_mm": accel_error_mm(track.frames, kp, truth.keypoints),
        "flexion_error_median_deg": float(np.median(flex_err)),
        "flexion_error_p90_deg": float(np.percentile(flex_err, 90)),
        "flexion_jitter_deg": angle_jitter(track.frames, flexion_angles(kp)),
        "finger_rotation_error_deg": float(fingers[observed].mean()),
        "keys_removed_share": keys_removed(track.frames, track.mano_pose.astype(np.float64)),
        "infilled_frames": int((~observed).sum()),
    }
    if (~observed).any():
        out["pa_mpjpe_infilled_mm"] = float(pa[~observed].mean())
        out["finger_rotation_error_infilled_deg"] = float(fingers[~observed].mean())
    return out


def placement_metrics(track: Track, truth: TrackTruth, intrinsics: np.ndarray) -> dict[str, float]:
    """Where the animated hand sits in the picture: the median 2D distance (px) between
    the track's fitted keypoints and the true ones, both projected through
    ``intrinsics``, on observed rows. PA-MPJPE aligns the translation and the global
    rotation away; this keeps them (a fast sweep smoothed into a lag shows here only)."""
    observed = (track.flags & FrameFlag.INFILLED) == 0
    k = np.asarray(intrinsics, np.float64)
    ours = project(track.keypoints_3d[observed].astype(np.float64), k)
    err = np.linalg.norm(ours - project(truth.keypoints[observed], k), axis=-1)
    return {"placement_2d_px": float(np.median(err))}


def landmark_metrics(track: Track, truth: TrackTruth, intrinsics: np.ndarray) -> dict[str, float]:
    """The flexion angles of the landmarks the fit starts from (2D + relative depth, lifted
    into camera axes), and of the truth: the bar the take's angles must clear."""
    lifted = lift_keypoints(track.keypoints_2d, track.keypoints_rel_depth, intrinsics)
    err = np.abs(flexion_angles(lifted) - flexion_angles(truth.keypoints))
    return {
        "landmark_flexion_error_median_deg": float(np.median(err)),
        "landmark_flexion_error_p90_deg": float(np.percentile(err, 90)),
        "true_flexion_jitter_deg": angle_jitter(track.frames, flexion_angles(truth.keypoints)),
    }


def drop_run(track: Track, start: int, length: int) -> Track:
    """The track without ``length`` rows from row ``start`` (a hand hidden there)."""
    keep = np.ones(len(track), bool)
    keep[start : start + length] = False
    arrays = {n: getattr(track, n)[keep] for n in ROW_FIELDS if getattr(track, n) is not None}
    return replace(track, **arrays)


def smooth_take(take: Take, smoothing: float) -> tuple[tuple[Track, ...], float]:
    """The take's tracks through the prior at ``smoothing``, and the stage's seconds."""
    h = take.header
    stride = h.frame_range.stride if h.frame_range is not None else 1
    tracks, report = smooth_tracks(take.tracks, h.fps, stride, h.intrinsics, PriorConfig(smoothing))
    return tracks, report.seconds
