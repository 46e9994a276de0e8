"""4-bit weight-only MatMul on a small language model from the ``slm`` space,
inside a bits-per-byte tolerance, measured with ONNX Runtime.

The model: ``experiments/mixed_precision_models.py --slm ARCH`` (trained on
the shipped corpus; its decode graph in ``WORK/slm/decode.onnx``). For it:

1. the decode graph's MatMul layers ordered by ``weight_error`` (4-bit
   blockwise rounding error, :mod:`nas.quantization.language`) and at random
   (several seeds);
2. test bits per byte with the first k layers in int4, at a grid of k, for
   each ordering (ONNX Runtime, the quantized decode graph stepped token by
   token over fixed windows of the test split); area under the curve (mean
   over the inner grid points, lower is better);
3. every configuration's decode ms/token after 512 tokens on local-cpu, all
   interleaved in the same rounds;
4. bisection and the one-layer-at-a-time fallback at bits-per-byte
   tolerances, decided on the validation split: evaluations, test bits per
   byte, latency against float32 and all-int4.

    nice -n 10 .venv/bin/python experiments/mixed_precision_language.py --work /tmp/mpwork
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.quantization.bisection import SEARCHES, Tolerance, max_bisection_evaluations  # noqa: E402
from nas.quantization.language import (BitsTolerance, build_int4, decode_bits_per_byte, int4_error,  # noqa: E402
                                       matmul_weights, time_decode_steps)
from results_file import machine_line, write_keeping_reading  # noqa: E402  (beside this script)

RESULTS = Path(__file__).resolve().parent / "results" / "mixed_precision_language.md"
TOLERANCES = ["0.02bpb", "0.05bpb", "2%"]
TEST_WINDOWS, TEST_CONTEXT = 32, 128


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def grid(n: int, points: int) -> list[int]:
    return sorted({int(round(i * n / points)) for i in range(points + 1)})


def run(work: Path, seeds: list[int], points: int) -> dict:
    import onnx

    from nas.slm.corpus import load_corpus

    folder = work / "slm"
    decode = folder / "decode.onnx"
    cache = folder / "language.benchmark.json"
    record = json.loads(cache.read_text()) if cache.is_file() else {}
    record["training"] = json.loads((folder / "slm.json").read_text())
    weights = matmul_weights(onnx.load(str(decode)))
    n = len(weights)
    scores = {name: int4_error(w) for name, w in weights.items()}
    orderings = {"weight_error": sorted(weights, key=lambda name: scores[name])}
    for seed in seeds:
        orderings[f"random:{seed}"] = [str(x) for x in np.random.default_rng(seed).permutation(list(weights))]
    record.update(num_layers=n, orderings=orderings)
    corpus = load_corpus()
    ks = grid(n, points)
    configs: dict[str, list[str]] = {}

    def config(layers: list[str]) -> str:
        key = ",".join(sorted(layers))
        configs.setdefault(key, list(layers))
        return key

    with tempfile.TemporaryDirectory(prefix="nas-mp-lm-") as tmp:
        tmp = Path(tmp)
        built: dict[str, Path] = {}

        def path_of(layers: list[str]) -> Path:
            key = config(layers)
            if key not in built:
                built[key] = build_int4(decode, layers, tmp / f"config_{len(built)}.onnx")
            return built[key]

        bpb_cache: dict[tuple[str, str], float] = {}

        def bpb(layers: list[str], split: str) -> float:
            key = (split, ",".join(sorted(layers)))
            if key not in bpb_cache:
                data = corpus.test if split == "test" else corpus.validation
                bpb_cache[key] = decode_bits_per_byte(path_of(layers), data, *(
                    (TEST_WINDOWS, TEST_CONTEXT) if split == "test" else ()))
            return bpb_cache[key]

        curves = record.setdefault("curves", {})
        for name, order in orderings.items():
            curve = curves.setdefault(name, {})
            for k in ks:
                if str(k) not in curve:
                    curve[str(k)] = bpb(order[:k], "test")
                else:
                    config(order[:k])
            log(f"slm: {name} curve " + " ".join(f"{k}:{curve[str(k)]:.4f}" for k in ks))
            cache.write_text(json.dumps(record, indent=1))

        searches = record.setdefault("searches", {})
        baseline = bpb([], "validation")
        record["float_validation_bpb"] = baseline
        for text in TOLERANCES:
            spec = BitsTolerance.parse(text)
            tolerance = Tolerance("absolute", spec.ceiling(baseline) - baseline, text)
            for method in ("bisection", "greedy_fallback"):
                key = f"{text} weight_error {method}"
                if key not in searches:
                    outcome = SEARCHES[method](orderings["weight_error"], lambda layers: -bpb(layers, "validation"),
                                               tolerance, -baseline)
                    searches[key] = {"k": outcome.k, "evaluations": outcome.num_evaluations,
                                     "validation": -outcome.accuracy, "layers": outcome.int8_layers,
                                     "test": bpb(outcome.int8_layers, "test")}
                config(searches[key]["layers"])
        cache.write_text(json.dumps(record, indent=1))

        if "latency_ms" not in record or set(record["latency_ms"]) != set(configs):
            paths = {key: path_of(layers) for key, layers in configs.items()}
            log(f"slm: timing {len(paths)} configurations on local-cpu")
            record["latency_ms"] = time_decode_steps(paths, 512, "local-cpu")
        record["machine"] = machine_line()
        cache.write_text(json.dumps(record, indent=1))
    return record


def tables(record: dict, command: str) -> str:
    n, orderings = record["num_layers"], record["orderings"]
    latency = lambda layers: record["latency_ms"][",".join(sorted(layers))]  # noqa: E731
    training = record["training"]
    ks = sorted(int(k) for k in record["curves"]["weight_error"])
    float_ms, int4_ms = latency([]), latency(orderings["weight_error"])
    curve = record["curves"]["weight_error"]
    lines = ["# 4-bit weight-only MatMul on an slm language model (ONNX Runtime MatMulNBits, local-cpu)", "",
             record["machine"], "",
             f"Reproduce: `python3 experiments/mixed_precision_models.py --work /tmp/mpwork --device cuda --threads 16 "
             f"--models --slm '{training['arch']}'` on a GPU machine (weights only), then the same without "
             f"`--device` here (exports the decode graph), then `nice -n 10 .venv/bin/python "
             f"experiments/mixed_precision_language.py {command}`.", "",
             f"Model `{training['arch']}`: trained {training['steps']} steps ({training['tokens']:,} tokens) on "
             f"the corpus's train split; PyTorch validation {training['validation_bpb']:.3f} bits/byte. Decode graph: "
             f"{n} MatMul layers with constant weights. Test bits per byte below: ONNX Runtime decode graph, "
             f"{TEST_WINDOWS} fixed windows x {TEST_CONTEXT} bytes of the test split; validation (search "
             f"decisions): 16 x 96 bytes. Decode ms/token after 512 tokens, 1 thread, batch 1, every "
             f"configuration interleaved in the same rounds.", "",
             f"float32: test {curve['0']:.4f} bits/byte, {float_ms:.3f} ms/token; all-int4: test "
             f"{curve[str(n)]:.4f} bits/byte, {int4_ms:.3f} ms/token ({1 - int4_ms / float_ms:.1%} lower).", "",
             "## Test bits per byte with the first k layers of each ordering in int4 (lower is better)", "",
             "| ordering | " + " | ".join(f"k={k}" for k in ks) + " | AUC (inner mean) |",
             "|" + "---|" * (len(ks) + 2)]
    aucs = {}
    for name in orderings:
        c = record["curves"][name]
        aucs[name] = float(np.mean([c[str(k)] for k in ks if 0 < k < n]))
        lines.append(f"| {name} | " + " | ".join(f"{c[str(k)]:.4f}" for k in ks) + f" | {aucs[name]:.4f} |")
    randoms = [v for k, v in aucs.items() if k.startswith("random:")]
    lines += ["", f"Random orderings' median AUC: {np.median(randoms):.4f}.", "",
              "## Decode ms/token of each curve point", "",
              "| ordering | " + " | ".join(f"k={k}" for k in ks) + " |", "|" + "---|" * (len(ks) + 1)]
    for name, order in orderings.items():
        lines.append(f"| {name} | " + " | ".join(f"{latency(order[:k]):.3f}" for k in ks) + " |")
    lines += ["", f"## Searches (validation decides; float32 validation {record['float_validation_bpb']:.4f} "
                  f"bits/byte; bisection bound ceil(log2(N+1))+1 = {max_bisection_evaluations(n)})", "",
              "| tolerance | ordering | search | evaluations | int4 layers | validation bits/byte | test bits/byte | "
              "test increase | ms/token | lower than float32 | / all-int4 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, s in record["searches"].items():
        tolerance, scorer, method = key.split()
        ms = latency(s["layers"])
        lines.append(f"| {tolerance} | {scorer} | {method} | {s['evaluations']} | {s['k']}/{n} | {s['validation']:.4f} | "
                     f"{s['test']:.4f} | {s['test'] - curve['0']:+.4f} | {ms:.3f} | {1 - ms / float_ms:.1%} | "
                     f"{ms / int4_ms:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder of mixed_precision_models.py (WORK/slm/decode.onnx)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--points", type=int, default=5)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    record = run(Path(args.work), args.seeds, args.points)
    text = tables(record, " ".join(argv if argv is not None else sys.argv[1:]))
    print(text)
    write_keeping_reading(RESULTS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
