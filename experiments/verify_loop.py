"""The verify loop of ``nas search`` on this machine's CPU (``local-cpu``),
measured for real, against an oracle of a few hundred cells measured in the
same run.

Oracle: the NB201 cells of ``nas/data/heldout/nb201.csv`` (its ``local-cpu``
rows, chosen by ``experiments/heldout_devices.py``), measured again here at
the start, into their own store, and read back at the end on the device's
level of that moment; for a budget, the most accurate of them whose latency
plus spread meets it (the criterion the search uses), and, for reference,
the most accurate whose latency alone meets it. Budgets: the 25th, 50th and
75th percentiles of the oracle's latencies. The run keeps one device history
(``$NAS_LEVELS`` in a fresh file) shared by the oracle and every search, as
one user's stores and processes share it. For each budget and seed,
``search_under_budget`` runs with a fresh measurement store (so every
measurement is new: the seed changes the measurement noise); at the end each
returned cell is measured once more (``refresh``) and timed with plain ONNX
Runtime (1 thread, 3 x 300 runs, no nas code). Reported: those latencies
against the budget, its CIFAR-100 accuracy against the oracle's, and the
verification measurements spent.

Prints a markdown table and writes it to ``experiments/results/verify_loop.md``.

    .venv/bin/python experiments/verify_loop.py [--seeds 3] [--verify 10]
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
    parser.add_argument("--oracle-cells", type=int, default=None, help="measure only this many oracle cells")
    args = parser.parse_args(argv)

    from nas import benchmarks
    from nas.devices import get_device
    from nas.predictors.evaluation import heldout_table
    from nas.profilers import measure
    from nas.search import search_under_budget
    from nas.search_space import get_space

    table = heldout_table("nb201")
    if table is None or "local-cpu" not in table.devices:
        print("no local-cpu cells in nas/data/heldout/nb201.csv: run experiments/heldout_devices.py first",
              file=sys.stderr)
        return 2
    rows = table.rows[np.isfinite(table.column("local-cpu"))][:args.oracle_cells]
    accuracy = benchmarks.nb201_accuracy("cifar100")
    space = get_space("nb201")
    device = get_device("local-cpu").with_settings(**SETTINGS)
    work = Path(tempfile.mkdtemp(prefix="nas-verify-loop-"))
    os.environ["NAS_LEVELS"] = str(work / "reference-levels.db")  # one fresh device history for the run
    oracle_archs = [space.from_index(int(r)) for r in rows]
    started = time.perf_counter()
    measure(device, "nb201", oracle_archs, store=work / "oracle.db", progress=True)
    print(f"oracle: {len(rows)} cells measured in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    load_start = machine_line()
    if args.budgets:
        budgets = args.budgets
    else:
        oracle_ms = np.array([r.latency_ms for r in measure(device, "nb201", oracle_archs, store=work / "oracle.db")])
        budgets = [float(np.round(np.percentile(oracle_ms, q), 2)) for q in (25, 50, 75)]

    records, text = [], ""
    for seed, budget in ((seed, budget) for seed in range(args.seeds) for budget in budgets):
        store = work / f"search-{seed}-{budget}.db"
        started = time.perf_counter()
        outcome = search_under_budget("nb201", device, budget, dataset="cifar100", seed=seed, store=store,
                                      verify_max=args.verify)
        search_s = time.perf_counter() - started
        chosen = [v for v in outcome.verification if v.get("arch") == outcome.arch]
        records.append({
            "budget": budget, "seed": seed, "status": outcome.status, "arch": outcome.arch,
            "accuracy": outcome.accuracy, "verified_ms": outcome.measured_latency_ms,
            "verified_spread_ms": chosen[-1]["spread_ms"] if chosen else None, "fresh_ms": None, "plain_ms": None,
            "verifications": len(outcome.verification), "store": store, "search_s": search_s,
            "trail": [v["measured_latency_ms"] for v in outcome.verification],
        })
        print(f"budget {budget} seed {seed}: {outcome.status} acc {outcome.accuracy} "
              f"measured {outcome.measured_latency_ms}; trail {[round(t, 3) for t in records[-1]['trail']]}",
              file=sys.stderr, flush=True)
    # the end: every returned cell measured again and timed with plain ONNX Runtime; the oracle read back
    from store_repeatability import plain_onnxruntime_ms

    from nas.export import export_arch

    for r in records:
        if r["arch"] is None:
            continue
        again = measure(device, "nb201", [r["arch"]], store=r["store"], refresh=True)[0]
        r["fresh_ms"], r["fresh_spread_ms"] = again.latency_ms, again.spread_ms
        path = export_arch("nb201", space.from_string(r["arch"]), work / "returned.onnx")
        r["plain_ms"], r["plain_blocks_ms"] = plain_onnxruntime_ms(path)
    oracle = measure(device, "nb201", oracle_archs, store=work / "oracle.db")
    text = render(with_oracle(records, oracle, rows, accuracy), args, load_start, len(rows))
    write_keeping_reading(RESULTS, text)
    print(text)
    return 0


def with_oracle(records, oracle, rows, accuracy):
    """Each record with the oracle for its budget: the most accurate oracle cell whose latency plus
    spread meets it (and, for reference, whose latency alone does)."""
    latency = np.array([m.latency_ms for m in oracle])
    upper = latency + np.array([m.spread_ms for m in oracle])
    for r in records:
        strict = int(np.argmax(np.where(upper <= r["budget"], accuracy[rows], -1.0)))
        loose = int(np.argmax(np.where(latency <= r["budget"], accuracy[rows], -1.0)))
        r.update(oracle_acc=float(accuracy[rows[strict]]), oracle_ms=float(latency[strict]),
                 loose_oracle_acc=float(accuracy[rows[loose]]))
    return records


def fmt(value, spec=".2f"):
    return "—" if value is None else format(value, spec)


def render(records, args, machine: str, oracle_size: int) -> str:
    import onnxruntime

    lines = [
        "# The verify loop on local-cpu (ONNX Runtime, measured for real)", "",
        f"Generated by `experiments/verify_loop.py --seeds {args.seeds} --verify {args.verify}`; {machine} (after "
        f"measuring the oracle); onnxruntime {onnxruntime.__version__}, local-cpu with protocol {SETTINGS}. "
        f"Accuracy: NB201 CIFAR-100 (200 epochs, recorded). Oracle: the most accurate of {oracle_size} cells "
        f"(the `local-cpu` rows of `nas/data/heldout/nb201.csv`), measured in this run and read back at the end, "
        f"whose latency plus spread meets the budget (*oracle %*), or whose latency alone does (*loose %*). Each "
        f"search: 10 reference measurements, at most {args.verify} verifications, a fresh store; at the end the "
        f"returned cell is measured again (*again ms*, with its spread) and timed with plain ONNX Runtime "
        f"(*plain ms*: median of 3 x 300 runs, 1 thread).", "",
        "| budget ms | seed | status | accuracy % | oracle % | gap (points) | loose % | verified ms | again ms "
        "| plain ms (blocks) | over budget | verifications | measured trail ms | search s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        gap = None if r["accuracy"] is None else r["accuracy"] - r["oracle_acc"]
        over = "—" if r["plain_ms"] is None else (
            "NO" if r["fresh_ms"] <= r["budget"] and r["plain_ms"] <= r["budget"] else "YES")
        plain = "—" if r["plain_ms"] is None else (
            f"{r['plain_ms']:.3f} ({' / '.join(f'{b:.2f}' for b in r['plain_blocks_ms'])})")
        again = "—" if r["fresh_ms"] is None else f"{r['fresh_ms']:.3f} ± {r['fresh_spread_ms']:.3f}"
        verified = "—" if r["verified_ms"] is None else (
            f"{r['verified_ms']:.3f}" + ("" if r["verified_spread_ms"] is None else f" ± {r['verified_spread_ms']:.3f}"))
        trail = ", ".join(f"{t:.2f}" for t in r["trail"])
        lines.append(f"| {r['budget']:.2f} | {r['seed']} | {r['status']} | {fmt(r['accuracy'])} | {r['oracle_acc']:.2f} "
                     f"| {fmt(gap, '+.2f')} | {r['loose_oracle_acc']:.2f} | {verified} | {again} | {plain} | {over} "
                     f"| {r['verifications']} | {trail} | {r['search_s']:.0f} |")
    gaps = [r["accuracy"] - r["oracle_acc"] for r in records if r["accuracy"] is not None]
    over = sum(1 for r in records if r["plain_ms"] is not None
               and (r["fresh_ms"] > r["budget"] or r["plain_ms"] > r["budget"]))
    if gaps:
        lines += ["", f"Mean gap to the oracle {np.mean(gaps):+.2f} points (worst {min(gaps):+.2f}) over {len(gaps)} "
                  f"searches that returned a cell; {over} of {len(gaps)} results over budget when measured again or "
                  f"timed with plain ONNX Runtime; {np.mean([r['verifications'] for r in records]):.1f} "
                  f"verifications spent on average.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
