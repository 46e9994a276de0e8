"""Does the trained fbnet supernet rank architectures the way retraining does?

The supernet doubles as the ``fbnet`` accuracy estimator of the evolution and
Optuna strategies (:class:`nas.proxyless.SupernetAccuracy`: shared weights,
BatchNorm recalibrated per architecture, validation accuracy). This script
takes the architectures that ``experiments/proxyless_search.py`` retrained
from scratch (its ``--work`` folder: retraining cache and measurement store,
and its results file for the found architectures), trains supernets the way
that script's warm-up does, and compares their estimates with the retrained
test accuracies:

- within each budget's group (the found architecture and the random ones
  within +-10% of its measured latency: the choice a search under a budget
  actually faces), Spearman and Kendall correlation, and the retrained
  accuracy of the architecture each estimator ranks first;
- over all retrained architectures together.

Estimators: the supernet with its transition shortcut (the default), the
same supernet without it (``shortcut=False``), FLOPs and parameter count;
and, as the ceiling any estimator can reach, retraining itself with the next
seed (first group only, to bound the cost).

    nice .venv/bin/python experiments/proxyless_supernet_ranking.py --work /tmp/nas-proxyless-search
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from nas.proxyless import ProxylessSearch, SearchConfig, SupernetAccuracy, load_data
from nas.search_space import get_space
from results_file import write_keeping_reading  # beside this script
from nas.store import MeasurementStore
from proxyless_search import train_worker, warmup_folder, warmup_table  # the search benchmark, beside this script

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "proxyless_supernet_ranking.md"
SEARCH_RESULTS = HERE / "results" / "proxyless_search.md"
SPACE = "fbnet"


def train_supernet(data, epochs: int, lr: float, batch: int, seed: int, shortcut: bool, work: Path):
    """Weights-only training with uniform paths, checkpointed under ``work``: with the
    shortcut this is the search benchmark's own warm-up, reused when it is there."""
    config = SearchConfig(epochs=epochs, warmup_epochs=epochs, weight_lr=lr, batch_size=batch, seed=seed)
    folder = warmup_folder(epochs, data.resolution, lr, batch, seed) + ("" if shortcut else "-no-shortcut")
    search = ProxylessSearch(data, warmup_table(), 1.0, config, checkpoint_dir=work / folder)
    if not shortcut:
        torch.manual_seed(seed)
        search.supernet = type(search.supernet)(data.num_classes, shortcut=False)
        search.weight_optimizer = torch.optim.SGD(search.supernet.weight_parameters(), lr=lr, momentum=0.9,
                                                  nesterov=True, weight_decay=config.weight_decay)
    if search.checkpoint_path.is_file():
        search.resume()
    search.run(print)
    return search.supernet, search.wall_s


def found_archs(path: Path) -> list[dict]:
    """The found architectures of the search benchmark's results file (its JSON block)."""
    match = re.search(r"```json\n(.*?)\n```", path.read_text(), re.S)
    if not match:
        raise SystemExit(f"{path} has no JSON block; run experiments/proxyless_search.py first")
    return [d for d in json.loads(match.group(1)) if "arch" in d]


