"""``quantize_model``: a trained classifier in, the fastest mixed-precision
ONNX model inside an accuracy tolerance out, its latency measured on the
device.

1. Read the model (a ``nas search --out`` folder with trained weights, or
   an ``.onnx`` file) and the data, shaped for the model's input.
2. Pre-process (batch norm folded) and calibrate once with ONNX Runtime.
3. Build the all-int8 model and keep only the layers ONNX Runtime really
   runs as integer kernels there.
4. Order the layers with a sensitivity scorer.
5. Bisection over that order with ONNX Runtime's accuracy on the
   validation split (all-int8 first).
6. Verify: integer kernels of the chosen model, accuracy on the held-out
   test split, latency of float32 / all-int8 / chosen on the device.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserInputError
from nas.quantization.bisection import SEARCHES, SearchOutcome, Tolerance, max_bisection_evaluations
from nas.quantization.data import LabelledImages, QuantizationData, load_quantization_data
from nas.quantization.layers import load_onnx
from nas.quantization.onnx_quant import (QuantizationRecipe, integer_kernels, prepare_model,
                                         require_quantizable_layers)
from nas.quantization.scorers import DEFAULT_SCORER, ImageSensitivityProblem, Ordering, get_scorer

#: precision -> why ONNX Runtime's CPU provider does not run it faster than float32 (None: it does)
PRECISIONS: dict[str, str | None] = {
    "int8": None,
    "int16": "ONNX Runtime's CPU provider has no fused kernels for int16 activations: every QuantizeLinear/"
             "DequantizeLinear pair stays in the graph and the model runs slower than float32 (measured here on "
             "a small ResNet: 1.19x the float32 latency)",
}
#: profiler kinds whose device is this machine's ONNX Runtime, where quantized models can be timed
LOCAL_PROFILER_KINDS = ("onnxruntime",)
MODEL_FILE = "model.onnx"
REPORT_FILE = "quantization.json"
QUANTIZED_FILE = "model_int8.onnx"


def cpu_description() -> dict[str, Any]:
    """This machine's CPU model and the ISA flags int8 speed depends on (VNNI, AMX, AVX-512, AVX2)."""
    from nas.machine import processor

    model, flags = processor()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile", "avx512_bf16")
    return {"cpu": model, "isa": [f for f in wanted if f in flags], "cores": os.cpu_count()}


class OnnxClassifier:
    """An ONNX classifier in ONNX Runtime, for accuracy on labelled images."""

    def __init__(self, onnx_path: str | os.PathLike, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        first = model_input.shape[0] if model_input.shape else None
        self.batch_size = first if isinstance(first, int) and first > 0 else 256

    def logits(self, images: np.ndarray) -> np.ndarray:
        outputs = [self.session.run(None, {self.input_name: images[i:i + self.batch_size]})[0]
                   for i in range(0, len(images), self.batch_size)]
        return np.concatenate(outputs)

    def accuracy(self, split: LabelledImages) -> float:
        """Top-1 accuracy on ``split`` (%)."""
        return 100.0 * float(np.mean(self.logits(split.images).argmax(axis=1) == split.labels))


def model_input_shape(onnx_path: str | os.PathLike) -> tuple[int, ...]:
    """The model's input shape without the batch dimension; a model that is not a one-input
    float32 network with static non-batch dimensions is a user error."""
    model = load_onnx(onnx_path)
    initializer_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializer_names]
    if len(inputs) != 1:
        raise UserInputError(f"{str(onnx_path)!r} has {len(inputs)} inputs; quantization takes classifiers with "
                             f"exactly one input")
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type != 1:
        raise UserInputError(f"{str(onnx_path)!r} takes inputs of ONNX type {tensor_type.elem_type}, not float32")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if len(dims) < 2 or any(d is None for d in dims[1:]):
        raise UserInputError(f"{str(onnx_path)!r} has input shape {dims}; only the batch dimension may be dynamic")
    return tuple(dims[1:])


