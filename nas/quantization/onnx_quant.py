"""ONNX Runtime static quantization of a chosen subset of layers.

The model is pre-processed once (shape inference, batch norm folded into
convolutions), calibrated once (min/max ranges of every activation over the
calibration images, kept in a JSON cache) and then quantized as often as a
search asks, each time with another set of int8 layers: QDQ format,
symmetric per-channel int8 weights, uint8 per-tensor activations. ONNX
Runtime fuses each ``DequantizeLinear -> Conv -> QuantizeLinear`` into an
integer kernel (``QLinearConv``, ``QGemm``, ...) when it loads the model;
:func:`integer_kernels` checks that it did.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from nas.errors import UserInputError
from nas.quantization.layers import QuantizableLayer, load_onnx, name_unnamed_nodes, quantizable_layers

#: fused operators that run a layer with integer arithmetic on ONNX Runtime's CPU provider
INTEGER_KERNELS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
                   "ConvInteger", "DynamicQuantizeMatMul")

#: activation precisions a layer can be quantized to (weights are always int8)
ACTIVATION_TYPES = {"int8": "QUInt8", "int16": "QInt16"}

# the quantizer's own settings that are part of "as ONNX Runtime does it" (see nas.quantization.simulate)
_EXTRA_OPTIONS = {
    # the weight scale is always max|W_c| / 127; ORT would otherwise widen it when a bias overflows int32
    "QDQDisableWeightAdjustForInt32Bias": True,
}


def prepare_model(onnx_path: str | os.PathLike, out_path: str | os.PathLike, *,
                  symbolic_shapes: bool = True) -> Path:
    """Pre-process ``onnx_path`` for quantization into ``out_path``: shape
    inference, ONNX Runtime's basic graph optimisation (batch norm folded into
    the preceding convolution, constants folded) and a name for every node.
    ``symbolic_shapes=False`` skips ONNX Runtime's symbolic shape inference,
    which some sequence graphs (state caches of dynamic length) do not pass."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = load_onnx(onnx_path)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        try:
            quant_pre_process(name_unnamed_nodes(model), str(out_path), skip_symbolic_shape=not symbolic_shapes)
        except Exception as error:  # shape inference or ORT's optimizer refused the graph
            raise UserInputError(f"{str(onnx_path)!r} cannot be prepared for quantization by ONNX Runtime "
                                 f"({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''})"
                                 ) from None
    prepared = name_unnamed_nodes(onnx.load(str(out_path)))
    onnx.save(prepared, str(out_path))
    return out_path


class _ImageReader:
    """ONNX Runtime's calibration data reader over an array of images."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int):
        self._batches = iter([{input_name: images[i:i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self):
        return next(self._batches, None)


@dataclass
class QuantizationRecipe:
    """A prepared model with its calibration: everything needed to build
    the model with any subset of layers in int8.

    ``prepared`` is the pre-processed float model, ``calibration_cache`` the
    JSON file of activation ranges ONNX Runtime computed once, ``layers``
    the quantizable layers, ``activation`` the activation precision.
    """

    prepared: Path
    calibration_cache: Path
    layers: list[QuantizableLayer]
    activation: str = "int8"

    @classmethod
    def calibrate(cls, prepared: str | os.PathLike, calibration_images: np.ndarray, work_dir: str | os.PathLike, *,
                  activation: str = "int8", batch_size: int = 64) -> "QuantizationRecipe":
        """Calibrate ``prepared`` on ``calibration_images`` (``[n, ...]`` float32) once; the all-int8 model
        is written to ``work_dir/all_int8.onnx`` on the way."""
        prepared = Path(prepared)
        model = onnx.load(str(prepared))
        layers = require_quantizable_layers(model, prepared)
        if activation not in ACTIVATION_TYPES:
            raise UserInputError(f"unknown activation precision {activation!r}; allowed: "
                                 f"{', '.join(ACTIVATION_TYPES)}")
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        recipe = cls(prepared, work_dir / "calibration.json", layers, activation)
        input_name = model.graph.input[0].name
        recipe._quantize([layer.name for layer in layers], work_dir / "all_int8.onnx",
                         _ImageReader(input_name, np.ascontiguousarray(calibration_images, dtype=np.float32),
                                      batch_size))
        return recipe

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def build(self, int8_layers: Iterable[str], out_path: str | os.PathLike) -> Path:
        """The model with exactly ``int8_layers`` in int8 (the other layers float32), at ``out_path``.

        With no int8 layer it is the prepared float model itself.
        """
        chosen = list(dict.fromkeys(int8_layers))
        unknown = [name for name in chosen if name not in set(self.layer_names)]
        if unknown:
            raise UserInputError(f"not quantizable layers of this model: {', '.join(unknown)}; its layers: "
                                 f"{', '.join(self.layer_names)}")
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if not chosen:
            onnx.save(onnx.load(str(self.prepared)), str(out_path))
            return out_path
        return self._quantize(chosen, out_path, None)

    def _quantize(self, chosen: Sequence[str], out_path: Path, reader) -> Path:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        model = onnx.load(str(self.prepared))
        with _quiet():
            quantize_static(str(self.prepared), str(out_path), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=False,
                            activation_type=getattr(QuantType, ACTIVATION_TYPES[self.activation]),
                            weight_type=QuantType.QInt8,
                            nodes_to_quantize=nodes_to_quantize(model, self.layers, chosen),
                            calibration_cache_path=str(self.calibration_cache),
                            extra_options=dict(_EXTRA_OPTIONS, UseQDQContribOps=self.activation != "int8"))
        return out_path

    def activation_ranges(self) -> dict[str, tuple[float, float]]:
        """Calibrated ``(min, max)`` of every activation tensor, by tensor name."""
        from onnxruntime.quantization.calibrate import load_tensors_data

        data = load_tensors_data(self.calibration_cache)
        return {name: (float(np.min(value.range_value[0])), float(np.max(value.range_value[1])))
                for name, value in data.data.items()}


def require_quantizable_layers(model: onnx.ModelProto, where: str | os.PathLike) -> list[QuantizableLayer]:
    """The model's quantizable layers; none is a user error."""
    layers = quantizable_layers(model)
    if not layers:
        raise UserInputError(f"{str(where)!r} has no quantizable layer (no Conv, Gemm or MatMul node with a "
                             f"constant float weight): there is nothing to run in int8")
    return layers


