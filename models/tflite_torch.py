"""A TFLite graph as a torch module: the weights become buffers, the op list is executed
in order, and the module exports to ONNX with a dynamic batch axis.

Layout: inputs and outputs are NHWC like the TFLite model; inside, 4-D activations are
NCHW (torch's native layout) and are turned back to NHWC before RESHAPE and
FULLY_CONNECTED so element order matches TFLite exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from handmocap.errors import AssetError

from .tflite_reader import Graph, Op

_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1}


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "SAME": total padding split with the extra pixel after (asymmetric)."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "RELU":
        return F.relu(x)
    if activation == "RELU6":
        return F.relu6(x)
    return x


class TfliteModule(nn.Module):
    """Executes a :class:`Graph`. ``forward(x)`` takes (N, H, W, C) float32 and returns the
    graph's outputs as a tuple, in the graph's output order."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.ops: tuple[Op, ...] = graph.ops
        self.inputs = graph.inputs
        self.outputs = graph.outputs
        self.output_names = graph.output_names
        self.shapes = {i: t.shape for i, t in graph.tensors.items()}
        self.pads: dict[int, list[list[int]]] = {}
        self.axes: dict[int, list[int]] = {}
        for op in graph.ops:
            self._register_weights(graph, op)

    def _buf(self, index: int) -> torch.Tensor:
        return getattr(self, f"t{index}")

    def _add(self, index: int, value: np.ndarray) -> None:
        if not hasattr(self, f"t{index}"):
            self.register_buffer(f"t{index}", torch.from_numpy(np.ascontiguousarray(value)))

    def _register_weights(self, graph: Graph, op: Op) -> None:
        if op.kind == "CONV_2D":
            self._add(op.inputs[1], graph.const(op.inputs[1]).transpose(0, 3, 1, 2))  # OHWI->OIHW
            self._add(op.inputs[2], graph.const(op.inputs[2]))
        elif op.kind == "DEPTHWISE_CONV_2D":
            self._add(op.inputs[1], graph.const(op.inputs[1]).transpose(3, 0, 1, 2))  # 1HWC->C1HW
            self._add(op.inputs[2], graph.const(op.inputs[2]))
        elif op.kind == "PRELU":
            self._add(op.inputs[1], graph.const(op.inputs[1]).reshape(-1))
        elif op.kind == "FULLY_CONNECTED":
            self._add(op.inputs[1], graph.const(op.inputs[1]))
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                self._add(op.inputs[2], graph.const(op.inputs[2]))
        elif op.kind == "ADD":
            for i in op.inputs:
                if graph.tensors[i].data is not None:
                    self._add(i, graph.const(i))
        elif op.kind == "PAD":
            self.pads[op.inputs[1]] = graph.const(op.inputs[1]).astype(int).tolist()
        elif op.kind == "MEAN":
            self.axes[op.inputs[1]] = graph.const(op.inputs[1]).astype(int).reshape(-1).tolist()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values: dict[int, torch.Tensor] = {self.inputs[0]: x.permute(0, 3, 1, 2)}
        for op in self.ops:
            values[op.outputs[0]] = self._run(op, values)
        return tuple(self._to_nhwc(values[o]) for o in self.outputs)

    @staticmethod
    def _to_nhwc(v: torch.Tensor) -> torch.Tensor:
        return v.permute(0, 2, 3, 1) if v.dim() == 4 else v

    def _value(self, index: int, values: dict[int, torch.Tensor]) -> torch.Tensor:
        return values[index] if index in values else self._buf(index)

    def _run(self, op: Op, values: dict[int, torch.Tensor]) -> torch.Tensor:
        x = self._value(op.inputs[0], values)
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weight, bias = self._buf(op.inputs[1]), self._buf(op.inputs[2])
            padding: tuple[int, int] | int = 0
            if op.padding == "SAME":
                # Sizes come from the graph's static shapes (NHWC), never from x.shape: traced
                # shape arithmetic would litter the ONNX graph with Shape/Gather/Cast nodes.
                _, height, width, _ = self.shapes[op.inputs[0]]
                ph = _same_padding(height, weight.shape[2], op.stride[0], op.dilation[0])
                pw = _same_padding(width, weight.shape[3], op.stride[1], op.dilation[1])
                if ph[0] == ph[1] and pw[0] == pw[1]:
                    padding = (ph[0], pw[0])  # symmetric: let the convolution pad
                else:
                    x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
            groups = weight.shape[0] if op.kind == "DEPTHWISE_CONV_2D" else 1
            y = F.conv2d(x, weight, bias, op.stride, padding, op.dilation, groups)
            return _activate(y, op.activation)
        if op.kind == "PRELU":
            return F.prelu(x, self._buf(op.inputs[1]))
        if op.kind == "ADD":
            other = self._value(op.inputs[1], values)
            return _activate(x + other, op.activation)
        if op.kind == "MAX_POOL_2D":
            if op.padding == "SAME":
                _, height, width, _ = self.shapes[op.inputs[0]]
                ph = _same_padding(height, op.filter[0], op.stride[0], 1)
                pw = _same_padding(width, op.filter[1], op.stride[1], 1)
                if any(ph) or any(pw):
                    x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=float("-inf"))
            return _activate(F.max_pool2d(x, op.filter, op.stride), op.activation)
        if op.kind == "PAD":
            p = self.pads[op.inputs[1]]  # NHWC order [[n0,n1],[h0,h1],[w0,w1],[c0,c1]]
            if p[0] != [0, 0]:
                raise AssetError("PAD on the batch axis is not supported")
            return F.pad(x, (p[2][0], p[2][1], p[1][0], p[1][1], p[3][0], p[3][1]))
        if op.kind == "RESIZE_BILINEAR":
            size = self.shapes[op.outputs[0]][1:3]
            if op.align_corners or not op.half_pixel_centers:
                raise AssetError("only half-pixel-centre bilinear resizing is supported")
            return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        if op.kind == "CONCATENATION":
            parts = [self._value(i, values) for i in op.inputs]
            axis = _NHWC_TO_NCHW_AXIS[op.axis] if parts[0].dim() == 4 else op.axis
            return _activate(torch.cat(parts, dim=axis), op.activation)
        if op.kind == "RESHAPE":
            shape = self.shapes[op.outputs[0]]
            return self._to_nhwc(x).reshape(-1, *shape[1:])
        if op.kind == "MEAN":
            axes = [_NHWC_TO_NCHW_AXIS[int(a)] for a in self.axes[op.inputs[1]]]
            return x.mean(dim=axes, keepdim=op.keep_dims)
        if op.kind == "FULLY_CONNECTED":
            flat = torch.flatten(self._to_nhwc(x), 1)
            bias = self._buf(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            return _activate(F.linear(flat, self._buf(op.inputs[1]), bias), op.activation)
        if op.kind == "LOGISTIC":
            return torch.sigmoid(x)
        raise AssetError(f"op {op.kind} is not implemented in the torch port")
