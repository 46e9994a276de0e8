"""4-bit weight-only MatMul on small language models from the ``slm`` space:
which layers to quantize first, by sensitivity ordering, measured with ONNX
Runtime.

The models: ``experiments/mixed_precision_models.py --work WORK --slm ARCH``
(trained on the shipped corpus; decode graph in ``WORK/slm/decode.onnx``).
For each:

1. the decode graph's MatMul layers ordered by each scorer of
   :mod:`nas.quantization.scorers` on the language model's next-byte loss
   (:mod:`nas.quantization.language_sensitivity`; calibration windows of
   the validation split): ``weight_error``, ``hessian``,
   ``hessian_interlayer``, ``measured_greedy`` (the measured KL divergence
   from the float model of each layer added to those already chosen, in
   PyTorch with the int4 weights), and ``random`` over several seeds; beside them
   the orders ``hessian_interlayer``'s own terms give without its
   cross-layer blocks (``layerwise``: what the inter-layer term is measured
   against) and with its cross-layer terms as estimated, not shrunk by
   their standard error (``hessian_interlayer_unshrunk``);
   ``hessian_interlayer`` and ``layerwise`` on the usual 16 calibration
   windows (one batch: nothing to shrink by; ``..._16_windows``) against
   the larger calibration set of ``--interlayer-windows``; from the
   16-window terms, the orders
   with the first-order term ``g.dW`` added (``..._with_gradient``); and two
   latency-aware orders, ``hessian`` and ``hessian_interlayer``'s 16-window
   increments divided by the layer's weight count (``..._per_weight``:
   4-bit weights save time in proportion to the weights read);
2. test bits per byte with the first k layers in int4 at a grid of k, for
   each ordering (ONNX Runtime, the quantized decode graph stepped token by
   token over fixed windows of the test split); the area under the curve
   (mean over the inner grid points, lower is better);
3. every configuration's decode ms/token after 512 tokens on local-cpu, all
   interleaved in the same rounds; bits per byte at the same latency (the
   best point of each ordering's curve within each of a few budgets);
4. bisection and the one-layer-at-a-time fallback over each scorer's order
   at bits-per-byte tolerances, decided on the validation split: evaluations,
   test bits per byte, latency against float32 and all-int4.

    nice -n 19 .venv/bin/python experiments/mixed_precision_language.py --work /tmp/mpwork2 /tmp/mpwork3

``--block-size N`` runs everything with 4-bit blocks of N weights (results in
``mixed_precision_language_blockN.md``, records in
``WORK/slm/language.benchmark.blockN.json``). For ``hessian_interlayer`` minus
``hessian`` a paired bootstrap over the test windows gives the 90% interval of
the AUC and at-latency differences (:mod:`mixed_precision_bootstrap`); the
primary at-latency measure reads each configuration's latency from an additive
fit over every timed configuration.

``hessian`` and ``measured_greedy`` score on 16 calibration windows x 128
bytes of the validation split; ``hessian_interlayer`` averages its block
matrix over ``--interlayer-windows`` windows in batches of 16.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.quantization.bisection import SEARCHES, Tolerance, max_bisection_evaluations  # noqa: E402
from nas.quantization.language import (BitsTolerance, build_int4, decode_bits_per_byte,  # noqa: E402
                                       decode_window_bits, int4_error, matmul_weights, time_decode_steps)
from nas.quantization.timing import INT4_BLOCK_SIZE, INT4_BLOCK_SIZES  # noqa: E402
from mixed_precision_bootstrap import LEVEL, RESAMPLES, interval_text, paired_bootstrap  # noqa: E402
from results_file import machine_line, write_keeping_reading  # noqa: E402  (beside this script)

RESULTS = Path(__file__).resolve().parent / "results" / "mixed_precision_language.md"
TOLERANCES = ["0.02bpb", "0.05bpb", "2%"]
#: orderings computed by the scorers on the model in PyTorch: (scorer, calibration windows; None: --interlayer-windows)
MODEL_SCORERS = {"hessian": ("hessian", 16), "hessian_interlayer": ("hessian_interlayer", None),
                 "hessian_interlayer_16_windows": ("hessian_interlayer", 16),
                 "measured_greedy": ("measured_greedy", 16)}
#: the searches run over each of these orders
SEARCH_ORDERINGS = ("weight_error", "hessian", "hessian_interlayer")
#: orders from hessian_interlayer's 16-window first-order terms and block matrix (no further Hessian-vector
#: products): with the gradient term
VARIANTS = ("interlayer_with_gradient", "layerwise_with_gradient")
#: the rows of the summary table
SUMMARY = ("weight_error", "hessian", "layerwise", "hessian_interlayer", "hessian_interlayer_unshrunk",
           "layerwise_16_windows",
           "hessian_interlayer_16_windows", "layerwise_with_gradient", "interlayer_with_gradient", "measured_greedy",
           "hessian_per_weight", "interlayer_per_weight")
#: the comparison the paired bootstrap over test windows is run for: the second minus the first
PAIRED = ("hessian", "hessian_interlayer")
#: the bootstrap's measures, as the tables name them
BOOTSTRAP_MEASURES = (("auc", "AUC"), ("at_fitted", "at the same latency, fitted (primary)"),
                      ("at_latency", "at the same latency, as timed"))
#: latency budgets for "bits per byte at the same latency", as shares of the way from all-int4 to float32
BUDGET_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
VALIDATION_WINDOWS = (16, 96)  # what nas quantize decides on (nas.quantization.language.WINDOWS, CONTEXT)
#: what each scorer's ordering cost, as its info records it
COSTS = (("probes", "Hutchinson probes"), ("hessian_vector_products", "Hessian-vector products"),
         ("simulated_evaluations", "simulated evaluations"))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def grid(n: int, points: int) -> list[int]:
    return sorted({int(round(i * n / points)) for i in range(points + 1)})


def config_key(layers) -> str:
    return ",".join(sorted(layers))


def load_model(folder: Path):
    import torch

    from nas.search_space import get_space

    space = get_space("slm")
    model = space.build(space.from_string(json.loads((folder / "slm.json").read_text())["arch"]))
    model.load_state_dict(torch.load(folder / "slm.pt", map_location="cpu", weights_only=True))
    return model.eval()


def scorer_orderings(folder: Path, record: dict, corpus, seeds: list[int],
                     interlayer_windows: int, block_size: int = INT4_BLOCK_SIZE) -> dict[str, list[str]]:
    """Every ordering of the benchmark; the model's scorers run once and are kept in ``record``."""
    import onnx

    from nas.quantization.language_sensitivity import language_sensitivity_problem
    from nas.quantization.scorers import get_scorer, greedy_order, interlayer_order, second_order_orders

    weights = matmul_weights(onnx.load(str(folder / "decode.onnx")))
    scores = {name: int4_error(w, block_size) for name, w in weights.items()}
    orderings = {"weight_error": sorted(weights, key=lambda name: scores[name])}
    kept = record.setdefault("scorers", {})
    old = kept.get("hessian_interlayer", {}).get("info", {})
    if "block" in old and "calibration_windows" not in old:  # kept before the windows were recorded: 16 of them
        old["calibration_windows"] = 16
        kept.setdefault("hessian_interlayer_16_windows", kept.pop("hessian_interlayer"))
    runs = {key: (scorer, windows or interlayer_windows) for key, (scorer, windows) in MODEL_SCORERS.items()}
    missing = [key for key, (_, windows) in runs.items()
               if key not in kept or kept[key]["info"].get("calibration_windows", 16) != windows]
    model, problems = None, {}
    for key in missing:
        scorer, windows = runs[key]
        if windows not in problems:
            model = model or load_model(folder)
            problems[windows] = language_sensitivity_problem(model, folder / "decode.onnx", corpus.validation,
                                                             windows=windows, progress=True, block_size=block_size)
        started = time.time()
        ordering = get_scorer(scorer).order(problems[windows])
        kept[key] = {"layers": ordering.layers, "scores": ordering.scores,
                     "info": {**ordering.info, "calibration_windows": windows},
                     "wall_s": round(time.time() - started, 1)}
        log(f"{folder.name}: {key} in {kept[key]['wall_s']} s")
    info = kept["hessian_interlayer"]["info"]
    if info.get("calibration_batches", 1) > 1 and "cross_terms" not in info:
        # kept before the cross-layer terms were shrunk: the order again from the same terms, no new products
        kept["hessian_interlayer"]["layers"], kept["hessian_interlayer"]["scores"] = interlayer_order(
            list(weights), np.array(info["block"]), np.array(info["block_standard_error"]))
        info["cross_terms"] = "shrunk"
    for key in MODEL_SCORERS:
        orderings[key] = kept[key]["layers"]
    orderings["hessian_interlayer_unshrunk"] = interlayer_order(list(weights), np.array(info["block"]))[0]
    for key, suffix in (("hessian_interlayer", ""), ("hessian_interlayer_16_windows", "_16_windows")):
        terms = second_order_orders(list(weights), np.array(kept[key]["info"]["first_order"]),
                                    np.array(kept[key]["info"]["block"]))
        orderings["layerwise" + suffix] = terms["layerwise"]
    info = kept["hessian_interlayer_16_windows"]["info"]
    variants = second_order_orders(list(weights), np.array(info["first_order"]), np.array(info["block"]))
    for variant in VARIANTS:
        orderings[variant] = variants[variant]
    # latency-aware: 4-bit weights save time in proportion to the weights read, so the loss per weight decides
    size = {name: w.size for name, w in weights.items()}
    position = {name: i for i, name in enumerate(weights)}
    hessian = kept["hessian"]["scores"]
    orderings["hessian_per_weight"] = sorted(weights, key=lambda name: (hessian[name] / size[name], position[name]))
    block = np.array(info["block"])
    orderings["interlayer_per_weight"] = greedy_order(list(weights), lambda chosen, name: (
        0.5 * block[position[name], position[name]] + sum(block[position[name], position[c]] for c in chosen))
        / size[name])[0]
    for seed in seeds:
        orderings[f"random:{seed}"] = [str(x) for x in np.random.default_rng(seed).permutation(list(weights))]
    return orderings


