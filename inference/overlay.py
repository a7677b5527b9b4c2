"""An overlay video to check a capture by eye: skeleton, handedness, confidence, track id,
and the fitted hand mesh's outline when the take has MANO parameters; frames the motion
prior filled are drawn grey and labelled "fill"; frames whose estimate came from a crop
cleaned of the other hand (the de-occlusion stage) are labelled "deocc" and show the
outline of the hand silhouette the stage draws from keypoints (magenta).

A second pass over the video, drawn from the finished take, so it shows exactly what was
saved (it can also be made later from any take).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from handmocap.atomic import atomic_output
from handmocap.errors import HandmocapError
from handmocap.retarget.camera import project
from handmocap.retarget.hand_skeleton import MEDIAPIPE_21_PARENTS
from handmocap.sides import Side
from handmocap.take import FrameFlag, FrameRange, Take, Track

from .deocclusion import DeocclusionConfig, hand_mask
from .video import VideoSource

_COLOURS = {Side.RIGHT: (60, 200, 255), Side.LEFT: (255, 160, 60)}  # BGR: orange right, blue left
_MESH = (120, 255, 120)
_GUESS = (170, 170, 170)  # grey: a frame the motion prior filled (the hand was not seen)
_SILHOUETTE = (255, 80, 255)  # magenta: the de-occlusion stage's silhouette of the hand


def _mesh_vertices(track: Track, mano_dir: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    """((T, V, 3) camera-space vertices, (F, 3) faces) of the fitted model, or None."""
    if track.mano_pose is None:
        return None
    import torch

    from handmocap.models.hand_model import HandModel, built_open_hand_model
    from handmocap.models.mano_files import convert_mano_folder

    files = convert_mano_folder(mano_dir) if mano_dir else built_open_hand_model()
    model = HandModel(files, track.handedness)
    pose = torch.as_tensor(track.mano_pose, dtype=torch.float32)
    betas = torch.as_tensor(np.tile(track.mano_betas, (len(track), 1)), dtype=torch.float32)
    transl = torch.as_tensor(track.translation, dtype=torch.float32) - model.rest_wrist(betas)
    with torch.no_grad():
        verts, _ = model.forward_all(pose[:, 0], pose[:, 1:].reshape(-1, 45), betas, transl)
    return verts.numpy(), model.faces


def _draw_outline(img: np.ndarray, verts_px: np.ndarray, faces: np.ndarray) -> None:
    mask = np.zeros(img.shape[:2], np.uint8)
    tris = np.round(verts_px[faces]).astype(np.int32)
    cv2.fillPoly(mask, list(tris), 255)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, _MESH, 1, cv2.LINE_AA)


def write_overlay(video: Path, take: Take, path: Path, frames: FrameRange | None = None,
                  fps: float | None = None, mano_dir: Path | None = None,
                  on_frame: Callable[[int, int], None] | None = None) -> Path:  # fmt: skip
    """Draw ``take`` over ``video`` into ``path`` (MPEG-4), one output frame per frame read;
    ``on_frame(done, frame_index)`` is called after each frame drawn (for progress).

    Written through :func:`atomic_output`: ``path`` is the complete video or untouched (an
    exception or Ctrl-C deletes the temporary file). A folder frame that cannot be decoded
    becomes a grey frame saying so, so the overlay keeps the video's timing."""
    source = VideoSource(video, frames, fps=fps, log_warnings=False)  # capture already warned
    info = source.info
    k = take.header.intrinsics
    by_frame: dict[int, list[tuple[Track, int]]] = {}
    meshes = {}
    for tr in take.tracks:
        for row, f in enumerate(tr.frames):
            by_frame.setdefault(int(f), []).append((tr, row))
        mesh = _mesh_vertices(tr, mano_dir)
        if mesh is not None:
            meshes[tr.track_id] = (project(mesh[0], k), mesh[1])
    stride = source.range.stride
    scale = max(1, round(max(info.width, info.height) / 640))
    with atomic_output(Path(path), suffix=".mp4") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), info.fps / stride,
                                 (info.width, info.height))  # fmt: skip
        if not writer.isOpened():
            raise HandmocapError(
                f"cannot write the overlay video {path}: OpenCV cannot open an MPEG-4 writer "
                "there; check the folder is writable"
            )
        try:
            expected, done = source.range.start, 0
            for frame, rgb in source:
                for gap in range(expected, frame, stride):  # frames that could not be decoded
                    writer.write(_missing_frame(info.height, info.width, gap, scale))
                expected = frame + stride
                img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                for tr, row in by_frame.get(frame, []):
                    if tr.track_id in meshes:
                        verts_px, faces = meshes[tr.track_id]
                        _draw_outline(img, verts_px[row], faces)
                    if tr.flags[row] & FrameFlag.DEOCCLUDED:
                        _draw_silhouette(img, tr.keypoints_2d[row])
                    _draw_hand(img, tr, row, scale)
                _label(img, f"frame {frame}", scale)
                writer.write(img)
                done += 1
                if on_frame is not None:
                    on_frame(done, frame)
            for gap in (m for m in source.missing_frames if m >= expected):  # at the end
                writer.write(_missing_frame(info.height, info.width, gap, scale))
        finally:
            writer.release()
    return Path(path)


def _draw_silhouette(img: np.ndarray, keypoints_2d: np.ndarray) -> None:
    """The outline of the silhouette :mod:`.deocclusion` draws for (21, 2) keypoints."""
    mask = hand_mask(keypoints_2d, img.shape[:2], DeocclusionConfig()).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, _SILHOUETTE, 1, cv2.LINE_AA)


def _label(img: np.ndarray, text: str, scale: int) -> None:
    cv2.putText(img, text, (8 * scale, 20 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale,
                (255, 255, 255), scale, cv2.LINE_AA)  # fmt: skip


def _missing_frame(height: int, width: int, frame: int, scale: int) -> np.ndarray:
    """A grey BGR (H, W, 3) frame standing in for one that could not be decoded."""
    img = np.full((height, width, 3), 64, np.uint8)
    _label(img, f"frame {frame}: could not be decoded", scale)
    return img


def _draw_hand(img: np.ndarray, tr: Track, row: int, scale: int) -> None:
    infilled = bool(tr.flags[row] & FrameFlag.INFILLED)
    colour = _GUESS if infilled else _COLOURS[tr.handedness]
    pts = np.round(tr.keypoints_2d[row]).astype(int)
    for child, parent in enumerate(MEDIAPIPE_21_PARENTS):
        if parent >= 0:
            cv2.line(img, tuple(pts[parent]), tuple(pts[child]), colour, scale, cv2.LINE_AA)
    for p in pts:
        cv2.circle(img, tuple(p), 2 * scale, (255, 255, 255), -1, cv2.LINE_AA)
    how = "fill" if infilled else "det" if tr.flags[row] & FrameFlag.DETECTED else "trk"
    if tr.flags[row] & FrameFlag.DEOCCLUDED:
        how += " deocc"
    conf = float(tr.confidence[row].mean())
    label = f"#{tr.track_id} {tr.handedness[0].upper()} c{conf:.2f} {how}"
    x, y = pts[:, 0].min(), max(pts[:, 1].min() - 8 * scale, 12 * scale)
    cv2.putText(img, label, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, colour, scale,
                cv2.LINE_AA)  # fmt: skip
