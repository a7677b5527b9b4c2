"""Rewrites of exported ONNX graphs that ONNX Runtime does not do itself.

Two passes, both for speed on the CPU, measured in docs/architecture.md ("Speed and threads").

:func:`fold_pads_into_convs`: TensorFlow's "SAME" padding at stride 2 pads
more at the bottom/right than at the top/left, which a torch ``conv2d`` cannot express, so the
torch port of MediaPipe's networks (``models/tflite_torch.py``) writes ``F.pad`` before the
convolution and the export carries a ``Pad`` node in front of each such ``Conv``. ONNX Runtime
runs these as separate nodes (plus a layout reorder around each) although ONNX's ``Conv`` takes
asymmetric ``pads`` itself; moving the amounts into the ``Conv`` gives the same numbers for
about a tenth less time in the landmark network on CPU (docs/architecture.md, "Speed and
threads").

:func:`prelu_as_depthwise_convs`: the palm detector follows nearly every convolution with a
per-channel ``PRelu``. ONNX Runtime runs ``PRelu`` as a generic broadcasting kernel outside its
blocked (NCHWc) convolution layout, with a layout reorder on each side, so the 31 PRelus cost as
much as the 63 convolutions. Written as two 1x1 depthwise convolutions they stay in that layout.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

# Ops a pads tensor may be computed from: torch's exporter builds the pads of ``F.pad`` from
# Constant/ConstantOfShape/Concat/Reshape/Slice/Transpose/Cast. Only deterministic,
# side-effect-free standard ops, so evaluating them once here is the same as at run time.
_FOLDABLE_OPS = frozenset(
    {
        "Constant", "ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast",
        "Squeeze", "Unsqueeze", "Gather", "Identity", "Neg", "Add", "Sub", "Mul",
    }
)  # fmt: skip


def fold_pads_into_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Move zero ``Pad`` nodes into the ``pads`` attribute of the ``Conv`` they feed.

    A ``Pad`` is folded only when all of these hold:

    - its pads are constant: an initializer (not also a graph input, which a caller could
      feed), or computed only from ``Constant`` nodes and such initializers through the
      small, deterministic ops of ``_FOLDABLE_OPS`` (the chain torch's exporter writes for
      ``F.pad``), which this function evaluates once with ONNX's reference evaluator
      (``onnx.reference``). That is all the constant folding the pass needs. Letting ONNX
      Runtime write a basic-level optimised model would also fold it, but would bring its
      other rewrites along and make the built file depend on the installed ORT version;
    - its mode is ``"constant"`` and its value is absent or 0 (a ``Conv`` pads with zeros);
    - it has no ``axes`` input, and its pads (8 numbers, [begin N, C, H, W, end N, C, H, W])
      are zero on N and C and non-negative on H and W: an NCHW tensor padded in space only;
    - its output is not a graph output and is read by exactly one node, as the data input
      (input 0) of a ``Conv`` whose ``auto_pad`` is absent or ``NOTSET``.

    The ``Conv``'s ``pads`` ([top, left, bottom, right]) get the Pad's H/W amounts added and
    read the Pad's input; the Pad, and the nodes and initializers that only computed its pads,
    are removed. Anything else (a ``-inf`` pad before a ``MaxPool``, a pad feeding an ``Add``,
    a non-zero value, channel padding) is left as it is.

    Args:
        model: the model; not modified.

    Returns:
        (the rewritten copy, how many ``Pad`` nodes were folded).
    """
    out = _copy(model)
    graph = out.graph
    opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 0)
    consumers = Counter(_names_read(graph))
    graph_outputs = {o.name for o in graph.output}
    readers = {n.input[0]: n for n in graph.node if n.op_type == "Conv" and n.input}
    folded: list[onnx.NodeProto] = []
    for pad in [n for n in graph.node if n.op_type == "Pad" and n.domain in ("", "ai.onnx")]:
        conv = readers.get(pad.output[0])
        if conv is None or consumers[pad.output[0]] != 1 or pad.output[0] in graph_outputs:
            continue
        amounts = _spatial_zero_pads(graph, pad, opset)
        if amounts is None or _attr(conv, "auto_pad", b"NOTSET") != b"NOTSET":
            continue
        old = list(_attr(conv, "pads", [0, 0, 0, 0]))
        if len(old) != 4:
            continue
        new = [a + b for a, b in zip(old, amounts, strict=True)]
        for attr in list(conv.attribute):
            if attr.name == "pads":
                conv.attribute.remove(attr)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    if folded:
        _drop_unread(graph, {name for pad in folded for name in (*pad.input[1:], pad.output[0])})
    return out, len(folded)


