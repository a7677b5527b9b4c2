"""The take's clock on the scene's: which scene frame each video frame lands on, the whole
scene frames a hand is keyed on, the solved poses resampled onto them, and a re-captured
range spliced into the keys it replaces.

numpy only, no bpy: the add-on reads Blender's data (the scene's frame rate, the keys of an
F-curve), calls these, and writes what they return (``blender_addon/apply_take.py``,
``cleanup.py``, ``operators.py``).

Video frames are the indices in a take's tracks (the video's own numbering, a stride apart);
scene frames are Blender's, floats until they are put on whole frames. A hand's samples are
(T,) rows over its video frames; rotations are (w, x, y, z) quaternions.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from handmocap.errors import HandmocapError
from handmocap.retarget.curves import (
    nlerp_curve,
    resample_linear,
    resample_rotations,
    splice_keys,
    splice_rotation_keys,
)
from handmocap.sides import Side
from handmocap.take import FPS_RANGE, FrameRange, Take, TakeHeader, Track
from handmocap.take.checks import is_number

# A video frame may spread over at most this many scene frames (a 6 fps video into a 24 fps
# scene); more means the take's frame rate is wrong (an fps of 0.07 turned 48 samples into a
# million keys).
MAX_SCENE_FRAMES_PER_VIDEO_FRAME: Final = 4.0
# Frame rates above this are no camera's: the header is damaged.
MAX_VIDEO_FPS: Final = FPS_RANGE[1]  # the take format's own ceiling
# Blender's MAXFRAME: keys beyond it cannot be shown or played.
BLENDER_MAX_FRAME: Final = 1_048_574

TAKE_DAMAGED: Final = "the take file is damaged; capture again"
"""The advice that ends every refusal of a take's values."""


# -- the take's clock -------------------------------------------------------------------------
@dataclass(frozen=True)
class TakeTiming:
    """The take's clock, checked. ``fps`` is the rate of the take's samples (the video's
    frame rate divided by the stride); video frame ``first`` is the first of the range."""

    fps: float
    stride: int
    first: int

    @property
    def video_fps(self) -> float:
        """Frames per second of the video the frame indices count."""
        return self.fps * self.stride


def _whole_number(value: Any, what: str, minimum: int) -> int:
    """``value`` as an int: a JSON number (:func:`~handmocap.take.checks.is_number`) that is
    whole and at least ``minimum``; else HandmocapError naming ``what``."""
    if not is_number(value) or not math.isfinite(value) or value != int(value):
        raise HandmocapError(f"the take's {what} is {value!r}; it must be a whole number: "
                             f"{TAKE_DAMAGED}")  # fmt: skip
    if int(value) < minimum:
        raise HandmocapError(f"the take's {what} is {int(value)}; it must be at least {minimum}: "
                             f"{TAKE_DAMAGED}")  # fmt: skip
    return int(value)


def take_timing(header: TakeHeader) -> TakeTiming:
    """The header's frame rate and frame range (none: the whole video, stride 1), checked
    again (a header built in memory skips the reader). Raises HandmocapError naming the
    field and its value."""
    fps = header.fps
    if not is_number(fps) or not math.isfinite(fps) or fps <= 0.0:
        raise HandmocapError(f"the take's frame rate is {fps!r} fps; it must be a positive "
                             f"number: {TAKE_DAMAGED}")  # fmt: skip
    frame_range = FrameRange() if header.frame_range is None else header.frame_range
    if not isinstance(frame_range, FrameRange):
        raise HandmocapError(f"the take's frame_range is {frame_range!r}, not a JSON object: "
                             f"{TAKE_DAMAGED}")  # fmt: skip
    stride = _whole_number(frame_range.stride, "frame stride", 1)
    first = _whole_number(frame_range.start, "first frame", 0)
    timing = TakeTiming(float(fps), stride, first)
    if timing.video_fps > MAX_VIDEO_FPS:
        raise HandmocapError(f"the take's frame rate is {timing.video_fps:g} fps, above the "
                             f"{MAX_VIDEO_FPS:g} fps any camera records: "
                             f"{TAKE_DAMAGED}")  # fmt: skip
    return timing


def check_rate(timing: TakeTiming, scene_fps: float) -> None:
    """Refuse a take whose video frames would each spread over more than
    :data:`MAX_SCENE_FRAMES_PER_VIDEO_FRAME` scene frames at ``scene_fps``."""
    ratio = scene_fps / timing.video_fps
    if ratio > MAX_SCENE_FRAMES_PER_VIDEO_FRAME:
        strided = f", one sample every {timing.stride} frames" if timing.stride > 1 else ""
        raise HandmocapError(
            f"the take's frame rate is {timing.video_fps:g} fps{strided}: each video frame "
            f"would spread over {ratio:.0f} scene frames at {scene_fps:g} fps (at most "
            f"{MAX_SCENE_FRAMES_PER_VIDEO_FRAME:g} are keyed); the take's fps is wrong: capture "
            "again, or bring the scene's frame rate closer to the video's"
        )


