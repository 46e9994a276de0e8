"""Measure the slm latency dataset shipped in nas/data/slm/ on this machine.

Architectures of the ``slm`` space are sampled (seeded), their decode-step
graph exported once (freshly initialised weights) and timed in
ONNX Runtime under several settings, each a column of the table:

    decode-ctx512-b1-t1   one decode step after 512 tokens, batch 1, 1 thread
    decode-ctx128-b1-t1   ... after 128 tokens
    decode-ctx2048-b1-t1  ... after 2,048 tokens
    decode-ctx8192-b1-t1  ... after 8,192 tokens (the paper's decoding target)
    decode-ctx512-b8-t1   ... batch 8
    decode-ctx2048-b8-t1  ... batch 8 after 2,048 tokens

Prefill is left out of the table (the profiler measures it with
``phase: prefill``): exporting a second graph per architecture doubled the
cost on this shared machine.

Two intra-op threads are left out: on this shared 2-core machine a second
thread mostly waits for a core (trial timings of 2-thread decode steps were
5-40x slower than 1-thread ones and their spread was as large as the value).

Timing follows the interleaved, drift-corrected protocol of
nas.profilers.protocol (groups of architectures timed in random order
around a fixed reference model, outlier rounds rejected), with each block
summarised by its fastest call (see FastestOfBlock) and every value put on
one scale per setting: cell / reference level around it x the reference's
median over the run.
Measurements are appended to
measurements.csv (keyed by the sampled index, with the load average when
each cell finished) as each cell finishes, so a rerun resumes. A further
pass (--repeat, its own --part) times the cells again from graphs kept by
the first (--keep-graphs); a cell timed in several passes is their median,
and --finish prints the Spearman between two passes per setting (how
repeatable the table is). --finish writes archs.csv and latency_ms.csv (the
architectures measured on every setting, re-indexed, one column per
setting) and the slm entry of nas/data/help_protocol.json (10 reference
architectures at FLOPs percentiles, the device split).

    python experiments/slm_latency_dataset.py --archs 200
    # or exporting in a second (niced) process while the first one times, graphs kept for a second pass:
    OMP_NUM_THREADS=1 nice -n 19 python experiments/slm_latency_dataset.py --export-worker --ahead 400 \
        --graphs /tmp/slm-graphs &
    python experiments/slm_latency_dataset.py --rounds 5 --runs 5 --warmup 2 --graphs /tmp/slm-graphs --keep-graphs
    python experiments/slm_latency_dataset.py --rounds 5 --runs 5 --warmup 2 --graphs /tmp/slm-graphs \
        --repeat --part _pass2
    python experiments/slm_latency_dataset.py --finish
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.profilers.protocol import MeasurementProtocol, time_interleaved  # noqa: E402
from nas.search_space import get_space  # noqa: E402
from nas.search_space.slm.graphs import export_decode, export_prefill  # noqa: E402
from nas.search_space.slm.runtime import SlmTimer, session  # noqa: E402
from nas.search_space.slm.space import MAX_BLOCKS, WIDTHS  # noqa: E402

#: (phase, context length, batch size, threads) of every column
SETTINGS = (("decode", 512, 1, 1), ("decode", 128, 1, 1), ("decode", 2048, 1, 1), ("decode", 8192, 1, 1),
            ("decode", 512, 8, 1), ("decode", 2048, 8, 1))
TEST_SETTING, VALID_SETTING = "decode-ctx512-b1-t1", "decode-ctx2048-b8-t1"
PREFILL_LENGTHS = sorted({ctx for phase, ctx, _, _ in SETTINGS if phase == "prefill"})


def setting_name(phase: str, context: int, batch: int, threads: int) -> str:
    return f"{phase}-ctx{context}-b{batch}-t{threads}"


def sample_archs(count: int, seed: int = 0) -> list[tuple[str, ...]]:
    """Distinct architectures: uniform block types and widths, 1-4 blocks in
    the first two stages and 0-4 in the last (so operator counts spread over
    the whole range up to the cap, instead of piling up at it)."""
    space = get_space("slm")
    rng = np.random.default_rng(seed)
    archs, seen = [], set()
    while len(archs) < count:
        genes = [c[rng.integers(len(c))] for c in space.choices]
        for stage, low in ((0, 1), (1, 1), (2, 0)):
            genes[5 * stage + 4] = str(int(rng.integers(low, min(4, MAX_BLOCKS) + 1)))
        genes[-1] = str(WIDTHS[rng.integers(len(WIDTHS))])
        arch = space.normalize(genes)
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
    return archs


def read_done(path: Path) -> set[tuple[int, str]]:
    if not path.is_file():
        return set()
    with path.open() as handle:
        return {(int(row["index"]), row["setting"]) for row in csv.DictReader(handle)}


def export_graphs(arch, folder: Path, name: str) -> dict[str, Path]:
    space = get_space("slm")
    torch.manual_seed(0)
    model = space.build(arch).eval()
    paths = {"decode": export_decode(model, folder / f"{name}.decode.onnx")}
    for length in PREFILL_LENGTHS:
        paths[f"prefill{length}"] = export_prefill(model, folder / f"{name}.prefill{length}.onnx", length)
    return paths


def graph_for(paths: dict[str, Path], phase: str, context: int) -> Path:
    return paths["decode"] if phase == "decode" else paths[f"prefill{context}"]


class FastestOfBlock:
    """A timer whose every run in a block reads the block's fastest call: on
    this shared 2-core machine (load average 3-13 while the table was
    measured) most calls are interrupted by other processes, so a block's
    median is mostly the load, its fastest call mostly the model."""

    def __init__(self, timer):
        self.timer = timer

    def __call__(self, runs: int) -> np.ndarray:
        return np.full(runs, float(np.min(self.timer(runs))))


def export_worker(args) -> None:
    """Export the graphs of every architecture not yet measured into
    ``--graphs``, at most ``--ahead`` waiting at a time (the measuring
    process deletes each after timing it), so exporting overlaps timing."""
    folder = Path(args.graphs)
    folder.mkdir(parents=True, exist_ok=True)
    archs = sample_archs(args.archs, args.seed)
    done_cells = set().union(*(read_done(p) for p in Path(args.out).glob("measurements*.csv")))
    names = [setting_name(*s) for s in SETTINGS]
    for i, arch in enumerate(archs):
        if i < args.start:
            continue
        if all((i, n) in done_cells for n in names) or (folder / f"cell{i}.ready").exists():
            continue
        while len(list(folder.glob("*.ready"))) >= args.ahead:
            time.sleep(1)
        export_graphs(arch, folder, f"cell{i}")
        (folder / f"cell{i}.ready").touch()


def wait_for_graphs(folder: Path, index: int) -> dict[str, Path]:
    while not (folder / f"cell{index}.ready").exists():
        time.sleep(1)
    paths = {"decode": folder / f"cell{index}.decode.onnx"}
    for length in PREFILL_LENGTHS:
        paths[f"prefill{length}"] = folder / f"cell{index}.prefill{length}.onnx"
    return paths


def measure(args) -> None:
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    space = get_space("slm")
    archs = sample_archs(args.archs, args.seed)
    raw = folder / f"measurements{args.part}.csv"
    # a repeated pass times again what other passes measured; only its own file counts as done
    done_cells = read_done(raw) if args.repeat else set().union(*(read_done(p) for p in folder.glob("measurements*.csv")))
    protocol = MeasurementProtocol(warmup_runs=args.warmup, rounds=args.rounds, runs_per_round=args.runs,
                                   extra_rounds=args.extra_rounds, seed=args.seed)
    names = [setting_name(*s) for s in SETTINGS]
    new_file = not raw.is_file()
    work = Path(tempfile.mkdtemp(prefix="slm-dataset-"))
    started = time.time()
    try:
        reference_paths = export_graphs(space.drift_reference_arch(), work, "reference")
        sessions: dict = {}

        def loaded(path: Path, threads: int):
            if (path, threads) not in sessions:
                sessions[path, threads] = session(path, threads)
            return sessions[path, threads]

        reference_sessions = {(path, t): session(path, t) for path in reference_paths.values()
                              for t in sorted({s[3] for s in SETTINGS})}
        with raw.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(["index", "setting", "latency_ms", "spread_ms", "flagged", "reference_median_ms",
                                 "load_1min"])
            for start in range(args.start, len(archs), args.group):
                indices = [i for i in range(start, min(start + args.group, len(archs)))
                           if any((i, n) not in done_cells for n in names)
                           and not (args.repeat and args.graphs and not (Path(args.graphs) / f"cell{i}.ready").exists())]
                if not indices:
                    continue
                sessions.clear()  # one session per graph and thread count, shared by the settings
                sessions.update({k: v for k, v in reference_sessions.items()})
                if args.graphs:
                    paths = {i: wait_for_graphs(Path(args.graphs), i) for i in indices}
                else:
                    paths = {i: export_graphs(archs[i], work, f"cell{i}") for i in indices}
                for setting, name in zip(SETTINGS, names):
                    todo = [i for i in indices if (i, name) not in done_cells]
                    if not todo:
                        continue
                    phase, context, batch, threads = setting
                    options = dict(threads=threads, batch_size=batch, context_length=context)
                    timers = [FastestOfBlock(SlmTimer(graph_for(paths[i], phase, context), **options,
                                                      loaded=loaded(graph_for(paths[i], phase, context), threads)))
                              for i in todo]
                    reference = FastestOfBlock(SlmTimer(graph_for(reference_paths, phase, context), **options,
                                                        loaded=loaded(graph_for(reference_paths, phase, context),
                                                                      threads)))

                    def done(cell: int, estimate, name=name, todo=todo) -> None:
                        writer.writerow([todo[cell], name, f"{estimate.latency_ms:.6g}", f"{estimate.spread_ms:.4g}",
                                         int(estimate.flagged),
                                         f"{estimate.stats.get('reference_median_ms', float('nan')):.6g}",
                                         f"{os.getloadavg()[0]:.2f}"])
                        done_cells.add((todo[cell], name))

                    time_interleaved(timers, reference, replace(protocol, group_size=len(todo)), on_done=done)
                    handle.flush()
                for i in indices if not args.keep_graphs else ():
                    for path in paths[i].values():
                        path.unlink(missing_ok=True)
                    if args.graphs:
                        (Path(args.graphs) / f"cell{i}.ready").unlink(missing_ok=True)
                finished = len({i for i, _ in done_cells})
                print(f"{finished}/{len(archs)} architectures measured, {time.time() - started:.0f} s, "
                      f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def finish(args) -> None:
    """Write latency_ms.csv (complete rows only, re-indexed) and choose the 10 reference architectures."""
    folder = Path(args.out)
    space = get_space("slm")
    archs = [{"arch": space.to_string(a), "params": space.num_params(a), "flops_decode_ctx512": space.flops(a)}
             for a in sample_archs(args.archs, args.seed)]
    names = [setting_name(*s) for s in SETTINGS]
    values: dict[tuple[int, str], list[float]] = {}
    rows = []
    for path in sorted(folder.glob("measurements*.csv")):  # one file per measuring process
        with path.open() as handle:
            rows += list(csv.DictReader(handle))
    # one scale per setting: each cell relative to the reference timed around it, times the
    # reference's median over the whole run (the load changed several-fold during the run)
    scale = {n: float(np.median([float(r["reference_median_ms"]) for r in rows if r["setting"] == n] or [1.0]))
             for n in names}
    for row in rows:
        values.setdefault((int(row["index"]), row["setting"]), []).append(
            float(row["latency_ms"]) * scale[row["setting"]] / float(row["reference_median_ms"]))
    repeated = sum(len(v) > 1 for v in values.values())
    for n in names:  # how repeatable the table is: the rank agreement of two passes
        pairs = np.array([v[:2] for (_, setting), v in values.items() if setting == n and len(v) > 1])
        if len(pairs) > 2:
            print(f"{n}: Spearman {spearmanr(pairs[:, 0], pairs[:, 1])[0]:.3f} between two passes over "
                  f"{len(pairs)} architectures", file=sys.stderr)
    # a cell timed in several passes (--repeat) is their median: passes at different moments of
    # the machine's load disagree most on the largest models, whose calls are most often cut
    values = {cell: float(np.median(v)) for cell, v in values.items()}
    print(f"{repeated} of {len(values)} cells timed in more than one pass", file=sys.stderr)
    complete = [i for i in range(len(archs)) if all((i, n) in values for n in names)]
    print(f"{len(complete)} of {len(archs)} architectures measured on all {len(names)} settings", file=sys.stderr)
    with (folder / "archs.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "arch", "params", "flops_decode_ctx512"])
        for new, old in enumerate(complete):
            writer.writerow([new, archs[old]["arch"], archs[old]["params"], archs[old]["flops_decode_ctx512"]])
    with (folder / "latency_ms.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", *names])
        for new, old in enumerate(complete):
            writer.writerow([new, *(f"{values[(old, n)]:.6g}" for n in names)])
    flops = np.array([float(archs[old]["flops_decode_ctx512"]) for old in complete])
    order = np.argsort(flops, kind="stable")
    # references: the architectures at the 5th, 15th, ..., 95th FLOPs percentiles (no latency is read)
    references = [int(order[int(round(q * (len(order) - 1)))]) for q in np.linspace(0.05, 0.95, 10)]
    print("reference architectures: " + ", ".join(map(str, references)), file=sys.stderr)
    # the shipped split: the default setting is meta-test, batch 8 at 2,048 tokens meta-valid
    protocol_file = folder.parent / "help_protocol.json"
    protocols = json.loads(protocol_file.read_text())
    protocols["slm"] = {"reference_arch_indices": references,
                        "meta_train_devices": [n for n in names if n not in (TEST_SETTING, VALID_SETTING)],
                        "meta_valid_devices": [VALID_SETTING], "meta_test_devices": [TEST_SETTING],
                        # HELP meta-trains on the first three quarters, meta-validates on the rest
                        "num_meta_train_sample": (3 * len(complete)) // 4, "num_samples": 10}
    protocol_file.write_text(json.dumps(protocols, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group", type=int, default=8, help="architectures timed together")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=4, help="timed runs per round (its fastest counts)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--extra-rounds", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "nas" / "data" / "slm"))
    parser.add_argument("--finish", action="store_true", help="only write latency_ms.csv from measurements.csv")
    parser.add_argument("--graphs", help="folder where a second process (--export-worker) leaves exported graphs")
    parser.add_argument("--export-worker", action="store_true", help="only export graphs into --graphs")
    parser.add_argument("--start", type=int, default=0, help="first sampled index to measure (or export)")
    parser.add_argument("--part", default="", help="suffix of this process's measurements file")
    parser.add_argument("--ahead", type=int, default=16, help="exported graphs waiting at most (--export-worker)")
    parser.add_argument("--keep-graphs", action="store_true", help="leave timed graphs in --graphs for a later pass")
    parser.add_argument("--repeat", action="store_true",
                        help="a further pass: time again the cells other passes measured (with --graphs, those whose "
                             "graphs are there); needs its own --part")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.repeat and not args.part:
        parser.error("--repeat writes its own measurements file: give it a --part, e.g. --part _pass2")
    if args.export_worker:
        export_worker(args)
        return
    if not args.finish:
        measure(args)
    finish(args)


if __name__ == "__main__":
    main()
