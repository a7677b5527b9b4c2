"""``build.py models``: train the IK network once and export it to ONNX, cached.

The cache key is the sha256 of everything that determines the weights: the network and
training code, the open hand model's builder, the joint limits and the training config.
Training is seeded and deterministic; it takes a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from handmocap.errors import BUILD_MODELS, AssetError
from handmocap.sides import Side

from .hand_model import ensure_open_hand_model
from .iknet_config import N_FEATURES, TrainingConfig
from .open_hand_model import MANO_TIP_VERTEX_IDS
from .webxr_asset import cache_root, ensure_webxr_hand
from .webxr_hand import load_webxr_hand

if TYPE_CHECKING:
    from .keypoint_rig import KeypointRig

# What determines the weights (this orchestration file does not).
_SOURCES = ("models/iknet.py", "models/iknet_config.py", "models/keypoint_rig.py",
            "models/open_hand_model.py", "retarget/joint_limits.py",
            "retarget/hand_skeleton.py")  # fmt: skip


@dataclass(frozen=True)
class IKNetFiles:
    onnx: Path
    manifest: dict


def load_rig(folder: Path, side: Side) -> KeypointRig:
    from .keypoint_rig import KeypointRig

    path = folder / f"MANO_{side.upper()}.npz"
    try:
        with np.load(path, allow_pickle=False) as m:
            tips = m["tip_vertex_ids"] if "tip_vertex_ids" in m.files else MANO_TIP_VERTEX_IDS
            arrays = (m["v_template"], m["shapedirs"], m["J_regressor"])
            return KeypointRig.from_model_arrays(*arrays, tips)
    except (OSError, KeyError, ValueError) as err:
        raise AssetError(f"cannot read the hand model {path}: {err}") from err


def _key(cfg: TrainingConfig) -> str:
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    for name in _SOURCES:
        h.update((root / name).read_bytes())
    return h.hexdigest()[:12]


def built_iknet(cfg: TrainingConfig | None = None) -> IKNetFiles:
    folder = cache_root() / "models" / f"iknet-{_key(cfg or TrainingConfig())}"
    onnx, manifest = folder / "iknet.onnx", folder / "manifest.json"
    if not (onnx.is_file() and manifest.is_file()):
        raise AssetError(f"the IK network is not trained yet: {BUILD_MODELS}")
    return IKNetFiles(onnx, json.loads(manifest.read_text()))


def ensure_iknet(cfg: TrainingConfig | None = None, log=print) -> IKNetFiles:
    import torch

    from .iknet import train

    cfg = cfg or TrainingConfig()
    try:
        return built_iknet(cfg)
    except AssetError:
        pass
    folder = cache_root() / "models" / f"iknet-{_key(cfg)}"
    folder.mkdir(parents=True, exist_ok=True)
    hand_files = ensure_open_hand_model()
    rig = load_rig(hand_files.folder, Side.RIGHT)
    hand = load_webxr_hand(ensure_webxr_hand().right, Side.RIGHT)
    torch.set_num_threads(2)
    log(f"[handmocap] models: training the IK network ({cfg.steps} steps, a few minutes)")
    started = time.perf_counter()
    net = train(rig, hand, cfg, log=log)
    seconds = time.perf_counter() - started
    part = folder / "iknet.part.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(2, N_FEATURES),), str(part), input_names=["features"],
            output_names=["output"], opset_version=17, dynamo=False,
            dynamic_axes={"features": {0: "frames"}, "output": {0: "frames"}},
        )  # fmt: skip
    part.replace(folder / "iknet.onnx")
    manifest = {"training": asdict(cfg), "seconds": round(seconds, 1),
                "hand_model": hand_files.model_id}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return built_iknet(cfg)
