"""Language models (``nas search --space slm --out`` folders): 4-bit
weight-only MatMul inside a bits-per-byte tolerance, offered only where it
measures faster on the device.

1. Layers: the MatMul nodes of the decode graph with a constant 2-D weight,
   what ONNX Runtime's ``MatMulNBits`` runs (symmetric blocks of 32 weights
   by default, 16 to 256 with ``block_size``: one scale per block, so larger
   blocks round more coarsely and read fewer scales; round to nearest, int8
   compute of the activations).
2. The all-int4 decode step and the float32 one are timed on the device
   first; when int4 is not faster the request is refused (exit 2, with both
   latencies) unless forced: 4-bit weights that do not save time only cost
   bits per byte.
3. Order: any scorer of :mod:`nas.quantization.scorers` (default
   ``hessian_interlayer``) on the model's next-byte loss over calibration
   windows of the validation split
   (:mod:`nas.quantization.language_sensitivity`; the PyTorch model is
   rebuilt from the decode graph's weights and the folder's layout); the
   layers least hurt by 4-bit rounding are quantized first.
4. Bisection (:mod:`nas.quantization.bisection`) over that order, every
   decision taken on validation bits per byte computed by ONNX Runtime with
   the quantized decode graph (fixed windows of the corpus's validation
   split, stepped token by token in one batch); all-int4 first. The test
   split's bits per byte are reported, never used to decide.
5. The chosen graph is timed against float32 and all-int4 (interleaved) and
   written as ``decode_int4.onnx`` with ``quantization.json``.

The tolerance is in bits per byte: ``0.05bpb`` (that many more bits per
byte than float32) or ``2%`` (a relative increase).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserInputError
from nas.quantization.bisection import SearchOutcome, Tolerance, bisect, max_bisection_evaluations
from nas.quantization.timing import INT4_BLOCK_SIZE, int4_block_size

#: the precision language models are quantized to (``--precision``)
LANGUAGE_PRECISION = "int4"
DECODE_FILE = "decode.onnx"
QUANTIZED_FILE = "decode_int4.onnx"
REPORT_FILE = "quantization.json"
#: bytes predicted per bits-per-byte evaluation: windows x context
WINDOWS, CONTEXT = 16, 96


@dataclass(frozen=True)
class BitsTolerance:
    """How many bits per byte the quantized model may add: ``absolute`` (``0.05bpb``) or
    ``relative`` (``2%`` of the float32 bits per byte)."""

    kind: str
    value: float
    text: str

    @classmethod
    def parse(cls, text: str) -> "BitsTolerance":
        match = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*(bpb|bits?|%)\s*", str(text))
        if not match:
            raise UserInputError(f"tolerance {text!r} is not understood for a language model; write the bits per "
                                 f"byte that may be added ('0.05bpb') or a relative increase ('2%')")
        value = float(match.group(1))
        if value < 0 or not math.isfinite(value):
            raise UserInputError(f"tolerance {text!r} is negative; allowed: 0 or more ('0.05bpb', '2%')")
        return cls("relative" if match.group(2) == "%" else "absolute", value, text.strip())

    def ceiling(self, baseline_bpb: float) -> float:
        """The most bits per byte inside the tolerance of a float32 ``baseline_bpb``."""
        return baseline_bpb + self.value if self.kind == "absolute" else baseline_bpb * (1 + self.value / 100)


def matmul_weights(model) -> dict[str, np.ndarray]:
    """Name -> constant 2-D weight of every MatMul whose second input is an initializer."""
    from onnx import numpy_helper

    constants = {t.name: t for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in constants:
            weight = numpy_helper.to_array(constants[node.input[1]])
            if weight.ndim == 2:
                found[node.name] = weight
    return found


def int4_error(weight: np.ndarray, block_size: int = INT4_BLOCK_SIZE) -> float:
    """Relative squared error of ONNX Runtime's symmetric 4-bit blockwise rounding of a MatMul weight
    ``[K, N]`` (:func:`nas.quantization.simulate.quantize_int4_blockwise`), ``|Q(W) - W|^2 / |W|^2``."""
    import torch

    from nas.quantization.simulate import quantize_int4_blockwise

    w = torch.from_numpy(np.array(weight, dtype=np.float32))
    error = (quantize_int4_blockwise(w, block_size) - w).double().pow(2).sum()
    return float(error / w.double().pow(2).sum().clamp(min=1e-30))


def dequantized_int4_weights(model) -> dict[str, np.ndarray]:
    """MatMul node name -> the ``[K, N]`` weight a ``MatMulNBits`` node of ``model`` (4 bits, no zero
    points: symmetric) computes with, dequantized from its packed blocks and scales; named as the
    MatMul it replaced (ONNX Runtime appends ``_Q4``)."""
    from onnx import helper, numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs["bits"] != 4 or len(node.input) > 3 and node.input[3]:
            raise ValueError(f"{node.name}: only symmetric 4-bit MatMulNBits is read")
        k, n, block = attrs["K"], attrs["N"], attrs["block_size"]
        packed = constants[node.input[1]].reshape(n, -1)
        q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, -1)[:, :k].astype(np.float32)
        scales = np.repeat(constants[node.input[2]].reshape(n, -1), block, axis=1)[:, :k]
        found[node.name.removesuffix("_Q4")] = ((q - 8) * scales).T
    return found


def build_int4(decode_path: str | os.PathLike, layers: list[str], out_path: str | os.PathLike,
               block_size: int = INT4_BLOCK_SIZE) -> Path:
    """The decode graph with exactly ``layers`` (MatMul node names) as 4-bit MatMulNBits, one scale
    per ``block_size`` weights."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from nas.quantization.onnx_quant import _quiet

    out_path = Path(out_path)
    model = onnx.load(str(decode_path))
    if not layers:
        onnx.save(model, str(out_path))
        return out_path
    # ONNX Runtime's nodes_to_include adds to the MatMul op type rather than restricting it: exclude the rest
    others = [name for name in matmul_weights(model) if name not in set(layers)]
    with _quiet():
        quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=int4_block_size(block_size), is_symmetric=True,
                                         accuracy_level=4, nodes_to_exclude=others)
        quantizer.process()
    quantizer.model.save_model_to_file(str(out_path), use_external_data_format=False)
    return out_path


