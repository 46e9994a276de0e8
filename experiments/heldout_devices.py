"""Measure held-out devices: runtimes on this CPU whose latency ranks
architectures unlike the recorded tables. They are never read by
meta-training; predictors are scored on them (``nas/data/heldout/``).

Devices (all on this machine's CPU, batch 1 and 1 thread unless named):

- ``cpu-torch-eager``: PyTorch eager mode, where per-module Python overhead
  dominates (a cost that counts layers, not FLOPs);
- ``cpu-ort-noopt``: ONNX Runtime with graph optimisation disabled (no
  fusion: every BatchNorm and activation is a kernel launch);
- ``cpu-ort-2threads``: ONNX Runtime at 2 intra-op threads (thread hand-off
  cost; noisy on a shared 2-core machine);
- ``cpu-ort-b64``: ONNX Runtime at batch 64 (compute-bound);
- ``local-cpu``: the catalog device (ONNX Runtime, all optimisations);
- ``gpu-torch-eager`` and ``gpu-torch-eager-b32``: PyTorch eager mode on a
  CUDA GPU at batch 1 (kernel-launch overhead dominates: latency counts
  operators, hardly FLOPs) and batch 32, each forward pass followed by a
  device synchronisation. Measured only where CUDA is available (the tables
  name the GPU in ``nas/data/heldout/README.md``).

Architectures: each space's 10 reference architectures, then rows of the
space's latency table drawn with ``--seed``, measured in chunks of 10 that
go round every device, so a stopped run leaves every device with the same
architectures. Rows already in the output CSV are skipped (resumable).

Timing: the first four devices are timed here, each cell exported to ONNX
once and loaded into one session per setting (or built as a torch module),
in interleaved rounds (3 rounds of 5 runs; batch 64: 3 of 2), with the
space's drift-correction reference model timed around every cell. A block's
value is its fastest run, the least disturbed on a shared machine; a round's
value is the cell's block relative to the reference blocks around it, on the
scale of the reference latency pinned by the device's first chunk (stored
as row -1); the latency is the median of the rounds. ``local-cpu`` goes through
``nas.profilers.measure`` with the catalog protocol, lightened (``LIGHT``),
and its measurements are also kept in a SQLite store.

Writes ``nas/data/heldout/{space}.csv`` (``row,arch,device,latency_ms,spread_ms``)
after every chunk and prints a summary table, also written to
``experiments/results/heldout_devices.md``.

    nohup nice -n 5 .venv/bin/python experiments/heldout_devices.py --num 250 > /tmp/heldout.log 2>&1 &
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine_line, write_keeping_reading  # noqa: E402  (beside this script)

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "nas" / "data" / "heldout"
RESULTS = Path(__file__).resolve().parent / "results" / "heldout_devices.md"
SPACES = ("nb201", "fbnet")
#: the protocol of ``local-cpu`` here: the catalog's, lighter, so a few hundred cells take minutes
LIGHT = {"warmup_runs": 2, "rounds": 3, "runs_per_round": 5, "extra_rounds": 1, "group_size": 10}
#: ONNX Runtime settings of each held-out device timed here directly (one export, several sessions)
ORT_DEVICES = {
    "cpu-ort-noopt": {"graph_optimization_level": "disabled"},
    "cpu-ort-2threads": {"threads": 2},
    "cpu-ort-b64": {"batch_size": 64},
}
#: interleaved rounds x runs per round of the directly timed devices (batch 64 runs ~100 ms each)
ROUNDS = {"cpu-ort-b64": (3, 2)}
DEFAULT_ROUNDS = (3, 5)
TORCH_DEVICE = "cpu-torch-eager"
#: PyTorch eager devices on a CUDA GPU: batch size of each
GPU_DEVICES = {"gpu-torch-eager": 1, "gpu-torch-eager-b32": 32}
CATALOG_DEVICE = "local-cpu"
DEVICES = (TORCH_DEVICE, *ORT_DEVICES, CATALOG_DEVICE, *GPU_DEVICES)
#: what a plain run measures (the GPU devices need CUDA and are asked for by name)
DEFAULT_DEVICES = (TORCH_DEVICE, *ORT_DEVICES, CATALOG_DEVICE)
#: local-cpu is measured for nb201 only, where it is the oracle of experiments/verify_loop.py
SKIP = {("fbnet", CATALOG_DEVICE)}
#: ``row`` of the line that pins a device's scale: the drift-correction reference model's latency
REFERENCE_ROW = -1
FIELDS = ("row", "arch", "device", "latency_ms", "spread_ms")


def table_rows(space: str, num: int, seed: int) -> list[int]:
    """The 10 reference rows, then ``num - 10`` other rows of the space's table drawn with ``seed``."""
    from nas import benchmarks

    reference = list(benchmarks.help_protocol(space).reference_indices)
    others = np.setdiff1d(np.arange(len(benchmarks.arch_strings(space))), reference)
    drawn = np.random.default_rng(seed).choice(others, max(0, num - len(reference)), replace=False)
    return reference + [int(r) for r in drawn]


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def append_rows(path: Path, rows: list[dict]) -> None:
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def torch_eager_timers(space: str, archs, device: str = "cpu", batch_size: int = 1) -> list:
    """One timer per architecture: a freshly initialised network in eval mode, no grad, on ``device``
    (a CUDA run waits for the GPU after each forward pass, so a run times the whole pass)."""
    import torch

    from nas.search_space import get_space

    search_space = get_space(space)
    x = torch.randn(batch_size, *search_space.input_shape, device=device)
    wait = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    timers = []
    for arch in archs:
        torch.manual_seed(0)
        model = search_space.build(arch).eval().to(device)

        def timer(runs, model=model):
            out = np.empty(runs)
            with torch.no_grad():
                for i in range(runs):
                    start = time.perf_counter_ns()
                    model(x)
                    wait()
                    out[i] = (time.perf_counter_ns() - start) / 1e6
            return out

        timers.append(timer)
    return timers