def nodes_to_quantize(model: onnx.ModelProto, layers: Sequence[QuantizableLayer], int8: Iterable[str]) -> list[str]:
    """The node list for ONNX Runtime's quantizer that puts exactly the layers
    ``int8`` in int8: those layers, plus every other node (Add, Relu,
    pooling, ...) whose feeding layers are all int8 and that touches at least
    one int8 layer, so int8 regions stay int8 end to end (a residual Add
    between int8 convolutions becomes ``QLinearAdd``) while nothing around a
    float layer pays for conversions it does not need."""
    int8 = set(int8)
    weight_nodes = {layer.name for layer in layers}
    constants = {t.name for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def walk(node, step, memo: dict) -> frozenset:
        """Layers reached from ``node`` through non-layer nodes, in direction ``step``."""
        if node.name in memo:
            return memo[node.name]
        memo[node.name] = frozenset()  # cycles cannot happen in ONNX, but be safe
        found: set[str] = set()
        for neighbour in step(node):
            found |= {neighbour.name} if neighbour.name in weight_nodes else walk(neighbour, step, memo)
        memo[node.name] = frozenset(found)
        return memo[node.name]

    upstream = lambda node: [producer[i] for i in node.input if i in producer and i not in constants]  # noqa: E731
    downstream = lambda node: [c for o in node.output for c in consumers.get(o, [])]  # noqa: E731
    up_memo: dict = {}
    down_memo: dict = {}
    chosen = [name for name in (layer.name for layer in layers) if name in int8]
    for node in model.graph.node:
        if node.name in weight_nodes or node.op_type in ("Constant", "Shape"):
            continue
        feeding = walk(node, upstream, up_memo)
        touching = feeding | walk(node, downstream, down_memo)
        if feeding <= int8 and touching & int8:
            chosen.append(node.name)
    return chosen


def optimized_graph(onnx_path: str | os.PathLike, *, graph_optimization_level: str = "all") -> onnx.ModelProto:
    """The graph ONNX Runtime's CPU provider actually runs for ``onnx_path``
    after its graph optimisations (what it saves to ``optimized_model_filepath``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization_level]
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="nas-optimized-") as folder:
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def integer_kernels(onnx_path: str | os.PathLike, layers: Iterable[str], *,
                    graph_optimization_level: str = "all") -> dict[str, str | None]:
    """For each layer name, the fused integer operator ONNX Runtime runs it as
    (``QLinearConv``, ``QGemm``, ...), or ``None`` where it still runs in
    float (an unfused QDQ pair only adds time). ONNX Runtime names a fused
    node after the layer, with a ``_token_N`` suffix when it also changed
    the layout."""
    fused: dict[str, str] = {}
    for node in optimized_graph(onnx_path, graph_optimization_level=graph_optimization_level).graph.node:
        if node.op_type in INTEGER_KERNELS:
            fused[node.name.split("_token_")[0]] = node.op_type
    return {name: fused.get(name) for name in layers}


def dequantized_weights(quantized: onnx.ModelProto, layer: QuantizableLayer) -> np.ndarray:
    """The float weight the quantized model's ``DequantizeLinear`` feeds ``layer``
    (int8 values times their per-channel scales)."""
    node = next((n for n in quantized.graph.node if n.name == layer.name), None)
    if node is None:
        raise KeyError(f"layer {layer.name!r} is not in the quantized model")
    dq = next((n for n in quantized.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == node.input[1]),
              None)
    if dq is None:
        raise KeyError(f"layer {layer.name!r} has no int8 weight in the quantized model")
    values = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    q, scale = values[dq.input[0]].astype(np.float32), values[dq.input[1]].astype(np.float32)
    zero = values[dq.input[2]].astype(np.float32) if len(dq.input) > 2 and dq.input[2] else np.zeros_like(scale)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q - zero) * scale


class _quiet:
    """Silence ONNX Runtime's quantizer's logging (pre-processing advice, per-tensor notes)."""

    def __enter__(self):
        self._level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        logging.getLogger().setLevel(self._level)
        return False
