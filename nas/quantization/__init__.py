"""Mixed-precision post-training quantization: which layers of a trained
model run in int8 on ONNX Runtime, chosen by sensitivity and bisection
inside an accuracy tolerance, verified on the device.

- :mod:`~nas.quantization.layers`: the quantizable layers of a graph;
- :mod:`~nas.quantization.onnx_quant`: ONNX Runtime static quantization of
  any subset of layers, calibrated once, and the integer-kernel check;
- :mod:`~nas.quantization.graph` / :mod:`~nas.quantization.simulate`: the
  graph in PyTorch and ONNX Runtime's quantization simulated there;
- :mod:`~nas.quantization.scorers`: sensitivity orderings (registry);
- :mod:`~nas.quantization.bisection`: bisection and greedy fallback;
- :mod:`~nas.quantization.pipeline`: :func:`quantize_model`, what
  ``nas quantize`` runs.
"""

from nas.quantization.bisection import Tolerance, bisect, greedy_fallback, max_bisection_evaluations
from nas.quantization.data import DATASETS, load_quantization_data
from nas.quantization.layers import QuantizableLayer, quantizable_layers
from nas.quantization.onnx_quant import QuantizationRecipe, integer_kernels, prepare_model
from nas.quantization.pipeline import QuantizationResult, Quantizer, quantize_model
from nas.quantization.scorers import DEFAULT_SCORER, SCORERS, Ordering, SensitivityScorer, get_scorer, list_scorers

__all__ = ["DATASETS", "DEFAULT_SCORER", "Ordering", "QuantizableLayer", "QuantizationRecipe", "QuantizationResult",
           "Quantizer", "SCORERS", "SensitivityScorer", "Tolerance", "bisect", "get_scorer", "greedy_fallback",
           "integer_kernels", "list_scorers", "load_quantization_data", "max_bisection_evaluations",
           "prepare_model", "quantizable_layers", "quantize_model"]
