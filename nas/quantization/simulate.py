"""Quantization simulated in PyTorch with ONNX Runtime's own rules.

- Weights: symmetric int8 per output channel, values in [-127, 127], scale
  ``max|W_c| / 127`` (computed in float64, stored as float32; a zero channel
  gets scale 1), zero point 0, ``q = clip(round_half_even(W / scale))``.
- Activations: uint8 per tensor from the calibrated ``[min, max]`` widened to
  include 0, scale ``(max - min) / 255`` (float64, stored float32), zero point
  ``round(0 - min / scale)``.
- Bias: int32 with scale ``input_scale * weight_scale`` per channel.
- 4-bit weight-only MatMul (``MatMulNBits``, symmetric): blocks of 32
  weights (the default; any of 16 to 256) along the input dimension, each with scale ``v / -8`` where ``v``
  is the block's value of largest magnitude (sign kept), ``q = clip(
  round_half_up(W * (1 / scale)) + 8, 0, 15)``, dequantized ``(q - 8) *
  scale`` (float32 throughout, as ONNX Runtime's quantizer computes it).

ONNX Runtime's fused kernels still differ from this float simulation by more
than rounding (they requantize between layers): accuracy decisions are made
with ONNX Runtime itself; the simulation serves the sensitivity scorers.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import torch

from nas.quantization.layers import QuantizableLayer
from nas.quantization.timing import INT4_BLOCK_SIZE

INT8_MAX = 127
UINT8_MAX = 255


def weight_scales(weight: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-channel symmetric int8 scales along ``axis`` (float32, one per channel)."""
    w = weight.detach().to(torch.float64).movedim(axis, 0).reshape(weight.shape[axis], -1)
    absmax = torch.maximum(w.max(dim=1).values.clamp(min=0).abs(), w.min(dim=1).values.clamp(max=0).abs())
    scale = (2 * absmax) / (2 * INT8_MAX)
    scale = torch.where(scale < torch.finfo(torch.float32).tiny, torch.ones_like(scale), scale)
    return scale.to(torch.float32)


def quantize_weight(weight: torch.Tensor, axis: int) -> torch.Tensor:
    """``weight`` after int8 per-channel quantization and dequantization (float32)."""
    shape = [1] * weight.dim()
    shape[axis] = -1
    scale = weight_scales(weight, axis).reshape(shape)
    q = torch.clamp(torch.round(weight.detach().to(torch.float32) / scale), -INT8_MAX - 1, INT8_MAX)
    return q * scale


INT4_ZERO_POINT = 8


