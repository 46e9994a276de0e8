"""ProxylessNAS on digits for local-cpu, three latency budgets, against random
architectures of the same measured latency trained the same way.

Per budget: the supernet (weights warmed up once, shared by the budgets)
searches its architecture parameters towards the budget; the derived
architecture is measured on local-cpu (ONNX Runtime, 1 thread, batch 1)
until one meets the budget, then retrained from scratch. Baselines: uniform
random fbnet architectures whose measured latency is within +-10% of the
found one's (drawn from a large uniform sample restricted by the
latency table, then measured), each retrained with the same recipe.

Two phases: first every budget is searched, verified and its baselines are
measured (the device is timed only while nothing else of this script runs);
then all architectures are retrained, ``--jobs`` at a time in separate
processes with one thread each. Retraining results are cached in ``--work``,
so an interrupted run resumes where it stopped.

    nice .venv/bin/python experiments/proxyless_search.py --budgets 1.5 2 3

Training runs niced; the process returns to normal priority only while it
times models on local-cpu, so the measurements suffer less from other jobs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from nas.devices import get_device
from nas.errors import UserInputError
from nas.profilers import measure
from nas.proxyless import (ProxylessSearch, SearchConfig, build_lookup_table, derive_within_budget, load_data,
                           train_architecture)
from nas.proxyless.latency_table import LatencyLookupTable
from nas.proxyless.search import LATENCY_LOSSES
from nas.search_space import get_space
from results_file import write_keeping_reading  # beside this script

RESULTS = Path(__file__).resolve().parent / "results" / "proxyless_search.md"
SPACE = "fbnet"


def random_pool(space, rng: np.random.Generator, n: int) -> list[tuple[str, ...]]:
    """Random fbnet architectures covering every latency: half uniform, half with each
    architecture's layers drawn from its own random mix of candidates (Dirichlet(0.5)),
    since uniform samples alone never reach the fast end of the space."""
    candidates = space.choices[0]
    pool = [space.sample(rng) for _ in range(n // 2)]
    for _ in range(n - len(pool)):
        mix = rng.dirichlet(np.full(len(candidates), 0.5))
        pool.append(tuple(candidates[i] for i in rng.choice(len(candidates), size=len(space.choices), p=mix)))
    return pool


def warmup_table() -> LatencyLookupTable:
    """The weights-only warm-up uses no latency: an all-zero table."""
    candidates = get_space(SPACE).choices[0]
    return LatencyLookupTable("warm-up", tuple(candidates), np.zeros((len(get_space(SPACE).choices), len(candidates))),
                              0.0)


def warmup_folder(epochs: int, resolution: int, lr: float, batch: int, seed: int) -> str:
    return f"warmup-e{epochs}-r{resolution}-lr{lr}-b{batch}-s{seed}"


def train_worker(job: tuple) -> tuple[str, dict]:
    """Retrain one architecture in a worker process (one thread)."""
    key, arch, resolution, epochs, batch, lr, seed = job
    torch.set_num_threads(1)
    data = load_data("digits", resolution=resolution)
    r = train_architecture(arch, data, epochs=epochs, batch_size=batch, lr=lr, seed=seed)
    return key, {"test": r.test_accuracy, "val": r.val_accuracy, "wall_s": r.wall_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.5, 2.0, 3.0], help="milliseconds")
    parser.add_argument("--random", type=int, default=20, help="random baselines per budget")
    parser.add_argument("--resolution", type=int, default=16,
                        help="training input size (digits are 8x8 upsampled; latency is always timed at 32x32)")
    parser.add_argument("--warmup-epochs", type=int, default=15)
    parser.add_argument("--search-epochs", type=int, default=5)
    parser.add_argument("--retrain-epochs", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=2, help="retraining processes")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--arch-lr", type=float, default=0.05)
    parser.add_argument("--latency-loss", default="hinge", choices=LATENCY_LOSSES)
    parser.add_argument("--supernet-lr", type=float, default=None, help="supernet weight lr (default --lr)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "nas-proxyless-search"),
                        help="store and per-arch results cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the table goes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    store = work / "measurements.db"
    cache_path = work / "trained.json"
    trained_cache: dict[str, dict] = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    space = get_space(SPACE)
    device = get_device("local-cpu")
    data = load_data("digits", resolution=args.resolution)
    samples = {"n": 0}

    def measure_ms(archs):
        # training runs niced; timing runs at normal priority so other niced jobs disturb it less
        niceness = os.getpriority(os.PRIO_PROCESS, 0)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        except PermissionError:
            pass
        try:
            records = measure(device, SPACE, list(archs), store=store)
        finally:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
        samples["n"] += len(records)
        return [r.latency_ms for r in records]

    recipe = f"r{args.resolution}-e{args.retrain_epochs}-b{args.batch}-lr{args.lr}-s{args.seed}"

    def cache_key(arch) -> str:
        return f"{recipe} {space.to_string(arch)}"

    def train_all(archs) -> None:
        """Retrain every architecture not cached yet, ``--jobs`` processes at a time."""
        todo = list(dict.fromkeys(cache_key(a) for a in archs if cache_key(a) not in trained_cache))
        jobs = [(key, tuple(key.split(" ", 1)[1].split()), args.resolution, args.retrain_epochs, args.batch,
                 args.lr, args.seed) for key in todo]
        print(f"retraining {len(jobs)} architectures ({len(archs) - len(jobs)} cached), {args.jobs} at a time",
              flush=True)
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for done, (key, result) in enumerate(pool.map(train_worker, jobs), 1):
                trained_cache[key] = result
                cache_path.write_text(json.dumps(trained_cache))
                print(f"  {done}/{len(jobs)}: test {result['test']:.1f}% ({result['wall_s']:.0f} s)", flush=True)

    t0 = time.perf_counter()
    table, _ = build_lookup_table(device, measure=measure_ms, progress=print)
    print("table fit:", json.dumps(table.fit))
    table_s = time.perf_counter() - t0

    supernet_lr = args.supernet_lr or args.lr
    # one weight warm-up, shared by the budgets (alpha untouched: uniform paths)
    config = SearchConfig(epochs=args.warmup_epochs + args.search_epochs, warmup_epochs=args.warmup_epochs,
                          batch_size=args.batch, weight_lr=supernet_lr, arch_lr=args.arch_lr, seed=args.seed,
                          latency_loss=args.latency_loss)
    warm = ProxylessSearch(data, warmup_table(), 1.0,
                           SearchConfig(epochs=args.warmup_epochs, warmup_epochs=args.warmup_epochs,
                                        weight_lr=supernet_lr, batch_size=args.batch, seed=args.seed),
                           checkpoint_dir=work / warmup_folder(args.warmup_epochs, args.resolution, supernet_lr,
                                                               args.batch, args.seed))
    if warm.checkpoint_path.is_file():  # a rerun reuses the warm-up (experiments/proxyless_supernet_ranking.py too)
        warm.resume()
    warm.run(print)
    warm_s = warm.wall_s
    warm_loss = warm.history[-1]["weight_loss"] if warm.history else float("nan")
    warm_acc = supernet_path_accuracy(warm.supernet, data, args.seed)
    print(f"warm-up: last-epoch loss {warm_loss:.3f}, val accuracy of 10 random paths {warm_acc:.1f}%")

    rng = np.random.default_rng(args.seed)
    pool = random_pool(space, rng, 20000)
    pool_table_ms = table.archs_latency_ms(pool)

    # phase 1: search, verify and pick the baselines of every budget (all device timing happens here)
    searched = []
    out_of_sample: list[tuple[float, float]] = []  # (table ms, measured ms) of every candidate baseline
    for budget in args.budgets:
        started = time.perf_counter()
        search = ProxylessSearch(data, table, budget, config)
        search.supernet.load_state_dict(warm.supernet.state_dict())
        search.weight_optimizer.load_state_dict(warm.weight_optimizer.state_dict())
        search.epoch, search.history = warm.epoch, list(warm.history)
        search.run(print)
        probs = search.supernet.probs().detach().numpy()
        before = samples["n"]
        try:
            found = derive_within_budget(probs, table, budget, measure_ms)
        except UserInputError as error:  # nothing met the budget: say so, never report an over-budget arch
            searched.append({"budget_ms": budget, "error": str(error), "search_s": search.wall_s})
            print(error)
            continue
        arch, measured_ms = found["arch"], found["measured_latency_ms"]
        verify_samples = samples["n"] - before
        print(f"budget {budget} ms: {space.to_string(arch)} measured {measured_ms:.3f} ms", flush=True)

        # random baselines of similar measured latency
        ratio = measured_ms / table.arch_latency_ms(arch)
        near = np.flatnonzero(np.abs(pool_table_ms * ratio / measured_ms - 1) <= 0.06)
        rng.shuffle(near)
        baselines, tried = [], 0
        for start in range(0, len(near), 10):
            if len(baselines) >= args.random or tried >= 8 * args.random:
                break
            chunk = [pool[i] for i in near[start:start + 10]]
            tried += len(chunk)
            for cand, ms in zip(chunk, measure_ms(chunk)):
                out_of_sample.append((table.arch_latency_ms(cand), ms))
                if abs(ms / measured_ms - 1) <= 0.10 and len(baselines) < args.random:
                    baselines.append((cand, ms))
        print(f"  {len(baselines)} random baselines within +-10% ({tried} measured)", flush=True)
        searched.append({"budget_ms": budget, "arch": arch, "measured_ms": measured_ms, "found": found,
                         "baselines": baselines, "baselines_measured": tried, "verify_samples": verify_samples,
                         "search_s": search.wall_s, "phase1_s": time.perf_counter() - started})

    # phase 2: retrain the found architectures and their baselines, --jobs at a time
    train_started = time.perf_counter()
    retrained = {cache_key(a) for a in [s["arch"] for s in searched if "arch" in s]
                 + [c for s in searched for c, _ in s.get("baselines", [])]}
    trained_now = len(retrained - set(trained_cache))
    train_all([tuple(key.split(" ", 1)[1].split()) for key in sorted(retrained)])
    train_s = time.perf_counter() - train_started
    retrain_cpu_s = sum(trained_cache[key]["wall_s"] for key in retrained)

    rows, details = [], []
    for entry in searched:
        budget = entry["budget_ms"]
        if "arch" not in entry:
            rows.append(f"| {budget:g} | none met the budget | | | | | | | | | | {entry['search_s']:.0f} | |")
            details.append({"budget_ms": budget, "error": entry["error"]})
            continue
        arch, measured_ms, found, baselines = entry["arch"], entry["measured_ms"], entry["found"], entry["baselines"]
        result = trained_cache[cache_key(arch)]
        accs = np.asarray([trained_cache[cache_key(c)]["test"] for c, _ in baselines])
        median = float(np.median(accs)) if len(accs) else float("nan")
        beats = int((accs < result["test"]).sum())
        spread = f"{accs.min():.1f}-{accs.max():.1f}" if len(accs) else "n/a"
        mean_ms = f"{np.mean([m for _, m in baselines]):.2f}" if baselines else "n/a"
        wall = entry["search_s"] + result["wall_s"]
        rows.append(f"| {budget:g} | {measured_ms:.2f} | {found['predicted_latency_ms']:.2f} | "
                    f"{len(found['trail'])} | {result['test']:.1f} | {len(accs)} | "
                    f"{mean_ms} | {median:.1f} | {spread} | {beats}/{len(accs)} | "
                    f"{'yes' if result['test'] > median else 'no'} | {entry['search_s']:.0f} | {wall:.0f} |")
        details.append({"budget_ms": budget, "arch": space.to_string(arch), "measured_ms": measured_ms,
                        "test_accuracy": result["test"], "val_accuracy": result["val"],
                        "baseline_accuracies": accs.tolist(), "baseline_ms": [m for _, m in baselines],
                        "baselines_measured": entry["baselines_measured"], "trail": found["trail"],
                        "device_samples_for_verification": entry["verify_samples"]})

    total = time.perf_counter() - t0
    fit = table.fit
    text = "\n".join([
        "# ProxylessNAS search on digits for local-cpu",
        "",
        f"`experiments/proxyless_search.py --budgets {' '.join(f'{b:g}' for b in args.budgets)} --random {args.random} "
        f"--resolution {args.resolution} --warmup-epochs {args.warmup_epochs} --search-epochs {args.search_epochs} "
        f"--retrain-epochs {args.retrain_epochs} --jobs {args.jobs} --latency-loss {args.latency_loss}`.",
        "Device: local-cpu (ONNX Runtime, 1 thread, batch 1, drift-corrected, measured on a 2-core machine shared",
        f"with other jobs). Data: scikit-learn digits, fixed split {data.sizes()}, trained at "
        f"{args.resolution}x{args.resolution} (the images are 8x8 upsampled; latency is always timed at the space's "
        "32x32 input).",
        f"Supernet (with the transition shortcut, see `proxyless_supernet_learning.md`): {args.warmup_epochs} warm-up "
        f"epochs (weights only, shared by the budgets, {warm_s:.0f} s; last-epoch loss {warm_loss:.2f}, "
        f"val accuracy of 10 random paths {warm_acc:.1f}%) + {args.search_epochs} search epochs per budget "
        f"(weight step on train, SGD lr {supernet_lr}, two-path arch step on val, latency loss {config.latency_loss} "
        f"with beta {config.beta}, "
        f"Adam lr {args.arch_lr}). Retraining (found and random alike): {args.retrain_epochs} epochs, SGD Nesterov "
        f"lr {args.lr} cosine, batch {args.batch}, seed {args.seed}, {args.jobs} processes of 1 thread "
        f"({retrain_cpu_s / 60:.0f} CPU-min for the {len(retrained)} architectures; this run retrained "
        f"{trained_now} of them in {train_s / 60:.1f} min, the rest came from the --work cache).",
        "",
        "| budget ms | found measured ms | table ms | measurements to verify | found test % | random archs |"
        " their mean ms | random median test % | random range % | found beats | above median | search s | "
        "wall s per budget |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "`search s` = the budget's own supernet epochs; `wall s per budget` = search + retraining of the found",
        "architecture (one process; the shared warm-up, the verification measurements and the random baselines",
        "excluded). Random archs: fbnet architectures kept when their measured latency is within +-10% of the",
        "found architecture's, drawn from a pool of 20,000 (half uniform, half with layers drawn from a",
        "per-architecture Dirichlet(0.5) mix of candidates, so that fast latencies are represented),",
        "pre-selected by the table scaled to the found one's measurement (+-6%), then measured.",
        "",
        f"Latency table ({fit.get('source')}): held-out R^2 {fit.get('r2', float('nan')):.3f}, Spearman "
        f"{fit.get('spearman', float('nan')):.3f} against the predictor on {fit.get('n_holdout')} benchmark archs; "
        f"against the {fit.get('n_measured', '?')} measured architectures in the fit (10 references, 12 anchors; "
        f"in sample): R^2 {fit['vs_measured']['r2']:.3f}, Spearman {fit['vs_measured']['spearman']:.3f}. The "
        f"adapted predictor alone on the 12 anchors: R^2 {fit['predictor_vs_anchors']['r2']:.3f}, mean abs error "
        f"{fit['predictor_vs_anchors']['mean_abs_error_ms']:.2f} ms. Table built in {table_s:.0f} s.",
        table_check(out_of_sample),
        f"Total wall time {total / 60:.1f} min, {samples['n']} device measurements (store: {store}; measurements "
        "already in the store are reused, not repeated).",
        "",
        "Found architectures:",
        "",
        *[f"- {d['budget_ms']:g} ms: `{d.get('arch', d.get('error'))}`" for d in details],
        "",
        "```json",
        json.dumps(details, indent=1),
        "```",
        "",
    ])
    write_keeping_reading(args.results, text)
    print(text)


def table_check(pairs: list[tuple[float, float]]) -> str:
    """How the table did on the baseline candidates it pre-selected (measured afterwards, never fitted)."""
    if len(pairs) < 3:
        return ""
    table_ms, measured = np.asarray(pairs).T
    rel = np.abs(table_ms / measured - 1)
    rho = spearmanr(table_ms, measured).statistic
    return (f"Out of sample, on the {len(pairs)} baseline candidates measured: table vs measured median "
            f"error {100 * np.median(rel):.1f}%, p90 {100 * np.quantile(rel, 0.9):.1f}%, Spearman {rho:.3f} "
            f"(their latencies span only the three +-6% windows).")


def supernet_path_accuracy(supernet, data, seed: int, paths: int = 10) -> float:
    """Mean val accuracy (percent) of ``paths`` uniformly sampled paths, BatchNorm on batch statistics."""
    generator = torch.Generator().manual_seed(seed + 123)
    images, labels = next(iter(data.loader("val", 512)))
    supernet.train()
    accs = []
    with torch.no_grad():
        for _ in range(paths):
            supernet.sample_single(generator)
            accs.append(100.0 * float((supernet(images).argmax(1) == labels).float().mean()))
    return sum(accs) / len(accs)


if __name__ == "__main__":
    main()