def cache_path(folder: Path, block_size: int) -> Path:
    """The benchmark's record of one model at one block size (the default's keeps its old name)."""
    return folder / ("language.benchmark.json" if block_size == INT4_BLOCK_SIZE else
                     f"language.benchmark.block{block_size}.json")


def run(work: Path, seeds: list[int], points: int, test_windows: tuple[int, int], interlayer_windows: int,
        block_size: int = INT4_BLOCK_SIZE) -> dict:
    from nas.slm.corpus import load_corpus

    folder = work / "slm"
    decode = folder / "decode.onnx"
    cache = cache_path(folder, block_size)
    record = json.loads(cache.read_text()) if cache.is_file() else {}
    record["training"] = json.loads((folder / "slm.json").read_text())
    corpus = load_corpus()
    record["block_size"] = block_size
    orderings = scorer_orderings(folder, record, corpus, seeds, interlayer_windows, block_size)
    cache.write_text(json.dumps(record, indent=1))
    n = len(orderings["weight_error"])
    ks = grid(n, points)
    test_key = f"test:{test_windows[0]}x{test_windows[1]}"
    validation_key = f"validation:{VALIDATION_WINDOWS[0]}x{VALIDATION_WINDOWS[1]}"
    stored = record.setdefault("bpb", {})
    per_window = record.setdefault("window_bpb", {})  # test bits per byte of each window: for the bootstrap
    configs: dict[str, list[str]] = {}

    with tempfile.TemporaryDirectory(prefix="nas-mp-lm-") as tmp:
        tmp = Path(tmp)
        built: dict[str, Path] = {}

        def path_of(layers: list[str]) -> Path:
            key = config_key(layers)
            if key not in built:
                built[key] = build_int4(decode, layers, tmp / f"config_{len(built)}.onnx", block_size)
            return built[key]

        def bpb(layers: list[str], split: str) -> float:
            which = test_key if split == "test" else validation_key
            values = stored.setdefault(which, {})
            key = config_key(layers)
            if split == "test" and key not in values:
                window_bpb(layers)
            elif key not in values:
                values[key] = decode_bits_per_byte(path_of(layers), corpus.validation, *VALIDATION_WINDOWS)
            return values[key]

        def window_bpb(layers: list[str]) -> list[float]:
            """Test bits per byte of each window (the bootstrap's items); their mean is the test value."""
            windows, key = per_window.setdefault(test_key, {}), config_key(layers)
            if key not in windows:
                windows[key] = decode_window_bits(path_of(layers), corpus.test, *test_windows).tolist()
                stored.setdefault(test_key, {}).setdefault(key, float(np.mean(windows[key])))
            return windows[key]

        for name, order in orderings.items():
            for k in ks:  # the configurations timed: every curve point and every search's result
                configs.setdefault(config_key(order[:k]), order[:k])
            curve = [bpb(order[:k], "test") for k in ks]
            log(f"{folder.parent.name}: {name} " + " ".join(f"{k}:{v:.4f}" for k, v in zip(ks, curve)))
            cache.write_text(json.dumps(record, indent=1))
        for name in PAIRED:  # per-window values of the compared curves (kept from earlier runs as means only)
            for k in ks:
                window_bpb(orderings[name][:k])
        cache.write_text(json.dumps(record, indent=1))

        searches = record.setdefault("searches", {})
        baseline = bpb([], "validation")
        for text in TOLERANCES:
            spec = BitsTolerance.parse(text)
            tolerance = Tolerance("absolute", spec.ceiling(baseline) - baseline, text)
            for scorer in SEARCH_ORDERINGS:
                for method in ("bisection", "greedy_fallback"):
                    key = f"{text} {scorer} {method}"
                    if key not in searches or searches[key].get("order") != orderings[scorer]:
                        outcome = SEARCHES[method](orderings[scorer], lambda layers: -bpb(layers, "validation"),
                                                   tolerance, -baseline)
                        searches[key] = {"k": outcome.k, "evaluations": outcome.num_evaluations,
                                         "validation": -outcome.accuracy, "layers": outcome.int8_layers,
                                         "order": orderings[scorer]}
                    searches[key]["test"] = bpb(searches[key]["layers"], "test")
                    configs.setdefault(config_key(searches[key]["layers"]), searches[key]["layers"])
        cache.write_text(json.dumps(record, indent=1))

        timed = record.get("latency_ms", {})
        if not set(configs) <= set(timed):  # every configuration timed again, together, so they compare
            log(f"{folder.parent.name}: timing {len(configs)} configurations on local-cpu")
            record["latency_ms"] = time_decode_steps({key: path_of(layers) for key, layers in configs.items()},
                                                     512, "local-cpu")
            record["timing_machine"] = machine_line()
        cache.write_text(json.dumps(record, indent=1))
    record.update(orderings=orderings, grid=ks, test_key=test_key, validation_key=validation_key,
                  test_windows=list(test_windows), work=str(work))
    return record