def resolve_model(model: str | os.PathLike) -> tuple[Path, dict[str, Any] | None]:
    """The ONNX file behind ``model`` (an ``.onnx`` file or a ``nas search --out`` folder) and the
    folder's ``result.json``; untrained weights are a user error."""
    path = Path(model).expanduser()
    if path.is_dir():
        onnx_path = path / MODEL_FILE
        if not onnx_path.is_file():
            raise UserInputError(f"{str(path)!r} has no {MODEL_FILE}; pass a 'nas search --out' folder that found "
                                 f"an architecture, or an .onnx file")
        record = None
        if (path / "result.json").is_file():
            try:
                record = json.loads((path / "result.json").read_text())
            except json.JSONDecodeError as error:
                raise UserInputError(f"{path / 'result.json'} is not JSON ({error})") from None
            weights = str(record.get("weights", ""))
            if "not trained" in weights or "freshly initialised" in weights:
                raise UserInputError(f"the model in {str(path)!r} was never trained (weights {weights}); "
                                     f"quantizing random weights measures nothing. Search with a strategy that "
                                     f"trains the network (e.g. 'nas search --strategy proxyless'), or pass a "
                                     f"trained .onnx file")
        return onnx_path, record
    if path.is_file():
        return path, None
    raise UserInputError(f"no model at {str(path)!r}: pass an .onnx file or a 'nas search --out' folder")


def check_precision(precision: str, force: bool = False) -> None:
    """Refuse a precision ONNX Runtime's CPU provider does not run faster than float32, unless forced."""
    if precision not in PRECISIONS:
        raise UserInputError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    reason = PRECISIONS[precision]
    if reason and not force:
        raise UserInputError(f"precision {precision} would not pay on this runtime: {reason}. Use --precision int8, "
                             f"or --force to build and measure it anyway")


@dataclass
class QuantizationResult:
    """Everything ``quantize_model`` found and measured (accuracies %, latencies ms)."""

    model: str
    dataset: str
    device: str
    tolerance: str
    scorer: str
    precision: str
    layers: list[str]
    not_fused: list[str]
    ordering: Ordering
    search: SearchOutcome
    accuracy: dict[str, float]
    latency_ms: dict[str, float]
    latency_spread_ms: dict[str, float]
    integer_kernels: dict[str, str | None]
    quantized_path: Path | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def speedup(self) -> float | None:
        if "float32" not in self.latency_ms or "chosen" not in self.latency_ms:
            return None
        return self.latency_ms["float32"] / self.latency_ms["chosen"]

    def to_dict(self) -> dict[str, Any]:
        from nas import package_versions

        return {
            "model": self.model, "dataset": self.dataset, "device": self.device, "tolerance": self.tolerance,
            "scorer": self.scorer, "precision": self.precision, "quantized_model": str(self.quantized_path),
            "num_layers": len(self.layers), "layers": self.layers, "not_fused_left_float": self.not_fused,
            "order": self.ordering.layers, "scores": self.ordering.scores, "ordering_info": self.ordering.info,
            "search": self.search.to_dict(),
            "max_evaluations": max_bisection_evaluations(len(self.search.order)),
            "int8_layers": self.search.int8_layers, "integer_kernels": self.integer_kernels,
            "accuracy": self.accuracy, "latency_ms": self.latency_ms, "latency_spread_ms": self.latency_spread_ms,
            "latency_reduction_vs_float32": None if self.speedup is None else 1 - 1 / self.speedup,
            "faster_than_float32": None if self.speedup is None else self.speedup > 1,
            "split_sizes": self.split_sizes, "machine": cpu_description(), "versions": package_versions(),
            "wall_s": round(self.wall_s, 2),
        }

    def summary(self) -> str:
        acc, lat = self.accuracy, self.latency_ms
        lines = [f"quantize: {self.model} on {self.device}, {self.dataset}, tolerance {self.tolerance}, "
                 f"scorer {self.scorer}",
                 f"{self.precision} layers: {self.search.k} of {len(self.layers) + len(self.not_fused)} "
                 f"({self.search.num_evaluations} accuracy evaluations, bound "
                 f"{max_bisection_evaluations(len(self.search.order))})"]
        if self.not_fused:
            lines.append(f"left float32 (ONNX Runtime does not fuse them into integer kernels): "
                         f"{', '.join(self.not_fused)}")
        lines.append(f"validation accuracy: float32 {acc['float32_validation']:.2f}%, chosen "
                     f"{acc['chosen_validation']:.2f}%")
        lines.append(f"test accuracy (held out): float32 {acc['float32_test']:.2f}%, chosen {acc['chosen_test']:.2f}%"
                     + (f", all-int8 {acc['all_int8_test']:.2f}%" if "all_int8_test" in acc else ""))
        if lat:
            lines.append("latency: " + ", ".join(f"{name} {value:.3f} ms" for name, value in lat.items())
                         + (f" ({(1 - 1 / self.speedup):.1%} lower than float32)" if self.speedup else ""))
            if self.speedup is not None and self.speedup <= 1:
                lines.append("the chosen mix is NOT faster than float32 on this device (conversions between int8 "
                             "and float layers cost more than the int8 layers save): deploy the float32 model, or "
                             "allow a larger tolerance")
        return "\n".join(lines)


