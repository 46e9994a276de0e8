"""Is a stored latency the latency a user measures, whichever store it went into?

Two checks on ``local-cpu`` with the catalog protocol:

1. **Fresh stores.** The same NB201 cells are measured into ``--stores``
   fresh stores, each pass in its own process, a pause of ``--gap-s``
   seconds between passes (so the machine's load differs between them).
   Per cell: the spread of its latency across the stores, as the relative
   standard deviation (std / mean) and the relative range (max - min) /
   median; for the drift-corrected latency and for the raw median of the
   runs. Target: median relative std <= 3 %. All passes (and the search
   below) share one fresh reference-level file (``$NAS_LEVELS``), as the
   stores and processes of one user do; each store's cells are read back
   at the end, when every latency is on the device's level of that moment,
   and are also reported as each pass returned them.
2. **The returned model, re-timed.** ``nas search --space nb201 --device
   local-cpu --latency 2ms --out DIR`` with a fresh store; its
   ``model.onnx`` is then timed with plain ONNX Runtime (1 thread, no nas
   code): 3 blocks of 300 runs, median of every run and of each block.
   Target: within the search's reported latency +- its spread, and never
   over the budget.

Records the load average around every pass and the machine. Prints a
markdown table and writes it to ``experiments/results/store_repeatability.md``.

    .venv/bin/python experiments/store_repeatability.py [--cells 30] [--stores 4] [--gap-s 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine_line, write_keeping_reading  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "store_repeatability.md"
BUDGET = "2ms"


def load_average() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def cells(num: int, seed: int) -> list[str]:
    from nas.search_space import get_space

    space, rng, chosen = get_space("nb201"), np.random.default_rng(seed), {}
    while len(chosen) < num:
        chosen[space.to_string(space.sample(rng))] = None
    return list(chosen)


def one_pass(archs: list[str], store: str, out: str) -> None:
    """Measure ``archs`` into ``store`` (in this process) and write what was stored to ``out``."""
    from nas.profilers import measure

    start = time.perf_counter()
    records = measure("local-cpu", "nb201", archs, store=store, progress=False)
    Path(out).write_text(json.dumps({
        "latency_ms": [r.latency_ms for r in records], "spread_ms": [r.spread_ms for r in records],
        "ratio": [r.latency_ms / r.stats.get("reference_level_ms", float("nan")) for r in records],
        "level_ms": records[0].stats.get("reference_level_ms"),
        "raw_median_ms": [r.raw_median_ms for r in records], "flagged": [r.flagged for r in records],
        "seconds": time.perf_counter() - start, "settings": records[0].settings}))


def spread_across(values: np.ndarray) -> dict[str, float]:
    """``values``: stores x cells. Per-cell relative std and relative range, summarised over cells."""
    relative_std = values.std(axis=0, ddof=1) / values.mean(axis=0)
    relative_range = (values.max(axis=0) - values.min(axis=0)) / np.median(values, axis=0)
    return {"std_median": float(np.median(relative_std)), "std_p90": float(np.percentile(relative_std, 90)),
            "std_max": float(relative_std.max()), "range_median": float(np.median(relative_range)),
            "range_max": float(relative_range.max())}


def plain_onnxruntime_ms(onnx_path: Path, blocks: int = 3, runs: int = 300) -> tuple[float, list[float]]:
    """Median of every run and of each block (ms): ONNX Runtime with 1 thread, nothing else."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    feed = {spec.name: np.random.default_rng(0).standard_normal(
        [d if isinstance(d, int) else 1 for d in spec.shape]).astype(np.float32)}
    for _ in range(10):
        session.run(None, feed)
    every, medians = [], []
    for _ in range(blocks):
        block = []
        for _ in range(runs):
            start = time.perf_counter_ns()
            session.run(None, feed)
            block.append((time.perf_counter_ns() - start) / 1e6)
        every += block
        medians.append(float(np.median(block)))
    return float(np.median(every)), medians