def prelu_as_depthwise_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite per-channel ``PRelu(x, s)`` as ``s*x + (1-s)*Relu(x)`` with 1x1 depthwise convs.

    For x > 0 that is ``s*x + (1-s)*x = x``; for x <= 0 it is ``s*x``: PRelu. The two products
    are depthwise ``Conv`` nodes (``group`` = channels, 1x1 kernels holding ``s`` and ``1 - s``),
    added by an ``Add``. The result equals ``PRelu`` up to float32 rounding (one rounding of
    ``1 - s`` and of the sum: relative 1e-7 of the values).

    A ``PRelu`` is rewritten only when its slope is a constant initializer (not also a graph
    input a caller could feed) of shape ``[C, 1, 1]`` or ``[1, C, 1, 1]``: one slope per channel
    of an NCHW tensor, the shape torch's exporter writes for ``nn.PReLU(C)``. Other slopes (a
    scalar, a slope per pixel, a computed one) are left as they are.

    Args:
        model: the model; not modified.

    Returns:
        (the rewritten copy, how many ``PRelu`` nodes were rewritten).
    """
    out = _copy(model)
    graph = out.graph
    inits = _fixed_initializers(graph)
    taken = {name for node in graph.node for name in (*node.input, *node.output)} | set(inits)
    nodes: list[onnx.NodeProto] = []
    slopes_used: set[str] = set()
    count = 0
    for node in graph.node:
        slope = _channel_slope(node, inits)
        if slope is None:
            nodes.append(node)
            continue
        count += 1
        x, y = node.input[0], node.output[0]
        stem = _fresh(taken, f"{node.name or y}_prelu")
        channels = slope.size
        w_linear, w_relu = f"{stem}_slope", f"{stem}_one_minus_slope"
        graph.initializer.extend(
            [
                numpy_helper.from_array(slope.reshape(channels, 1, 1, 1), w_linear),
                numpy_helper.from_array((1 - slope).reshape(channels, 1, 1, 1), w_relu),
            ]
        )
        dw = {"group": channels, "kernel_shape": [1, 1]}
        nodes += [
            helper.make_node("Conv", [x, w_linear], [f"{stem}_linear"], **dw),
            helper.make_node("Relu", [x], [f"{stem}_relu"]),
            helper.make_node("Conv", [f"{stem}_relu", w_relu], [f"{stem}_relu_part"], **dw),
            helper.make_node("Add", [f"{stem}_linear", f"{stem}_relu_part"], [y], name=node.name),
        ]
        slopes_used.add(node.input[1])
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        _drop_unread(graph, slopes_used)
    return out, count


def _channel_slope(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    """The float32 per-channel slopes (C,) of a PRelu this pass may rewrite, else None."""
    if node.op_type != "PRelu" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
        return None
    init = inits.get(node.input[1])
    if init is None:
        return None
    slope = numpy_helper.to_array(init)
    if slope.dtype != np.float32 or slope.ndim not in (3, 4) or slope.size < 1:
        return None
    if slope.shape[-2:] != (1, 1) or (slope.ndim == 4 and slope.shape[0] != 1):
        return None
    return slope.reshape(-1).copy()


def _fresh(taken: set[str], base: str) -> str:
    name, k = base, 0
    while name in taken or any(n.startswith(name + "_") for n in taken):
        k += 1
        name = f"{base}{k}"
    taken.add(name)
    return name


def _spatial_zero_pads(graph: onnx.GraphProto, pad: onnx.NodeProto, opset: int):
    """[top, left, bottom, right] of a zero, space-only Pad of an NCHW tensor, else None."""
    if _attr(pad, "mode", b"constant") != b"constant":
        return None
    if opset < 11:  # pads and value were attributes before opset 11
        pads, value = list(_attr(pad, "pads", [])), _attr(pad, "value", 0.0)
    else:
        if len(pad.input) < 2 or (len(pad.input) > 3 and pad.input[3]):
            return None  # no pads, or an axes input: not the layout checked below
        pads = _constant(graph, pad.input[1], opset)
        has_value = len(pad.input) > 2 and pad.input[2]
        value = _constant(graph, pad.input[2], opset) if has_value else 0.0
        if pads is None or value is None:
            return None
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if np.any(np.asarray(value) != 0) or len(pads) != 8:
        return None
    n0, c0, top, left, n1, c1, bottom, right = pads
    if n0 or c0 or n1 or c1 or min(top, left, bottom, right) < 0:
        return None
    return [top, left, bottom, right]


def _constant(graph: onnx.GraphProto, name: str, opset: int) -> np.ndarray | None:
    """The value of tensor ``name`` if only constants and ``_FOLDABLE_OPS`` compute it."""
    inits = _fixed_initializers(graph)
    if name in inits:
        return numpy_helper.to_array(inits[name])
    producer = {out: k for k, node in enumerate(graph.node) for out in node.output}
    needed: set[int] = set()
    todo = [name]
    while todo:
        tensor = todo.pop()
        if not tensor or tensor in inits:
            continue
        k = producer.get(tensor)
        if k is None:
            return None  # a graph input
        node = graph.node[k]
        if node.op_type not in _FOLDABLE_OPS or node.domain not in ("", "ai.onnx"):
            return None  # an op not evaluated here
        if k not in needed:
            needed.add(k)
            todo.extend(node.input)
    nodes = [graph.node[k] for k in sorted(needed)]  # graph order is topological
    used = {i for n in nodes for i in n.input}
    sub = helper.make_graph(
        nodes,
        "pads",
        inputs=[],
        outputs=[helper.make_empty_tensor_value_info(name)],
        initializer=[t for n, t in inits.items() if n in used],
    )
    return ReferenceEvaluator(sub, opsets={"": opset}).run(None, {})[0]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _fixed_initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """The initializers by name, less those that are also graph inputs: a caller may feed
    those, so they are no constants."""
    overridable = {i.name for i in graph.input}
    return {t.name: t for t in graph.initializer if t.name not in overridable}


def _attr(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _names_read(graph: onnx.GraphProto) -> Iterator[str]:
    """Every tensor name a node reads, once per reading, subgraphs (If/Loop bodies) included."""
    for node in graph.node:
        yield from (i for i in node.input if i)
        for attr in node.attribute:
            for sub in (attr.g, *attr.graphs) if attr.HasField("g") else attr.graphs:
                yield from _names_read(sub)


def _drop_unread(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the nodes and initializers among ``names``' producers that nothing reads now.

    Walks back from ``names`` (the folded Pads' outputs and pads/value inputs), so only what
    the fold made dead goes; other unused parts of the graph are left as the exporter wrote them.
    """
    kept = {o.name for o in graph.output}
    while names:
        read = Counter(_names_read(graph))
        unread = {n for n in names if not read[n] and n not in kept}
        dead = [
            node
            for node in graph.node
            if any(o in unread for o in node.output)
            and not any(read[o] or o in kept for o in node.output)
        ]
        for node in dead:
            graph.node.remove(node)
        for init in [t for t in graph.initializer if t.name in unread]:
            graph.initializer.remove(init)
        gone = unread | {o for node in dead for o in node.output}
        for info in [v for v in graph.value_info if v.name in gone]:
            graph.value_info.remove(info)
        names = {i for node in dead for i in node.input if i}
