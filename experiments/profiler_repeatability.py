"""How repeatable is the local profiler on a shared, noisy machine?

Measures the same NB201 cells on ``local-cpu`` in two passes, each in its own
process, and compares the passes cell by cell, for three ways of measuring:

- ``raw``: interleaved, shuffled rounds with outlier rejection, no reference;
- ``corrected, own scale``: plus drift correction by the reference model,
  each pass in a fresh store (so each pass rescales by its own session's
  reference median);
- ``corrected, one store``: drift correction where the second pass
  re-measures (``refresh``) into the store of the first, so both share the
  reference latency stored there; this is how ``nas profile`` works.

Reports the per-cell relative difference of the passes (|a-b| / mean(a, b);
targets with correction: median <= 4 %, 90th percentile <= 10 %), their
Spearman rank correlation (target >= 0.97), flagged cells and cells measured
per minute. Prints a markdown table and writes it to
``experiments/results/profiler_repeatability.md``.

    nice .venv/bin/python experiments/profiler_repeatability.py [--cells 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "profiler_repeatability.md"
MODES = {
    "raw": "interleaved rounds, outlier rejection, no reference",
    "corrected, own scale": "plus the reference before/after each cell, but each pass in a fresh store, so each "
                            "rescales by its own session's reference median (shows why the store keeps one scale)",
    "corrected, one store": "plus reference; pass 2 re-measures into pass 1's store and shares its reference latency",
}


def cells(num: int, seed: int) -> list[str]:
    from nas.search_space import get_space

    space, rng, chosen = get_space("nb201"), np.random.default_rng(seed), {}
    while len(chosen) < num:
        chosen[space.to_string(space.sample(rng))] = None
    return list(chosen)


def one_pass(archs: list[str], drift_correction: bool, store: str, out: str) -> None:
    """Measure ``archs`` once (in this process) and write latencies and timing to ``out``."""
    from nas.devices import get_device
    from nas.profilers import measure
    from nas.store import MeasurementStore

    device = get_device("local-cpu").with_settings(drift_correction=drift_correction)
    start = time.perf_counter()
    records = measure(device, "nb201", archs, store=MeasurementStore(store), refresh=True)
    seconds = time.perf_counter() - start
    Path(out).write_text(json.dumps({"latency_ms": [r.latency_ms for r in records],
                                     "flagged": [r.flagged for r in records], "seconds": seconds,
                                     "settings": records[0].settings, "stats": records[0].stats}))


def run_pass(archs: list[str], drift_correction: bool, store: Path, folder: Path, name: str) -> dict:
    archs_file, out = folder / "archs.json", folder / f"{name}.json"
    archs_file.write_text(json.dumps(archs))
    subprocess.run([sys.executable, __file__, "--one-pass", str(archs_file), "--store", str(store), "--json", str(out)]
                   + ([] if drift_correction else ["--raw"]), check=True)
    return json.loads(out.read_text())


def compare(first: dict, second: dict, unflagged_only: bool = False) -> dict:
    """Pass-to-pass agreement; ``unflagged_only`` keeps the cells flagged in neither pass."""
    from scipy.stats import spearmanr

    a, b = np.asarray(first["latency_ms"]), np.asarray(second["latency_ms"])
    flagged = np.asarray(first["flagged"]) | np.asarray(second["flagged"])
    if unflagged_only:
        a, b = a[~flagged], b[~flagged]
    difference = np.abs(a - b) / ((a + b) / 2)
    return {"cells": len(a), "median": float(np.median(difference)), "p90": float(np.percentile(difference, 90)),
            "max": float(np.max(difference)), "spearman": float(spearmanr(a, b).statistic),
            "flagged": int(flagged.sum()),
            "per_minute": 60 * len(first["latency_ms"]) / np.mean([first["seconds"], second["seconds"]])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one-pass", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_pass:
        one_pass(json.loads(Path(args.one_pass).read_text()), not args.raw, args.store, args.json)
        return

    archs = cells(args.cells, args.seed)
    load_before = os.getloadavg()
    passes: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="nas-repeatability-") as folder:
        folder = Path(folder)
        # the modes take turns, so a slow phase of the machine does not hit one mode only
        for index in range(2):
            for mode in MODES:
                if mode == "corrected, one store":
                    store = folder / "shared.db"
                else:
                    store = folder / f"{mode.replace(' ', '').replace(',', '-')}-{index}.db"
                passes[mode].append(run_pass(archs, mode != "raw", store, folder, f"{index}"))
                print(f"pass {index + 1} of {mode!r}: {passes[mode][-1]['seconds']:.0f} s", file=sys.stderr)
    load_after = os.getloadavg()

    from nas.devices import get_device

    settings = passes["corrected, one store"][0]["settings"]
    protocol = get_device("local-cpu").settings
    lines = [
        "# Profiler repeatability on local-cpu",
        "",
        f"{args.cells} NB201 cells (sampled with seed {args.seed}), two passes per way of measuring, each pass in "
        f"its own process; the ways take turns. ONNX Runtime settings: {json.dumps(settings, sort_keys=True)}; "
        f"protocol: {protocol.get('warmup_runs')} warm-up runs, {protocol.get('rounds')} rounds of "
        f"{protocol.get('runs_per_round')} runs (more for unsettled cells).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs, shared with other users; load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after. Run "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} with "
        f"`nice .venv/bin/python experiments/profiler_repeatability.py`.",
        "",
        "Relative difference per cell = |pass 1 - pass 2| / mean. Targets with correction: median <= 4 %, "
        "90th percentile <= 10 %, Spearman >= 0.97.",
        "",
        "| way of measuring | cells compared | median diff | p90 diff | max diff | Spearman | cells flagged "
        "(either pass) | cells / min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        for unflagged_only in (False, True):
            result = compare(*passes[mode], unflagged_only=unflagged_only)
            label = f"{mode}, unflagged cells only" if unflagged_only else mode
            lines.append(f"| {label} | {result['cells']} | {100 * result['median']:.1f} % | "
                         f"{100 * result['p90']:.1f} % | {100 * result['max']:.1f} % | {result['spearman']:.3f} | "
                         f"{result['flagged']} | {result['per_minute']:.0f} |")
    lines += ["", *(f"- **{mode}**: {text}" for mode, text in MODES.items()),
              "- *unflagged cells only*: the cells neither pass flagged (spread of rounds above "
              "max_relative_spread after the extra rounds), i.e. those a user is told to trust",
              "- cells / min: the whole pass, including starting Python, exporting each cell to ONNX and "
              "loading it"]
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


if __name__ == "__main__":
    main()
