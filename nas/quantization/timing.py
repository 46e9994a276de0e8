"""Timing quantized models: the profiler setting ``precision`` (``int8``, ``int4``).

A device whose profiler settings say ``precision: int8`` (the catalog's
``local-cpu-int8``, or any device file) is measured on int8 models: every
exported architecture, and the drift reference, is quantized with ONNX
Runtime static quantization before it is timed (QDQ format, per-channel
symmetric int8 weights, uint8 per-tensor activations, batch norm folded;
every Conv, Gemm and MatMul with a constant weight and the operations
between them, exactly as ``nas quantize`` builds its all-int8 model). The
latency predictor adapts on those measurements, verification times the
same int8 models, and so a search under a budget spends int8's speed-up on
a larger architecture.

Calibration uses the profiler's own input (random values, one batch).
That is enough for latency: an int8 kernel does the same operations
whatever the values, and calibration sets only scales and zero points,
which change the numbers computed, not the work. It says nothing of
accuracy; ``nas quantize`` calibrates on real data and checks accuracy.

``precision: int4`` (the catalog's ``local-cpu-int4``) is 4-bit weight-only
quantization of every MatMul with a constant weight (ONNX Runtime's
``MatMulNBits``: symmetric blocks of 32 weights, round to nearest, int8
compute of the activations), what pays for language models' decode steps,
whose small matrix-vector products wait on weight memory; convolutions stay
float32. It needs no calibration.

Measurements under a precision are stored under their own settings key
(``precision`` is part of it), never mixed with float32 ones.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserInputError

#: values of the profiler setting ``precision``
PRECISION_SETTINGS = ("float32", "int8", "int4")
#: weights per scale of 4-bit weight-only quantization (the default)
INT4_BLOCK_SIZE = 32
#: the block sizes ONNX Runtime's MatMulNBits runs (powers of two)
INT4_BLOCK_SIZES = (16, 32, 64, 128, 256)


def int4_block_size(value: int) -> int:
    """``value`` as a 4-bit block size (weights per scale), validated against :data:`INT4_BLOCK_SIZES`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value not in INT4_BLOCK_SIZES:
        raise UserInputError(f"block size {value!r} is not one ONNX Runtime's 4-bit MatMul runs; allowed: "
                             f"{', '.join(map(str, INT4_BLOCK_SIZES))} weights per scale (default {INT4_BLOCK_SIZE})")
    return int(value)


def precision_setting(settings: dict[str, Any]) -> str:
    """The ``precision`` of a device's profiler settings (default float32), validated."""
    value = settings.get("precision", "float32")
    if value not in PRECISION_SETTINGS:
        raise UserInputError(f"profiler setting precision must be one of {', '.join(PRECISION_SETTINGS)}, not "
                             f"{value!r}")
    return value


class _FeedReader:
    """ONNX Runtime's calibration data reader over a list of input feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)


def timing_feed(onnx_path: str | os.PathLike, runtime: dict[str, Any],
                context_length: int | None = None) -> dict[str, np.ndarray]:
    """The inputs the profiler times ``onnx_path`` with: a single-input model's random batch, or
    for an ``slm`` decode or prefill graph (``context_length`` given) its tokens and states."""
    if context_length is None:
        from nas.profilers.onnxruntime import OnnxRuntimeModel

        return dict(OnnxRuntimeModel(onnx_path, **runtime)._feed)
    from nas.search_space.slm.runtime import SlmTimer

    return dict(SlmTimer(onnx_path, context_length=context_length, **runtime).feed)


def int8_for_timing(onnx_path: str | os.PathLike, runtime: dict[str, Any], context_length: int | None = None,
                    out_path: str | os.PathLike | None = None) -> Path:
    """``onnx_path`` quantized to int8 for timing (see the module docstring), written to ``out_path``
    (default: beside it, ``NAME.int8.onnx``). ``runtime`` are the profiler's ONNX Runtime settings
    (threads, batch size, optimisation level); ``context_length`` marks an ``slm`` graph."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from nas.quantization.layers import load_onnx
    from nas.quantization.onnx_quant import _EXTRA_OPTIONS, _quiet, nodes_to_quantize, prepare_model, \
        require_quantizable_layers

    source = Path(onnx_path)
    out = Path(out_path) if out_path is not None else source.with_suffix(".int8.onnx")
    feed = timing_feed(source, runtime, context_length)
    with tempfile.TemporaryDirectory(prefix="nas-int8-") as folder:
        prepared = prepare_model(source, Path(folder) / "prepared.onnx", symbolic_shapes=context_length is None)
        model = load_onnx(prepared)
        layers = require_quantizable_layers(model, source)
        with _quiet():
            quantize_static(str(prepared), str(out), _FeedReader([feed]), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=False, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            nodes_to_quantize=nodes_to_quantize(model, layers, [layer.name for layer in layers]),
                            extra_options=dict(_EXTRA_OPTIONS))
    return out


def int4_for_timing(onnx_path: str | os.PathLike, out_path: str | os.PathLike | None = None) -> Path:
    """``onnx_path`` with every MatMul of a constant weight as 4-bit weight-only ``MatMulNBits``
    (see the module docstring), at ``out_path`` (default ``NAME.int4.onnx`` beside it); a model
    without such a MatMul is a :class:`UserInputError`."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from nas.quantization.onnx_quant import _quiet

    source = Path(onnx_path)
    out = Path(out_path) if out_path is not None else source.with_suffix(".int4.onnx")
    with _quiet():
        quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), bits=4, block_size=INT4_BLOCK_SIZE,
                                         is_symmetric=True, accuracy_level=4)
        quantizer.process()
    if not any(node.op_type == "MatMulNBits" for node in quantizer.model.model.graph.node):
        raise UserInputError(f"{str(source)!r} has no MatMul with a constant weight: 4-bit weight-only "
                             f"quantization (precision int4) would change nothing; use precision int8 for "
                             f"convolutional networks")
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    return out


def model_for_timing(onnx_path: str | os.PathLike, precision: str, runtime: dict[str, Any],
                     context_length: int | None = None) -> Path:
    """The model a device of profiler setting ``precision`` times in place of ``onnx_path``
    (float32: ``onnx_path`` itself)."""
    if precision == "int8":
        return int8_for_timing(onnx_path, runtime, context_length)
    if precision == "int4":
        return int4_for_timing(onnx_path)
    return Path(onnx_path)
