"""The layers a model can run in int8: Conv, Gemm and MatMul nodes with a
constant weight, found in the pre-processed graph (batch norm folded into
the convolutions, node names as ONNX Runtime's quantizer sees them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from nas.errors import UserInputError

#: operator types whose constant weight can be int8
WEIGHT_OP_TYPES = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class QuantizableLayer:
    """One Conv/Gemm/MatMul node with a constant weight.

    ``name`` is the node's name (what ``nodes_to_quantize`` takes);
    ``weight`` and ``bias`` name its initializers; ``channel_axis`` is the
    weight axis ONNX Runtime quantizes per channel; ``num_weights`` counts
    the weight's elements.
    """

    name: str
    op_type: str
    weight: str
    bias: str | None
    channel_axis: int
    num_weights: int
    input: str
    output: str


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """An ONNX model from ``path``; a missing or unreadable file is a user error."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"no ONNX model at {str(path)!r}")
    try:
        return onnx.load(str(path))
    except Exception as error:  # protobuf raises its own types for a file that is not ONNX
        raise UserInputError(f"{str(path)!r} is not a readable ONNX model ({type(error).__name__}: {error})") \
            from None


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The graph's constant tensors by name (initializers and Constant nodes)."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def quantizable_layers(model: onnx.ModelProto) -> list[QuantizableLayer]:
    """Every Conv/Gemm/MatMul node with a constant weight, in graph order."""
    constants = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers = []
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OP_TYPES or len(node.input) < 2 or node.input[1] not in constants:
            continue
        weight = constants[node.input[1]]
        if weight.data_type != onnx.TensorProto.FLOAT:
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in constants else None
        if node.op_type == "Conv":
            axis = 0
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1
        else:  # MatMul: weight [K, N], one scale per output column
            if len(weight.dims) != 2:
                continue
            axis = 1
        output = node.output[0]
        following = consumers.get(output, [])
        if len(following) == 1 and following[0].op_type in ("Relu", "Clip"):
            output = following[0].output[0]
        layers.append(QuantizableLayer(node.name, node.op_type, node.input[1], bias, axis,
                                       int(np.prod(weight.dims)), node.input[0], output))
    return layers


def name_unnamed_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every nameless node a unique name (``OpType_i``): node lists name nodes."""
    taken = {node.name for node in model.graph.node if node.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return model