def decode_window_bits(decode_path: str | os.PathLike, data: np.ndarray, windows: int = WINDOWS,
                       context: int = CONTEXT) -> np.ndarray:
    """Bits per byte of the decode graph on each of ``windows`` fixed windows of ``data`` (bytes), each
    stepped token by token for ``context`` predictions, all windows in one batch."""
    from nas.profilers.onnxruntime import cpu_session

    session = cpu_session(decode_path)
    inputs = session.get_inputs()
    starts = np.linspace(0, len(data) - context - 2, windows).astype(np.int64)
    batch = np.stack([data[s:s + context + 1] for s in starts]).astype(np.int64)
    states = [np.zeros([windows if d == "batch" else 0 if d == "past" else d for d in spec.shape], np.float32)
              for spec in inputs[2:]]
    names = [spec.name for spec in inputs[2:]]
    total = np.zeros(windows)
    for t in range(context):
        out = session.run(None, {"token": batch[:, t], "position": np.array([t], np.int64), **dict(zip(names, states))})
        logits, states = out[0].reshape(windows, -1).astype(np.float64), out[1:]
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        total -= log_probs[np.arange(windows), batch[:, t + 1]]
    return total / context / math.log(2)


def decode_bits_per_byte(decode_path: str | os.PathLike, data: np.ndarray, windows: int = WINDOWS,
                         context: int = CONTEXT) -> float:
    """Bits per byte of the decode graph on ``windows`` fixed windows of ``data`` (bytes), each
    stepped token by token for ``context`` predictions (:func:`decode_window_bits`, averaged)."""
    return float(np.mean(decode_window_bits(decode_path, data, windows, context)))


def time_decode_steps(paths: dict[str, Path], context_length: int, device: str) -> dict[str, float]:
    """Decode ms/token of each graph after ``context_length`` tokens on ``device``, interleaved."""
    from nas.quantization.pipeline import time_here
    from nas.search_space.slm.runtime import SlmTimer

    estimates = time_here(paths, device, lambda path, runtime: SlmTimer(path, context_length=context_length,
                                                                        **runtime),
                          "a language model's 4-bit graphs (timed before they are offered)")
    return {name: e.latency_ms for name, e in estimates.items()}