def correlations(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return float(spearmanr(estimate, truth).statistic), float(kendalltau(estimate, truth).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "nas-proxyless-search"),
                        help="the --work folder of experiments/proxyless_search.py")
    parser.add_argument("--search-results", type=Path, default=SEARCH_RESULTS)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15, help="supernet epochs (the search's warm-up)")
    parser.add_argument("--retrain-epochs", type=int, default=6, help="picks the retraining recipe in the cache")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="retraining processes (noise ceiling)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    space = get_space(SPACE)
    recipe = f"r{args.resolution}-e{args.retrain_epochs}-b{args.batch}-lr{args.lr}-s{args.seed}"
    cache = json.loads((work / "trained.json").read_text())
    trained = {key.split(" ", 1)[1]: value for key, value in cache.items() if key.startswith(recipe + " ")}
    if len(trained) < 10:
        raise SystemExit(f"only {len(trained)} architectures retrained with recipe {recipe} in {work}")
    with MeasurementStore(work / "measurements.db") as store:
        latency = {m.arch: m.latency_ms for m in store.all("local-cpu", SPACE)}
    archs = sorted(trained)
    truth = np.array([trained[a]["test"] for a in archs])
    data = load_data("digits", resolution=args.resolution)

    estimators: dict[str, np.ndarray] = {}
    timings = {}
    for name, shortcut in (("supernet, transition shortcut (default)", True), ("supernet, no shortcut", False)):
        supernet, train_s = train_supernet(data, args.epochs, args.lr, args.batch, args.seed, shortcut, work)
        start = time.perf_counter()
        estimator = SupernetAccuracy(data=data, supernet=supernet)
        estimators[name] = estimator.estimate([tuple(a.split()) for a in archs])
        timings[name] = (train_s, (time.perf_counter() - start) / len(archs))
        print(f"{name}: trained {train_s:.0f} s, {timings[name][1]:.2f} s per estimate", flush=True)
    estimators["FLOPs"] = np.array([space.flops(tuple(a.split())) for a in archs], dtype=float)
    estimators["parameters"] = np.array([space.num_params(tuple(a.split())) for a in archs], dtype=float)

    groups = []
    for found in found_archs(args.search_results):
        centre = found["measured_ms"]
        members = [i for i, a in enumerate(archs)
                   if a == found["arch"] or (a in latency and abs(latency[a] / centre - 1) <= 0.10)]
        groups.append((found["budget_ms"], centre, members))

    # the noise ceiling: the same recipe with another seed, for the first group's architectures
    noise_recipe = f"r{args.resolution}-e{args.retrain_epochs}-b{args.batch}-lr{args.lr}-s{args.seed + 1}"
    noise_members = groups[0][2] if groups else []
    jobs = [(f"{noise_recipe} {archs[i]}", tuple(archs[i].split()), args.resolution, args.retrain_epochs,
             args.batch, args.lr, args.seed + 1) for i in noise_members if f"{noise_recipe} {archs[i]}" not in cache]
    print(f"retraining {len(jobs)} architectures with seed {args.seed + 1} for the noise ceiling", flush=True)
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for key, result in pool.map(train_worker, jobs):
            cache[key] = result
            (work / "trained.json").write_text(json.dumps(cache))
    if noise_members:
        other_seed = np.full(len(archs), np.nan)
        for i in noise_members:
            other_seed[i] = cache[f"{noise_recipe} {archs[i]}"]["test"]
        estimators[f"retraining with seed {args.seed + 1} (noise ceiling, {groups[0][0]:g} ms group only)"] = other_seed

    header = ["estimator", "all: Spearman", "all: Kendall"]
    for budget, centre, members in groups:
        header += [f"{budget:g} ms ({len(members)} archs): Spearman", "Kendall", "its pick's test %"]
    rows = []
    for name, estimate in estimators.items():
        known = ~np.isnan(estimate)
        if known.all():
            rho, tau = correlations(estimate, truth)
            cells = [name, f"{rho:.3f}", f"{tau:.3f}"]
        else:
            cells = [name, "", ""]
        for _, _, members in groups:
            idx = np.asarray(members)
            if not known[idx].all():
                cells += ["", "", ""]
                continue
            g_rho, g_tau = correlations(estimate[idx], truth[idx])
            cells += [f"{g_rho:.3f}", f"{g_tau:.3f}", f"{truth[idx][np.argmax(estimate[idx])]:.1f}"]
        rows.append("| " + " | ".join(cells) + " |")
    reference = ["group median / best test %", "", ""]
    for _, _, members in groups:
        group_truth = truth[np.asarray(members)]
        reference += ["", "", f"{np.median(group_truth):.1f} / {group_truth.max():.1f}"]
    rows.append("| " + " | ".join(reference) + " |")

    text = "\n".join([
        "# Does the fbnet supernet rank architectures like retraining does?",
        "",
        f"`experiments/proxyless_supernet_ranking.py --work {args.work}`: {len(archs)} architectures retrained "
        f"from scratch by `proxyless_search.py` (recipe {recipe}: digits at {args.resolution}x{args.resolution}, "
        f"{args.retrain_epochs} epochs, test accuracy) against estimates from supernets trained {args.epochs} "
        f"epochs with uniform paths (the search's warm-up; SGD lr {args.lr}, batch {args.batch}), scored by "
        "`SupernetAccuracy` (shared weights, BatchNorm recalibrated on 4 train batches, val accuracy). "
        "Groups: each budget's found architecture and the random architectures within +-10% of its measured "
        "latency. `its pick's test %` = retrained accuracy of the architecture the estimator ranks first.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *rows,
        "",
        *[f"- {name}: supernet trained in {t:.0f} s, {per:.2f} s per estimate" for name, (t, per) in timings.items()],
        "",
    ])
    write_keeping_reading(args.results, text)
    print(text)


if __name__ == "__main__":
    main()
