"""What a MANO fit needs before it runs: its settings and the built files it reads.

Kept apart from :mod:`.mano_fit` (the IK network's session and the fit's maths), which a
capture loads only when the tracking is done: the files are checked before the first frame
is read, so a missing one fails in a second, not after the whole video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from handmocap.errors import HandmocapError

if TYPE_CHECKING:
    from handmocap.models.hand_model import HandModelFiles
    from handmocap.models.webxr_asset import WebXRHandFiles


@dataclass(frozen=True)
class FitConfig:
    """Refinement settings. Distances in metres, pixels in px; weights are unitless."""

    iterations: int = 120
    lr: float = 0.05  # Adam's step for the rotations (6D) and the shape
    # Adam's step for the wrist's translation, metres: Adam moves every parameter by about
    # its rate at first, and 5 cm steps shook a wrist that the initial solve already places
    # (docs/architecture.md, "Data flow").
    lr_translation: float = 0.01
    w_3d: float = 0.3
    w_2d: float = 0.5
    w_limits: float = 0.5
    w_shape: float = 0.02
    w_ik: float = 0.005
    robust_3d_m: float = 0.01
    robust_2d: float = 0.3  # of the hand's size in pixels
    # Frames optimised at once: the optimiser's graph takes ~25 KB a frame, so a longer
    # track takes its shape from this many frames spread over it, then is fitted window
    # by window with that shape (memory flat on long videos; docs/architecture.md,
    # "Speed and threads"). Tracks up to this long are fitted in one piece.
    window: int = 2048

    def validated(self) -> FitConfig:
        if self.iterations < 0 or self.lr <= 0 or self.lr_translation <= 0:
            raise HandmocapError("iterations must be >= 0, lr and lr_translation > 0")
        if self.window < 16:
            raise HandmocapError(f"the fit's window must be >= 16 frames, got {self.window}")
        return self


@dataclass(frozen=True)
class FitAssets:
    """The built files a fit reads: the hand model in MANO's layout (``hand_model``), the
    WebXR hand whose joint frames the limits are written in (``webxr_hand``) and the IK
    network (``iknet``, an ONNX file)."""

    hand_model: HandModelFiles
    webxr_hand: WebXRHandFiles
    iknet: Path


def fit_assets(mano_dir: Path | None) -> FitAssets:
    """The files for a fit with the open model, or the user's MANO when ``mano_dir``.

    Nothing is built here: as for the tracker's networks, a missing asset raises
    :class:`~handmocap.errors.AssetError` naming it and the command that builds it
    (``python3 build.py models``). The user's MANO files are converted (once, cached)."""
    from handmocap.models.hand_model import built_open_hand_model
    from handmocap.models.iknet_build import built_iknet
    from handmocap.models.mano_files import convert_mano_folder
    from handmocap.models.webxr_asset import built_webxr_hand

    files = convert_mano_folder(mano_dir) if mano_dir else built_open_hand_model()
    return FitAssets(files, built_webxr_hand(), built_iknet().onnx)
