"""Rewrites of exported ONNX graphs that ONNX Runtime does not do itself.

One pass for now: :func:`fold_pads_into_convs`. TensorFlow's "SAME" padding at stride 2 pads
more at the bottom/right than at the top/left, which a torch ``conv2d`` cannot express, so the
torch port of MediaPipe's networks (``models/tflite_torch.py``) writes ``F.pad`` before the
convolution and the export carries a ``Pad`` node in front of each such ``Conv``. ONNX Runtime
runs these as separate nodes (plus a layout reorder around each) although ONNX's ``Conv`` takes
asymmetric ``pads`` itself; moving the amounts into the ``Conv`` gives the same numbers for
about a tenth less time in the landmark network on CPU (docs/architecture.md, "Speed and
threads").
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
    out = onnx.ModelProto()
    out.CopyFrom(model)
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
    overridable = {i.name for i in graph.input}  # an initializer a caller may feed is no constant
    inits = {t.name: t for t in graph.initializer if t.name not in overridable}
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
