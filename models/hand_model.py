"""Load a hand model in MANO's layout (the open one, or the user's real MANO) through smplx,
and pose it into the 21 keypoints of MediaPipe's order.

Everything downstream goes through :class:`HandModel`, so the same code runs on either.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handmocap.errors import BUILD_MODELS, AssetError
from handmocap.retarget.hand_skeleton import MANO21_FOR_MEDIAPIPE
from handmocap.sides import BOTH, Side

from .open_hand_model import MANO_TIP_VERTEX_IDS, MODEL_ID, build_right_hand, mirror
from .webxr_asset import cache_root, ensure_webxr_hand
from .webxr_hand import load_webxr_hand

_OPEN_SOURCES = ("models/open_hand_model.py", "models/webxr_hand.py")


@dataclass(frozen=True)
class HandModelFiles:
    """A folder with ``MANO_RIGHT.npz`` and ``MANO_LEFT.npz`` (plain arrays) and its id."""

    folder: Path
    model_id: str


def _open_hand_folder() -> Path:
    """Where the open hand model is cached, keyed by its builder's source."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _OPEN_SOURCES:
        digest.update((root.parent / name).read_bytes())
    return cache_root() / "models" / f"open-hand-{digest.hexdigest()[:12]}"


def _is_built(folder: Path) -> bool:
    return all((folder / f"MANO_{s}.npz").is_file() for s in ("RIGHT", "LEFT"))


def built_open_hand_model() -> HandModelFiles:
    """The built open hand model files, never building them (the policy at capture time):
    missing files raise :class:`AssetError` naming them and the build command."""
    folder = _open_hand_folder()
    if not _is_built(folder):
        raise AssetError(
            f"the open hand model is not built ({folder} lacks MANO_RIGHT.npz or "
            f"MANO_LEFT.npz): {BUILD_MODELS}"
        )
    return HandModelFiles(folder, MODEL_ID)


def ensure_open_hand_model() -> HandModelFiles:
    """Build (once, cached by the builder's source) the open hand model files."""
    folder = _open_hand_folder()
    if not _is_built(folder):
        files = ensure_webxr_hand()
        right = build_right_hand(load_webxr_hand(files.right, Side.RIGHT))
        right.save(folder)
        mirror(right).save(folder)
        (folder / "model.json").write_text(json.dumps({"model_id": MODEL_ID}))
    return HandModelFiles(folder, MODEL_ID)


class HandModel:
    """One hand (left or right) as a torch module via ``smplx.MANO``.

    ``keypoints(global_orient, hand_pose, betas, transl)`` returns (B, 21, 3) keypoints in
    MediaPipe order; rotations are axis-angle (radians), ``global_orient`` (B, 3),
    ``hand_pose`` (B, 45) = 15 joints x 3, ``betas`` (B, 10), ``transl`` (B, 3) metres.
    The wrist lands at ``rest_wrist(betas) + transl`` (smplx rotates about the rest wrist).
    """

    def __init__(self, files: HandModelFiles, side: Side):
        import smplx
        import torch

        if side not in BOTH:
            raise AssetError(f"side must be 'left' or 'right', got {side!r}")
        self.side = side
        self.model_id = files.model_id
        path = files.folder / f"MANO_{side.upper()}.npz"
        if not path.is_file():
            raise AssetError(f"{path} is missing: {BUILD_MODELS}")
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a note about 10 betas
            self.mano = self._load(smplx, files, side)
        self.tips = torch.tensor(MANO_TIP_VERTEX_IDS, dtype=torch.long)
        self.order = torch.tensor(MANO21_FOR_MEDIAPIPE, dtype=torch.long)

    @staticmethod
    def _load(smplx, files: HandModelFiles, side: Side):
        return smplx.MANO(
            str(files.folder), is_rhand=side == Side.RIGHT, ext="npz", use_pca=False,
            flat_hand_mean=True, num_betas=10,
        )  # fmt: skip

    def forward_all(self, global_orient, hand_pose, betas, transl):
        """(vertices (B, V, 3), keypoints (B, 21, 3)) in MediaPipe order."""
        import torch

        out = self.mano(
            global_orient=global_orient, hand_pose=hand_pose, betas=betas, transl=transl
        )
        kp = torch.cat([out.joints, out.vertices[:, self.tips]], dim=1)[:, self.order]
        return out.vertices, kp

    def keypoints(self, global_orient, hand_pose, betas, transl):
        return self.forward_all(global_orient, hand_pose, betas, transl)[1]

    def rest_wrist(self, betas):
        """(B, 3) wrist position of the unposed hand with these betas."""
        import torch

        zeros = torch.zeros(betas.shape[0], 3, dtype=betas.dtype)
        out = self.mano(betas=betas, global_orient=zeros, hand_pose=torch.zeros(betas.shape[0], 45),
                        transl=zeros)  # fmt: skip
        return out.joints[:, 0]

    @property
    def faces(self) -> np.ndarray:
        return np.asarray(self.mano.faces, dtype=np.int64)