def time_here(paths: dict[str, Path], device: str, load, what: str) -> dict[str, Any]:
    """Each model of ``paths`` timed together in interleaved rounds with ``device``'s measuring
    protocol (no drift reference), loaded by ``load(path, runtime_settings)`` into a timer. The
    device must run here (kind in :data:`LOCAL_PROFILER_KINDS`): ``what`` the models are, for the
    refusal."""
    from nas.devices import get_device
    from nas.profilers.protocol import MeasurementProtocol, check_runtime_settings, time_interleaved

    entry = get_device(device)
    if entry.profiler_kind not in LOCAL_PROFILER_KINDS:
        raise UserInputError(f"device {entry.name!r} is reached by the {entry.profiler_kind!r} profiler; {what} "
                             f"are timed with ONNX Runtime on this machine: use --device local-cpu (or another "
                             f"device of kind {', '.join(LOCAL_PROFILER_KINDS)})")
    runtime = check_runtime_settings(entry.settings)
    protocol = MeasurementProtocol.from_settings(dict(entry.settings, drift_correction=False))
    timers = [load(path, runtime) for path in paths.values()]
    return dict(zip(paths, time_interleaved(timers, None, protocol)))


def measure_latencies(paths: dict[str, Path], device: str = "local-cpu") -> tuple[dict[str, float], dict[str, float]]:
    """Latency (ms) and spread (ms) of each ONNX model on ``device``, timed
    together in interleaved rounds with the device's measuring protocol."""
    from nas.profilers.onnxruntime import OnnxRuntimeModel

    estimates = time_here(paths, device, lambda path, runtime: OnnxRuntimeModel(path, **runtime), "quantized models")
    return ({name: e.latency_ms for name, e in estimates.items()}, {name: e.spread_ms for name, e in estimates.items()})


def sensitivity_problem(recipe: QuantizationRecipe, layers: list[str], calibration: LabelledImages,
                        progress: bool = False) -> ImageSensitivityProblem:
    """The scorers' view of a calibrated model, restricted to ``layers``."""
    import onnx
    import torch

    from nas.quantization.graph import OnnxGraph
    from nas.quantization.simulate import QuantizationSimulator

    graph = OnnxGraph(onnx.load(str(recipe.prepared)))
    chosen = [layer for layer in recipe.layers if layer.name in set(layers)]
    simulator = QuantizationSimulator(chosen, graph.weights, recipe.activation_ranges())
    return ImageSensitivityProblem(graph, simulator, chosen, torch.from_numpy(calibration.images),
                              torch.from_numpy(calibration.labels), progress=progress)


class Quantizer:
    """A calibrated model and its data: builds, evaluates and times any
    choice of int8 layers (the pipeline and the benchmark share it)."""

    def __init__(self, onnx_path: str | os.PathLike, data: QuantizationData, work_dir: str | os.PathLike, *,
                 precision: str = "int8", progress: bool = False):
        self.work = Path(work_dir)
        self.data = data
        self.progress = progress
        self.prepared = prepare_model(onnx_path, self.work / "prepared.onnx")
        require_quantizable_layers(load_onnx(self.prepared), onnx_path)
        self._check_classes()
        self.recipe = QuantizationRecipe.calibrate(self.prepared, data.calibration.images, self.work,
                                                   activation=precision)
        self.all_int8 = self.work / "all_int8.onnx"
        kernels = integer_kernels(self.all_int8, self.recipe.layer_names)
        self.layers = [name for name in self.recipe.layer_names if kernels[name] or precision != "int8"]
        self.not_fused = [name for name in self.recipe.layer_names if name not in self.layers]
        if not self.layers:
            raise UserInputError(f"no layer of this model runs as an integer kernel in ONNX Runtime "
                                 f"(tried {', '.join(self.recipe.layer_names)}); int8 would only add conversions")
        self._count = 0
        self._accuracy_cache: dict[tuple[str, frozenset], float] = {}

    def _check_classes(self) -> None:
        logits = OnnxClassifier(self.prepared).logits(self.data.validation.images[:2])
        if logits.ndim != 2 or logits.shape[1] != self.data.num_classes:
            raise UserInputError(f"the model outputs shape {list(logits.shape)} for 2 images; --data "
                                 f"{self.data.name} has {self.data.num_classes} classes: pass a classifier with "
                                 f"{self.data.num_classes} outputs")

    def build(self, int8_layers, name: str | None = None) -> Path:
        self._count += 1
        return self.recipe.build(int8_layers, self.work / (name or f"candidate_{self._count}.onnx"))

    def accuracy(self, int8_layers, split: str = "validation") -> float:
        """ONNX Runtime accuracy (%) with exactly ``int8_layers`` int8, on ``split``."""
        key = (split, frozenset(int8_layers))
        if key not in self._accuracy_cache:
            path = self.build(int8_layers)
            self._accuracy_cache[key] = OnnxClassifier(path).accuracy(getattr(self.data, split))
            path.unlink()
        return self._accuracy_cache[key]

    def order(self, scorer: str, seed: int = 0) -> Ordering:
        """The fused layers ordered by ``scorer``."""
        return get_scorer(scorer, seed).order(sensitivity_problem(self.recipe, self.layers, self.data.calibration,
                                                                  self.progress))