def quantize_int4_blockwise(weight: torch.Tensor, block_size: int = INT4_BLOCK_SIZE) -> torch.Tensor:
    """A MatMul weight ``[K, N]`` after ONNX Runtime's symmetric 4-bit blockwise quantization and
    dequantization (float32): blocks of ``block_size`` along ``K`` (the last one zero-padded)."""
    w = weight.detach().to(torch.float32)
    rows, cols = w.shape
    blocks = -(-rows // block_size)
    padded = torch.zeros(blocks * block_size, cols, dtype=torch.float32)
    padded[:rows] = w
    padded = padded.reshape(blocks, block_size, cols)
    high, low = padded.max(dim=1, keepdim=True).values, padded.min(dim=1, keepdim=True).values
    extreme = torch.where(high.abs() > low.abs(), high, low)  # a tie keeps the negative end
    scale = extreme / -INT4_ZERO_POINT
    inverse = torch.where(scale != 0, 1 / scale, torch.zeros_like(scale))
    shifted = padded * inverse + INT4_ZERO_POINT
    # halves round up (the quantizer rounds a non-negative value half away from zero)
    floor = torch.floor(shifted)
    q = torch.clamp(floor + (shifted - floor >= 0.5).to(torch.float32), 0, 2 * INT4_ZERO_POINT - 1)
    return ((q - INT4_ZERO_POINT) * scale).reshape(blocks * block_size, cols)[:rows]


def activation_qparams(low: float, high: float) -> tuple[float, int]:
    """ONNX Runtime's uint8 ``(scale, zero_point)`` for a tensor calibrated to ``[low, high]``."""
    low, high = np.float32(min(low, 0.0)), np.float32(max(high, 0.0))
    scale = (np.float64(high) - np.float64(low)) / UINT8_MAX
    if scale < np.finfo(np.float32).tiny:
        return 1.0, 0
    zero_point = int(np.round(0 - np.float64(low) / scale))
    return float(np.float32(scale)), zero_point


def fake_quantize_activation(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """uint8 quantize-dequantize of ``x``; the gradient passes straight through inside the range."""
    q = torch.clamp(torch.round(x / scale) + zero_point, 0, UINT8_MAX)
    quantized = (q - zero_point) * scale
    return x + (quantized - x).detach()


def quantize_bias(bias: torch.Tensor, input_scale: float, weight_scale: torch.Tensor) -> torch.Tensor:
    """int32 quantize-dequantize of a bias with scale ``input_scale * weight_scale``."""
    scale = (np.float32(input_scale) * weight_scale.to(torch.float32)).to(torch.float32)
    limit = float(np.iinfo(np.int32).max)
    scale = torch.maximum(scale, bias.detach().abs().to(torch.float32) / limit * 1.0001)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return torch.clamp(torch.round(bias.detach() / scale), -limit - 1, limit) * scale


class QuantizationSimulator:
    """Simulated int8 versions of a graph's layers.

    ``layers`` are the graph's quantizable layers, ``weights`` its float
    weights by initializer name, ``ranges`` the calibrated activation ranges
    by tensor name. :meth:`perturbation` is a layer's weight change
    ``Q(W) - W``; :meth:`weights_for` and :meth:`activation_hook` give the
    replacement weights and activation fake-quantization for a set of int8
    layers (their input and output tensors quantized as in the QDQ model).
    """

    def __init__(self, layers: Iterable[QuantizableLayer], weights: Mapping[str, torch.Tensor],
                 ranges: Mapping[str, tuple[float, float]]):
        self.layers = {layer.name: layer for layer in layers}
        self.weights = weights
        self.ranges = ranges
        self._quantized: dict[str, torch.Tensor] = {}

    def quantized_weight(self, name: str) -> torch.Tensor:
        if name not in self._quantized:
            layer = self.layers[name]
            self._quantized[name] = quantize_weight(self.weights[layer.weight], layer.channel_axis)
        return self._quantized[name]

    def perturbation(self, name: str) -> torch.Tensor:
        """``Q(W) - W`` of layer ``name`` (float32, the weight's shape)."""
        return self.quantized_weight(name) - self.weights[self.layers[name].weight].detach()

    def weights_for(self, int8_layers: Iterable[str]) -> dict[str, torch.Tensor]:
        """Replacement weights (and biases) for ``int8_layers``."""
        replaced = {}
        for name in int8_layers:
            layer = self.layers[name]
            replaced[layer.weight] = self.quantized_weight(name)
            if layer.bias is not None and layer.input in self.ranges:
                scale, _ = activation_qparams(*self.ranges[layer.input])
                replaced[layer.bias] = quantize_bias(self.weights[layer.bias], scale,
                                                     weight_scales(self.weights[layer.weight], layer.channel_axis))
        return replaced

    def quantized_tensors(self, int8_layers: Iterable[str]) -> dict[str, tuple[float, int]]:
        """``tensor -> (scale, zero_point)`` of the activations quantized around ``int8_layers``."""
        tensors = {}
        for name in int8_layers:
            layer = self.layers[name]
            for tensor in (layer.input, layer.output):
                if tensor in self.ranges:
                    tensors[tensor] = activation_qparams(*self.ranges[tensor])
        return tensors

    def activation_hook(self, int8_layers: Iterable[str]):
        """A :class:`nas.quantization.graph.OnnxGraph` hook fake-quantizing those activations."""
        tensors = self.quantized_tensors(int8_layers)

        def hook(name: str, value: torch.Tensor) -> torch.Tensor:
            return fake_quantize_activation(value, *tensors[name]) if name in tensors else value
        return hook
