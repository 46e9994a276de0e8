"""Few-shot latency predictors on the slm table, each setting held out in turn.

For every column of nas/data/slm/latency_ms.csv (a decode setting of this
machine), each method is meta-trained on the other settings (one of them
for meta-validation), adapted on the held-out setting's 10 reference
architectures and scored on the rest of its column (Spearman, MAPE).
Methods: the default predictor, HELP (layer-wise encoder; --help-episodes
episodes per fold, fewer than HELP's 2,000 to fit a 2-core machine), and the
FLOPs, parameter-count and transfer baselines. Writes
experiments/results/slm_predictors.md.

    python experiments/slm_predictors.py --help-episodes 300
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from results_file import machine_line, write_keeping_reading  # noqa: E402

from nas import benchmarks  # noqa: E402
from nas.predictors import DEFAULT_METHOD  # noqa: E402
from nas.predictors.leave_one_out import leave_one_device_out  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--help-episodes", type=int, default=300, help="HELP meta-training episodes per fold (0: skip)")
    parser.add_argument("--methods", default=f"{DEFAULT_METHOD},help,flops,params,transfer")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if not args.help_episodes and "help" in methods:
        methods.remove("help")
    results, seconds = {}, {}
    for method in methods:
        options = {}
        if method == "help":
            from nas.predictors.help import MetaConfig

            options["config"] = MetaConfig(episodes=args.help_episodes, query_size=100)
        start = time.perf_counter()
        results[method] = leave_one_device_out(method, "slm", log=lambda m: print(m, file=sys.stderr, flush=True),
                                               options=options)
        seconds[method] = time.perf_counter() - start
    table = benchmarks.latency_table("slm")
    labels = {DEFAULT_METHOD: f"default ({DEFAULT_METHOD})", "help": f"HELP ({args.help_episodes} episodes)",
              "flops": "FLOPs", "params": "params", "transfer": "transfer"}
    lines = ["# Latency predictors on the slm table, each setting held out in turn", "", machine_line(), "",
             f"{len(table.latency_ms)} architectures x {len(table.devices)} settings; adapted on the held-out "
             f"setting's 10 reference architectures, scored on the other {len(table.latency_ms) - 10}.", "",
             "Spearman's rho:", "",
             "| held-out setting | " + " | ".join(labels[m] for m in methods) + " |",
             "| --- |" + " --- |" * len(methods)]
    for i, device in enumerate(table.devices):
        lines.append(f"| {device} | " + " | ".join(f"{results[m]['devices'][i]['spearman']:.3f}" for m in methods)
                     + " |")
    lines.append("| **mean** | " + " | ".join(f"**{results[m]['mean_spearman']:.3f}**" for m in methods) + " |")
    lines.append("| mean MAPE % | " + " | ".join(f"{results[m]['mean_mape']:.1f}" for m in methods) + " |")
    lines.append("| wall time s (6 folds) | " + " | ".join(f"{seconds[m]:.0f}" for m in methods) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_keeping_reading(ROOT / "experiments" / "results" / "slm_predictors.md", text)


if __name__ == "__main__":
    main()
