"""The verify loop of ``nas search`` on this machine's CPU (``local-cpu``),
measured for real, against an oracle of a few hundred measured cells.

Oracle: the NB201 cells measured on ``local-cpu`` in
``nas/data/heldout/nb201.csv`` (``experiments/heldout_devices.py``); for a
budget, the most accurate of them whose measured latency meets it.
Budgets: the 25th, 50th and 75th percentiles of those latencies. For each
budget and seed, ``search_under_budget`` runs with a fresh measurement store
(so every measurement is new: the seed changes the measurement noise), then
the returned cell is measured once more (``refresh``). Reported: the fresh
latency of the result, its CIFAR-100 accuracy against the oracle's, and the
verification measurements spent.

Prints a markdown table and writes it to ``experiments/results/verify_loop.md``.

    nice .venv/bin/python experiments/verify_loop.py [--seeds 3] [--verify 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine_line, write_keeping_reading  # noqa: E402  (beside this script)

RESULTS = Path(__file__).resolve().parent / "results" / "verify_loop.md"
#: a lighter protocol than the catalog's keeps 9 searches to tens of minutes on a shared machine
SETTINGS = {"rounds": 3, "runs_per_round": 5, "warmup_runs": 2}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--verify", type=int, default=10, help="verification measurements allowed per search")
    parser.add_argument("--budgets", type=float, nargs="*", default=None,
                        help="budgets in ms (default: 25th/50th/75th percentile of the oracle's latencies)")
    args = parser.parse_args(argv)

    from nas import benchmarks
    from nas.devices import get_device
    from nas.predictors.evaluation import heldout_table
    from nas.profilers import measure
    from nas.search import search_under_budget
    from nas.search_space import get_space

    table = heldout_table("nb201")
    if table is None or "local-cpu" not in table.devices:
        print("no local-cpu measurements in nas/data/heldout/nb201.csv: run experiments/heldout_devices.py first",
              file=sys.stderr)
        return 2
    oracle_ms = table.column("local-cpu")
    oracle_ms = oracle_ms[np.isfinite(oracle_ms)]
    accuracy = benchmarks.nb201_accuracy("cifar100")
    space = get_space("nb201")
    budgets = args.budgets or [float(np.round(np.percentile(oracle_ms, q), 2)) for q in (25, 50, 75)]
    device = get_device("local-cpu").with_settings(**SETTINGS)

    records, text = [], ""
    for seed, budget in ((seed, budget) for seed in range(args.seeds) for budget in budgets):
        store = os.path.join(tempfile.mkdtemp(prefix="nas-verify-loop-"), "measurements.db")
        started = time.perf_counter()
        outcome = search_under_budget("nb201", device, budget, dataset="cifar100", seed=seed, store=store,
                                      verify_max=args.verify)
        search_s = time.perf_counter() - started
        fresh = None
        if outcome.arch is not None:
            fresh = measure(device, "nb201", [outcome.arch], store=store, refresh=True)[0].latency_ms
        trail = [v["measured_latency_ms"] for v in outcome.verification]
        records.append({
            "budget": budget, "seed": seed, "status": outcome.status, "arch": outcome.arch,
            "accuracy": outcome.accuracy, "verified_ms": outcome.measured_latency_ms, "fresh_ms": fresh,
            "verifications": len(outcome.verification), "trail": trail, "search_s": search_s,
        })
        print(f"budget {budget} seed {seed}: {outcome.status} acc {outcome.accuracy} fresh {fresh}; "
              f"trail {[round(t, 3) for t in trail]}", file=sys.stderr, flush=True)
        text = render(with_oracle(records, accuracy, space), args)
        write_keeping_reading(RESULTS, text)  # after every search: a stopped run keeps what it did
    print(text)
    return 0


def with_oracle(records, accuracy, space):
    """Each record with the oracle for its budget; the held-out table is read
    afresh, as it may grow while the searches run."""
    from nas.predictors.evaluation import heldout_table

    table = heldout_table("nb201")
    oracle_ms = table.column("local-cpu")
    known = np.isfinite(oracle_ms)
    rows, oracle_ms = table.rows[known], oracle_ms[known]
    for r in records:
        best = int(np.argmax(np.where(oracle_ms <= r["budget"], accuracy[rows], -1.0)))
        r.update(oracle_acc=float(accuracy[rows[best]]), oracle_ms=float(oracle_ms[best]),
                 oracle_arch=space.to_string(space.from_index(int(rows[best]))), oracle_size=len(rows))
    return records


def fmt(value, spec=".2f"):
    return "—" if value is None else format(value, spec)


def render(records, args) -> str:
    import onnxruntime

    lines = [
        "# The verify loop on local-cpu (ONNX Runtime, measured for real)", "",
        f"Generated by `experiments/verify_loop.py`; {machine_line()}; onnxruntime {onnxruntime.__version__}, local-cpu with protocol {SETTINGS}. Accuracy: NB201 "
        f"CIFAR-100 (200 epochs, recorded). Oracle: the most accurate of {records[0]['oracle_size']} cells measured on local-cpu "
        f"(`nas/data/heldout/nb201.csv`) whose latency meets the budget. Each search: 10 reference measurements, "
        f"at most {args.verify} verifications, fresh measurement store per seed; *fresh ms* is the returned cell "
        f"measured again afterwards.", "",
        "| budget ms | seed | status | accuracy % | oracle % | gap (points) | verified ms | fresh ms | fresh meets "
        "| verifications | measured trail ms | search s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        gap = None if r["accuracy"] is None else r["accuracy"] - r["oracle_acc"]
        meets = "—" if r["fresh_ms"] is None else ("yes" if r["fresh_ms"] <= r["budget"] else "NO")
        trail = ", ".join(f"{t:.2f}" for t in r["trail"])
        lines.append(f"| {r['budget']:.2f} | {r['seed']} | {r['status']} | {fmt(r['accuracy'])} | {r['oracle_acc']:.2f} "
                     f"| {fmt(gap, '+.2f')} | {fmt(r['verified_ms'])} | {fmt(r['fresh_ms'])} | {meets} "
                     f"| {r['verifications']} | {trail} | {r['search_s']:.0f} |")
    gaps = [r["accuracy"] - r["oracle_acc"] for r in records if r["accuracy"] is not None]
    over = sum(1 for r in records if r["fresh_ms"] is not None and r["fresh_ms"] > r["budget"])
    lines += ["", f"Mean gap to the oracle {np.mean(gaps):+.2f} points (worst {min(gaps):+.2f}) over {len(gaps)} "
              f"searches that returned a cell; {over} of {len(records)} results over budget when measured again; "
              f"{np.mean([r['verifications'] for r in records]):.1f} verifications spent on average.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