def area(record: dict, order: list[str], values: dict[str, float] | None = None) -> float:
    """Mean test bits per byte (``values`` by configuration, default the record's) over the inner grid
    points (lower is better)."""
    n, values = len(order), values or record["bpb"][record["test_key"]]
    return float(np.mean([values[config_key(order[:k])] for k in record["grid"] if 0 < k < n]))


def at_budgets(record: dict, order: list[str], ms: dict[str, float] | None = None,
               values: dict[str, float] | None = None) -> list[float]:
    """Lowest test bits per byte (``values``, default the record's) among the ordering's grid points
    timed (or, with ``ms``, fitted) within each budget."""
    values, ms = values or record["bpb"][record["test_key"]], ms or record["latency_ms"]
    points = [(ms[config_key(order[:k])], values[config_key(order[:k])]) for k in record["grid"]]
    return [min(b for m, b in points if m <= budget) for budget in budgets(record, ms)]


def additive_latency(record: dict) -> tuple[dict[str, float], float]:
    """Each configuration's decode ms/token from a least-squares fit over every timed configuration:
    a level for float32, one for any int4 layer, and one saving per layer; the fit's root mean
    squared residual (ms). One timing of a partial mix moves by up to a millisecond on this shared
    machine; the fit pools all of them."""
    ms = record["latency_ms"]
    names = sorted({name for key in ms for name in key.split(",") if name})
    keys = list(ms)
    design = np.array([[1.0, float(bool(key))] + [float(name in key.split(",")) for name in names] for key in keys])
    measured = np.array([ms[key] for key in keys])
    coef, *_ = np.linalg.lstsq(design, measured, rcond=None)
    fitted = design @ coef
    return dict(zip(keys, fitted.tolist())), float(np.sqrt(np.mean((fitted - measured) ** 2)))


