"""Mixed-precision int8 quantization on Fashion-MNIST: which sensitivity
ordering keeps the most accuracy per int8 layer and per millisecond, and
what bisection inside a tolerance returns, all measured with ONNX Runtime.

For each trained CNN (experiments/mixed_precision_models.py: a ResNet-style
and a MobileNetV2-style network) with fixed splits (256 calibration images
from the training set, 5,000 validation images held out of it, the 10,000
official test images):

1. the layers are ordered by every scorer (``random`` over several seeds,
   ``weight_error``, ``hessian``, ``hessian_interlayer``,
   ``measured_greedy``), and by ``hessian_interlayer``'s own terms without
   its cross-layer blocks (``layerwise``: what the inter-layer term is
   measured against) and with them as estimated, not shrunk by their
   standard error over the calibration batches
   (``hessian_interlayer_unshrunk``);
2. accuracy versus number of int8 layers: for each ordering, the first k
   layers int8 at a grid of k, ONNX Runtime accuracy on the test split;
   area under that curve (mean accuracy over the grid's inner points);
3. accuracy versus latency: every configuration of step 2 is timed on
   local-cpu (ONNX Runtime, 1 thread, batch 1, all configurations of a model
   interleaved in the same rounds); accuracy at the same latency is read off
   each ordering's curve at 25/50/75% of the way from all-int8 to float32;
4. bisection at 0.5% and 1% tolerance (validation split), and the
   one-layer-at-a-time fallback: evaluations, test accuracy, latency.

    nice -n 10 .venv/bin/python experiments/mixed_precision_models.py --work /tmp/mpwork
    .venv/bin/python experiments/mixed_precision.py --work /tmp/mpwork
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.quantization.bisection import SEARCHES, Tolerance, max_bisection_evaluations  # noqa: E402
from nas.quantization.data import load_quantization_data  # noqa: E402
from nas.quantization.onnx_quant import integer_kernels  # noqa: E402
from nas.quantization.pipeline import OnnxClassifier, Quantizer, cpu_description, measure_latencies  # noqa: E402
from nas.quantization.scorers import interlayer_order, second_order_orders  # noqa: E402
from mixed_precision_bootstrap import LEVEL, RESAMPLES, interval_text, paired_bootstrap  # noqa: E402
from results_file import write_keeping_reading  # noqa: E402  (beside this script)

RESULTS = Path(__file__).resolve().parent / "results" / "mixed_precision.md"
SCORERS = ["weight_error", "hessian", "hessian_interlayer", "measured_greedy"]
#: orders derived from a scorer's kept terms (no further work on the model), shown with the scorers
DERIVED = ["layerwise", "hessian_interlayer_unshrunk"]
TOLERANCES = ["0.5%", "1%"]
#: the comparison the paired bootstrap over test images is run for: the second minus the first
PAIRED = ("hessian", "hessian_interlayer")
#: accuracy at the same latency is read at these shares of the way from all-int8 to float32
LATENCY_SHARES = (0.25, 0.5, 0.75)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def grid(n: int, points: int) -> list[int]:
    return sorted({int(round(i * n / points)) for i in range(points + 1)})


def auc(curve: dict[int, float], n: int) -> float:
    """Mean accuracy (%) over the inner grid points (k = 0 and k = N are the same for every ordering)."""
    inner = [acc for k, acc in curve.items() if 0 < k < n]
    return float(np.mean(inner))


def accuracy_at_latency(points: list[tuple[float, float]], latency_ms: float) -> float:
    """Accuracy interpolated on an ordering's (latency_ms, accuracy) points, upper envelope by latency."""
    points = sorted(points)
    lat = np.array([p[0] for p in points])
    acc = np.maximum.accumulate(np.array([p[1] for p in points]))  # a slower point is never worth less
    return float(np.interp(latency_ms, lat, acc))


