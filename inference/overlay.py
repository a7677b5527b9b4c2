"""An overlay video to check a capture by eye: skeleton, handedness, confidence, track id."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from handmocap.errors import HandmocapError
from handmocap.retarget.hand_skeleton import MEDIAPIPE_21_PARENTS

from .take import FrameFlag
from .tracker import Observation

_COLOURS = {"right": (60, 200, 255), "left": (255, 160, 60)}  # BGR: orange right, blue left


class OverlayWriter:
    """Writes one annotated frame per captured frame, streaming."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        self.path = Path(path)
        self.part = self.path.with_name(self.path.stem + ".part" + (self.path.suffix or ".mp4"))
        self.writer = cv2.VideoWriter(
            str(self.part), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
        )
        if not self.writer.isOpened():
            raise HandmocapError(
                f"cannot write the overlay video {self.path}: "
                "check the folder exists and is writable"
            )

    def write(self, image_rgb: np.ndarray, frame: int, observations: list[Observation]) -> None:
        img = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        scale = max(1, round(max(img.shape[:2]) / 640))
        for obs in observations:
            side = "right" if obs.hand.right_prob > 0.5 else "left"
            colour = _COLOURS[side]
            pts = np.round(obs.hand.image_xyz[:, :2]).astype(int)
            for child, parent in enumerate(MEDIAPIPE_21_PARENTS):
                if parent >= 0:
                    cv2.line(img, tuple(pts[parent]), tuple(pts[child]), colour, scale, cv2.LINE_AA)
            for p in pts:
                cv2.circle(img, tuple(p), 2 * scale, (255, 255, 255), -1, cv2.LINE_AA)
            corners = np.round(obs.hand.roi.corners()).astype(int)
            cv2.polylines(img, [corners], True, colour, 1, cv2.LINE_AA)
            how = "det" if obs.flag & FrameFlag.DETECTED else "trk"
            sure = max(obs.hand.right_prob, 1.0 - obs.hand.right_prob)
            label = f"#{obs.track_id} {side[0].upper()} {sure:.2f} p{obs.hand.presence:.2f} {how}"
            x, y = pts[:, 0].min(), max(pts[:, 1].min() - 8 * scale, 12 * scale)
            cv2.putText(
                img,
                label,
                (int(x), int(y)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45 * scale,
                colour,
                scale,
                cv2.LINE_AA,
            )
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(img, f"frame {frame}", (8 * scale, 20 * scale), font, 0.5 * scale,
                    (255, 255, 255), scale, cv2.LINE_AA)  # fmt: skip
        self.writer.write(img)

    def close(self, keep: bool = True) -> None:
        self.writer.release()
        if keep:
            self.part.replace(self.path)
        else:
            self.part.unlink(missing_ok=True)