def paired_differences(record: dict, fitted: dict[str, float]) -> dict[str, tuple[float, float, float]]:
    """``PAIRED[1]`` minus ``PAIRED[0]`` (test bits per byte) by AUC, at the same fitted latency and at the
    same timed latency, each with its paired bootstrap interval over the test windows."""
    orderings, windows = record["orderings"], record["window_bpb"][record["test_key"]]
    first, second = (orderings[name] for name in PAIRED)
    items = {config_key(order[:k]): windows[config_key(order[:k])] for order in (first, second) for k in record["grid"]}

    def at(ms):
        return lambda v: float(np.mean(at_budgets(record, second, ms, v)) - np.mean(at_budgets(record, first, ms, v)))

    return {"auc": paired_bootstrap(items, lambda v: area(record, second, v) - area(record, first, v)),
            "at_fitted": paired_bootstrap(items, at(fitted)), "at_latency": paired_bootstrap(items, at(None))}


def budgets(record: dict, ms: dict[str, float] | None = None) -> list[float]:
    """Latency budgets (ms) as shares of the way from all-int4 to float32, both read from ``ms`` (the timed
    latencies by default; the fitted ones, whose all-int4 may lie above its timing, with them)."""
    ms = ms or record["latency_ms"]
    low, high = ms[config_key(record["orderings"]["weight_error"])], ms[config_key([])]
    return [low + share * (high - low) for share in BUDGET_SHARES]


