"""Our ONNX port of MediaPipe's networks against the original TFLite models, run by the
TFLite interpreter, on real inputs: rendered hand frames and crops, and the real office
video when ../shared is present. Bar: max abs difference <= 1e-3 of each output's range."""

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from handmocap.inference import hand_landmarks as lm
from handmocap.inference import palm_detection as pd
from handmocap.models.mediapipe_port import built_mediapipe_models

tflite_runtime = pytest.importorskip("tflite_runtime.interpreter")
OFFICE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "one_hand_office.mp4"
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def models():
    return built_mediapipe_models()


def _tflite_outputs(path: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Run the interpreter one image at a time (the TFLite model has batch 1)."""
    it = tflite_runtime.Interpreter(model_path=str(path), num_threads=2)
    it.allocate_tensors()
    outs = {}
    for x in batch:
        it.set_tensor(it.get_input_details()[0]["index"], x[None])
        it.invoke()
        for d in it.get_output_details():
            outs.setdefault(d["name"], []).append(it.get_tensor(d["index"])[0])
    return {k: np.stack(v) for k, v in outs.items()}


def _compare(models, name: str, batch: np.ndarray) -> list[float]:
    sess = ort.InferenceSession(str(getattr(models, name)), providers=["CPUExecutionProvider"])
    ours = sess.run(
        None, {"image": batch}
    )  # the whole batch in one call: the batch axis is dynamic
    theirs = list(_tflite_outputs(models.tflite(name), batch).values())
    assert len(ours) == len(theirs)
    ratios = []
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        spread = max(float(np.ptp(b)), 1.0)  # sigmoid outputs of one class: judge on [0, 1]
        ratios.append(float(np.abs(a - b).max()) / spread)
    return ratios


def _real_frames() -> list[np.ndarray]:
    frames = []
    from bench.synth.cache import cached_clip

    try:
        mp4, _ = cached_clip("demo")
    except Exception as err:  # the Blender lane may be absent: the office video still tests
        print(f"no rendered clip: {err}")
        mp4 = None
    for path, step in ((mp4, 12), (OFFICE if OFFICE.is_file() else None, 150)):
        if path is None:
            continue
        cap = cv2.VideoCapture(str(path))
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % step == 0:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            i += 1
    if not frames:
        pytest.skip("no real frames available (no rendered clip, no office video)")
    return frames


def test_palm_detector_parity(models):
    batch = np.stack([pd.letterbox(f)[0] for f in _real_frames()])
    ratios = _compare(models, "palm_detection", batch)
    print(f"palm detection: max |ONNX - TFLite| / range = {max(ratios):.2e}")
    assert max(ratios) <= TOLERANCE


def test_hand_landmark_parity(models):
    # Crops where the hands are: from MediaPipe's own palm detector, run through our port.
    sess = ort.InferenceSession(str(models.palm_detection), providers=["CPUExecutionProvider"])
    crops = []
    for frame in _real_frames():
        x, box = pd.letterbox(frame)
        boxes, scores = sess.run(None, {"image": x[None]})
        for palm in pd.postprocess(boxes[0], scores[0], box, pd.PalmConfig()):
            crops.append(lm.preprocess(frame, [palm.roi()])[0])
    assert len(crops) >= 3, "the detector found too few hands to test the landmark model"
    ratios = _compare(models, "hand_landmark", np.stack(crops))
    print(f"hand landmarks on {len(crops)} crops: max |ONNX - TFLite| / range = {max(ratios):.2e}")
    assert max(ratios) <= TOLERANCE


def test_models_missing_is_a_clear_error(tmp_path, monkeypatch):
    from handmocap.errors import AssetError

    monkeypatch.setenv("HANDMOCAP_CACHE", str(tmp_path))
    hint = r"run 'handmocap models' \(in a source checkout: 'python3 build\.py models'\)"
    with pytest.raises(AssetError, match=hint):
        built_mediapipe_models()
