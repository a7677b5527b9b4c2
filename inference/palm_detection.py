"""BlazePalm detection: preprocess -> run -> postprocess, pre/post in pure numpy.

The facts: input 192x192 RGB in [0, 1], letterboxed; 2016 SSD
anchors (strides 8, 16, 16, 16; two anchors per cell and layer, fixed size 1); 18 values
per anchor (box + 7 keypoints) decoded linearly ``raw / 192 * anchor_size + anchor_centre``;
score = sigmoid(clip(raw, -100, 100)); weighted NMS at IoU 0.3. The hand region comes from
palm keypoint 0 (wrist) -> 2 (middle finger knuckle) at 90 degrees, the box scaled 2.6,
shifted -0.5 along the hand axis, squared. Where the stage sits in the pipeline:
docs/architecture.md, "Data flow".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .backend import Backend, Network
from .geometry import Roi, hand_rotation, transform_rect

INPUT_SIZE = 192
STRIDES = (8, 16, 16, 16)
ANCHORS_PER_CELL_PER_LAYER = 2
SCORE_CLIP = 100.0


@dataclass(frozen=True)
class PalmConfig:
    """Detector settings. Thresholds are probabilities; IoU is intersection over union.

    ``weak_score``: palms scoring from this up to ``min_score`` are returned too, after the
    confident ones, for a caller that has them verified (the tracker asks the landmark
    network); None returns none. They are clustered apart from the confident palms, so
    those come out exactly as without them.
    """

    min_score: float = 0.5
    nms_iou: float = 0.3
    max_palms: int = 4
    weak_score: float | None = None


@dataclass(frozen=True)
class Palm:
    """One palm in image pixels.

    Attributes:
        box: (4,) x_min, y_min, x_max, y_max.
        keypoints: (7, 2) palm keypoints (0 wrist centre, 2 middle finger knuckle, ...).
        score: detection probability.
    """

    box: np.ndarray
    keypoints: np.ndarray
    score: float

    def roi(self) -> Roi:
        """The hand region the landmark model should look at."""
        rotation = hand_rotation(self.keypoints[0], self.keypoints[2])
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        cx, cy = (self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0
        return transform_rect(cx, cy, w, h, rotation, scale=2.6, shift_y=-0.5)


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the square model input: model px = image px * scale + pad."""

    scale: float
    pad_x: float
    pad_y: float

    def to_image(self, points_model_px: np.ndarray) -> np.ndarray:
        return (points_model_px - [self.pad_x, self.pad_y]) / self.scale


def make_anchors() -> np.ndarray:
    """(2016, 2) anchor centres in [0, 1] model-input units, in the network's output order."""
    centres = []
    i = 0
    while i < len(STRIDES):
        stride = STRIDES[i]
        repeats = 0
        while i < len(STRIDES) and STRIDES[i] == stride:  # layers sharing a stride share cells
            repeats += ANCHORS_PER_CELL_PER_LAYER
            i += 1
        cells = int(np.ceil(INPUT_SIZE / stride))
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, repeats, axis=0))
    return np.concatenate(centres)


ANCHORS = make_anchors()


def letterbox(image_rgb: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, Letterbox]:
    """Fit an (H, W, 3) uint8 RGB image into (size, size, 3) float32 in [0, 1], centred,
    black borders. Returns the tensor and the transform back to image pixels."""
    h, w = image_rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = round(w * scale), round(h * scale)
    resized = cv2.resize(
        image_rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    out = np.zeros((size, size, 3), np.float32)
    px, py = (size - nw) // 2, (size - nh) // 2
    out[py : py + nh, px : px + nw] = resized.astype(np.float32) / 255.0
    # Use the exact ratios of the rounded size so that corners map back exactly.
    return out, Letterbox(scale=nw / w, pad_x=float(px), pad_y=float(py))


def decode(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's network outputs.

    Args:
        raw_boxes: (2016, 18) regressors; raw_scores: (2016,) or (2016, 1) logits.
    Returns:
        boxes (K, 4) x_min, y_min, x_max, y_max and keypoints (K, 7, 2), both in model-input
        pixels, and scores (K,), for the K anchors scoring at least ``min_score``.
    """
    logits = np.clip(raw_scores.reshape(-1), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= min_score
    raw, anchors = raw_boxes[keep].astype(np.float64), ANCHORS[keep]
    centre = raw[:, 0:2] / INPUT_SIZE + anchors
    half = raw[:, 2:4] / INPUT_SIZE / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1) * INPUT_SIZE
    kps = (raw[:, 4:18].reshape(-1, 7, 2) / INPUT_SIZE + anchors[:, None, :]) * INPUT_SIZE
    return boxes, kps, scores[keep]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box with (K, 4) boxes."""
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray, iou_threshold: float,
                 max_out: int) -> list[tuple[np.ndarray, np.ndarray, float]]:  # fmt: skip
    """MediaPipe's weighted NMS: each cluster (IoU > threshold with its best member) becomes
    the score-weighted mean of its boxes and keypoints, with the best member's score."""
    order = np.argsort(-scores, kind="stable")
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    remaining = np.ones(len(scores), bool)
    out = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        cluster = remaining & (iou(boxes[i], boxes) > iou_threshold)
        cluster[i] = True
        w = scores[cluster][:, None]
        box = (boxes[cluster] * w).sum(0) / w.sum()
        kp = (kps[cluster] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kp, float(scores[i])))
        remaining &= ~cluster
        if len(out) == max_out:
            break
    return out