def run_model(name: str, work: Path, data, seeds: list[int], points: int) -> dict:
    cache = work / f"{name}.benchmark.json"
    record = json.loads(cache.read_text()) if cache.is_file() else {}
    with tempfile.TemporaryDirectory(prefix=f"nas-mp-{name}-") as folder:
        quantizer = Quantizer(work / f"{name}.onnx", data, folder, progress=True)
        n = len(quantizer.layers)
        record.update(model=name, num_layers=n, not_fused=quantizer.not_fused,
                      training=json.loads((work / f"{name}.json").read_text()))
        log(f"{name}: {n} int8-capable layers")
        orderings = record.setdefault("orderings", {})
        wanted = [f"random:{s}" for s in seeds] + SCORERS
        for key in wanted:
            if key in orderings:
                continue
            scorer, _, seed = key.partition(":")
            start = time.time()
            ordering = quantizer.order(scorer, int(seed or 0))
            orderings[key] = {"layers": ordering.layers, "info": ordering.info, "seconds": time.time() - start}
            log(f"{name}: {key} ordered in {time.time() - start:.1f} s")
            cache.write_text(json.dumps(record, indent=1))
        info = orderings["hessian_interlayer"]["info"]
        # the block matrix is indexed in the problem's layer order, the quantizer's
        derived = {"layerwise": second_order_orders(quantizer.layers, np.array(info["first_order"]),
                                                    np.array(info["block"]))["layerwise"],
                   "hessian_interlayer_unshrunk": interlayer_order(quantizer.layers, np.array(info["block"]))[0]}
        for key, layers in derived.items():
            if orderings.get(key, {}).get("layers") != layers:
                orderings[key] = {"layers": layers, "info": {"from": "hessian_interlayer"}, "seconds": 0.0}
                record.setdefault("curves", {}).pop(key, None)

        ks = grid(n, points)
        configs: dict[str, list[str]] = {}  # config id -> int8 layers

        def config(layers: list[str]) -> str:
            key = ",".join(sorted(layers))
            configs.setdefault(key, list(layers))
            return key

        curves = record.setdefault("curves", {})
        for key in SCORERS + DERIVED + [k for k in wanted if k not in SCORERS]:  # the scorers' curves first
            order = orderings[key]["layers"]
            curve = curves.setdefault(key, {})
            for k in ks:
                if str(k) not in curve:
                    curve[str(k)] = quantizer.accuracy(order[:k], "test")
                config(order[:k])
            log(f"{name}: {key} curve " + " ".join(f"{k}:{curve[str(k)]:.2f}" for k in ks))
            cache.write_text(json.dumps(record, indent=1))

        # which test images each configuration of the compared curves gets right: the bootstrap's items
        correct = record.setdefault("test_correct", {})
        for key in PAIRED:
            for k in ks:
                layers = orderings[key]["layers"][:k]
                config_id = ",".join(sorted(layers))
                if config_id not in correct:
                    path = quantizer.build(layers)
                    hits = OnnxClassifier(path).logits(data.test.images).argmax(axis=1) == data.test.labels
                    path.unlink()
                    correct[config_id] = "".join("1" if hit else "0" for hit in hits)
                    if abs(100.0 * hits.mean() - curves[key][str(k)]) > 1e-9:
                        log(f"{name}: {key} k={k} gives {100.0 * hits.mean():.2f}% now, {curves[key][str(k)]:.2f}% "
                            f"kept")
        cache.write_text(json.dumps(record, indent=1))

        searches = record.setdefault("searches", {})
        baseline = quantizer.accuracy([])
        record["float_validation"] = baseline
        for tolerance in TOLERANCES:
            spec = Tolerance.parse(tolerance)
            for scorer, method in [("hessian", "bisection"), ("hessian_interlayer", "bisection"),
                                   ("measured_greedy", "bisection"), ("hessian", "greedy_fallback")]:
                key = f"{tolerance} {scorer} {method}"
                if key not in searches:
                    outcome = SEARCHES[method](orderings[scorer]["layers"], quantizer.accuracy, spec, baseline)
                    searches[key] = {"k": outcome.k, "evaluations": outcome.num_evaluations,
                                     "validation": outcome.accuracy, "layers": outcome.int8_layers,
                                     "test": quantizer.accuracy(outcome.int8_layers, "test")}
                config(searches[key]["layers"])
        cache.write_text(json.dumps(record, indent=1))

        # every configuration of this model timed together (interleaved rounds)
        if "latency_ms" not in record or set(record["latency_ms"]) != set(configs):
            paths = {key: quantizer.build(layers, f"config_{i}.onnx") for i, (key, layers) in
                     enumerate(configs.items())}
            unfused = {key: [l for l, op in integer_kernels(path, layers).items() if op is None]
                       for (key, path), layers in zip(paths.items(), configs.values())}
            record["unfused_in_configs"] = sum(len(v) for v in unfused.values())
            log(f"{name}: timing {len(paths)} configurations on local-cpu")
            latency, spread = measure_latencies(paths, "local-cpu")
            record["latency_ms"], record["spread_ms"] = latency, spread
        record["config_keys"] = {key: ",".join(sorted(layers)) for key, layers in configs.items()}
        record["load_average"] = os.getloadavg()[0]
        cache.write_text(json.dumps(record, indent=1))
    return record


