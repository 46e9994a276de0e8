"""``nas search`` on this machine's CPU, measured for real with ONNX Runtime.

For three budgets (the 25th, 50th and 75th percentiles of the random
sample's measured latencies), runs the search pipeline on ``local-cpu``
(10 reference measurements, then at most 10 verification measurements) and
measures the returned architecture afresh (``refresh``: a new measurement,
not the stored one). Beside it: the most accurate of 200 random NB201
cells measured on the same device, with the same settings, whose measured
latency meets the same budget. Accuracy: CIFAR-100, 200 epochs (recorded).

Prints a markdown table and writes it to
``experiments/results/local_cpu_search.md``.

    nice .venv/bin/python experiments/local_cpu_search.py [--random 200] [--seed 0] [--store PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "local_cpu_search.md"
#: a lighter protocol than the catalog default keeps 200+ measurements to minutes on a shared machine
SETTINGS = {"rounds": 3, "runs_per_round": 5, "warmup_runs": 2}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=200, help="random cells measured for the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default=None, help="measurement store (default: a fresh temporary file)")
    args = parser.parse_args(argv)

    from nas import benchmarks
    from nas.devices import get_device
    from nas.profilers import measure
    from nas.search import search_under_budget
    from nas.search_space import get_space

    store = args.store or os.path.join(tempfile.mkdtemp(prefix="nas-local-cpu-"), "measurements.db")
    device = get_device("local-cpu").with_settings(**SETTINGS)
    space = get_space("nb201")
    accuracy = benchmarks.nb201_accuracy("cifar100")
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(space.num_archs, size=args.random, replace=False)
    randoms = [space.from_index(int(i)) for i in picks]

    started = time.perf_counter()
    print(f"measuring {len(randoms)} random cells on local-cpu ...", file=sys.stderr)
    random_ms = np.array([r.latency_ms for r in measure(device, "nb201", randoms, store=store, progress=True)])
    random_s = time.perf_counter() - started
    random_acc = accuracy[picks]
    budgets = [float(np.round(np.percentile(random_ms, q), 2)) for q in (25, 50, 75)]

    rows = []
    for budget in budgets:
        t0 = time.perf_counter()
        outcome = search_under_budget("nb201", device, budget, dataset="cifar100", seed=args.seed, store=store,
                                      progress=True)
        search_s = time.perf_counter() - t0
        fresh = None
        if outcome.arch is not None:
            fresh = measure(device, "nb201", [outcome.arch], store=store, refresh=True)[0].latency_ms
        meets = random_ms <= budget
        best = int(np.argmax(np.where(meets, random_acc, -1))) if meets.any() else None
        rows.append({
            "budget": budget, "arch": outcome.arch, "status": outcome.status, "accuracy": outcome.accuracy,
            "measured": outcome.measured_latency_ms, "fresh": fresh, "samples": outcome.device_samples,
            "reused": outcome.samples_reused, "search_s": search_s,
            "random_acc": None if best is None else float(random_acc[best]),
            "random_ms": None if best is None else float(random_ms[best]),
            "random_arch": None if best is None else space.to_string(randoms[best]),
        })
        print(outcome.summary(), file=sys.stderr)

    table = render(rows, args, random_s)
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)
    return 0


def fmt(value, spec=".2f"):
    return "—" if value is None else format(value, spec)


def render(rows, args, random_s) -> str:
    import onnxruntime

    lines = [
        "# `nas search` on local-cpu (ONNX Runtime, measured for real)",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `experiments/local_cpu_search.py` "
        f"(seed {args.seed}); CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared "
        f"with other jobs; onnxruntime {onnxruntime.__version__}, 1 thread, batch 1, protocol {SETTINGS} with drift "
        f"correction. Budgets: 25th/50th/75th percentile of the random cells' latencies. Accuracy: NB201 CIFAR-100 "
        f"(200 epochs, recorded).",
        "",
        "Search = default pipeline (exhaustive scoring with the adapted predictor, ≤ 10 verification "
        "measurements). *Fresh* = the returned cell measured again afterwards (refresh, new session). "
        f"Random = most accurate of {args.random} random cells whose measured latency meets the budget "
        f"({args.random} measurements, {random_s / 60:.1f} min).",
        "",
        "| budget ms | search arch | search acc % | verified ms | fresh ms | fresh meets | device samples (reused) "
        "| search s | random best acc % | its ms | search − random |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        meets = "—" if r["fresh"] is None else ("yes" if r["fresh"] <= r["budget"] else "NO")
        diff = None if r["accuracy"] is None or r["random_acc"] is None else r["accuracy"] - r["random_acc"]
        lines.append(f"| {r['budget']:.2f} | `{(r['arch'] or r['status']).replace("|", chr(92) + "|")}` | {fmt(r['accuracy'])} | {fmt(r['measured'])} "
                     f"| {fmt(r['fresh'])} | {meets} | {r['samples']} ({r['reused']}) | {r['search_s']:.0f} "
                     f"| {fmt(r['random_acc'])} | {fmt(r['random_ms'])} | {fmt(diff, '+.2f')} |")
    lines += ["", "Device samples count every measurement the search used on local-cpu (10 reference + "
              "verification); *reused* ones came from the measurement store (the random baseline's or an "
              "earlier budget's), so they cost no new timing.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
