"""models/onnx_passes.py: zero Pads folded into the Conv they feed, and per-channel PRelus
written as depthwise Convs, on tiny graphs run through ONNX Runtime before and after; what the
passes must not touch; the built models; the port revision that makes older caches rebuild."""

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from handmocap.errors import AssetError
from handmocap.models import mediapipe_port
from handmocap.models.onnx_passes import fold_pads_into_convs, prelu_as_depthwise_convs

C, HW = 4, 9  # channels and spatial size of the test input
RNG = np.random.default_rng(7)
WEIGHT = RNG.normal(size=(6, C, 3, 3)).astype(np.float32)
ASYMMETRIC = [0, 0, 0, 0, 0, 0, 1, 1]  # TF "SAME" at stride 2: one more at bottom and right


def _model(nodes, initializers, outputs=("y",), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", C, HW, HW])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}{d}" for d in "nchw"])
            for name in outputs
        ],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _pads(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _conv(data: str = "p", out: str = "y", weight: str = "w", **attrs) -> onnx.NodeProto:
    return helper.make_node("Conv", [data, weight], [out], kernel_shape=[3, 3], strides=[2, 2],
                            **attrs)  # fmt: skip


def _run(model: onnx.ModelProto) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).normal(size=(2, C, HW, HW)).astype(np.float32)
    return sess.run(None, {"x": x})


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _assert_same_outputs(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    for got, want in zip(_run(b), _run(a), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def _pads_from_initializer():
    return [helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant")], [
        _pads("pads", ASYMMETRIC)
    ]


def _pads_from_constant_chain():
    # What torch's exporter writes for F.pad, in small: Constant -> Reshape -> Cast, value 0.
    nodes = [
        helper.make_node("Constant", [], ["raw"], value=numpy_helper.from_array(
            np.array(ASYMMETRIC, dtype=np.int32).reshape(2, 4))),
        helper.make_node("Constant", [], ["flat"], value=_pads("", [-1])),
        helper.make_node("Reshape", ["raw", "flat"], ["pads32"]),
        helper.make_node("Cast", ["pads32"], ["pads"], to=TensorProto.INT64),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(
            np.array(0.0, dtype=np.float32))),
        helper.make_node("Pad", ["x", "pads", "zero"], ["p"], mode="constant"),
    ]  # fmt: skip
    return nodes, []


@pytest.mark.parametrize("source", [_pads_from_initializer, _pads_from_constant_chain])
@pytest.mark.parametrize("conv_pads", [None, [1, 0, 0, 1]])
def test_zero_spatial_pad_is_folded_into_the_conv(source, conv_pads):
    nodes, inits = source()
    attrs = {} if conv_pads is None else {"pads": conv_pads}
    model = _model([*nodes, _conv(**attrs)], [*inits, numpy_helper.from_array(WEIGHT, "w")])
    before = model.SerializeToString()

    folded, n = fold_pads_into_convs(model)

    assert n == 1
    assert model.SerializeToString() == before, "the pass must not change its argument"
    assert _ops(folded) == ["Conv"], "the Pad and the nodes computing its pads must be gone"
    assert [t.name for t in folded.graph.initializer] == ["w"]
    conv = folded.graph.node[0]
    assert conv.input[0] == "x"
    pads = next(a for a in conv.attribute if a.name == "pads").ints
    assert list(pads) == [
        a + b for a, b in zip(conv_pads or [0, 0, 0, 0], [0, 0, 1, 1], strict=True)
    ]
    onnx.checker.check_model(folded, full_check=True)
    _assert_same_outputs(model, folded)


def test_pads_before_opset_11_are_attributes():
    pad = helper.make_node("Pad", ["x"], ["p"], mode="constant", pads=ASYMMETRIC, value=0.0)
    model = _model([pad, _conv()], [numpy_helper.from_array(WEIGHT, "w")], opset=10)
    folded, n = fold_pads_into_convs(model)
    assert n == 1 and _ops(folded) == ["Conv"]
    _assert_same_outputs(model, folded)


def test_every_foldable_pad_is_folded_in_a_chain_of_convs():
    w2 = numpy_helper.from_array(RNG.normal(size=(6, 6, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"]),
        _conv(out="c1"),
        helper.make_node("Relu", ["c1"], ["r"]),
        helper.make_node("Pad", ["r", "pads"], ["p2"]),  # the same pads tensor, read twice
        _conv("p2", "y", "w2"),
    ]
    inits = [_pads("pads", ASYMMETRIC), numpy_helper.from_array(WEIGHT, "w"), w2]
    model = _model(nodes, inits)
    folded, n = fold_pads_into_convs(model)
    assert n == 2
    assert _ops(folded) == ["Conv", "Relu", "Conv"]
    assert "pads" not in {t.name for t in folded.graph.initializer}
    _assert_same_outputs(model, folded)


def _value_one():
    value = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    nodes = [helper.make_node("Pad", ["x", "pads", "one"], ["p"], mode="constant"), _conv()]
    return nodes, [value], ("y",)


def _two_consumers():
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"]),
        _conv(),
        helper.make_node("Relu", ["p"], ["r"]),
    ]
    return nodes, [], ("y", "r")


def _graph_output():
    return [helper.make_node("Pad", ["x", "pads"], ["p"]), _conv()], [], ("y", "p")


def _channel_pad():
    weight = numpy_helper.from_array(RNG.normal(size=(6, C + 1, 3, 3)).astype(np.float32), "w5")
    pads = _pads("cpads", [0, 1, 0, 0, 0, 0, 1, 1])
    nodes = [helper.make_node("Pad", ["x", "cpads"], ["p"]), _conv(weight="w5")]
    return nodes, [weight, pads], ("y",)


def _max_pool():
    value = numpy_helper.from_array(np.array(-np.inf, dtype=np.float32), "ninf")
    nodes = [
        helper.make_node("Pad", ["x", "pads", "ninf"], ["p"], mode="constant"),
        helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    return nodes, [value], ("y",)


def _max_pool_zero():
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"]),
        helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    return nodes, [], ("y",)


def _reflect():
    return [helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"), _conv()], [], ("y",)


def _auto_pad():
    return [helper.make_node("Pad", ["x", "pads"], ["p"]), _conv(auto_pad="VALID")], [], ("y",)


def _pads_from_input_shape():
    # Pads computed from the input's shape are not constant: left to the runtime.
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Mul", ["shape", "zeros4"], ["z"]),
        helper.make_node("Concat", ["z", "tail"], ["dyn"], axis=0),
        helper.make_node("Pad", ["x", "dyn"], ["p"]),
        _conv(),
    ]
    return nodes, [_pads("zeros4", [0, 0, 0, 0]), _pads("tail", [0, 0, 1, 1])], ("y",)


@pytest.mark.parametrize(
    "case",
    [_value_one, _two_consumers, _graph_output, _channel_pad, _max_pool, _max_pool_zero, _reflect,
     _auto_pad, _pads_from_input_shape],
)  # fmt: skip
def test_other_pads_are_left_alone(case):
    nodes, inits, outputs = case()
    inits = [_pads("pads", ASYMMETRIC), numpy_helper.from_array(WEIGHT, "w"), *inits]
    model = _model(nodes, inits, outputs)
    folded, n = fold_pads_into_convs(model)
    assert n == 0
    assert folded.SerializeToString() == model.SerializeToString()
    _run(folded)  # still a valid model


def _write_build(folder, revision):
    folder.mkdir()
    files = {}
    for net in mediapipe_port.NETS:
        data = f"not a model: {net.name}".encode()
        (folder / f"{net.name}.onnx").write_bytes(data)
        files[net.name] = {"onnx_sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"files": files} if revision is None else {"port_revision": revision, "files": files}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_models_built_by_another_port_revision_are_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDMOCAP_CACHE", str(tmp_path))
    current = tmp_path / "current"
    _write_build(current, mediapipe_port.PORT_REVISION)
    assert mediapipe_port._load(current) is not None
    for name, revision in (("old", None), ("older", mediapipe_port.PORT_REVISION - 1)):
        _write_build(tmp_path / name, revision)
        assert mediapipe_port._load(tmp_path / name) is None
    pointer = mediapipe_port._pointer()
    pointer.parent.mkdir(parents=True)
    pointer.write_text(json.dumps({"folder": str(tmp_path / "old")}))
    with pytest.raises(AssetError, match="the hand detection models are not built"):
        mediapipe_port.built_mediapipe_models()
    pointer.write_text(json.dumps({"folder": str(current)}))
    assert mediapipe_port.built_mediapipe_models().folder == current


def _built_models() -> mediapipe_port.MediapipeModels:
    try:
        return mediapipe_port.built_mediapipe_models()
    except AssetError as err:
        pytest.skip(f"the MediaPipe models are not built: {err}")


def test_built_hand_landmark_model_has_no_pad_left():
    models = _built_models()
    model = onnx.load(str(models.hand_landmark))
    assert "Pad" not in _ops(model)
    assert models.manifest["files"]["hand_landmark"]["pads_folded"] >= 1
    assert models.folder.name.startswith(
        f"mediapipe-{mediapipe_port.MEDIAPIPE_VERSION}-r{mediapipe_port.PORT_REVISION}-"
    )


# Slopes of both signs, zero and one: PRelu is identity at 1 and Relu at 0.
SLOPES = np.array([0.25, -0.5, 0.0, 1.0], dtype=np.float32)


@pytest.mark.parametrize("shape", [(C, 1, 1), (1, C, 1, 1)])
def test_per_channel_prelu_becomes_depthwise_convs_with_the_same_outputs(shape):
    # Two PRelus in a row, the second reading the first: names must not collide.
    nodes = [
        helper.make_node("PRelu", ["x", "s"], ["h"], name="first"),
        helper.make_node("PRelu", ["h", "s"], ["y"], name="second"),
    ]
    model = _model(nodes, [numpy_helper.from_array(SLOPES.reshape(shape), "s")])
    before = model.SerializeToString()

    rewritten, n = prelu_as_depthwise_convs(model)

    assert n == 2
    assert model.SerializeToString() == before, "the pass must not change its argument"
    assert "PRelu" not in _ops(rewritten)
    assert "s" not in {t.name for t in rewritten.graph.initializer}, "the unread slope must go"
    convs = [n for n in rewritten.graph.node if n.op_type == "Conv"]
    assert len(convs) == 4
    assert all(helper.get_attribute_value(a) == C for c in convs for a in c.attribute
               if a.name == "group")  # fmt: skip
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.random.default_rng(3).normal(size=(2, C, HW, HW)).astype(np.float32)
    # The reference, in numpy: x where positive, slope * x elsewhere, per channel, twice.
    s = SLOPES.reshape(1, C, 1, 1)
    h = np.where(x > 0, x, s * x)
    want = np.where(h > 0, h, s * h)
    (got,) = _run(rewritten)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_run(model)[0], want, rtol=1e-6, atol=1e-6)


def _prelu_model(slope: np.ndarray, slope_is_input: bool = False) -> onnx.ModelProto:
    model = _model(
        [helper.make_node("PRelu", ["x", "s"], ["y"])],
        [numpy_helper.from_array(slope, "s")],
    )
    if slope_is_input:
        model.graph.input.append(
            helper.make_tensor_value_info("s", TensorProto.FLOAT, list(slope.shape))
        )
    return model


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(_prelu_model(np.array([0.25], np.float32)), id="one slope for all"),
        pytest.param(_prelu_model(np.full((HW,), 0.25, np.float32)), id="slope per column"),
        pytest.param(_prelu_model(np.full((C, HW, HW), 0.25, np.float32)), id="slope per pixel"),
        pytest.param(
            _prelu_model(SLOPES.reshape(C, 1, 1), slope_is_input=True),
            id="slope a caller may feed",
        ),
    ],
)
def test_other_prelus_are_left_alone(case):
    rewritten, n = prelu_as_depthwise_convs(case)
    assert n == 0
    assert rewritten.SerializeToString() == case.SerializeToString()


def test_built_palm_detector_has_no_prelu_left():
    models = _built_models()
    model = onnx.load(str(models.palm_detection))
    assert "PRelu" not in _ops(model)
    assert models.manifest["files"]["palm_detection"]["prelus_rewritten"] >= 1
