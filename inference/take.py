"""The Take: the engine's result file, consumed by the add-on and every later stage.

An ``.npz`` written and read with ``allow_pickle=False``. ``header`` holds a JSON string
(format, version, source video, fps, frame size, intrinsics, engine, device); each track
``i`` stores its arrays under ``track{i}.<field>``. Loading validates the format version and
every shape, and fails with a message that names the problem.

Version 1 carries the keypoint fields. The MANO fields (pose, betas, translation,
keypoints_3d in camera space) are optional and filled by the MANO stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from enum import IntFlag
from pathlib import Path
from typing import Any

import numpy as np

from handmocap.errors import HandmocapError

FORMAT = "handmocap-take"
VERSION = 1


class FrameFlag(IntFlag):
    """How each frame of a track was obtained."""

    DETECTED = 1  # the crop came from the palm detector this frame
    TRACKED = 2  # the crop came from the previous frame's landmarks
    DEOCCLUDED = 4  # the estimate comes from a crop with the other hand removed
    INFILLED = 8  # no observation: filled by the motion prior


@dataclass(frozen=True)
class Track:
    """One hand over time. T frames (not necessarily consecutive video frames).

    Attributes:
        track_id: stable id within the take.
        handedness: "left" / "right", the physical hand (decided over the whole track).
        frames: (T,) video frame indices, increasing.
        keypoints_2d: (T, 21, 2) MediaPipe-order keypoints in image pixels.
        keypoints_rel_depth: (T, 21) the landmark network's relative depth, in pixels.
        world_landmarks: (T, 21, 3) metres, hand-centred, image-aligned axes.
        confidence: (T, 21) per-keypoint confidence in [0, 1].
        right_prob: (T,) per-frame probability of a right hand.
        flags: (T,) uint8 :class:`FrameFlag` bits.
        mano_pose: (T, 16, 3) axis-angle, radians, or None before the MANO stage.
        mano_betas: (10,) shape, or None.
        translation: (T, 3) wrist in camera space, metres, or None.
        keypoints_3d: (T, 21, 3) camera space, metres, or None.
        rest_keypoints: (21, 3) the fitted hand model's rest pose (MediaPipe order, hand
            space, metres, wrist at the origin): the skeleton ``mano_pose`` rotates, which
            retargeting needs. None before the MANO stage.
    """

    track_id: int
    handedness: str
    frames: np.ndarray
    keypoints_2d: np.ndarray
    keypoints_rel_depth: np.ndarray
    world_landmarks: np.ndarray
    confidence: np.ndarray
    right_prob: np.ndarray
    flags: np.ndarray
    mano_pose: np.ndarray | None = None
    mano_betas: np.ndarray | None = None
    translation: np.ndarray | None = None
    keypoints_3d: np.ndarray | None = None
    rest_keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])


_TRACK_SHAPES: dict[str, tuple[str | int, ...]] = {
    "frames": ("T",),
    "keypoints_2d": ("T", 21, 2),
    "keypoints_rel_depth": ("T", 21),
    "world_landmarks": ("T", 21, 3),
    "confidence": ("T", 21),
    "right_prob": ("T",),
    "flags": ("T",),
    "mano_pose": ("T", 16, 3),
    "mano_betas": (10,),
    "translation": ("T", 3),
    "keypoints_3d": ("T", 21, 3),
    "rest_keypoints": (21, 3),
}
_OPTIONAL = ("mano_pose", "mano_betas", "translation", "keypoints_3d", "rest_keypoints")
_DTYPES = {"frames": np.int64, "flags": np.uint8}


@dataclass(frozen=True)
class Take:
    """A capture: the header (JSON-able dict) and the tracks."""

    header: dict[str, Any]
    tracks: tuple[Track, ...] = field(default=())

    def save(self, path: Path) -> Path:
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"header": np.array(json.dumps(self.header))}
        for i, tr in enumerate(self.tracks):
            meta = {"track_id": tr.track_id, "handedness": tr.handedness}
            arrays[f"track{i}.meta"] = np.array(json.dumps(meta))
            for name in _TRACK_SHAPES:
                value = getattr(tr, name)
                if value is not None:
                    arrays[f"track{i}.{name}"] = np.asarray(
                        value, dtype=_DTYPES.get(name, np.float32)
                    )
        tmp = path.with_name(path.name + ".part.npz")
        try:
            np.savez_compressed(tmp, **arrays)
            tmp.replace(path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise HandmocapError(f"cannot write the take to {path}: {err.strerror or err}") from err
        return path


def make_header(source: Path, fps: float, width: int, height: int, intrinsics: np.ndarray,
                intrinsics_source: str, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The take header; ``extra`` adds engine/device facts."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "source": str(source),
        "fps": float(fps),
        "width": int(width),
        "height": int(height),
        "intrinsics": np.asarray(intrinsics, dtype=float).tolist(),
        "intrinsics_source": intrinsics_source,
        "hand_model": None,
        **extra,
    }


def load_take(path: Path) -> Take:
    """Read and validate a take. Raises HandmocapError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise HandmocapError(f"take file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            content = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise HandmocapError(f"{path} is not a readable take file: {err}") from err
    if "header" not in content:
        raise HandmocapError(f"{path} is not a take file (no header)")
    header = json.loads(str(content["header"]))
    if header.get("format") != FORMAT:
        raise HandmocapError(f"{path} is not a take file (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise HandmocapError(
            f"{path} is take format v{header.get('version')}; this handmocap reads v{VERSION}. "
            "Re-capture the video or update handmocap."
        )
    tracks = []
    i = 0
    while f"track{i}.meta" in content:
        meta = json.loads(str(content[f"track{i}.meta"]))
        values: dict[str, Any] = {}
        t = content[f"track{i}.frames"].shape[0] if f"track{i}.frames" in content else -1
        for name, spec in _TRACK_SHAPES.items():
            key = f"track{i}.{name}"
            if key not in content:
                if name in _OPTIONAL:
                    values[name] = None
                    continue
                raise HandmocapError(f"{path}: track {i} has no {name}")
            want = tuple(t if s == "T" else s for s in spec)
            if content[key].shape != want:
                raise HandmocapError(
                    f"{path}: track {i} {name} has shape {content[key].shape}, expected {want}"
                )
            values[name] = content[key]
        if meta["handedness"] not in ("left", "right"):
            raise HandmocapError(f"{path}: track {i} has handedness {meta['handedness']!r}")
        tracks.append(
            Track(track_id=int(meta["track_id"]), handedness=meta["handedness"], **values)
        )
        i += 1
    return Take(header, tuple(tracks))


TRACK_FIELDS = tuple(f.name for f in fields(Track))