def ort_timers(paths, settings: dict) -> list:
    """One ONNX Runtime timer per exported model, under ``settings``."""
    from nas.profilers.onnxruntime import OnnxRuntimeModel

    return [OnnxRuntimeModel(path, **settings) for path in paths]


def time_rounds(timers, reference, reference_ms: float | None, rounds: int, runs: int, warmup: int = 2,
                seed: int = 0) -> tuple[list[tuple[float, float]], float]:
    """Interleaved rounds in a fresh random order each round, the reference
    model timed before every cell. A block's value is its fastest run (the
    run other processes disturbed least: this machine is shared); a round's
    value is the cell's block over the mean of the reference blocks around
    it, times ``reference_ms`` (default: this call's median reference block),
    so a machine that slows down between chunks keeps one scale. Returns
    ``(latency_ms, spread_ms)`` per cell (median and standard deviation of
    its rounds) and the reference latency used."""
    rng = np.random.default_rng(seed)
    for timer in [*timers, reference]:
        timer(warmup)
    raw = [[] for _ in timers]
    blocks = []
    for _ in range(rounds):
        before = float(np.min(reference(runs)))
        blocks.append(before)
        for cell in rng.permutation(len(timers)):
            value = float(np.min(timers[cell](runs)))
            after = float(np.min(reference(runs)))
            blocks.append(after)
            raw[cell].append(value / ((before + after) / 2))
            before = after
    scale = reference_ms if reference_ms is not None else float(np.median(blocks))
    return [(float(np.median(v)) * scale, float(np.std(v, ddof=1)) * scale) for v in raw], scale


