"""``nas profile``: measure architectures on a device, skipping what is stored."""

from __future__ import annotations

from nas.errors import UserInputError

#: the one line ``nas --help`` shows for this command
HELP = "measure the latency of architectures on a device (stored; stored ones are skipped)"

DEFAULT_NUM = 20


def register(subparsers) -> None:
    from nas.search_space import list_spaces

    parser = subparsers.add_parser(
        "profile", help=HELP,
        description="Measure architectures on a catalog device. latency_ms is the median of per-run ONNX Runtime "
                    "timings on the device, what timing the model with plain ONNX Runtime there gives at the device's "
                    "typical speed: drift correction divides each run by a reference model timed around it and "
                    "multiplies it by the device's reference level (the median of the latest 2,000 reference "
                    "blocks timed on the device under these settings, one per user, shared by every store and "
                    "process; $NAS_LEVELS or ~/.cache/nas/reference-levels.db). spread_ms is the standard "
                    "deviation of its rounds widened by how much slower the device's slow moments are; "
                    "raw_median_ms and raw_spread_ms are the same without correction, as timed. Cells are timed in interleaved rounds, "
                    "--group-size at a time, and each is stored (in --store, default $NAS_STORE or "
                    "~/.cache/nas/measurements.db) the moment its own rounds are done, so an interrupted run "
                    "keeps every finished cell; stored ones are not measured again.")
    parser.add_argument("--device", required=True, help="catalog device name ('nas devices list')")
    parser.add_argument("--space", required=True, choices=list_spaces())
    which = parser.add_argument_group("which architectures (default: --num 20 sampled with --seed)")
    which.add_argument("--num", type=int, help=f"sample this many distinct architectures (default {DEFAULT_NUM})")
    which.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    which.add_argument("--archs", metavar="FILE",
                       help="canonical architecture strings, one a line (or a CSV with an 'arch' column)")
    which.add_argument("--measurements", metavar="FILE.csv",
                       help="latencies measured elsewhere on this device (CSV with header arch,latency_ms, as "
                            "for 'nas predictor'): stored, and not measured again")
    parser.add_argument("--out", metavar="FILE.csv", help="also write the measurements as CSV (arch,latency_ms,...)")
    storage = parser.add_argument_group("store")
    storage.add_argument("--store", metavar="PATH|URL",
                         help="measurement store: a SQLite file or postgresql+psycopg://USER@HOST:5432/DB "
                              "(default $NAS_STORE or ~/.cache/nas/measurements.db)")
    storage.add_argument("--no-store", action="store_true", help="neither read nor write a store")
    storage.add_argument("--refresh", action="store_true", help="measure again even what is stored")
    settings = parser.add_argument_group("profiler settings (override the device's catalog entry)")
    settings.add_argument("--threads", type=int, help="intra-op threads")
    settings.add_argument("--batch-size", type=int, help="inputs per inference")
    settings.add_argument("--graph-optimization-level", choices=("disabled", "basic", "extended", "all"))
    settings.add_argument("--rounds", type=int, help="interleaved rounds per cell")
    settings.add_argument("--runs-per-round", type=int, help="timed runs of a cell per round")
    settings.add_argument("--warmup-runs", type=int, help="untimed runs of each model first")
    settings.add_argument("--group-size", type=int,
                          help="cells in the interleaved rotation at once (default 10); each is stored when its "
                               "own rounds are done")
    settings.add_argument("--no-drift-correction", action="store_true",
                          help="do not time the reference model around each cell (latency_ms is then the raw "
                               "median of the kept rounds' runs)")
    parser.set_defaults(handler=_profile)


def check_arguments(args) -> None:
    """Refuse contradictory or out-of-range options before anything heavy is imported."""
    if args.num is not None and args.num < 1:
        raise UserInputError(f"--num must be at least 1, not {args.num}")
    if args.no_store and args.store:
        raise UserInputError("--store and --no-store contradict each other; pass one")


def _profile(args) -> int:
    import numpy as np

    from nas.devices import get_device
    from nas.search_space import read_arch_file
    from nas.predictors.measurements import read_measurements_csv
    from nas.profilers import make_profiler, measure
    from nas.search_space import get_space
    from nas.store import MeasurementStore, write_csv

    if args.out:
        from nas.outputs import check_output_file

        check_output_file(args.out)
    device = get_device(args.device).with_settings(
        threads=args.threads, batch_size=args.batch_size, graph_optimization_level=args.graph_optimization_level,
        rounds=args.rounds, runs_per_round=args.runs_per_round, warmup_runs=args.warmup_runs, group_size=args.group_size,
        drift_correction=False if args.no_drift_correction else None)
    search_space = get_space(args.space)
    store = False if args.no_store else MeasurementStore(args.store)

    archs: list[tuple[str, ...]] = []
    if args.measurements:
        if store is False:
            raise UserInputError("--measurements are stored; drop --no-store")
        latencies = read_measurements_csv(args.measurements, args.space, require_reference=False)
        imported = store.put_latencies(device, make_profiler(device).settings, args.space, latencies)
        print(f"stored {len(imported)} measurements of {device.name} from {args.measurements}")
        archs += [search_space.from_string(r.arch) for r in imported]
    if args.archs:
        archs += read_arch_file(args.archs, args.space)
    if args.num is not None or not archs:
        archs += _sample(search_space, args.num or DEFAULT_NUM, np.random.default_rng(args.seed))

    results = measure(device, args.space, archs, store=store, progress=True, refresh=args.refresh)
    _print_table(results)
    if args.out:
        print(f"wrote {write_csv(args.out, results)}")
    return 0


def _sample(search_space, num: int, rng) -> list[tuple[str, ...]]:
    if search_space.num_archs is not None and num > search_space.num_archs:
        raise UserInputError(f"--num {num} exceeds the {search_space.num_archs} architectures of "
                             f"{search_space.name}")
    chosen: dict[tuple[str, ...], None] = {}
    while len(chosen) < num:
        chosen[search_space.sample(rng)] = None
    return list(chosen)


def _print_table(results) -> None:
    rows = [("arch", "latency_ms", "spread_ms", "raw_median_ms", "flagged", "source")]
    rows += [(m.arch, f"{m.latency_ms:.3f}", f"{m.spread_ms:.3f}",
              "" if m.raw_median_ms is None else f"{m.raw_median_ms:.3f}", "yes" if m.flagged else "", m.source)
             for m in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(w) if 0 < i < 4 else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    if any(m.raw_median_ms is not None for m in results):
        print("latency_ms: median of per-run ONNX Runtime timings at the device's typical speed (its reference "
              "level); raw_median_ms: uncorrected, as timed; spread_ms: standard deviation of the rounds widened by "
              "the device's slow moments (ms)")
    flagged = sum(m.flagged for m in results)
    if flagged:
        print(f"{flagged} measurement(s) flagged: their rounds still disagreed by more than the allowed spread; "
              f"measure again on a quieter machine (--refresh) or use them with care")
