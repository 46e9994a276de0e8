"""How long an fbnet search with the supernet accuracy estimator takes, and what
the shared forward passes save.

1. first use: training the estimator's supernet (weights only, default settings),
   into a fresh cache folder;
2. scoring: the same architectures one network at a time (BatchNorm
   recalibrated, then evaluated; the estimator's former loop) against
   :func:`nas.proxyless.integration.shared_weight_accuracy` in groups, for
   random architectures and for an evolution-like round (mutations of a few parents);
3. end to end: ``search_under_budget("fbnet", "pixel2", "30ms")`` with the
   default strategy and evaluation count, the supernet already cached.

    python experiments/fbnet_search_speed.py [--scored 32]

Prints a table and writes experiments/results/fbnet_search_speed.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine_line, write_keeping_reading  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fbnet_search_speed.md"


def one_at_a_time(estimator, archs) -> tuple[list[float], float]:
    from nas.proxyless.integration import recalibrate_batchnorm
    from nas.proxyless.train import accuracy_percent

    supernet = estimator.supernet()
    calibration, images, labels = estimator._fixed_batches()
    started = time.perf_counter()
    scores = []
    for arch in archs:
        supernet.set_arch(arch)
        recalibrate_batchnorm(supernet, [(x, None) for x in calibration], len(calibration))
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=256)
        scores.append(accuracy_percent(supernet, loader))
    return scores, time.perf_counter() - started


def shared(estimator, archs) -> tuple[list[float], float]:
    from nas.proxyless.integration import shared_weight_accuracy

    supernet = estimator.supernet()
    calibration, images, labels = estimator._fixed_batches()
    started = time.perf_counter()
    scores = []
    for start in range(0, len(archs), estimator.group_size):
        scores += shared_weight_accuracy(supernet, archs[start:start + estimator.group_size], calibration,
                                         images, labels)
    return scores, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scored", type=int, default=32, help="architectures per scoring comparison")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--cache", metavar="DIR",
                        help="reuse the supernet trained by an earlier run (its NAS_CACHE folder) instead of timing "
                             "the training in a fresh one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["NAS_CACHE"] = args.cache or tempfile.mkdtemp(prefix="nas-fbnet-speed-")
    os.environ.setdefault("NAS_STORE", str(Path(os.environ["NAS_CACHE"]) / "measurements.db"))

    from nas.proxyless.integration import SupernetAccuracy
    from nas.search import search_under_budget
    from nas.search_space import get_space

    rows = []
    machine = machine_line()

    def write() -> None:  # after every row: a slow run keeps what it measured
        lines = ["# fbnet search speed (supernet accuracy estimator)", "",
                 f"`python experiments/fbnet_search_speed.py --scored {args.scored} --threads {args.threads}"
                 f"{' --cache DIR' if args.cache else ''}`", "",
                 f"Machine: {machine}", "", "| what | time | note |", "| --- | --- | --- |"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        lines += ["", f"Load average when written: {'/'.join(f'{v:.1f}' for v in os.getloadavg())} (1/5/15 min)", ""]
        write_keeping_reading(RESULTS, "\n".join(lines))
        print("\n".join(lines), flush=True)

    estimator = SupernetAccuracy()
    print(estimator.announce(), flush=True)
    estimator.report = lambda line: print(line, flush=True)
    started = time.perf_counter()
    estimator.supernet()
    train_s = time.perf_counter() - started
    rows.append(("first use: supernet training (4 epochs, digits, 16 px)" if not args.cache else
                 "supernet loaded from --cache", f"{train_s:.0f} s", ""))
    write()

    space = get_space("fbnet")
    rng = np.random.default_rng(0)
    random_archs = [space.sample(rng) for _ in range(args.scored)]
    parents = [space.sample(rng) for _ in range(4)]
    round_archs = [space.mutate(parents[i % 4], rng) for i in range(args.scored)]
    for name, archs in (("random architectures", random_archs), ("evolution round (4 parents)", round_archs)):
        alone, alone_s = one_at_a_time(estimator, archs)
        together, together_s = shared(estimator, archs)
        agree = float(np.mean(np.isclose(alone, together, atol=100 / len(estimator._fixed_batches()[1]) + 1e-9)))
        rows.append((f"scoring {len(archs)} {name}: one at a time / shared passes",
                     f"{alone_s / len(archs):.2f} / {together_s / len(archs):.2f} s per arch",
                     f"{alone_s / together_s:.2f}x; {agree:.0%} equal within one image"))
        write()

    started = time.perf_counter()
    outcome = search_under_budget("fbnet", "pixel2", "30ms", progress=True)
    search_s = time.perf_counter() - started
    rows.append((f"search_under_budget fbnet pixel2 30ms ({outcome.strategy}, {outcome.num_evaluations} "
                 f"architectures scored, supernet cached)", f"{search_s:.0f} s",
                 f"status {outcome.status}, {len(outcome.verification)} verifications, "
                 f"found by {outcome.to_dict()['found_by']}"))
    write()


if __name__ == "__main__":
    main()
