"""An overlay video to check a capture by eye: skeleton, handedness, confidence, track id,
and the fitted hand mesh's outline when the take has MANO parameters.

A second pass over the video, drawn from the finished take, so it shows exactly what was
saved (it can also be made later from any take).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from handmocap.errors import HandmocapError
from handmocap.retarget.camera import project
from handmocap.retarget.hand_skeleton import MEDIAPIPE_21_PARENTS

from .take import FrameFlag, Take, Track
from .video import FrameRange, VideoSource

_COLOURS = {"right": (60, 200, 255), "left": (255, 160, 60)}  # BGR: orange right, blue left
_MESH = (120, 255, 120)


def _mesh_vertices(track: Track, mano_dir: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
    """((T, V, 3) camera-space vertices, (F, 3) faces) of the fitted model, or None."""
    if track.mano_pose is None:
        return None
    import torch

    from handmocap.models.hand_model import HandModel, ensure_open_hand_model
    from handmocap.models.mano_files import convert_mano_folder

    files = convert_mano_folder(mano_dir) if mano_dir else ensure_open_hand_model()
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
                  fps: float | None = None, mano_dir: Path | None = None) -> Path:  # fmt: skip
    """Draw ``take`` over ``video`` into ``path`` (MPEG-4)."""
    source = VideoSource(video, frames, fps=fps)
    info = source.info
    k = np.asarray(take.header["intrinsics"])
    by_frame: dict[int, list[tuple[Track, int]]] = {}
    meshes = {}
    for tr in take.tracks:
        for row, f in enumerate(tr.frames):
            by_frame.setdefault(int(f), []).append((tr, row))
        mesh = _mesh_vertices(tr, mano_dir)
        if mesh is not None:
            meshes[tr.track_id] = (project(mesh[0], k), mesh[1])
    part = Path(path).with_name(Path(path).stem + ".part.mp4")
    stride = (frames or FrameRange()).stride
    writer = cv2.VideoWriter(str(part), cv2.VideoWriter_fourcc(*"mp4v"), info.fps / stride,
                             (info.width, info.height))  # fmt: skip
    if not writer.isOpened():
        raise HandmocapError(f"cannot write the overlay video {path}: check the folder is writable")
    try:
        for frame, rgb in source:
            img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            scale = max(1, round(max(img.shape[:2]) / 640))
            for tr, row in by_frame.get(frame, []):
                if tr.track_id in meshes:
                    verts_px, faces = meshes[tr.track_id]
                    _draw_outline(img, verts_px[row], faces)
                _draw_hand(img, tr, row, scale)
            cv2.putText(img, f"frame {frame}", (8 * scale, 20 * scale), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5 * scale, (255, 255, 255), scale, cv2.LINE_AA)  # fmt: skip
            writer.write(img)
    finally:
        writer.release()
    part.replace(path)
    return Path(path)


def _draw_hand(img: np.ndarray, tr: Track, row: int, scale: int) -> None:
    colour = _COLOURS[tr.handedness]
    pts = np.round(tr.keypoints_2d[row]).astype(int)
    for child, parent in enumerate(MEDIAPIPE_21_PARENTS):
        if parent >= 0:
            cv2.line(img, tuple(pts[parent]), tuple(pts[child]), colour, scale, cv2.LINE_AA)
    for p in pts:
        cv2.circle(img, tuple(p), 2 * scale, (255, 255, 255), -1, cv2.LINE_AA)
    how = "det" if tr.flags[row] & FrameFlag.DETECTED else "trk"
    conf = float(tr.confidence[row].mean())
    label = f"#{tr.track_id} {tr.handedness[0].upper()} c{conf:.2f} {how}"
    x, y = pts[:, 0].min(), max(pts[:, 1].min() - 8 * scale, 12 * scale)
    cv2.putText(img, label, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, colour, scale,
                cv2.LINE_AA)  # fmt: skip