def latency_of(record: dict, layers: list[str]) -> float:
    return record["latency_ms"][",".join(sorted(layers))]


def paired_differences(record: dict) -> dict[str, tuple[float, float, float]]:
    """``PAIRED[1]`` minus ``PAIRED[0]`` (test accuracy, points) by AUC and at the same latency (mean over
    :data:`LATENCY_SHARES`), each with its paired bootstrap interval over the test images."""
    n, ks = record["num_layers"], sorted(int(k) for k in record["curves"]["weight_error"])
    orders = [record["orderings"][key]["layers"] for key in PAIRED]
    items = {",".join(sorted(order[:k])): 100.0 * (np.frombuffer(record["test_correct"][
        ",".join(sorted(order[:k]))].encode(), dtype=np.uint8) - ord("0")) for order in orders for k in ks}
    float_ms, int8_ms = latency_of(record, []), latency_of(record, record["orderings"]["weight_error"]["layers"])

    def curve(order, values):
        return {k: values[",".join(sorted(order[:k]))] for k in ks}

    def at_latency(order, values):
        points = [(latency_of(record, order[:k]), acc) for k, acc in curve(order, values).items()]
        return np.mean([accuracy_at_latency(points, int8_ms + f * (float_ms - int8_ms)) for f in LATENCY_SHARES])

    first, second = orders
    return {"auc": paired_bootstrap(items, lambda v: auc(curve(second, v), n) - auc(curve(first, v), n)),
            "at_latency": paired_bootstrap(items, lambda v: float(at_latency(second, v) - at_latency(first, v)))}


