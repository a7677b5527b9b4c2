"""Build the hand detector and landmark networks from the mediapipe wheel, as ONNX.

``pip download --no-deps mediapipe==0.10.20`` (wheels after 0.10.20 no longer carry the
tflite files), read the two .tflite files out of it, port them to torch
(``tflite_reader`` + ``tflite_torch``, our own code), export ONNX with a dynamic batch
axis, fold the zero ``Pad`` nodes of TensorFlow's asymmetric "SAME" padding into the ``Conv``
they feed (``onnx_passes.fold_pads_into_convs``) and write the palm detector's per-channel
``PRelu`` as two depthwise convolutions (``onnx_passes.prelu_as_depthwise_convs``; both in
docs/architecture.md, "Speed and threads"), check the result against the torch module, and
cache everything under
``<cache>/models/mediapipe-<version>-r<PORT_REVISION>-<wheel sha256[:12]>/`` with a manifest.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handmocap.errors import BUILD_MODELS, AssetError

from .webxr_asset import cache_root, sha256_of

MEDIAPIPE_VERSION = "0.10.20"
OPSET = 17
# Bumped whenever the port writes different ONNX from the same wheel, so that a cache built by
# an older port is rebuilt rather than reused. 2: Pads folded into Convs. 3: per-channel PRelus
# written as depthwise Convs.
PORT_REVISION = 3


@dataclass(frozen=True)
class NetSpec:
    name: str
    member: str  # path inside the wheel
    input_size: int
    outputs: tuple[str, ...]  # our names for the graph outputs, in graph order


NETS = (
    NetSpec("palm_detection", "mediapipe/modules/palm_detection/palm_detection_full.tflite", 192,
            ("boxes", "scores")),
    NetSpec("hand_landmark", "mediapipe/modules/hand_landmark/hand_landmark_full.tflite", 224,
            ("landmarks", "presence", "handedness", "world_landmarks")),
)  # fmt: skip


@dataclass(frozen=True)
class MediapipeModels:
    """Paths of the built models and their manifest (dict read from manifest.json)."""

    folder: Path
    palm_detection: Path
    hand_landmark: Path
    manifest: dict

    def tflite(self, name: str) -> Path:
        return self.folder / f"{name}.tflite"


def _pointer() -> Path:
    return cache_root() / "models" / f"mediapipe-{MEDIAPIPE_VERSION}.json"


def _load(folder: Path) -> MediapipeModels | None:
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("port_revision") != PORT_REVISION:
        return None  # built by another version of the port: rebuild
    paths = {n.name: folder / f"{n.name}.onnx" for n in NETS}
    for name, path in paths.items():
        if not path.is_file() or sha256_of(path) != manifest["files"][name]["onnx_sha256"]:
            return None
    return MediapipeModels(folder, paths["palm_detection"], paths["hand_landmark"], manifest)


def built_mediapipe_models() -> MediapipeModels:
    """The built models, or a clear error saying how to build them."""
    pointer = _pointer()
    models = None
    if pointer.is_file():
        models = _load(Path(json.loads(pointer.read_text())["folder"]))
    if models is None:
        raise AssetError(
            f"the hand detection models are not built (or their files are damaged): {BUILD_MODELS}"
        )
    return models


def ensure_mediapipe_models(log=print) -> MediapipeModels:
    """Build the models if they are not built yet; return them."""
    try:
        return built_mediapipe_models()
    except AssetError:
        pass
    downloads = cache_root() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    wheel = _download_wheel(downloads)
    sha = sha256_of(wheel)
    folder = cache_root() / "models" / f"mediapipe-{MEDIAPIPE_VERSION}-r{PORT_REVISION}-{sha[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"mediapipe_version": MEDIAPIPE_VERSION, "port_revision": PORT_REVISION,
                "wheel": wheel.name, "wheel_sha256": sha, "opset": OPSET, "files": {}}  # fmt: skip
    with zipfile.ZipFile(wheel) as zf:
        for net in NETS:
            try:
                data = zf.read(net.member)
            except KeyError as err:
                raise AssetError(f"{wheel.name} has no {net.member}") from err
            (folder / f"{net.name}.tflite").write_bytes(data)
            log(f"[handmocap] models: porting {net.name} ({len(data) / 1e6:.1f} MB tflite)")
            manifest["files"][net.name] = _port(net, data, folder / f"{net.name}.onnx")
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    _pointer().write_text(json.dumps({"folder": str(folder)}))
    return built_mediapipe_models()


def _download_wheel(dest: Path) -> Path:
    existing = sorted(dest.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if existing:
        return existing[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"mediapipe=={MEDIAPIPE_VERSION}", "-d", str(dest), "-q"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(dest.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if proc.returncode != 0 or not found:
        tail = "\n  ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise AssetError(f"could not download the mediapipe {MEDIAPIPE_VERSION} wheel with pip:\n  "
                         f"{tail}\nCheck that PyPI is reachable, then retry.")  # fmt: skip
    return found[0]


def _port(net: NetSpec, tflite_bytes: bytes, onnx_path: Path) -> dict:
    import onnx
    import onnxruntime as ort
    import torch

    from .onnx_passes import fold_pads_into_convs, prelu_as_depthwise_convs
    from .tflite_reader import read_tflite
    from .tflite_torch import TfliteModule

    module = TfliteModule(read_tflite(tflite_bytes)).eval()
    example = torch.rand(
        2, net.input_size, net.input_size, 3, generator=torch.Generator().manual_seed(0)
    )
    part = onnx_path.with_suffix(".part.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation/tracer notes
        torch.onnx.export(
            module, (example,), str(part), input_names=["image"], output_names=list(net.outputs),
            dynamic_axes={n: {0: "batch"} for n in ("image", *net.outputs)}, opset_version=OPSET,
            dynamo=False,
        )  # fmt: skip
    folded, pads_folded = fold_pads_into_convs(onnx.load(str(part)))
    folded, prelus_rewritten = prelu_as_depthwise_convs(folded)
    onnx.save(folded, str(part))
    # The export, Pads folded and PRelus rewritten, must compute what the module computes, at a
    # batch size it was not traced with.
    x = (
        np.random.default_rng(1)
        .uniform(size=(3, net.input_size, net.input_size, 3))
        .astype(np.float32)
    )
    sess = ort.InferenceSession(str(part), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})
    with torch.no_grad():
        want = [t.numpy() for t in module(torch.from_numpy(x))]
    worst = max(
        float(np.abs(g - w).max() / max(np.ptp(w), 1e-6)) for g, w in zip(got, want, strict=True)
    )
    if worst > 1e-4:
        raise AssetError(
            f"the ONNX export of {net.name} differs from the torch port by {worst:.2e} of the "
            "output range"
        )
    part.replace(onnx_path)
    return {
        "onnx_sha256": sha256_of(onnx_path),
        "tflite_sha256": hashlib.sha256(tflite_bytes).hexdigest(),
        "input_size": net.input_size,
        "outputs": list(net.outputs),
        "export_vs_torch_rel_diff": worst,
        "pads_folded": pads_folded,
        "prelus_rewritten": prelus_rewritten,
    }


__all__ = ["NETS", "MediapipeModels", "built_mediapipe_models", "ensure_mediapipe_models"]
