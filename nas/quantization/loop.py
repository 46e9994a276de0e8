"""The one loop, search -> quantize -> verify: after ``nas search`` has
trained and written its network, :func:`quantize_search_result` quantizes it
inside an accuracy tolerance (:func:`~nas.quantization.pipeline.quantize_model`),
times float32 and quantized models on the search's device, and records both
in the search's ``result.json`` and ``summary.txt``.

:func:`check_search_quantizable` is the up-front check: a search whose
strategy never trains the network it returns, or one with nowhere to write
the quantized model, is refused before any work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nas.errors import UserInputError
from nas.quantization.bisection import Tolerance
from nas.quantization.data import DATASETS
from nas.quantization.pipeline import (LOCAL_PROFILER_KINDS, QUANTIZED_FILE, REPORT_FILE, QuantizationResult,
                                       quantize_model)
from nas.quantization.scorers import DEFAULT_SCORER, get_scorer

#: the key of ``result.json`` that holds what quantization found
RESULT_KEY = "quantization"


def check_search_quantizable(strategy: str, trains: bool, out: str | os.PathLike | None, tolerance: str,
                             data: str | None = None, scorer: str = DEFAULT_SCORER) -> Tolerance:
    """Refuse ``--quantize`` before the search when it cannot end in a quantized model: a strategy
    that does not train the network it returns (``trains``), no ``out`` folder, a bad tolerance,
    data quantization cannot read, an unknown scorer. Returns the parsed tolerance."""
    if not trains:
        raise UserInputError(f"--quantize needs the trained weights of the network the search returns, and strategy "
                             f"{strategy!r} only ranks architectures (its model would be freshly initialised, never "
                             f"trained): search with a strategy that trains it (--strategy proxyless), or train the "
                             f"model yourself and run 'nas quantize --model MODEL.onnx'")
    if out is None:
        raise UserInputError("--quantize writes the quantized model beside the search's model: add --out DIR")
    if data is not None and data not in DATASETS:
        raise UserInputError(f"--quantize reads the network's training data, and quantization reads "
                             f"{', '.join(DATASETS)}, not {data!r}")
    get_scorer(scorer)
    return Tolerance.parse(tolerance)


def quantize_search_result(out_dir: str | os.PathLike, *, data: str, data_dir: str | os.PathLike | None = None,
                           device: str = "local-cpu", tolerance: str = "1%", scorer: str = DEFAULT_SCORER,
                           seed: int = 0, progress: bool = False) -> QuantizationResult:
    """Quantize the trained network a search wrote to ``out_dir`` (``model.onnx`` and
    ``result.json``) on the data it was trained on, and add what was found to ``result.json``
    under ``quantization`` (float32 and quantized accuracy, %, and latency on ``device``, ms)
    and to ``summary.txt``.

    Latencies are measured when ``device`` is timed by ONNX Runtime on this machine; for any
    other device the record says why they were not.
    """
    from nas.devices import get_device

    folder = Path(out_dir)
    result_path = folder / "result.json"
    if not result_path.is_file():
        raise UserInputError(f"{str(folder)!r} holds no result.json: pass the --out folder of a finished search")
    entry = get_device(device)
    timed = entry.profiler_kind in LOCAL_PROFILER_KINDS
    result = quantize_model(folder, data, data_dir, device=entry.name, tolerance=tolerance, scorer=scorer,
                            seed=seed, out=folder, measure_latency=timed, progress=progress)
    record = json.loads(result_path.read_text())
    record[RESULT_KEY] = search_record(result, None if timed else (
        f"{entry.name} is reached by the {entry.profiler_kind!r} profiler; quantized models are timed with "
        f"ONNX Runtime on this machine (a device of kind {', '.join(LOCAL_PROFILER_KINDS)})"))
    result_path.write_text(json.dumps(record, indent=2) + "\n")
    summary = folder / "summary.txt"
    text = summary.read_text() if summary.is_file() else ""
    summary.write_text(text + "\n" + result.summary() + "\n")
    return result


def search_record(result: QuantizationResult, not_timed: str | None = None) -> dict[str, Any]:
    """The ``quantization`` block of a search's ``result.json``: accuracies (%) and latencies (ms)
    of the float32 and the quantized model side by side."""
    acc, lat = result.accuracy, result.latency_ms
    return {
        "quantized_model": QUANTIZED_FILE, "report": REPORT_FILE, "dataset": result.dataset,
        "tolerance": result.tolerance, "scorer": result.scorer, "precision": result.precision,
        "int8_layers": len(result.search.int8_layers), "quantizable_layers": len(result.layers) + len(result.not_fused),
        "accuracy_evaluations": result.search.num_evaluations,
        "float32": {"validation_accuracy": acc["float32_validation"], "test_accuracy": acc["float32_test"],
                    "latency_ms": lat.get("float32")},
        "quantized": {"validation_accuracy": acc["chosen_validation"], "test_accuracy": acc["chosen_test"],
                      "latency_ms": lat.get("chosen")},
        "all_int8": {"test_accuracy": acc.get("all_int8_test"), "latency_ms": lat.get("all_int8")},
        "latency_device": result.device if lat else None,
        "latency_not_measured": not_timed,
        "latency_reduction_vs_float32": None if result.speedup is None else 1 - 1 / result.speedup,
    }