def measure_chunk(space: str, device: str, archs, folder: Path, store,
                  reference_ms: float | None) -> tuple[list[tuple[float, float]], float | None]:
    """``(latency_ms, spread_ms)`` of each architecture on one held-out device,
    and the reference latency its scale is pinned to (None for ``local-cpu``,
    whose scale the measurement store keeps). ONNX models are exported once
    into ``folder`` and shared by the devices."""
    from nas.profilers.protocol import reference_arch

    if device == CATALOG_DEVICE:
        from nas.devices import get_device
        from nas.profilers import measure

        records = measure(get_device(CATALOG_DEVICE).with_settings(**LIGHT), space, archs, store=store)
        return [(r.latency_ms, r.spread_ms) for r in records], None
    rounds, runs = ROUNDS.get(device, DEFAULT_ROUNDS)
    everyone = [*archs, reference_arch(space)]
    if device == TORCH_DEVICE:
        timers = torch_eager_timers(space, everyone)
    elif device in GPU_DEVICES:
        timers = torch_eager_timers(space, everyone, "cuda", GPU_DEVICES[device])
    else:
        from nas.export import export_arch
        from nas.search_space import get_space

        paths = []
        for arch in everyone:
            path = folder / f"{get_space(space).to_string(arch).replace('|', '_').replace('~', '-')}.onnx"
            if not path.is_file():
                export_arch(space, arch, path)
            paths.append(path)
        timers = ort_timers(paths, ORT_DEVICES[device])
    return time_rounds(timers[:-1], timers[-1], reference_ms, rounds, runs, warmup=1 if runs < 5 else 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=250, help="architectures per space (10 references included)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=SPACES)
    parser.add_argument("--devices", nargs="+", default=list(DEFAULT_DEVICES), choices=DEVICES,
                        help="devices to measure (default: the CPU ones; the gpu-* devices need CUDA)")
    parser.add_argument("--store", default=None,
                        help="SQLite store of the ONNX Runtime measurements (default: heldout.db beside the default store)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder of the tables (default: the package's)")
    parser.add_argument("--summary-only", action="store_true", help="only print the summary of what is measured")
    parser.add_argument("--no-summary", action="store_true", help="measure only (the summary needs the predictors)")
    args = parser.parse_args(argv)

    import torch

    from nas import benchmarks
    from nas.profilers.protocol import reference_arch
    from nas.search_space import get_space
    from nas.store import MeasurementStore, default_store_path

    torch.set_num_threads(1)
    if any(d in GPU_DEVICES for d in args.devices) and not args.summary_only and not torch.cuda.is_available():
        print(f"error: --devices {' '.join(d for d in args.devices if d in GPU_DEVICES)} needs a CUDA GPU and "
              "torch sees none here; measure the CPU devices here and the gpu-* devices on a machine with a GPU.",
              file=sys.stderr)
        return 2
    if not args.summary_only:
        store = MeasurementStore(args.store or Path(default_store_path()).parent / "heldout.db")
        plans = {space: table_rows(space, args.num, args.seed) for space in args.spaces}
        started = time.perf_counter()
        folder = Path(tempfile.mkdtemp(prefix="nas-heldout-"))
        for start in range(0, max(len(p) for p in plans.values()), 10):
            for space in args.spaces:
                path = args.out / f"{space}.csv"
                done = {(int(r["row"]), r["device"]) for r in read_rows(path)}
                strings = benchmarks.arch_strings(space)
                search_space = get_space(space)
                chunk = plans[space][start:start + 10]
                for device in args.devices:
                    if (space, device) in SKIP:
                        continue
                    todo = [row for row in chunk if (row, device) not in done]
                    if not todo:
                        continue
                    archs = [search_space._parse(strings[row]) for row in todo]
                    reference_ms = next((float(r["latency_ms"]) for r in read_rows(path)
                                         if r["device"] == device and int(r["row"]) == REFERENCE_ROW), None)
                    results, scale = measure_chunk(space, device, archs, folder, store, reference_ms)
                    if reference_ms is None and scale is not None:
                        append_rows(path, [{"row": REFERENCE_ROW, "arch": search_space.to_string(reference_arch(space)),
                                            "device": device, "latency_ms": f"{scale:.5f}", "spread_ms": "0"}])
                    append_rows(path, [{"row": row, "arch": search_space.to_string(arch), "device": device,
                                        "latency_ms": f"{ms:.5f}", "spread_ms": f"{spread:.5f}"}
                                       for row, arch, (ms, spread) in zip(todo, archs, results)])
                    print(f"{space} {device}: {start + len(chunk)}/{len(plans[space])} architectures "
                          f"({(time.perf_counter() - started) / 60:.1f} min)", file=sys.stderr, flush=True)
    if args.no_summary:
        return 0
    text = summary(args.spaces)
    print(text)
    write_keeping_reading(RESULTS, text)
    return 0


def summary(spaces) -> str:
    """Per held-out device: the structural priors' Spearman, the transfer
    baseline's and the default predictor's (adapted on the 10 reference
    architectures, scored on every other measured architecture); then the
    default predictor's 90 % interval per device, held-out and recorded
    meta-test devices: its own, and as the search uses it
    (:class:`nas.search.calibration.CalibratedPredictor`, the wider of the
    predictor's interval and one from its leave-one-out errors)."""
    from scipy.stats import spearmanr

    from nas import benchmarks
    from nas.predictors import TransferPredictor, load_default_predictor
    from nas.predictors.baselines import structural_priors
    from nas.predictors.evaluation import evaluate, evaluate_heldout, heldout_table, table_codes
    from nas.search.calibration import CalibratedPredictor

    lines = ["# Held-out devices: this CPU under runtimes unlike the recorded tables", "",
             f"Generated by `experiments/heldout_devices.py`; {machine_line()} at the end. Protocol: see the script's docstring. "
             f"Tables: `nas/data/heldout/{{space}}.csv`.", "",
             "Spearman's rho on every measured architecture except the 10 references. Structural priors rank by "
             "their value (an affine fit on 10 samples keeps that order); *transfer* and *default* adapt on the "
             "device's 10 reference measurements; *gap* = default − best prior.", "",
             "Intervals: *cover* = share of the default predictor's 90 % intervals that hold the measured latency "
             "(target 85–95 %), *span* = median upper / lower bound; *search* = the same predictor wrapped as the "
             "search uses it (`CalibratedPredictor`).", ""]
    in_band = {"own": [], "search": []}
    for space in spaces:
        table = heldout_table(space)
        if table is None:
            continue
        reference = np.isin(table.rows, benchmarks.help_protocol(space).reference_indices)
        priors = structural_priors(space, table_codes(space)[table.rows])
        names = list(priors)
        default = {s.device: s for s in evaluate_heldout(lambda: load_default_predictor(space), space)}
        searched = {s.device: s for s in evaluate_heldout(lambda: CalibratedPredictor(load_default_predictor(space)),
                                                           space)}
        transfer = {s.device: s for s in evaluate_heldout(lambda: TransferPredictor(space), space)}
        lines += [f"## {space}", "",
                  "| device | test archs | median ms | " + " | ".join(names)
                  + " | best prior | transfer | default | gap |",
                  "|---|---|---|" + "---|" * len(names) + "---|---|---|---|"]
        for device in table.devices:
            y = table.column(device)
            test = np.isfinite(y) & ~reference
            if device not in default or test.sum() < 3:
                continue
            rhos = {n: float(spearmanr(priors[n][test], y[test])[0]) for n in names}
            best = max(rhos.values())
            d = default[device]
            lines.append(f"| {device} | {int(test.sum())} | {np.median(y[test]):.2f} | "
                         + " | ".join(f"{rhos[n]:.3f}" for n in names)
                         + f" | {best:.3f} | {transfer[device].spearman:.3f} | {d.spearman:.3f} | "
                         f"{d.spearman - best:+.3f} |")
        recorded = evaluate(lambda: load_default_predictor(space), space)
        recorded_search = {s.device: s for s in evaluate(lambda: CalibratedPredictor(load_default_predictor(space)),
                                                         space)}
        lines += ["", f"90 % intervals of the default predictor ({space}; meta-test devices: 10 references, every "
                  f"other architecture of the recorded table)", "",
                  "| device | kind | Spearman | cover % | span | search cover % | search span |",
                  "|---|---|---|---|---|---|---|"]
        rows = [(s, searched[s.device], "held-out") for s in default.values()]
        rows += [(s, recorded_search[s.device], "meta-test") for s in recorded]
        for own, wrapped, kind in rows:
            in_band["own"].append(85 <= own.coverage_90 <= 95)
            in_band["search"].append(85 <= wrapped.coverage_90 <= 95)
            lines.append(f"| {own.device} | {kind} | {own.spearman:.3f} | {own.coverage_90:.1f} | "
                         f"×{own.interval_ratio_90:.2f} | {wrapped.coverage_90:.1f} | ×{wrapped.interval_ratio_90:.2f} |")
        lines.append("")
        lines += member_comparison(space, table)
    if in_band["own"]:
        lines += [f"Devices whose 90 % interval covers 85–95 %: {sum(in_band['own'])} of {len(in_band['own'])} "
                  f"(the predictor's own), {sum(in_band['search'])} of {len(in_band['search'])} (as the search "
                  f"uses it).", ""]
    return "\n".join(lines)


def member_comparison(space: str, table) -> list[str]:
    """Lines of a table: per held-out and recorded meta-test device, the default
    predictor's Spearman against the candidate model its own 10 samples rank
    best (lowest robust held-out error, predicting alone) and against the best
    structural prior (on the same test architectures)."""
    from scipy.stats import spearmanr

    from nas import benchmarks
    from nas.predictors import load_default_predictor
    from nas.predictors.baselines import structural_priors
    from nas.predictors.evaluation import measurement_rows, table_codes

    codes = table_codes(space)
    strings = benchmarks.arch_strings(space)
    priors = structural_priors(space, codes)
    reference = np.isin(table.rows, benchmarks.help_protocol(space).reference_indices)
    sets = []
    for device in table.devices:
        y = table.column(device)
        known = np.isfinite(y)
        if (known & reference).sum() == reference.sum() and (known & ~reference).sum() >= 3:
            sets.append((device, "held-out", table.rows[known & reference], y[known & reference],
                         table.rows[known & ~reference], y[known & ~reference]))
    recorded = benchmarks.latency_table(space)
    rows = measurement_rows(space)
    test = np.setdiff1d(np.arange(len(codes)), rows)
    for device in benchmarks.help_protocol(space).meta_test_devices:
        y = recorded.column(device)
        sets.append((device, "meta-test", rows, y[rows], test, y[test]))
    lines = [f"The default predictor against the model its own 10 samples rank best ({space}; *member* = that "
             f"candidate predicting alone; Spearman on the same test architectures)", "",
             "| device | kind | default | member | which member | default − member | best prior | default − best prior |",
             "|---|---|---|---|---|---|---|---|"]
    below = 0
    for device, kind, support_rows, support_ms, test_rows, test_ms in sets:
        predictor = load_default_predictor(space)
        predictor.adapt({strings[r]: float(v) for r, v in zip(support_rows, support_ms)})
        name, member = predictor.ranked_best_member()
        stack = float(spearmanr(predictor.predict_codes(codes[test_rows]), test_ms)[0])
        alone = float(spearmanr(member.predict_codes(codes[test_rows]), test_ms)[0])
        prior = float(np.nanmax([spearmanr(values[test_rows], test_ms)[0] for values in priors.values()]))
        below += stack < alone - 0.0005
        lines.append(f"| {device} | {kind} | {stack:.3f} | {alone:.3f} | {name} | {stack - alone:+.3f} | "
                     f"{prior:.3f} | {stack - prior:+.3f} |")
    return lines + ["", f"Below that member (by more than 0.0005): {below} of {len(sets)} devices.", ""]


if __name__ == "__main__":
    sys.exit(main())
