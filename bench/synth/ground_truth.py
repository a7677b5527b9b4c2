"""Ground truth of a synthetic clip: what was rendered, per frame and hand (numpy only).

Stored as ``<name>.npz`` (``allow_pickle=False``) next to ``<name>.mp4``. The npz holds a
JSON header string under ``header`` and the arrays below. Camera space is OpenCV's
(x right, y down, z forward), metres; pixel coordinates have (0, 0) at the top-left
corner of the top-left pixel, so the centre of pixel (u, v) is (u + 0.5, v + 0.5).

From v3, two-hand clips also keep each hand rendered alone (the other hand hidden) on the
frames where the hands meet on screen: ``<name>_alone/h<h>_<t:05d>.png`` next to the npz
(:func:`alone_image_name`, :func:`load_alone_rgb`), the truth for removing a hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from handmocap.errors import HandmocapError
from handmocap.retarget.camera import intrinsics_from_fov, project

__all__ = [
    "ClipGroundTruth",
    "Visibility",
    "alone_image_name",
    "hands_meet",
    "intrinsics_from_fov",
    "load_alone_rgb",
    "load_ground_truth",
    "project",
]

FORMAT = "handmocap-synthetic-clip"
# v2 added the OCCLUDED_BY_OBJECT code and header["occluder"]; v3 the amodal masks,
# header["alone_frames"] and header["alone_dir"]. v1 and v2 files are still read.
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# A hand is rendered alone on the frames where the hands' visible masks come this close
# (or a hand shows no pixel at all): there the other hand may hide part of it.
ALONE_MARGIN_PX = 10


class Visibility(IntEnum):
    """Per-keypoint visibility codes."""

    VISIBLE = 0
    SELF_OCCLUDED = 1  # behind another part of the same hand
    OCCLUDED_BY_OTHER_HAND = 2
    OUTSIDE_IMAGE = 3
    OCCLUDED_BY_OBJECT = 4  # behind a scene object (the occluder), whatever lies behind it


@dataclass(frozen=True)
class ClipGroundTruth:
    """Everything known about a rendered clip. T frames, H hands, P = 21 keypoints
    (MediaPipe order), J = 25 WebXR joints, M = 16 MANO joints.

    Attributes:
        header: JSON-able metadata (format, version, name, seed, width, height, fps,
            asset id, render settings, joint orders). From v2, ``header["occluder"]`` is
            None for clips without an occluder, else ``{"first_hidden": f0,
            "last_hidden": f1}``: the longest run of frames on which no keypoint of any
            hand is visible (both None if there is none).
        intrinsics: (3, 3) pinhole camera matrix K in pixels.
        handedness: (H,) "left" / "right", the physical hand.
        keypoints_cam: (T, H, P, 3) keypoints in camera space, metres.
        keypoints_px: (T, H, P, 2) the same projected through K, pixels.
        visibility: (T, H, P) int8 :class:`Visibility` codes.
        joint_local_quat: (T, H, J, 4) each WebXR joint's rotation relative to its rest
            pose, in the hand's rest axes, quaternion (w, x, y, z).
        wrist_rotation: (T, H, 3, 3) camera-from-hand rotation.
        wrist_position: (T, H, 3) wrist joint in camera space, metres.
        mano_pose: (T, H, M, 3) axis-angle (radians): [0] the global wrist rotation in
            camera space, [1:] the 15 finger joint rotations in MANO order.
        segmentation: (T, height, width) uint8 labels from the object-index pass:
            0 background or occluder, 1 + h for hand h (the visible one where hands
            overlap). Hand h's visible mask is ``segmentation == h + 1``.
        amodal: (T, H, height, width) bool, from v3 for clips rendered with
            ``ClipSpec.render_alone`` (None otherwise, and in older files): hand h's
            whole silhouette, hand and forearm, as if the other hand were not there
            (scene occluders still hide it). On the frames in
            ``header["alone_frames"]`` it is the object-index pass of the hand rendered
            alone; elsewhere it equals the visible mask. It always contains the visible
            mask. From v3 ``header["alone_frames"]`` lists, ascending, the frames with a
            rendered-alone image of every hand (empty for one hand; None for a clip not
            rendered alone), and ``header["alone_dir"]`` the folder next to the npz that
            holds them.
    """

    header: dict[str, Any]
    intrinsics: np.ndarray
    handedness: tuple[str, ...]
    keypoints_cam: np.ndarray
    keypoints_px: np.ndarray
    visibility: np.ndarray
    joint_local_quat: np.ndarray
    wrist_rotation: np.ndarray
    wrist_position: np.ndarray
    mano_pose: np.ndarray
    segmentation: np.ndarray
    amodal: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.keypoints_cam.shape[0])

    @property
    def num_hands(self) -> int:
        return len(self.handedness)

    def save(self, path: Path) -> Path:
        path = Path(path)
        arrays = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("header", "handedness") and getattr(self, f.name) is not None
        }
        np.savez_compressed(
            path,
            header=np.array(json.dumps(self.header)),
            handedness=np.array(self.handedness, dtype="U5"),
            **arrays,
        )
        return path


_SHAPES: dict[str, tuple[str | int, ...]] = {
    "intrinsics": (3, 3),
    "keypoints_cam": ("T", "H", 21, 3),
    "keypoints_px": ("T", "H", 21, 2),
    "visibility": ("T", "H", 21),
    "joint_local_quat": ("T", "H", 25, 4),
    "wrist_rotation": ("T", "H", 3, 3),
    "wrist_position": ("T", "H", 3),
    "mano_pose": ("T", "H", 16, 3),
    "segmentation": ("T", "height", "width"),
}


def load_ground_truth(path: Path) -> ClipGroundTruth:
    """Load and validate a ground-truth npz. Raises HandmocapError naming what is wrong."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            content = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise HandmocapError(f"{path} is not a readable ground-truth file: {err}") from err
    missing = [k for k in ("header", "handedness", *_SHAPES) if k not in content]
    if missing:
        raise HandmocapError(f"{path} lacks the fields {missing}; re-render the clip")
    header = json.loads(str(content["header"]))
    if header.get("format") != FORMAT or header.get("version") not in READABLE_VERSIONS:
        raise HandmocapError(
            f"{path} is format {header.get('format')!r} v{header.get('version')}, expected "
            f"{FORMAT!r} v{'/'.join(map(str, READABLE_VERSIONS))}; re-render the clip"
        )
    sizes = {
        "T": header["num_frames"],
        "H": len(content["handedness"]),
        "height": header["height"],
        "width": header["width"],
    }
    for key, spec in _SHAPES.items():
        want = tuple(sizes[s] if isinstance(s, str) else s for s in spec)
        if content[key].shape != want:
            raise HandmocapError(f"{path}: {key} has shape {content[key].shape}, expected {want}")
    rendered_alone = header["version"] >= 3 and header.get("alone_frames") is not None
    amodal = _amodal(path, header, content, sizes) if rendered_alone else None
    if header["version"] < 3:
        header.setdefault("alone_frames", None)
        header.setdefault("alone_dir", None)
    codes = {int(v) for v in Visibility}
    if header["version"] < 2:
        codes.discard(int(Visibility.OCCLUDED_BY_OBJECT))
        header.setdefault("occluder", None)  # v1 clips never had one
    unknown = sorted(set(np.unique(content["visibility"]).tolist()) - codes)
    if unknown:
        raise HandmocapError(
            f"{path}: visibility holds the unknown codes {unknown}; re-render the clip"
        )
    return ClipGroundTruth(
        header=header,
        handedness=tuple(str(h) for h in content["handedness"]),
        **{k: content[k] for k in _SHAPES},
        amodal=amodal,
    )


