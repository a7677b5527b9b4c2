"""Capture: a video in, a Take out. Streams frames, tracks hands, accumulates tracks."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from handmocap import __version__
from handmocap.errors import HandmocapError
from handmocap.retarget.camera import DEFAULT_FOV_DEG, intrinsics_from_fov
from handmocap.sides import Side
from handmocap.take import (
    EngineFacts,
    FrameFlag,
    FrameRange,
    Take,
    Track,
    make_header,
)

from .fit_settings import FitConfig, fit_assets
from .hand_identity import SLIP_WINDOW_SECONDS, Settled, keep_side, settle
from .motion_prior import PriorConfig, PriorReport, prior_facts, smooth_tracks
from .overlay import write_overlay
from .progress import NoProgress, Progress
from .threads import blas_threads, map_beside, opencv_threads, resolve_threads, side_pool
from .tracker import HandTracker, Observation, TrackerConfig
from .video import VideoSource, check_fps

if TYPE_CHECKING:
    from .mano_fit import ManoFitter

log = logging.getLogger(__name__)

# Keypoints the network places outside the image are guesses: halve their confidence.
OUTSIDE_IMAGE_CONFIDENCE = 0.5


@dataclass(frozen=True)
class CaptureConfig:
    """Everything that decides a capture, built once from CLI flags or Blender properties."""

    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # One side only (the other hand is still followed, so that it cannot take the
    # chosen hand's place); None keeps both.
    hands: Side | None = None
    frames: FrameRange = field(default_factory=FrameRange)
    fov_deg: float | None = None  # horizontal; None = DEFAULT_FOV_DEG, recorded as a guess
    fps: float | None = None  # for image folders, or to override a file's rate
    fit_mano: bool = True
    mano_dir: Path | None = None  # the user's MANO_RIGHT/LEFT.pkl; None = the open model
    fit: FitConfig = field(default_factory=FitConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)  # needs fit_mano

    def validated(self) -> CaptureConfig:
        self.prior.validated()
        if self.fov_deg is not None and not 10.0 <= self.fov_deg <= 170.0:
            raise HandmocapError(f"--fov must be 10..170 degrees, got {self.fov_deg}")
        if self.fps is not None:
            check_fps(self.fps)
        self.tracker.validated()
        self.frames.validated()
        return self


class _TrackBuilder:
    """Accumulates one track in growing float32 arrays (the take's own data, ~0.5 KB a
    frame): no frames and no per-frame objects are kept, so memory stays flat on long
    videos."""

    def __init__(self, track_id: int):
        self.track_id = track_id
        self._n = 0
        self._frames = np.empty(256, np.int64)
        self._xyz = np.empty((256, 21, 3), np.float32)
        self._world = np.empty((256, 21, 3), np.float32)
        self._scalars = np.empty((256, 3), np.float32)  # presence, right_prob, flag

    def add(self, frame: int, obs: Observation) -> None:
        if self._n == len(self._frames):
            self._grow()
        n = self._n
        self._frames[n] = frame
        self._xyz[n] = obs.hand.image_xyz
        self._world[n] = obs.hand.world_xyz
        self._scalars[n] = (obs.hand.presence, obs.hand.right_prob, int(obs.flag))
        self._n += 1

    def _grow(self) -> None:
        for name in ("_frames", "_xyz", "_world", "_scalars"):
            old = getattr(self, name)
            new = np.empty((2 * len(old), *old.shape[1:]), old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def __len__(self) -> int:
        return self._n

    def build(self, width: int, height: int) -> Track:
        n = self._n
        xyz = self._xyz[:n].copy()
        presence, right, flags = self._scalars[:n].T.copy()
        inside = (
            (xyz[..., 0] >= 0) & (xyz[..., 0] < width) & (xyz[..., 1] >= 0) & (xyz[..., 1] < height)
        )
        return Track(
            track_id=self.track_id,
            handedness=Side.RIGHT if float(np.mean(right)) > 0.5 else Side.LEFT,  # see decide_sides
            frames=self._frames[:n].copy(),
            keypoints_2d=xyz[..., :2],
            keypoints_rel_depth=xyz[..., 2],
            world_landmarks=self._world[:n].copy(),
            confidence=presence[:, None] * np.where(inside, 1.0, OUTSIDE_IMAGE_CONFIDENCE),
            right_prob=right,
            flags=flags.astype(np.uint8),
        )


@dataclass(frozen=True)
class CaptureResult:
    take: Take
    frames: int
    seconds: float
    detector_runs: int

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def capture(
    video: Path,
    config: CaptureConfig | None = None,
    progress: Progress | None = None,
    overlay: Path | None = None,
    tracker: HandTracker | None = None,
) -> CaptureResult:
    """Capture the hands in ``video`` (a file or an image folder) into a Take.

    1. Tracks hands frame by frame (palm detection and landmarks, ``tracker`` or one built
       from ``config.tracker``, which also cleans the crops of two overlapping hands,
       :mod:`.deocclusion`); then the tracks are settled over the whole clip
       (:mod:`.hand_identity`: phantoms dropped, sides decided, a hand that came back
       joined to its track, rows that ran on with the other hand moved to its track,
       stretches where two tracks took up each other's hand swapped back, a row that
       slipped onto the other hand dropped, as is the last row before a loss that lies
       on the other hand, and for a one-side capture
       ``config.hands`` the other side dropped, with a warning in the header when only
       the other side was seen).
    2. Unless ``config.fit_mano`` is off, fits MANO to each track (pose, shape, wrist
       translation, fitted 3D keypoints) with the open hand model or ``config.mano_dir``,
       through intrinsics from ``config.fov_deg`` (else a guessed field of view, recorded
       as a guess). The fit's assets are checked before the first frame is read: a missing
       one raises :class:`HandmocapError` naming ``python3 build.py models``; nothing is
       built here.
    3. Unless ``config.prior.smoothing`` is 0, re-solves each fitted track as one smooth
       motion and fills its short hidden runs (:mod:`.motion_prior`); the per-frame fit
       stays in the take (``frame_pose``, ``frame_translation``) for re-solving later.
    4. If ``overlay`` is given, writes that video: every hand's 2D skeleton and label on
       each frame and, where MANO was fitted, the outline of the fitted mesh.

    ``progress`` hears of each frame and stage. The take is returned, not saved: the
    caller saves it. Raises :class:`HandmocapError` for bad input or a video with no frames.
    """
    config = (config or CaptureConfig()).validated()
    progress = progress or NoProgress()
    source = VideoSource(video, config.frames, fps=config.fps)
    info = source.info
    clock = time.perf_counter()
    tracker = tracker or HandTracker(tracker_config(config))
    timings = {"models": time.perf_counter() - clock}
    # Every asset the fit reads is checked now, not after the whole video was tracked.
    assets = fit_assets(config.mano_dir) if config.fit_mano else None
    fov = config.fov_deg or DEFAULT_FOV_DEG
    builders: dict[int, _TrackBuilder] = {}
    total = source.expected_frames()
    smoothing = config.fit_mano and config.prior.enabled
    stages = [*(["mano_fit"] if config.fit_mano else []), *(["motion_prior"] if smoothing else []),
              *(["overlay"] if overlay else [])]  # fmt: skip
    progress.start(total, stages=stages, device=tracker.backend.device,
                   provider=tracker.backend.providers[0], width=info.width,
                   height=info.height, fps=info.fps)  # fmt: skip
    started = time.perf_counter()
    done = 0
    with opencv_threads(1):
        for frame, rgb in source:
            for obs in tracker.step(rgb):
                builders.setdefault(obs.track_id, _TrackBuilder(obs.track_id)).add(frame, obs)
            done += 1
            progress.update(done, frame)
    tracking_seconds = time.perf_counter() - started
    timings |= {"tracking": tracking_seconds, "decode_wait": source.wait_seconds,
                "decode": source.decode_seconds, **tracker.seconds,
                "deocclusion": tracker.deocclusion_seconds}  # fmt: skip
    if done == 0:
        raise HandmocapError(f"{video} yielded no frames in the range {config.frames}")
    clock = time.perf_counter()
    fps = info.fps / config.frames.stride
    tracks = tuple(b.build(info.width, info.height) for b in builders.values())
    builders.clear()
    # One person's two hands: a hand back after any gap is the one that left.
    one_person = tracker.config.max_hands <= 2
    gap = None if one_person else config.tracker.hunt_frames * config.frames.stride
    settled = settle(tracks, fps, gap, round(SLIP_WINDOW_SECONDS * info.fps))
    tracks = settled.tracks
    tracks, side_warning = keep_side(tracks, config.hands)
    if side_warning:
        log.warning(side_warning)
    k = intrinsics_from_fov(info.width, info.height, fov)
    timings["settle_tracks"] = time.perf_counter() - clock
    hand_model = None
    prior: PriorReport | None = None
    if assets is not None and tracks:
        progress.stage("mano_fit", sum(len(t) for t in tracks), "frames")
        clock = time.perf_counter()
        from .mano_fit import load_fitter

        fitter = load_fitter(assets, tracker.backend, config.fit)
        timings["fit_models"] = time.perf_counter() - clock
        hand_model = assets.hand_model.model_id
        tracks = _fit_tracks(fitter, tracks, k, progress, tracker.config.threads)
        timings["mano_fit"] = time.perf_counter() - clock - timings["fit_models"]
    mano_done = time.perf_counter()
    if smoothing and tracks:
        progress.stage("motion_prior", len(tracks), "tracks")
        tracks, prior = smooth_tracks(tracks, fps, config.frames.stride, k, config.prior)
        progress.update(len(tracks))
        timings["motion_prior"] = time.perf_counter() - mano_done
    seconds = time.perf_counter() - started
    header = make_header(
        info.path, fps, info.width, info.height, k,
        "user" if config.fov_deg else f"guess ({DEFAULT_FOV_DEG:g} deg horizontal)",
        hand_model=hand_model, frame_range=config.frames,
        engine=EngineFacts(
            engine_version=__version__, device=tracker.backend.device,
            provider=tracker.backend.providers[0], frames_read=done,
            detector_runs=tracker.detector_runs,
            detected_frames=int(sum(int(np.sum(t.flags & FrameFlag.DETECTED > 0)) for t in tracks)),
            tracking_seconds=round(tracking_seconds, 3),
            mano_seconds=round(mano_done - started - tracking_seconds, 3),
            stages=stage_facts(config, prior, tracker, settled),
            timings={name: round(value, 4) for name, value in timings.items()},
        ),
        # What the source did not deliver (a truncated file, undecodable or skipped frames):
        # kept with the take so that nobody mistakes a short take for the whole clip.
        warnings=[*source.warnings, *([side_warning] if side_warning else [])],
        frames_short=source.frames_short,
        missing_frames=list(source.missing_frames),
    )  # fmt: skip
    take = Take(header, tracks)
    if overlay:
        progress.stage("overlay", done, "frames")
        write_overlay(video, take, overlay, config.frames, fps=config.fps,
                      mano_dir=config.mano_dir, on_frame=progress.update)  # fmt: skip
        progress.update(done)  # the stage ends even if some frames were not drawn
    return CaptureResult(take, done, seconds, tracker.detector_runs)


def tracker_config(config: CaptureConfig) -> TrackerConfig:
    """The tracker's settings for ``config``: a one-side capture follows two hands."""
    if config.hands is None or config.tracker.max_hands >= 2:
        return config.tracker
    return replace(config.tracker, max_hands=2)


