"""Searching for quantized latency: the profiler setting ``precision``
(catalog devices ``local-cpu-int8`` and ``local-cpu-int4``) against float32
``local-cpu``.

1. A few reference architectures of ``fbnet`` and ``slm`` (decode step after
   512 tokens) exported as float32 and as the models the quantized devices
   time (nas/quantization/timing.py: int8 static QDQ calibrated on random
   input; for slm also int4 weight-only MatMulNBits), all of a space timed
   together in interleaved rounds with one thread: each precision's ms and
   its ratio to float32, measured in the same run.
2. ``nas search --space fbnet`` under the same budget on ``local-cpu`` and on
   ``local-cpu-int8`` (each adapts the default predictor on its own 10
   reference measurements and verifies on its own precision; a fresh
   measurement store): the architecture found, its parameters, estimated
   accuracy and measured latency.
3. With ``--slm-search``, the same for ``nas search --space slm`` on
   ``local-cpu`` and ``local-cpu-int4`` (a short search: few candidates, a
   small token budget).

    nice -n 10 .venv/bin/python experiments/mixed_precision_device.py --budget 5ms
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results_file import machine_line, write_keeping_reading  # noqa: E402  (beside this script)

RESULTS = Path(__file__).resolve().parent / "results" / "mixed_precision_device.md"
DEVICES = {"fbnet": ("local-cpu", "local-cpu-int8"), "slm": ("local-cpu", "local-cpu-int4")}
PRECISIONS = {"fbnet": ("int8",), "slm": ("int8", "int4")}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def float_and_int8(space_name: str, count: int, folder: Path) -> list[dict]:
    """Time ``count`` reference architectures of ``space_name`` as float32 and int8, interleaved."""
    from nas import predictors
    from nas.devices import get_device
    from nas.export import export_arch
    from nas.profilers import make_profiler
    from nas.profilers.onnxruntime import OnnxRuntimeModel
    from nas.profilers.protocol import MeasurementProtocol, time_interleaved
    from nas.quantization.timing import model_for_timing
    from nas.search_space import get_space

    space = get_space(space_name)
    profiler = make_profiler(get_device("local-cpu"))
    runtime = profiler.runtime
    if space_name == "slm":
        from nas.search_space.slm.runtime import SlmTimer
        from nas.slm.latency import reference_archs

        archs = reference_archs()[:count]
        settings = profiler.settings_for(space_name)
        context = settings["context_length"]
        export = lambda arch, path: space.export_for_latency(arch, path, settings)  # noqa: E731
        timer = lambda path: SlmTimer(path, context_length=context, **runtime)  # noqa: E731
    else:
        archs, context = list(predictors.reference_archs(space_name))[:count], None
        export = lambda arch, path: export_arch(space_name, arch, path)  # noqa: E731
        timer = lambda path: OnnxRuntimeModel(path, **runtime)  # noqa: E731
    rows, timers = [], []
    for i, arch in enumerate(archs):
        float_path = export(arch, folder / f"{space_name}_{i}.onnx")
        timers.append(timer(float_path))
        for precision in PRECISIONS[space_name]:
            timers.append(timer(model_for_timing(float_path, precision, runtime, context)))
        rows.append({"arch": space.to_string(arch)})
        log(f"{space_name}: exported {i + 1}/{len(archs)} as float32 and {', '.join(PRECISIONS[space_name])}")
    protocol = MeasurementProtocol.from_settings(dict(get_device("local-cpu").settings, drift_correction=False))
    estimates = time_interleaved(timers, None, protocol)
    width = 1 + len(PRECISIONS[space_name])
    for i, row in enumerate(rows):
        for j, precision in enumerate(("float32",) + PRECISIONS[space_name]):
            row[f"{precision}_ms"] = estimates[width * i + j].latency_ms
    return rows


def parameters(space_name: str, arch: str | None) -> int | None:
    if arch is None:
        return None
    from nas.search_space import get_space

    space = get_space(space_name)
    model = space.build(space.from_string(arch))
    return sum(p.numel() for p in model.parameters())


def fbnet_searches(budget: str, verify: int, store: Path, evaluations: int, devices=DEVICES["fbnet"]) -> list[dict]:
    from nas.search import search_under_budget

    rows = []
    for device in devices:
        log(f"fbnet search on {device} under {budget}")
        started = time.time()
        outcome = search_under_budget("fbnet", device, budget, store=str(store), verify_max=verify, progress=True,
                                      strategy_options={"num_evaluations": evaluations})
        rows.append({"device": device, "status": outcome.status, "arch": outcome.arch, "accuracy": outcome.accuracy,
                     "predicted_ms": outcome.predicted_latency_ms, "measured_ms": outcome.measured_latency_ms,
                     "parameters": parameters("fbnet", outcome.arch), "wall_s": time.time() - started,
                     "verify": verify, "verified_ms": [round(v["measured_latency_ms"], 3) for v in outcome.verification],
                     "verified_predicted_ms": [round(v["predicted_latency_ms"], 3) for v in outcome.verification]})
    return rows


def slm_searches(budget: str, store: Path) -> list[dict]:
    from nas.slm.search import SlmSearchConfig, search_slm
    from nas.slm.training import TrainingConfig

    config = SlmSearchConfig(num_candidates=4, population_size=2, tournament_size=1, finalists=2,
                             training=TrainingConfig(tokens=16_384, eval_bytes=8_192), test_bytes=16_384)
    rows = []
    for device in DEVICES["slm"]:
        log(f"slm search on {device} under {budget}")
        started = time.time()
        with tempfile.TemporaryDirectory(prefix="nas-slm-int8-") as work:
            outcome = search_slm(device, budget, config=config, store=str(store), work_dir=work)
        rows.append({"device": device, "status": outcome.status, "arch": outcome.arch, "val_bpb": outcome.val_bpb,
                     "test_bpb": outcome.test_bpb, "predicted_ms": outcome.predicted_ms,
                     "measured_ms": outcome.measured_ms, "width": outcome.width, "wall_s": time.time() - started})
    return rows


def fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def tables(record: dict) -> str:
    lines = ["# Searching for quantized latency: local-cpu (float32) against local-cpu-int8 and local-cpu-int4", "",
             record["machine"], "",
             "Reproduce: `nice -n 10 .venv/bin/python experiments/mixed_precision_device.py " + record["command"] + "`",
             "", "int8 models are ONNX Runtime static QDQ quantizations calibrated on the profiler's random input "
             "(int8 kernels do the same work whatever the values, so this is the int8 latency; accuracy is "
             "`nas quantize`'s business); int4 models have every constant-weight MatMul as 4-bit weight-only "
             "MatMulNBits. Latency: median of per-run timings, 1 thread, batch 1; all precisions of a space timed "
             "together in interleaved rounds, so each ratio comes from one run.", ""]
    for space_name, rows in record["per_arch"].items():
        what = "decode ms/token after 512 tokens" if space_name == "slm" else "ms per image"
        precisions = PRECISIONS[space_name]
        lines += [f"## {space_name}: reference architectures, float32 vs {' and '.join(precisions)} ({what})", "",
                  "| architecture | float32 ms | " + " | ".join(f"{p} ms | {p} / float32" for p in precisions) + " |",
                  "|---|---|" + "---|---|" * len(precisions)]
        for row in rows:
            lines.append(f"| `{row['arch']}` | {row['float32_ms']:.3f} | " + " | ".join(
                f"{row[p + '_ms']:.3f} | {row[p + '_ms'] / row['float32_ms']:.2f}" for p in precisions) + " |")
        lines.append("")
    if record.get("fbnet_search"):
        lines += [f"## fbnet: the same budget ({record['budget']}) searched on each device", "",
                  "| device | status | architecture | parameters | estimated accuracy % | predicted ms | measured ms "
                  "(its precision) | verified candidates, measured ms (predicted) | wall s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in record["fbnet_search"]:
            trail = ", ".join(f"{m:.2f} ({p:.2f})" for m, p in zip(row.get("verified_ms", []),
                                                                   row.get("verified_predicted_ms", [])))
            lines.append(f"| {row['device']} | {row['status']} | `{row['arch']}` | {fmt(row['parameters'], ',')} | "
                         f"{fmt(row['accuracy'], '.2f')} | {fmt(row['predicted_ms'])} | {fmt(row['measured_ms'])} | "
                         f"{trail or '-'} | {row['wall_s']:.0f} |")
        lines.append("")
    if record.get("slm_search"):
        lines += [f"## slm: the same budget ({record['slm_budget']}) searched on each device", "",
                  "| device | status | architecture | width | validation bits/byte | test bits/byte | predicted ms | "
                  "measured ms | wall s |", "|---|---|---|---|---|---|---|---|---|"]
        for row in record["slm_search"]:
            lines.append(f"| {row['device']} | {row['status']} | `{row['arch']}` | {fmt(row['width'], 'd')} | "
                         f"{fmt(row['val_bpb'])} | {fmt(row['test_bpb'])} | {fmt(row['predicted_ms'])} | "
                         f"{fmt(row['measured_ms'])} | {row['wall_s']:.0f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=5, help="reference architectures per space timed both ways")
    parser.add_argument("--budget", default="5ms", help="fbnet search budget")
    parser.add_argument("--verify", type=int, default=5, help="verification measurements per search")
    parser.add_argument("--evaluations", type=int, default=60,
                        help="architectures each fbnet search scores (each a supernet run on this shared machine)")
    parser.add_argument("--no-search", action="store_true", help="only the per-architecture table")
    parser.add_argument("--redo", metavar="DEVICE", help="search fbnet again on this device only")
    parser.add_argument("--slm-search", metavar="BUDGET", help="also search slm under this budget on both devices")
    parser.add_argument("--record", default=str(Path(tempfile.gettempdir()) / "mixed_precision_device.json"),
                        help="JSON of what was measured, kept between runs (parts already done are skipped)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    record_path = Path(args.record)
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record.setdefault("per_arch", {})
    with tempfile.TemporaryDirectory(prefix="nas-int8-device-") as folder:
        for space_name in ("fbnet", "slm"):
            if space_name not in record["per_arch"]:
                record["per_arch"][space_name] = float_and_int8(space_name, args.archs, Path(folder))
                record_path.write_text(json.dumps(record, indent=1))
        store = Path(folder) / "measurements.db"
        if not args.no_search and "fbnet_search" not in record:
            record["fbnet_search"] = fbnet_searches(args.budget, args.verify, store, args.evaluations)
            record["budget"] = args.budget
            record_path.write_text(json.dumps(record, indent=1))
        if args.redo:  # search again on one device (e.g. with more verification), keeping the other's row
            [row] = fbnet_searches(record["budget"], args.verify, store, args.evaluations, [args.redo])
            record["fbnet_search"] = [row if r["device"] == args.redo else r for r in record["fbnet_search"]]
            record_path.write_text(json.dumps(record, indent=1))
        if args.slm_search and "slm_search" not in record:
            record["slm_search"], record["slm_budget"] = slm_searches(args.slm_search, store), args.slm_search
            record_path.write_text(json.dumps(record, indent=1))
    record["machine"] = machine_line()
    record["command"] = " ".join(argv if argv is not None else sys.argv[1:])
    record_path.write_text(json.dumps(record, indent=1))
    text = tables(record)
    print(text)
    write_keeping_reading(RESULTS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