def _amodal(path: Path, header: dict, content: dict, sizes: dict[str, int]) -> np.ndarray:
    """The v3 amodal masks, checked: shape, dtype, containing the visible masks; and the
    header's alone frames."""
    if "amodal" not in content:
        raise HandmocapError(f"{path} lacks the field 'amodal'; re-render the clip")
    amodal = content["amodal"]
    want = (sizes["T"], sizes["H"], sizes["height"], sizes["width"])
    if amodal.shape != want or amodal.dtype != np.bool_:
        raise HandmocapError(
            f"{path}: amodal is {amodal.dtype} {amodal.shape}, expected bool {want}"
        )
    labels = content["segmentation"]
    for h in range(sizes["H"]):
        if np.any((labels == h + 1) & ~amodal[:, h]):
            raise HandmocapError(f"{path}: hand {h}'s amodal mask misses visible pixels")
    frames = header.get("alone_frames")
    if (
        not isinstance(frames, list)
        or not isinstance(header.get("alone_dir"), str)
        or any(not isinstance(t, int) or not 0 <= t < sizes["T"] for t in frames)
        or frames != sorted(set(frames))
    ):
        raise HandmocapError(
            f"{path}: header alone_frames {frames!r} / alone_dir {header.get('alone_dir')!r} "
            f"are not ascending frame numbers below {sizes['T']} and a folder name"
        )
    return amodal


def alone_image_name(t: int, h: int) -> str:
    """File name, inside ``header["alone_dir"]``, of hand h rendered alone on frame t."""
    return f"h{h}_{t:05d}.png"


def load_alone_rgb(npz_path: Path, gt: ClipGroundTruth, t: int, h: int) -> np.ndarray | None:
    """(height, width, 3) uint8 RGB of hand ``h`` rendered alone on frame ``t`` of the clip
    whose ground truth ``gt`` was loaded from ``npz_path``; None where none was rendered
    (the frame is not in ``header["alone_frames"]``, or the file predates v3)."""
    frames = gt.header.get("alone_frames")
    if not frames or t not in frames or not 0 <= h < gt.num_hands:
        return None
    import cv2  # only here: the rest of the truth is numpy

    path = Path(npz_path).parent / gt.header["alone_dir"] / alone_image_name(t, h)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise HandmocapError(f"{path} is missing or unreadable; re-render the clip")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def hands_meet(labels: np.ndarray, num_hands: int, margin_px: float = ALONE_MARGIN_PX) -> bool:
    """Whether, on one frame's labels (height, width) (``segmentation[t]``), two hands'
    visible masks come within ``margin_px`` of each other, or a hand shows no pixel at
    all (it may lie wholly behind the other). Then, as each hand's whole silhouette is
    connected, the hands' amodal masks may overlap or come that close; otherwise not."""
    from scipy.ndimage import distance_transform_edt

    if num_hands < 2:
        return False
    masks = [labels == h + 1 for h in range(num_hands)]
    if not all(m.any() for m in masks):
        return True
    for h, mask in enumerate(masks[:-1]):
        distance = distance_transform_edt(~mask)  # to hand h's nearest pixel
        if any(distance[other].min() <= margin_px for other in masks[h + 1 :]):
            return True
    return False