def search_and_retime(folder: Path) -> dict:
    env = dict(os.environ, NAS_STORE=str(folder / "search.db"))
    out = folder / "search-out"
    before = load_average()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nas", "search", "--space", "nb201", "--device", "local-cpu",
                    "--latency", BUDGET, "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    result = json.loads((out / "result.json").read_text())
    chosen = [v for v in result.get("verification", []) if v.get("arch") == result.get("arch")]
    spread_ms = chosen[-1].get("spread_ms", 0.0) if chosen else 0.0
    after_search = load_average()
    if not (out / "model.onnx").is_file():  # nothing met the budget: nothing to re-time
        return {"result": result, "spread_ms": spread_ms, "plain_ms": None, "plain_blocks_ms": [],
                "seconds": seconds, "load": (before, after_search, load_average())}
    median_ms, block_medians = plain_onnxruntime_ms(out / "model.onnx")
    return {"result": result, "spread_ms": spread_ms, "plain_ms": median_ms, "plain_blocks_ms": block_medians,
            "seconds": seconds, "load": (before, after_search, load_average())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=30)
    parser.add_argument("--stores", type=int, default=4)
    parser.add_argument("--gap-s", type=float, default=60.0, help="pause between passes (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-search", action="store_true", help="only the fresh-store check")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one-pass", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_pass:
        one_pass(json.loads(Path(args.one_pass).read_text()), args.store, args.json)
        return

    machine_before = machine_line()
    archs = cells(args.cells, args.seed)
    passes, loads = [], []
    with tempfile.TemporaryDirectory(prefix="nas-store-repeatability-") as folder:
        folder = Path(folder)
        os.environ["NAS_LEVELS"] = str(folder / "reference-levels.db")  # one fresh device history, shared
        (folder / "archs.json").write_text(json.dumps(archs))
        for index in range(args.stores):
            if index:
                time.sleep(args.gap_s)
            before = load_average()
            out = folder / f"pass{index}.json"
            subprocess.run([sys.executable, __file__, "--one-pass", str(folder / "archs.json"),
                            "--store", str(folder / f"store{index}.db"), "--json", str(out)], check=True)
            passes.append(json.loads(out.read_text()))
            loads.append((before, load_average()))
            print(f"store {index + 1}/{args.stores}: {passes[-1]['seconds']:.0f} s, load {before} -> {loads[-1][1]}",
                  file=sys.stderr, flush=True)
        read_back = []
        for index in range(args.stores):
            out = folder / f"read{index}.json"
            subprocess.run([sys.executable, __file__, "--one-pass", str(folder / "archs.json"),
                            "--store", str(folder / f"store{index}.db"), "--json", str(out)], check=True)
            read_back.append(json.loads(out.read_text()))
        search = None if args.skip_search else search_and_retime(folder)
    # the raw numbers too, for a reading beyond the table
    Path(tempfile.gettempdir(), "store_repeatability.json").write_text(json.dumps(
        {"archs": archs, "passes": passes, "read_back": read_back, "loads": loads, "search": search}, default=str))

    corrected = np.array([p["latency_ms"] for p in passes])
    on_one_level = np.array([p["latency_ms"] for p in read_back])
    raw = np.array([p["raw_median_ms"] for p in passes])
    flagged = np.array([p["flagged"] for p in passes]).any(axis=0)
    lines = [
        "# Stored latency across fresh stores, and against plain ONNX Runtime",
        "",
        f"Machine: {machine_before} (at the start). Run with "
        f"`.venv/bin/python experiments/store_repeatability.py --cells {args.cells} --stores {args.stores} "
        f"--gap-s {args.gap_s:g}`.",
        "",
        f"## {args.cells} NB201 cells into {args.stores} fresh stores",
        "",
        f"Each store filled by its own process, {args.gap_s:g} s apart; catalog protocol "
        f"({json.dumps(passes[0]['settings'], sort_keys=True)}). Per cell: relative std across the stores "
        f"(std / mean) and relative range ((max - min) / median). Target: median relative std <= 3 %.",
        "",
        "| statistic | cells | median rel. std | p90 rel. std | max rel. std | median rel. range | max rel. range |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, values, keep in (("latency_ms, every store read back at the end", on_one_level, slice(None)),
                               ("latency_ms, as each pass returned it", corrected, slice(None)),
                               ("raw_median_ms (as timed)", raw, slice(None)),
                               ("latency_ms read back, cells flagged in no store", on_one_level, ~flagged)):
        if values[:, keep].shape[1] < 2:
            continue
        result = spread_across(values[:, keep])
        lines.append(f"| {name} | {values[:, keep].shape[1]} | {100 * result['std_median']:.1f} % | "
                     f"{100 * result['std_p90']:.1f} % | {100 * result['std_max']:.1f} % | "
                     f"{100 * result['range_median']:.1f} % | {100 * result['range_max']:.1f} % |")
    lines += ["", "| store | seconds | load average before -> after (1/5/15 min) | median raw_median_ms | "
                  "device level after the pass (ms) | median latency_ms read back | cells flagged |",
              "|---:|---:|---|---:|---:|---:|---:|"]
    for index, (one, back, load) in enumerate(zip(passes, read_back, loads)):
        level = "n/a" if one.get("level_ms") is None else f"{one['level_ms']:.3f}"
        lines.append(f"| {index + 1} | {one['seconds']:.0f} | {load[0]} -> {load[1]} | "
                     f"{np.median(one['raw_median_ms']):.3f} | {level} | {np.median(back['latency_ms']):.3f} | "
                     f"{sum(one['flagged'])} |")
    if search is not None:
        result, plain = search["result"], search["plain_ms"]
        reported, spread = result.get("measured_latency_ms"), search["spread_ms"]
        within = reported is not None and plain is not None and abs(plain - reported) <= spread
        plain_text = "n/a" if plain is None else f"{plain:.3f}"
        lines += [
            "",
            f"## `nas search --space nb201 --device local-cpu --latency {BUDGET}`, the returned model re-timed",
            "",
            f"Fresh store; search took {search['seconds']:.0f} s; load average {search['load'][0]} before the "
            f"search, {search['load'][1]} after it, {search['load'][2]} after re-timing. Re-timed with plain "
            f"ONNX Runtime (1 thread, default graph optimisation), 3 x 300 runs after 10 warm-up runs.",
            "",
            "| status | arch | reported latency (ms) | reported spread (ms) | plain ORT median (ms) | "
            "plain ORT block medians (ms) | within reported spread | under budget |",
            "|---|---|---:|---:|---:|---|---|---|",
            f"| {result.get('status')} | `{result.get('arch')}` | "
            f"{'n/a' if reported is None else f'{reported:.3f}'} | {spread:.3f} | {plain_text} | "
            f"{' / '.join(f'{m:.3f}' for m in search['plain_blocks_ms'])} | {'yes' if within else 'no'} | "
            f"{'n/a' if plain is None else 'yes' if plain <= result['budget_ms'] else 'no'} |",
        ]
    table = "\n".join(lines) + "\n"
    print(table)
    write_keeping_reading(args.out, table)


if __name__ == "__main__":
    main()