def postprocess(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, lb: Letterbox, config: PalmConfig
) -> list[Palm]:
    """One image's outputs -> palms in image pixels: those scoring ``min_score`` or more,
    best first, then the weak ones (``PalmConfig.weak_score``) that overlap none of them
    by more than ``nms_iou``, best first."""
    floor = config.min_score if config.weak_score is None else config.weak_score
    boxes, kps, scores = decode(raw_boxes, raw_scores, min(floor, config.min_score))
    strong = scores >= config.min_score
    found = weighted_nms(boxes[strong], kps[strong], scores[strong], config.nms_iou,
                         config.max_palms)  # fmt: skip
    if not strong.all():
        weak = weighted_nms(boxes[~strong], kps[~strong], scores[~strong], config.nms_iou,
                            config.max_palms)  # fmt: skip
        found += [
            w for w in weak
            if not any(iou(w[0], s[0][None])[0] > config.nms_iou for s in found)
        ]  # fmt: skip
    return [
        Palm(lb.to_image(box.reshape(2, 2)).reshape(4), lb.to_image(kp), score)
        for box, kp, score in found
    ]


class PalmDetector:
    """The palm detection network: :meth:`preprocess` -> :meth:`run` -> :meth:`postprocess`.

    Pre- and postprocessing are the pure-numpy functions of this module; :meth:`run` is the
    one ONNX Runtime call, on the providers :func:`.backend.choose_backend` picked.
    """

    def __init__(self, model: Path, backend: Backend, config: PalmConfig | None = None,
                 threads: int = 0):  # fmt: skip
        """``model``: the ported ``palm_detection.onnx``; ``threads`` 0 = every usable core
        (:mod:`.threads`)."""
        self.backend = backend
        self.config = config or PalmConfig()
        self.network = Network(model, backend, threads)

    @staticmethod
    def preprocess(image_rgb: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """(H, W, 3) uint8 RGB -> a (1, 192, 192, 3) float32 batch in [0, 1] (letterboxed)
        and the transform from model-input pixels back to image pixels."""
        x, box = letterbox(image_rgb)
        return x[None], box

    def run(self, batch: np.ndarray, alone: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(1, 192, 192, 3) float32 -> raw boxes (1, 2016, 18) and score logits (1, 2016, 1).
        ``alone``: no other network runs meanwhile (:meth:`.backend.Network.run`)."""
        boxes, scores = self.network.run("image", batch, alone)
        return boxes, scores

    def postprocess(self, raw_boxes: np.ndarray, raw_scores: np.ndarray,
                    lb: Letterbox) -> list[Palm]:  # fmt: skip
        """The batch's outputs (one image) -> palms in image pixels, best first."""
        return postprocess(raw_boxes[0], raw_scores[0], lb, self.config)

    def detect(self, image_rgb: np.ndarray, alone: bool = True) -> list[Palm]:
        """(H, W, 3) uint8 RGB image -> its palms in image pixels, best first. ``alone`` as
        in :meth:`run`."""
        batch, lb = self.preprocess(image_rgb)
        return self.postprocess(*self.run(batch, alone), lb)

    __call__ = detect