def quantize_model(model: str | os.PathLike, data: str = "digits", data_dir: str | os.PathLike | None = None, *,
                   device: str = "local-cpu", tolerance: str = "1%", scorer: str = DEFAULT_SCORER,
                   search: str = "bisection", precision: str = "int8", force: bool = False, seed: int = 0,
                   out: str | os.PathLike | None = None, measure_latency: bool = True,
                   progress: bool = False) -> QuantizationResult:
    """Quantize ``model`` to the mixed int8/float32 configuration with the most int8 layers whose
    validation accuracy stays inside ``tolerance`` (see :class:`Tolerance`), ordered by ``scorer``.

    Writes ``model_int8.onnx`` and ``quantization.json`` into ``out`` (default: the model's folder,
    or beside the ``.onnx`` file). Latencies (``*_ms``) are measured on ``device`` when
    ``measure_latency``.
    """
    started = time.time()
    tolerance_spec = Tolerance.parse(tolerance)
    check_precision(precision, force)
    if search not in SEARCHES:
        raise UserInputError(f"unknown search {search!r}; allowed: {', '.join(SEARCHES)}")
    get_scorer(scorer, seed)  # an unknown scorer fails before any work
    if measure_latency:
        from nas.devices import get_device

        if get_device(device).profiler_kind not in LOCAL_PROFILER_KINDS:
            measure_latencies({}, device)  # raises with the reason
    onnx_path, record = resolve_model(model)
    shape = model_input_shape(onnx_path)
    dataset = load_quantization_data(data, data_dir, input_shape=shape)
    out_dir = Path(out) if out is not None else (onnx_path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="nas-quantize-") as work:
        log(f"quantize: calibrating on {len(dataset.calibration)} {data} images")
        quantizer = Quantizer(onnx_path, dataset, work, precision=precision, progress=progress)
        log(f"quantize: {len(quantizer.layers)} layers run as integer kernels"
            + (f"; {len(quantizer.not_fused)} stay float32" if quantizer.not_fused else ""))
        ordering = quantizer.order(scorer, seed)
        baseline = quantizer.accuracy([])
        outcome = SEARCHES[search](ordering.layers, quantizer.accuracy, tolerance_spec, baseline, progress=progress)
        chosen = quantizer.build(outcome.int8_layers, "chosen.onnx")
        kernels = integer_kernels(chosen, outcome.int8_layers) if precision == "int8" else {}
        unfused = [name for name, op in kernels.items() if op is None]
        if unfused:
            log(f"quantize: warning: {', '.join(unfused)} did not fuse into integer kernels in the chosen model")
        accuracy = {"float32_validation": baseline, "chosen_validation": outcome.accuracy,
                    "float32_test": quantizer.accuracy([], "test"),
                    "chosen_test": quantizer.accuracy(outcome.int8_layers, "test"),
                    "all_int8_test": quantizer.accuracy(quantizer.layers, "test")}
        latency, spread = {}, {}
        if measure_latency:
            log(f"quantize: timing float32, all-int8 and the chosen model on {device}")
            latency, spread = measure_latencies({"float32": quantizer.prepared, "all_int8": quantizer.all_int8,
                                                 "chosen": chosen}, device)
        quantized_path = out_dir / QUANTIZED_FILE
        quantized_path.write_bytes(chosen.read_bytes())
    result = QuantizationResult(str(model), data, device, tolerance_spec.text, scorer, precision, quantizer.layers,
                                quantizer.not_fused, ordering, outcome, accuracy, latency, spread, kernels,
                                quantized_path, dataset.sizes(), time.time() - started)
    (out_dir / REPORT_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result