@dataclass(frozen=True)
class FrameMap:
    """Video frames <-> scene frames: video frame ``video_start`` lands on scene frame
    ``scene_start``, and time runs at ``video_fps`` and ``scene_fps`` (frames per second) on
    each side. Applying a take maps one way; re-capturing a scene range maps back."""

    scene_start: int
    scene_fps: float
    video_start: int
    video_fps: float

    @classmethod
    def of_take(cls, timing: TakeTiming, scene_fps: float, scene_start: int) -> FrameMap:
        """The take's first video frame (of its range) on ``scene_start``."""
        return cls(scene_start, scene_fps, timing.first, timing.video_fps)

    def to_scene(self, frames: np.ndarray) -> np.ndarray:
        """(T,) scene frame (float) of each of the (T,) video frame indices."""
        return self.scene_start + (frames - self.video_start) / self.video_fps * self.scene_fps

    def video_range(self, scene_first: int, scene_last: int) -> tuple[int, int]:
        """The video frames behind scene frames [``scene_first``, ``scene_last``]: (start,
        end), end exclusive, each end the nearest video frame. Raises HandmocapError when
        the range holds no video frame of the capture."""
        start = self._to_video(scene_first)
        end = self._to_video(scene_last) + 1
        if start < 0 or end <= start:
            raise HandmocapError(f"frames {scene_first}-{scene_last} are outside the capture")
        return start, end

    def _to_video(self, scene_frame: int) -> int:
        """The video frame nearest to whole ``scene_frame``."""
        return self.video_start + round((scene_frame - self.scene_start) * self.video_fps
                                        / self.scene_fps)  # fmt: skip


def check_scene_frames(side: Side, times: np.ndarray) -> None:
    """Refuse (T,) scene ``times`` outside the frames Blender can key."""
    lo, hi = float(times.min()), float(times.max())
    if lo < -BLENDER_MAX_FRAME or hi > BLENDER_MAX_FRAME:
        raise HandmocapError(
            f"the take's {side} hand would land on scene frames {lo:.0f} to {hi:.0f}, outside "
            f"the frames Blender can key (-{BLENDER_MAX_FRAME} to {BLENDER_MAX_FRAME}): check "
            "the take's frame numbers and the scene start"
        )


# -- one hand over the take -------------------------------------------------------------------
@dataclass(frozen=True)
class HandSeries:
    """One hand over the take, its tracks merged. T samples (video frames, increasing)."""

    side: Side
    frames: np.ndarray  # (T,) video frame indices
    pose: np.ndarray  # (T, 16, 3) MANO axis-angle, radians
    translation: np.ndarray  # (T, 3) wrist in camera space, metres (0 where not fitted)
    confidence: np.ndarray  # (T,) mean keypoint confidence, 0..1
    rest_keypoints: np.ndarray | None  # (21, 3) of the longest track


def side_tracks(take: Take, side: Side) -> list[tuple[int, Track]]:
    """(index in the take, track) of every track of ``side`` with MANO fields."""
    return [(i, t) for i, t in enumerate(take.tracks)
            if t.handedness == side and t.mano_pose is not None]  # fmt: skip


def hand_series(take: Take, side: Side) -> HandSeries | None:
    """The side's tracks merged by frame (where two overlap, the more confident wins).
    None when the side has no track with MANO fields and at least one frame."""
    tracks = [t for _, t in side_tracks(take, side) if len(t) > 0]
    if not tracks:
        return None
    best: dict[int, tuple[float, Track, int]] = {}
    for tr in tracks:
        conf = tr.confidence.mean(axis=1)
        for i, f in enumerate(tr.frames.tolist()):
            if f not in best or conf[i] > best[f][0]:
                best[f] = (float(conf[i]), tr, i)
    frames = np.array(sorted(best), dtype=np.int64)
    pose = np.stack([best[f][1].mano_pose[best[f][2]] for f in frames]).astype(np.float64)
    transl = np.stack([
        best[f][1].translation[best[f][2]] if best[f][1].translation is not None else np.zeros(3)
        for f in frames
    ]).astype(np.float64)  # fmt: skip
    conf = np.array([best[f][0] for f in frames])
    longest = max(tracks, key=len)
    return HandSeries(Side(side), frames, pose, transl, conf, longest.rest_keypoints)


# -- onto the scene's whole frames ------------------------------------------------------------
def segments(times: np.ndarray, step: float) -> list[slice]:
    """Runs of the (T,) increasing ``times`` no further apart than 1.5 ``step`` (a lost hand
    splits them), as slices of the samples."""
    if len(times) == 0:
        return []
    breaks = np.flatnonzero(np.diff(times) > 1.5 * step) + 1
    edges = [0, *breaks.tolist(), len(times)]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


@dataclass(frozen=True)
class SceneGrid:
    """The whole scene frames one hand is keyed on: per segment of samples (a slice of the
    (T,) samples), the (K_s,) frames. ``integral``: the samples fall on whole frames at
    least one frame apart, so they are keyed as they are, without resampling."""

    integral: bool
    segments: tuple[tuple[slice, np.ndarray], ...]

    @property
    def key_count(self) -> int:
        """Scene frames keyed, all segments together."""
        return sum(len(dst) for _, dst in self.segments)


