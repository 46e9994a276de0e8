"""A pre-processed ONNX graph run by PyTorch, differentiable in its weights.

Sensitivity needs gradients and Hessian-vector products of the loss with
respect to exactly the weights ONNX Runtime quantizes (batch norm already
folded, named as in the graph). :class:`OnnxGraph` interprets the graph
node by node with PyTorch operators; weights are passed as a plain dict
(``torch.func`` style), and any tensor can be replaced on the way (the
quantization simulation fake-quantizes activations that way). It covers the
operators of convolutional and MLP classifiers; another operator is a user
error naming it.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from nas.errors import UserInputError


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads(attrs: dict, spatial: int) -> list[int]:
    pads = list(attrs.get("pads", [0] * (2 * spatial)))
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise UserInputError("auto_pad SAME_* convolutions and pools are not supported in sensitivity analysis")
    return pads


def _symmetric_or_pad(x: torch.Tensor, pads: list[int], value: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """Torch takes one padding per side pair; pad explicitly when begin != end."""
    spatial = len(pads) // 2
    begins, ends = pads[:spatial], pads[spatial:]
    if begins == ends:
        return x, begins
    torch_pads: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        torch_pads += [b, e]
    return F.pad(x, torch_pads, value=value), [0] * spatial


def _conv(x, w, b=None, **a):
    spatial = w.dim() - 2
    x, padding = _symmetric_or_pad(x, _pads(a, spatial))
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    return conv(x, w, b, stride=a.get("strides", [1] * spatial), padding=padding,
                dilation=a.get("dilations", [1] * spatial), groups=a.get("group", 1))


def _gemm(a_, b_, c=None, **a):
    a_ = a_.transpose(0, 1) if a.get("transA", 0) else a_
    b_ = b_.transpose(0, 1) if a.get("transB", 0) else b_
    y = a.get("alpha", 1.0) * (a_ @ b_)
    return y if c is None else y + a.get("beta", 1.0) * c


def _pool(kind):
    def pool(x, **a):
        kernel = a["kernel_shape"]
        spatial = len(kernel)
        strides = a.get("strides", [1] * spatial)
        pads = _pads(a, spatial)
        if kind == "max":
            x, padding = _symmetric_or_pad(x, pads, value=float("-inf"))
            fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[spatial - 1]
            return fn(x, kernel, strides, padding, dilation=a.get("dilations", [1] * spatial),
                      ceil_mode=bool(a.get("ceil_mode", 0)))
        x, padding = _symmetric_or_pad(x, pads)
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[spatial - 1]
        return fn(x, kernel, strides, padding, ceil_mode=bool(a.get("ceil_mode", 0)),
                  count_include_pad=bool(a.get("count_include_pad", 0)))
    return pool


def _reshape(x, shape, **a):
    shape = [int(s) for s in shape.tolist()]
    shape = [x.shape[i] if s == 0 and not a.get("allowzero", 0) else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(x, **a):
    axis = a.get("axis", 1) % max(x.dim(), 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _clip(x, low=None, high=None, **a):
    low = low if low is not None else a.get("min")
    high = high if high is not None else a.get("max")
    return torch.clamp(x, min=None if low is None else float(low), max=None if high is None else float(high))


def _batch_norm(x, scale, bias, mean, var, **a):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=a.get("epsilon", 1e-5))


def _axes(a, given):
    if given is not None:
        return [int(v) for v in given.tolist()]
    return a.get("axes")


def _unsqueeze(x, axes=None, **a):
    for axis in sorted(_axes(a, axes)):
        x = x.unsqueeze(axis if axis >= 0 else axis + x.dim() + 1)
    return x


def _squeeze(x, axes=None, **a):
    axes = _axes(a, axes)
    if axes is None:
        return x.squeeze()
    for axis in sorted((ax % x.dim() for ax in axes), reverse=True):
        x = x.squeeze(axis)
    return x


def _reduce(fn):
    def reduce(x, axes=None, **a):
        axes = _axes(a, axes)
        keep = bool(a.get("keepdims", 1))
        if axes is None:
            axes = list(range(x.dim()))
        return fn(x, dim=[ax % x.dim() for ax in axes], keepdim=keep)
    return reduce


def _gather(x, index, **a):
    axis = a.get("axis", 0) % x.dim()
    out = torch.index_select(x, axis, index.reshape(-1).long() % x.shape[axis])
    return out.reshape(x.shape[:axis] + tuple(index.shape) + x.shape[axis + 1:])


def _slice(x, starts, ends, axes=None, steps=None):
    axes = list(range(len(starts))) if axes is None else axes.tolist()
    steps = [1] * len(axes) if steps is None else steps.tolist()
    index = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts.tolist(), ends.tolist(), axes, steps):
        n = x.shape[ax]
        index[ax] = slice(max(min(s, n), -n), max(min(e, n), -n - 1), st)
    return x[tuple(index)]


def _split(x, split=None, **a):
    axis = a.get("axis", 0)
    sizes = split.tolist() if split is not None else a.get("split")
    if sizes is None:
        parts = a.get("num_outputs")
        return torch.chunk(x, parts, dim=axis)
    return torch.split(x, [int(s) for s in sizes], dim=axis)


_OPS: dict[str, Callable] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": lambda a, b: a @ b,
    "Relu": lambda x: F.relu(x), "Sigmoid": torch.sigmoid, "Tanh": torch.tanh,
    "LeakyRelu": lambda x, **a: F.leaky_relu(x, a.get("alpha", 0.01)),
    "HardSigmoid": lambda x, **a: torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda x: F.hardswish(x), "Erf": torch.erf, "Sqrt": torch.sqrt, "Exp": torch.exp,
    "Clip": _clip, "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "Pow": torch.pow,
    "Neg": torch.neg, "Identity": lambda x: x, "Dropout": lambda x, *rest, **a: x,
    "GlobalAveragePool": lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "AveragePool": _pool("avg"), "MaxPool": _pool("max"), "Flatten": _flatten, "Reshape": _reshape,
    "Transpose": lambda x, **a: x.permute(a["perm"]) if "perm" in a else x.permute(*reversed(range(x.dim()))),
    "Concat": lambda *xs, **a: torch.cat(xs, dim=a["axis"]), "BatchNormalization": _batch_norm,
    "Softmax": lambda x, **a: torch.softmax(x, dim=a.get("axis", -1)),
    "LogSoftmax": lambda x, **a: torch.log_softmax(x, dim=a.get("axis", -1)),
    "Shape": lambda x, **a: torch.tensor(x.shape[a.get("start", 0):a.get("end", None)], dtype=torch.int64),
    "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Slice": _slice, "Split": _split,
    "Cast": lambda x, **a: x.to({1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool,
                                  11: torch.float64}[a["to"]]),
    "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum),
    "Pad": lambda x, pads, value=None, **a: F.pad(x, sum(([int(b), int(e)] for b, e in zip(
        reversed(pads.tolist()[:x.dim()]), reversed(pads.tolist()[x.dim():]))), []),
        value=0.0 if value is None else float(value)),
}


class OnnxGraph:
    """Run a (pre-processed) ONNX graph with PyTorch.

    ``weights`` holds the float initializers (as tensors); :meth:`__call__`
    takes the input and optionally replacement weights and a ``hook``
    ``(tensor_name, value) -> value`` applied to every node output.
    """

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        graph = model.graph
        unsupported = sorted({n.op_type for n in graph.node if n.op_type not in _OPS and n.op_type != "Constant"})
        if unsupported:
            raise UserInputError(f"sensitivity analysis cannot run operators {', '.join(unsupported)}; it runs "
                                 f"{', '.join(sorted(_OPS))}. Use --scorer weight_error or random for this model")
        self.constants: dict[str, torch.Tensor] = {}
        self.weights: dict[str, torch.Tensor] = {}
        for tensor in graph.initializer:
            value = torch.from_numpy(np.array(numpy_helper.to_array(tensor)))
            (self.weights if value.is_floating_point() else self.constants)[tensor.name] = value
        for node in graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = torch.from_numpy(np.array(numpy_helper.to_array(
                    _attrs(node)["value"])))
        self.nodes = [(node, _OPS[node.op_type], _attrs(node)) for node in graph.node if node.op_type != "Constant"]
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name

    def __call__(self, x: torch.Tensor, weights: Mapping[str, torch.Tensor] | None = None,
                 hook: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        values: dict[str, torch.Tensor] = dict(self.constants)
        values.update(self.weights)
        if weights:
            values.update(weights)
        values[self.input_name] = hook(self.input_name, x) if hook else x
        for node, op, attrs in self.nodes:
            args = [values[name] if name else None for name in node.input]
            while args and args[-1] is None:
                args.pop()
            out = op(*args, **attrs)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for name, value in zip(node.output, outs):
                if name:
                    values[name] = hook(name, value) if hook and value.is_floating_point() else value
        return values[self.output_name]
