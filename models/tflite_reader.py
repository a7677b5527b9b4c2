"""Read a TFLite flatbuffer into plain data: tensors, constant weights and an op list.

Only what MediaPipe's palm detector and hand landmark model use is supported (the op set
is :data:`SUPPORTED_OPS`; docs/architecture.md, "Models and assets"); anything else is a
clear error naming the op.
FLOAT16 weights behind DEQUANTIZE ops are folded to float32 constants here, so the op
list that comes out has no DEQUANTIZE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handmocap.errors import AssetError

SUPPORTED_OPS = (
    "CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MAX_POOL_2D", "PAD", "RESIZE_BILINEAR",
    "CONCATENATION", "RESHAPE", "FULLY_CONNECTED", "MEAN", "LOGISTIC", "DEQUANTIZE",
)  # fmt: skip
_ACTIVATIONS = {0: "NONE", 1: "RELU", 3: "RELU6"}
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


@dataclass(frozen=True)
class Tensor:
    """A graph tensor. ``data`` is set for constants (float16 already widened to float32)."""

    index: int
    name: str
    shape: tuple[int, ...]
    data: np.ndarray | None = None


@dataclass(frozen=True)
class Op:
    """One operator with the options the supported ops use.

    Attributes:
        kind: builtin op name, e.g. "CONV_2D".
        inputs / outputs: tensor indices (-1 = absent optional input).
        activation: fused activation "NONE" | "RELU" | "RELU6".
        padding: "SAME" | "VALID" for convolutions and pools.
        stride: (h, w); filter: (h, w) for pools; dilation: (h, w).
        axis: concatenation axis; keep_dims: for MEAN and FULLY_CONNECTED.
        align_corners / half_pixel_centers: RESIZE_BILINEAR's sampling rule.
    """

    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    activation: str = "NONE"
    padding: str = "VALID"
    stride: tuple[int, int] = (1, 1)
    filter: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    axis: int = 0
    keep_dims: bool = False
    align_corners: bool = False
    half_pixel_centers: bool = False


@dataclass(frozen=True)
class Graph:
    """A whole single-subgraph model: tensors by index, ops in execution order."""

    tensors: dict[int, Tensor]
    ops: tuple[Op, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    output_names: tuple[str, ...] = field(default=())

    def const(self, index: int) -> np.ndarray:
        data = self.tensors[index].data
        if data is None:
            raise AssetError(f"tensor {self.tensors[index].name!r} was expected to be a constant")
        return data


def _op_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}


def _options(op, cls):
    table = op.BuiltinOptions()
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return opts


def _activation(code: int, kind: str) -> str:
    if code not in _ACTIVATIONS:
        raise AssetError(f"unsupported fused activation {code} on a {kind} op")
    return _ACTIVATIONS[code]


def read_tflite(source: Path | bytes) -> Graph:
    """Parse a .tflite model (path or bytes) into a :class:`Graph`."""
    import tflite

    buf = Path(source).read_bytes() if isinstance(source, Path | str) else bytes(source)
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() != 1:
            raise AssetError(f"expected one subgraph, found {model.SubgraphsLength()}")
        g = model.Subgraphs(0)
    except (IndexError, ValueError, TypeError) as err:  # flatbuffers' errors on junk input
        raise AssetError(f"not a readable TFLite model: {err}") from err
    names = _op_names()

    tensors: dict[int, Tensor] = {}
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        raw = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() else 0
        data = None
        if not isinstance(raw, int) and raw.size:
            if t.Type() not in _DTYPES:
                raise AssetError(f"tensor {t.Name().decode()} has unsupported type {t.Type()}")
            data = raw.view(_DTYPES[t.Type()]).reshape(shape)
            if data.dtype == np.float16:
                data = data.astype(np.float32)
        tensors[i] = Tensor(i, t.Name().decode(), shape, data)

    ops: list[Op] = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        if kind not in SUPPORTED_OPS:
            raise AssetError(f"the model uses the op {kind}, which the port does not support")
        ins = tuple(int(x) for x in op.InputsAsNumpy())
        outs = tuple(int(x) for x in op.OutputsAsNumpy())
        if kind == "DEQUANTIZE":  # fold: the output is the widened constant
            src = tensors[ins[0]]
            if src.data is None:
                raise AssetError("DEQUANTIZE of a non-constant tensor is not supported")
            tensors[outs[0]] = Tensor(outs[0], tensors[outs[0]].name, src.shape,
                                      src.data.astype(np.float32))  # fmt: skip
            continue
        ops.append(_make_op(tflite, op, kind, ins, outs))
    inputs = tuple(int(x) for x in g.InputsAsNumpy())
    outputs = tuple(int(x) for x in g.OutputsAsNumpy())
    return Graph(tensors, tuple(ops), inputs, outputs, tuple(tensors[o].name for o in outputs))


def _make_op(tflite, op, kind: str, ins: tuple[int, ...], outs: tuple[int, ...]) -> Op:
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        cls = tflite.Conv2DOptions if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions
        o = _options(op, cls)
        return Op(kind, ins, outs, _activation(o.FusedActivationFunction(), kind),
                  "SAME" if o.Padding() == 0 else "VALID", (o.StrideH(), o.StrideW()),
                  dilation=(o.DilationHFactor(), o.DilationWFactor()))  # fmt: skip
    if kind == "MAX_POOL_2D":
        o = _options(op, tflite.Pool2DOptions)
        return Op(kind, ins, outs, _activation(o.FusedActivationFunction(), kind),
                  "SAME" if o.Padding() == 0 else "VALID", (o.StrideH(), o.StrideW()),
                  filter=(o.FilterHeight(), o.FilterWidth()))  # fmt: skip
    if kind == "ADD":
        o = _options(op, tflite.AddOptions)
        return Op(kind, ins, outs, _activation(o.FusedActivationFunction(), kind))
    if kind == "CONCATENATION":
        o = _options(op, tflite.ConcatenationOptions)
        return Op(kind, ins, outs, _activation(o.FusedActivationFunction(), kind), axis=o.Axis())
    if kind == "FULLY_CONNECTED":
        o = _options(op, tflite.FullyConnectedOptions)
        return Op(kind, ins, outs, _activation(o.FusedActivationFunction(), kind),
                  keep_dims=bool(o.KeepNumDims()))  # fmt: skip
    if kind == "MEAN":
        o = _options(op, tflite.ReducerOptions)
        return Op(kind, ins, outs, keep_dims=bool(o.KeepDims()))
    if kind == "RESIZE_BILINEAR":
        o = _options(op, tflite.ResizeBilinearOptions)
        return Op(kind, ins, outs, align_corners=bool(o.AlignCorners()),
                  half_pixel_centers=bool(o.HalfPixelCenters()))  # fmt: skip
    return Op(kind, ins, outs)  # PRELU, PAD, RESHAPE, LOGISTIC: no options needed