def is_language_model_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / DECODE_FILE).is_file()


def language_ordering(folder: Path, record: dict[str, Any], scorer: str, seed: int = 0, progress: bool = False,
                      block_size: int = INT4_BLOCK_SIZE):
    """The decode graph's MatMul layers ordered by ``scorer`` (:class:`nas.quantization.scorers.Ordering`)
    under 4-bit rounding in blocks of ``block_size``; a scorer that runs the model rebuilds it from the
    graph and the layout in ``result.json``."""
    from nas.quantization.language_sensitivity import language_sensitivity_problem, model_from_decode_graph
    from nas.quantization.scorers import get_scorer
    from nas.slm.corpus import load_corpus

    chosen = get_scorer(scorer, seed=seed)
    model = None
    if chosen.needs_graph:
        if not record.get("arch"):
            raise UserInputError(f"{folder / 'result.json'} names no layout ('arch'): the {scorer} scorer runs the "
                                 f"model; use --scorer weight_error or random")
        model = model_from_decode_graph(record["arch"], folder / DECODE_FILE)
    problem = language_sensitivity_problem(model, folder / DECODE_FILE, load_corpus().validation, seed=seed,
                                           progress=progress, block_size=block_size)
    return chosen.order(problem)


def quantize_language_model(model_dir: str | os.PathLike, *, device: str = "local-cpu", tolerance: str = "0.05bpb",
                            force: bool = False, out: str | os.PathLike | None = None, scorer: str | None = None,
                            seed: int = 0, progress: bool = False,
                            block_size: int = INT4_BLOCK_SIZE) -> dict[str, Any]:
    """Quantize the decode graph of an ``slm`` search folder to 4-bit weight-only MatMul on the most
    layers whose validation bits per byte stay inside ``tolerance`` (see :class:`BitsTolerance`);
    refused unless the all-int4 graph measures faster on ``device`` (or ``force``); layers ordered by
    ``scorer`` (default :data:`nas.quantization.scorers.DEFAULT_SCORER`, ``seed`` for its probes);
    one scale per ``block_size`` weights (16 to 256, powers of two; default 32). Writes
    ``decode_int4.onnx`` and ``quantization.json`` to ``out`` (default the folder) and returns the
    report (bits per byte; latencies ``*_ms``: decode ms/token)."""
    import onnx

    from nas.slm.corpus import load_corpus

    from nas.quantization.scorers import DEFAULT_SCORER

    started = time.time()
    spec = BitsTolerance.parse(tolerance)
    block_size = int4_block_size(block_size)
    scorer = scorer or DEFAULT_SCORER
    folder = Path(model_dir)
    if not is_language_model_folder(folder):
        raise UserInputError(f"{str(folder)!r} holds no {DECODE_FILE}: pass the --out folder of 'nas search --space "
                             f"slm'")
    record = json.loads((folder / "result.json").read_text()) if (folder / "result.json").is_file() else {}
    context_length = int(record.get("context") or 512)
    weights = matmul_weights(onnx.load(str(folder / DECODE_FILE)))
    if not weights:
        raise UserInputError(f"{folder / DECODE_FILE} has no MatMul with a constant weight: nothing to quantize")
    out_dir = Path(out) if out is not None else folder
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus()

    def log(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="nas-quantize-lm-") as work:
        work = Path(work)
        float_path = folder / DECODE_FILE
        all_int4 = build_int4(float_path, list(weights), work / "all_int4.onnx", block_size)
        log(f"quantize: timing float32 and all-int4 decode steps on {device} ({len(weights)} MatMul layers)")
        first = time_decode_steps({"float32": float_path, "all_int4": all_int4}, context_length, device)
        if first["all_int4"] >= first["float32"] and not force:
            raise UserInputError(f"4-bit weight-only MatMul does not run faster here: the all-int4 decode step "
                                 f"took {first['all_int4']:.3f} ms against {first['float32']:.3f} ms in float32 "
                                 f"on {device}; keep the float32 model, or --force to quantize anyway")
        log(f"quantize: ordering the layers by {scorer}")
        ordering = language_ordering(folder, record, scorer, seed, progress, block_size)
        order, scores = ordering.layers, ordering.scores
        cache: dict[frozenset, float] = {}

        def validation_bpb(layers) -> float:
            key = frozenset(layers)
            if key not in cache:
                cache[key] = decode_bits_per_byte(build_int4(float_path, list(layers), work / "candidate.onnx", block_size),
                                                  corpus.validation)
            return cache[key]

        baseline = validation_bpb([])
        # bisection maximises an accuracy: the negated bits per byte, inside the ceiling
        allowed = spec.ceiling(baseline) - baseline
        outcome: SearchOutcome = bisect(order, lambda layers: -validation_bpb(layers),
                                        Tolerance("absolute", allowed, spec.text), -baseline)
        chosen = build_int4(float_path, outcome.int8_layers, work / "chosen.onnx", block_size)
        test = {"float32": decode_bits_per_byte(float_path, corpus.test),
                "chosen": decode_bits_per_byte(chosen, corpus.test),
                "all_int4": decode_bits_per_byte(all_int4, corpus.test)}
        log(f"quantize: timing float32, all-int4 and the chosen decode step on {device}")
        latency = time_decode_steps({"float32": float_path, "all_int4": all_int4, "chosen": chosen}, context_length,
                                    device)
        quantized_path = out_dir / QUANTIZED_FILE
        quantized_path.write_bytes(chosen.read_bytes())
    report = {
        "model": str(folder), "device": device, "precision": "int4 weight-only MatMul (MatMulNBits)",
        "block_size": block_size, "tolerance": spec.text, "scorer": scorer, "num_layers": len(weights),
        "int4_layers": outcome.int8_layers, "order": order, "scores": scores, "scorer_info": ordering.info,
        "accuracy_evaluations": outcome.num_evaluations, "max_evaluations": max_bisection_evaluations(len(order)),
        "validation_bpb": {"float32": baseline, "chosen": -outcome.accuracy, "ceiling": spec.ceiling(baseline)},
        "test_bpb": test, "decode_ms": latency, "first_timing_ms": first, "context_length": context_length,
        "quantized_model": str(quantized_path), "forced": force and first["all_int4"] >= first["float32"],
        "wall_s": round(time.time() - started, 2),
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    if record and out_dir.resolve() == folder.resolve():  # the search's record gains both models, side by side
        record["quantization"] = {
            "quantized_model": QUANTIZED_FILE, "report": REPORT_FILE, "tolerance": spec.text,
            "precision": report["precision"], "block_size": block_size, "int4_layers": len(outcome.int8_layers),
            "quantizable_layers": len(order),
            "float32": {"validation_bpb": baseline, "test_bpb": test["float32"], "decode_ms": latency["float32"]},
            "quantized": {"validation_bpb": -outcome.accuracy, "test_bpb": test["chosen"],
                          "decode_ms": latency["chosen"]},
            "latency_device": device}
        (folder / "result.json").write_text(json.dumps(record, indent=2) + "\n")
    return report


def summary(report: dict[str, Any]) -> str:
    val, test, ms = report["validation_bpb"], report["test_bpb"], report["decode_ms"]
    return "\n".join([
        f"quantize: {report['model']} on {report['device']}, 4-bit weight-only MatMul (blocks of "
        f"{report.get('block_size', INT4_BLOCK_SIZE)}), tolerance "
        f"{report['tolerance']}, layers ordered by {report['scorer']}",
        f"int4 layers: {len(report['int4_layers'])} of {report['num_layers']} ({report['accuracy_evaluations']} "
        f"evaluations, bound {report['max_evaluations']})",
        f"validation bits/byte: float32 {val['float32']:.4f}, chosen {val['chosen']:.4f} (ceiling {val['ceiling']:.4f})",
        f"test bits/byte (held out): float32 {test['float32']:.4f}, chosen {test['chosen']:.4f}, all-int4 "
        f"{test['all_int4']:.4f}",
        "decode ms/token: " + ", ".join(f"{name} {value:.3f}" for name, value in ms.items())])