def scene_grid(times: np.ndarray, step: float) -> SceneGrid:
    """Where the samples at scene ``times`` (T,) (``step`` scene frames apart) are keyed.
    ``times`` must lie within Blender's frame range (the frames are enumerated)."""
    integral = bool(np.allclose(times, np.round(times), atol=1e-6) and step >= 1.0 - 1e-9)
    out = []
    for seg in segments(times, step):
        t = times[seg]
        if integral:
            dst = np.round(t)
        else:
            dst = np.arange(np.ceil(t[0] - 1e-6), np.floor(t[-1] + 1e-6) + 1.0)
        if len(dst):
            out.append((seg, dst))
    return SceneGrid(integral, tuple(out))


@dataclass(frozen=True)
class SceneKeys:
    """One hand's keys on whole scene frames (K keys, B bones).

    Attributes:
        frames: (K,) scene frames of the pose keys.
        rotations: (K, B, 4) quaternions.
        locations: (K, B, 3) or None.
        conf_frames: (C,) scene frames of the confidence curve.
        conf_values: (C,) confidence 0..1, dropping to 0 one frame outside each segment.
    """

    frames: np.ndarray
    rotations: np.ndarray
    locations: np.ndarray | None
    conf_frames: np.ndarray
    conf_values: np.ndarray


def on_scene_frames(times: np.ndarray, rotations: np.ndarray, locations: np.ndarray | None,
                    confidence: np.ndarray, grid: SceneGrid) -> SceneKeys:  # fmt: skip
    """The (T,) samples at scene ``times`` (``rotations`` (T, B, 4), ``locations``
    (T, B, 3) or None, ``confidence`` (T,)) on the grid's whole scene frames, per segment:
    slerp for rotations, linear for the rest (as they are on an integral grid)."""
    out_f, out_q, out_l, conf_f, conf_v = [], [], [], [], []
    for seg, dst in grid.segments:
        t = times[seg]
        if grid.integral:
            q = rotations[seg]
            loc = locations[seg] if locations is not None else None
            c = confidence[seg]
        else:
            q = resample_rotations(t, rotations[seg], dst)
            loc = resample_linear(t, locations[seg], dst) if locations is not None else None
            c = resample_linear(t, confidence[seg], dst)
        out_f.append(dst)
        out_q.append(q)
        if loc is not None:
            out_l.append(loc)
        conf_f += [[dst[0] - 1.0], dst, [dst[-1] + 1.0]]
        conf_v += [[0.0], np.clip(c, 0.0, 1.0), [0.0]]
    cf, cv = np.concatenate(conf_f), np.concatenate(conf_v)
    keep = np.concatenate([[True], np.diff(cf) > 0.5])  # touching segments: no duplicate keys
    return SceneKeys(np.concatenate(out_f), np.concatenate(out_q),
                     np.concatenate(out_l) if out_l else None, cf[keep], cv[keep])  # fmt: skip


def check_finite_keys(side: Side, what: str, values: np.ndarray, bones: tuple[str, ...],
                      frames: np.ndarray) -> None:  # fmt: skip
    """Last check before keying: (K, B, D) ``values`` at (K,) scene ``frames`` are finite;
    else HandmocapError naming the bone and the frame."""
    bad = ~np.isfinite(values).all(axis=2)
    if bad.any():
        k, b = np.argwhere(bad)[0]
        raise HandmocapError(f"the {side} hand's {what} are not finite (bone {bones[b]!r}, "
                             f"scene frame {frames[k]:.0f}): {TAKE_DAMAGED}")  # fmt: skip


# -- re-capturing a range ---------------------------------------------------------------------
def merge_rotation_keys(old_frames: np.ndarray, old_quats: np.ndarray, new_frames: np.ndarray,
                        new_quats: np.ndarray,
                        frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """An earlier quaternion curve (keys ``old_frames`` (K,), ``old_quats`` (K, 4)) with the
    whole scene ``frames`` (N,) of a re-captured range taken from a new curve: the new curve
    as Blender plays it (nlerp between keys) at each of them, spliced in so that every whole
    frame outside the range shows what it did (:func:`splice_rotation_keys`)."""
    start, end = float(frames[0]), float(frames[-1])
    inside = nlerp_curve(new_frames, new_quats, frames)
    return splice_rotation_keys(old_frames, old_quats, start, end, frames, inside)


def merge_confidence_keys(old_frames: np.ndarray, old_values: np.ndarray,
                          new_frames: np.ndarray, new_values: np.ndarray,
                          frames: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """An earlier confidence curve ((K,) keys and values) with the new curve's keys inside
    the re-captured range (whole scene ``frames`` (N,)) in place of its own there: (frames,
    values), or None when the new curve has no key in the range (the old one stays)."""
    start, end = float(frames[0]), float(frames[-1])
    inside = (new_frames >= start) & (new_frames <= end)
    if not inside.any():
        return None
    f, v = splice_keys(old_frames, old_values[:, None], start, end, new_frames[inside],
                       new_values[inside, None])  # fmt: skip
    return f, v[:, 0]