def stage_facts(
    config: CaptureConfig,
    prior: PriorReport | None,
    tracker: HandTracker,
    settled: Settled | None = None,
) -> dict:
    """The header's record of the optional stages that ran and their settings, and of
    what the whole-clip pass did (:class:`.hand_identity.Settled`): the slipped rows it
    dropped, the stray rows it moved to the other track and the rows it swapped back
    between two tracks."""
    deocc = tracker.config.deocclusion
    facts: dict = {
        "deocclusion": {
            "enabled": deocc.enabled,
            "frames": tracker.deoccluded,
            "seconds": round(tracker.deocclusion_seconds, 3),
        },
        "identity": {
            "slipped_rows_dropped": settled.slipped if settled else 0,
            "stray_rows_moved": settled.moved if settled else 0,
            "swapped_rows": settled.swapped if settled else 0,
        },
    }
    if config.fit_mano:
        facts["mano_fit"] = {"iterations": config.fit.iterations}
        facts["motion_prior"] = prior_facts(config.prior, prior)
    return facts


def _fit_tracks(fitter: ManoFitter, tracks: tuple[Track, ...], k: np.ndarray,
                progress: Progress, threads: int = 0) -> tuple[Track, ...]:  # fmt: skip
    """Fit MANO to each track, reporting the frames fitted so far (of all tracks) as the
    optimisation of each track advances.

    The tracks are fitted side by side on ``threads`` threads (0 = every usable core),
    BLAS on one thread each: its own threads spin between the fit's small products and
    took as much CPU again as the fit (docs/architecture.md, "Speed and threads")."""
    done = [0] * len(tracks)
    lock = threading.Lock()

    def fit(index: int) -> Track:
        t = tracks[index]

        def report(fraction: float) -> None:
            with lock:  # one progress line at a time
                done[index] = round(len(t) * fraction)
                progress.update(sum(done))

        fit = fitter.fit(t.handedness, t.keypoints_2d, t.keypoints_rel_depth, t.confidence, k,
                         on_progress=report)  # fmt: skip
        return _with_mano(t, fit)

    threads = resolve_threads(threads)
    with blas_threads(1):
        return tuple(map_beside(side_pool(min(threads, len(tracks))), fit, range(len(tracks))))


def _with_mano(track: Track, fit) -> Track:
    return replace(track, mano_pose=fit.pose, mano_betas=fit.betas, translation=fit.translation,
                   keypoints_3d=fit.keypoints_3d, rest_keypoints=fit.rest_keypoints,
                   frame_pose=fit.pose, frame_translation=fit.translation)  # fmt: skip