def tables(records: list[dict]) -> str:
    machine = cpu_description()
    lines = ["# Mixed-precision int8 quantization (Fashion-MNIST, ONNX Runtime, local-cpu)", "",
             f"CPU: {machine['cpu']}; ISA: {', '.join(machine['isa'])}; {machine['cores']} cores; "
             f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}. Latency: ONNX Runtime "
             f"{__import__('onnxruntime').__version__}, 1 thread, batch 1, all configurations of a model "
             f"interleaved (median of per-run timings, the profilers' statistic). Splits: 256 calibration, 5,000 validation, 10,000 "
             f"test images.", "",
             "Reproduce: `python3 experiments/mixed_precision_models.py --work /tmp/mpwork2 --device cuda --epochs 15 "
             "--train-images 55000 --threads 8` on a GPU machine (weights only; about 3 minutes on one H100), then "
             "`nice -n 19 .venv/bin/python experiments/mixed_precision_models.py --work /tmp/mpwork2` here (exports "
             "the ONNX models) and `nice -n 19 .venv/bin/python experiments/mixed_precision.py --work /tmp/mpwork2`.",
             ""]
    for record in records:
        n, name = record["num_layers"], record["model"]
        orderings = record["orderings"]
        ks = sorted(int(k) for k in record["curves"]["weight_error"])
        float_ms, int8_ms = latency_of(record, []), latency_of(record, orderings["weight_error"]["layers"])
        training = record["training"]
        lines += [f"## {name}: {n} int8-capable layers", "",
                  f"Trained {training['epochs']} epochs on {training['train_images']} images: float32 test "
                  f"accuracy {record['curves']['weight_error']['0']:.2f}%; all-int8 "
                  f"{record['curves']['weight_error'][str(n)]:.2f}%. Latency float32 {float_ms:.3f} ms, all-int8 "
                  f"{int8_ms:.3f} ms ({1 - int8_ms / float_ms:.1%} lower). "
                  + (f"Not fused, left float: {', '.join(record['not_fused'])}." if record["not_fused"] else ""),
                  "", "### Test accuracy (%) with the first k layers of each ordering in int8", ""]
        timed = set(record["latency_ms"])
        randoms = sorted((k for k in record["curves"] if k.startswith("random:") and all(
            ",".join(sorted(orderings[k]["layers"][:int(j)])) in timed for j in record["curves"][k])),
            key=lambda k: int(k[7:]))  # the random orderings of the last run
        keys = randoms + SCORERS + DERIVED
        header = "| ordering | " + " | ".join(f"k={k}" for k in ks) + " | AUC (inner mean) | ordering s |"
        lines += [header, "|" + "---|" * (len(ks) + 3)]
        for key in keys:
            curve = record["curves"][key]
            lines.append(f"| {key} | " + " | ".join(f"{curve[str(k)]:.2f}" for k in ks)
                         + f" | {auc({int(k): v for k, v in curve.items()}, n):.2f} | "
                         f"{orderings[key]['seconds']:.1f} |")
        random_aucs = [auc({int(k): v for k, v in record["curves"][key].items()}, n) for key in randoms]
        lines += ["", f"Random orderings' median AUC: {np.median(random_aucs):.2f}."]
        lines += ["", "### Accuracy at the same latency (test %, interpolated on each ordering's curve)", "",
                  "| ordering | " + " | ".join(f"{f:.0%} of the way to float ({int8_ms + f * (float_ms - int8_ms):.3f} ms)"
                                               for f in LATENCY_SHARES) + " |", "|---|---|---|---|"]
        for key in keys:
            pts = [(latency_of(record, orderings[key]["layers"][:int(k)]), acc)
                   for k, acc in record["curves"][key].items()]
            lines.append(f"| {key} | " + " | ".join(
                f"{accuracy_at_latency(pts, int8_ms + f * (float_ms - int8_ms)):.2f}" for f in LATENCY_SHARES)
                + " |")
        boot = paired_differences(record)
        lines += ["", f"### `{PAIRED[1]}` minus `{PAIRED[0]}`, paired bootstrap over the 10,000 test images "
                      f"({RESAMPLES} resamples, {LEVEL:.0%} percentile interval; positive: `{PAIRED[1]}` better)", "",
                  "| measure | difference (test accuracy, points) [90% interval] |", "|---|---|",
                  f"| AUC | {interval_text(*boot['auc'], digits=3)} |",
                  f"| at the same latency (mean over 25/50/75% of the way) | "
                  f"{interval_text(*boot['at_latency'], digits=3)} |"]
        lines += ["", "### Latency (ms) of each curve point", "",
                  "| ordering | " + " | ".join(f"k={k}" for k in ks) + " |", "|" + "---|" * (len(ks) + 1)]
        for key in keys:
            lines.append(f"| {key} | " + " | ".join(
                f"{latency_of(record, orderings[key]['layers'][:k]):.3f}" for k in ks) + " |")
        lines += ["", f"### Searches (validation split decides; float32 validation {record['float_validation']:.2f}%;"
                  f" bisection bound ceil(log2(N+1))+1 = {max_bisection_evaluations(n)})", "",
                  "| tolerance | ordering | search | evaluations | int8 layers | validation % | test % | test drop "
                  "(pt) | latency ms | lower than float32 | / all-int8 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        float_test = record["curves"]["weight_error"]["0"]
        for key, s in record["searches"].items():
            tolerance, scorer, method = key.split()
            ms = latency_of(record, s["layers"])
            lines.append(f"| {tolerance} | {scorer} | {method} | {s['evaluations']} | {s['k']}/{n} | "
                         f"{s['validation']:.2f} | {s['test']:.2f} | {float_test - s['test']:.2f} | {ms:.3f} | "
                         f"{1 - ms / float_ms:.1%} | {ms / int8_ms:.2f}x |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder of the trained models (mixed_precision_models.py)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", nargs="+", default=["resnet", "mobilenetv2"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--points", type=int, default=5, help="grid intervals of k (default 5: k = 0, N/5, ..., N)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # a shared 2-core machine: one thread is fastest for the scorers' small batches
    work = Path(args.work)
    data = load_quantization_data("fashion-mnist", args.data_dir, input_shape=(1, 28, 28))
    records = [run_model(name, work, data, args.seeds, args.points) for name in args.models
               if (work / f"{name}.onnx").is_file()]
    text = tables(records)
    print(text)
    write_keeping_reading(RESULTS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