def model_tables(record: dict, command: str) -> tuple[list[str], dict]:
    orderings, ks = record["orderings"], record["grid"]
    n = len(orderings["weight_error"])
    values, ms = record["bpb"][record["test_key"]], record["latency_ms"]
    training = record["training"]
    float_ms, int4_ms = ms[config_key([])], ms[config_key(orderings["weight_error"])]
    float_bpb, int4_bpb = values[config_key([])], values[config_key(orderings["weight_error"])]
    windows, context = record["test_windows"]
    scorers = record["scorers"]
    lines = [f"## `{training['arch']}` ({record['work']})", "",
             f"Trained {training['steps']} steps ({training['tokens']:,} tokens) on the corpus's train split "
             f"({training.get('device', 'cpu')}); PyTorch validation {training['validation_bpb']:.3f} bits/byte. "
             f"Decode graph: {n} MatMul layers with constant weights. Test bits per byte: ONNX Runtime decode graph, "
             f"{windows} fixed windows x {context} bytes of the test split ({windows * context:,} bytes); validation "
             f"(search decisions): {VALIDATION_WINDOWS[0]} x {VALIDATION_WINDOWS[1]} bytes. Decode ms/token after 512 "
             f"tokens, 1 thread, batch 1, all {len(ms)} configurations interleaved in the same rounds "
             f"({record.get('timing_machine', '')}).", "",
             f"float32: test {float_bpb:.4f} bits/byte, {float_ms:.3f} ms/token; all-int4: test {int4_bpb:.4f} "
             f"bits/byte ({int4_bpb - float_bpb:+.4f}), {int4_ms:.3f} ms/token ({1 - int4_ms / float_ms:.1%} lower).",
             "", "Scorers (calibration: windows x 128 bytes of the validation split, PyTorch, 1 thread, wall "
                 "time under the load of the run): " + "; ".join(
                 f"`{name}` {s['info'].get('calibration_windows', 16)} windows, {s['wall_s']:.0f} s, " + ", ".join(f"{s['info'][key]} {what}" for key, what in COSTS
                                                              if key in s["info"]) for name, s in scorers.items()) + ".",
             "",
             "### Test bits per byte with the first k layers of each ordering in int4 (lower is better)", "",
             "| ordering | " + " | ".join(f"k={k}" for k in ks) + " | AUC (inner mean) |",
             "|" + "---|" * (len(ks) + 2)]
    aucs = {name: area(record, order) for name, order in orderings.items()}
    for name, order in orderings.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[config_key(order[:k])]:.4f}" for k in ks) +
                     f" | {aucs[name]:.4f} |")
    randoms = sorted(v for k, v in aucs.items() if k.startswith("random:"))
    lines += ["", f"Random orderings' AUC: median {np.median(randoms):.4f}, range {randoms[0]:.4f}–{randoms[-1]:.4f}.",
              "", "### Decode ms/token of each curve point", "",
              "| ordering | " + " | ".join(f"k={k}" for k in ks) + " |", "|" + "---|" * (len(ks) + 1)]
    for name, order in orderings.items():
        lines.append(f"| {name} | " + " | ".join(f"{ms[config_key(order[:k])]:.3f}" for k in ks) + " |")
    fitted, residual = additive_latency(record)
    marks = budgets(record, fitted)
    lines += ["", "### Test bits per byte at the same latency (primary: each configuration's latency from the additive "
                  "fit; best curve point within each budget, lower is better)", "",
              f"Latency of each configuration from a least-squares fit over all {len(fitted)} timed configurations (a "
              f"float32 level, an int4 level, one saving per layer; residual {residual:.3f} ms rms): one timing of a "
              f"partial mix moves by up to a millisecond on this shared machine, the fit pools all of them.", "",
              "| ordering | " + " | ".join(f"≤ {b:.2f} ms" for b in marks) + " | mean |", "|" + "---|" * (len(marks) + 2)]
    at_fitted = {name: at_budgets(record, order, fitted) for name, order in orderings.items()}
    for name, row in at_fitted.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in row) + f" | {np.mean(row):.4f} |")
    random_fitted = sorted(float(np.mean(v)) for k, v in at_fitted.items() if k.startswith("random:"))
    at_latency = {name: at_budgets(record, order) for name, order in orderings.items()}
    random_latency = sorted(float(np.mean(v)) for k, v in at_latency.items() if k.startswith("random:"))
    lines += ["", f"Random orderings' mean (fitted latency): median {np.median(random_fitted):.4f}.", "",
              "The same with each configuration's latency as timed once:", "",
              "| ordering | " + " | ".join(f"≤ {b:.2f} ms" for b in budgets(record)) + " | mean |",
              "|" + "---|" * (len(marks) + 2)]
    for name, row in at_latency.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in row) + f" | {np.mean(row):.4f} |")
    boot = paired_differences(record, fitted)
    first, second = PAIRED
    lines += ["", f"Random orderings' mean at the same latency (as timed): median {np.median(random_latency):.4f}.", "",
              f"### `{second}` minus `{first}`, paired bootstrap over the {windows} test windows ({RESAMPLES} "
              f"resamples, {LEVEL:.0%} percentile interval; negative: `{second}` lower, better)", "",
              "| measure | difference (bits/byte) [90% interval] |", "|---|---|"]
    for measure, label in BOOTSTRAP_MEASURES:
        lines.append(f"| {label} | {interval_text(*boot[measure], digits=5)} |")
    lines += ["", f"### Searches (validation decides; float32 validation "
              f"{record['bpb'][record['validation_key']][config_key([])]:.4f} bits/byte; bisection bound "
              f"ceil(log2(N+1))+1 = {max_bisection_evaluations(n)})", "",
              "| tolerance | ordering | search | evaluations | int4 layers | validation bits/byte | test bits/byte | "
              "test increase | ms/token | lower than float32 | / all-int4 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, s in record["searches"].items():
        tolerance, scorer, method = key.split()
        latency = ms[config_key(s["layers"])]
        lines.append(f"| {tolerance} | {scorer} | {method} | {s['evaluations']} | {s['k']}/{n} | {s['validation']:.4f} "
                     f"| {s['test']:.4f} | {s['test'] - float_bpb:+.4f} | {latency:.3f} | {1 - latency / float_ms:.1%} "
                     f"| {latency / int4_ms:.2f}x |")
    summary = {"arch": training["arch"], "auc": aucs, "random_auc": float(np.median(randoms)),
               "at_latency": {k: float(np.mean(v)) for k, v in at_latency.items()},
               "random_at_latency": float(np.median(random_latency)), "span": int4_bpb - float_bpb,
               "at_fitted": {k: float(np.mean(v)) for k, v in at_fitted.items()},
               "random_at_fitted": float(np.median(random_fitted)), "bootstrap": boot}
    return lines + [""], summary


def tables(records: list[dict], command: str) -> str:
    lines = ["# 4-bit weight-only MatMul on slm language models (ONNX Runtime MatMulNBits, local-cpu)", "",
             machine_line(), "",
             "Reproduce: `python3 experiments/mixed_precision_models.py --work WORK --models --slm ARCH "
             "[--slm-max-s S]` (weights and decode graph in WORK/slm; with `--device cuda` on a GPU machine weights "
             f"only, then the same without it here), then `nice -n 19 .venv/bin/python "
             f"experiments/mixed_precision_language.py {command}`.", "",
             "## Summary: test bits per byte, lower is better (AUC: mean over the inner points of the int4-layers "
             "curve; at latency: mean over the budgets of the best point within each)", "",
             "| model | all-int4 cost | ordering | AUC | at the same latency (fitted, primary) | same, as timed |",
             "|---|---|---|---|---|---|"]
    sections, summaries = [], []
    for record in records:
        section, summary = model_tables(record, command)
        sections += section
        for name in SUMMARY:
            lines.append(f"| `{summary['arch']}` | {summary['span']:+.4f} | {name} | {summary['auc'][name]:.4f} | "
                         f"{summary['at_fitted'][name]:.4f} | {summary['at_latency'][name]:.4f} |")
        lines.append(f"| `{summary['arch']}` | | random (median) | {summary['random_auc']:.4f} | "
                     f"{summary['random_at_fitted']:.4f} | {summary['random_at_latency']:.4f} |")
        summaries.append(summary)
    first, second = PAIRED
    lines += ["", f"`{second}` minus `{first}` (test bits per byte; negative: `{second}` better), with the {LEVEL:.0%} "
                  f"interval of a paired bootstrap over the test windows ({RESAMPLES} resamples):", "",
              "| model | all-int4 cost | " + " | ".join(label for _, label in BOOTSTRAP_MEASURES) + " |",
              "|---|---|" + "---|" * len(BOOTSTRAP_MEASURES)]
    for summary in summaries:
        lines.append(f"| `{summary['arch']}` | {summary['span']:+.4f} | " + " | ".join(
            interval_text(*summary["bootstrap"][measure], digits=5) for measure, _ in BOOTSTRAP_MEASURES) + " |")
    return "\n".join(lines + [""] + sections)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", nargs="+", required=True,
                        help="folders of mixed_precision_models.py --slm (each WORK/slm/decode.onnx, slm.pt)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5, 6, 7])
    parser.add_argument("--points", type=int, default=10, help="grid points of the int4-layers curve")
    parser.add_argument("--test-windows", type=int, nargs=2, default=[64, 256], metavar=("WINDOWS", "BYTES"))
    parser.add_argument("--block-size", type=int, default=INT4_BLOCK_SIZE, choices=INT4_BLOCK_SIZES,
                        help=f"weights per scale of the 4-bit MatMul (default {INT4_BLOCK_SIZE})")
    parser.add_argument("--results", type=Path, default=None,
                        help="the results file (default experiments/results/mixed_precision_language.md at the "
                             "default block size, mixed_precision_language_blockN.md otherwise)")
    parser.add_argument("--interlayer-windows", type=int, default=64,
                        help="calibration windows (x 128 bytes, batches of 16) of hessian_interlayer's block matrix")
    args = parser.parse_args(argv)
    if args.interlayer_windows < 1:
        parser.error("--interlayer-windows must be at least 1")
    import torch

    torch.set_num_threads(1)
    records = [run(Path(work), args.seeds, args.points, tuple(args.test_windows), args.interlayer_windows,
                   args.block_size) for work in args.work]
    text = tables(records, " ".join(argv if argv is not None else sys.argv[1:]))
    print(text)
    results = args.results or (RESULTS if args.block_size == INT4_BLOCK_SIZE else
                               RESULTS.with_name(f"mixed_precision_language_block{args.block_size}.md"))
    write_keeping_reading(results, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
