"""Does one search study shared by several worker processes on PostgreSQL
(or on a journal file) finish with nothing lost or run twice, even when a
worker is killed?

For each of 1, 2 and 4 worker processes, one Optuna study of aging evolution
(``nas search --strategy evolution --storage postgresql+psycopg://...``, here
called as the library function it wraps) runs on a throwaway PostgreSQL
server on this machine: nb201 on pixel2 (its 10 reference latencies
replayed), 14 ms budget, CIFAR-100 accuracy, the default latency predictor.
Each trial is made to cost ``--trial-s`` seconds, as a costlier accuracy
estimator would, so that a worker can be killed inside one. Once a third of
the study is done, one worker is killed (SIGKILL) inside a trial; with one
worker, a replacement is then started and resumes the study. Reported per
run: trials completed; trials lost (failed or left running and never
retried; target 0); duplicates (a killed worker's trial retried although it
had finished; target 0); surplus trials declined (workers that asked at
the same moment for more trials than the budget: the later ones give way
without running); architectures drawn twice (not an error, the cost
of sharing); the best predicted-safe accuracy against a single unkilled
worker with the same total budget; and wall time.

With ``--storage-kind journal`` the study is Optuna's journal file in a
temporary folder instead, its heartbeat the package's own.

Prints a markdown table and writes it to
``experiments/results/distributed_search.md`` (``distributed_search_journal.md``).

    .venv/bin/python experiments/distributed_search.py [--trials 120] [--seeds 0 1 2] [--trial-s 0.1]
        [--storage-kind postgresql|journal]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine_line, write_keeping_reading  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "distributed_search.md"
JOURNAL_RESULTS = Path(__file__).resolve().parent / "results" / "distributed_search_journal.md"

#: one worker process: the problem ``nas search`` builds for pixel2, and the evolution strategy on a shared study
WORKER = """
import sys, time
from nas import benchmarks, predictors
from nas.search import SearchProblem, get_accuracy_estimator, get_strategy
from nas.search.calibration import CalibratedPredictor
from nas.search_space import get_space

storage, study, trials, seed, trial_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
space = get_space("nb201")
column = benchmarks.latency_table("nb201").column("pixel2")
samples = {space.to_string(a): float(column[space.index_of(a)]) for a in predictors.reference_archs("nb201")}
predictor = CalibratedPredictor(predictors.load_default_predictor("nb201")).adapt(samples)
problem = SearchProblem("nb201", 14.0, get_accuracy_estimator("nb201", dataset="cifar100"), predictor,
                        dataset="cifar100", samples=samples, device="pixel2")
score = problem.evaluate
def costly(archs):
    if len(archs) == 1:
        time.sleep(trial_s)
    return score(archs)
problem.evaluate = costly
print("READY", flush=True)
result = get_strategy("evolution", seed=seed, num_evaluations=trials, storage=storage, study_name=study,
                      heartbeat_s=2).search(problem)
best = result.best
print("DONE", result.info["trials"], best.accuracy if best else "none", flush=True)
"""


def start_worker(storage: str, study: str, trials: int, seed: int, trial_s: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", WORKER, storage, study, str(trials), str(seed), str(trial_s)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process


def run(storage: str, study: str, workers: int, trials: int, seed: int, trial_s: float, kill: bool) -> dict:
    """One study with ``workers`` processes; returns what the study holds afterwards."""
    import optuna

    from nas.search._optuna import open_storage

    processes = [start_worker(storage, study, trials, seed, trial_s) for _ in range(workers)]
    for process in processes:  # all have built their problem: time the search, not the start-up
        process.stdout.readline()
    started = time.perf_counter()
    killed_trial = None
    if kill:
        victim = processes[-1]
        reader = open_storage(storage, heartbeat_s=None)
        while killed_trial is None and victim.poll() is None:
            try:
                study_now = optuna.load_study(study_name=study, storage=reader)
            except KeyError:
                time.sleep(0.1)
                continue
            done = len(study_now.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
            mine = [t for t in study_now.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                    if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
            if done >= trials // 3 and mine:
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                killed_trial = mine[0].number
                if workers == 1:  # nobody is left: a replacement resumes the study
                    processes.append(start_worker(storage, study, trials, seed, trial_s))
                    processes[-1].stdout.readline()
            time.sleep(0.02)
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=3600)
        if process.returncode not in (0, -signal.SIGKILL):
            raise RuntimeError(f"a worker failed:\n{err}")
        outputs.append(out)
    wall_s = time.perf_counter() - started
    study_done = optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat_s=None))
    every = study_done.trials
    complete = [t for t in every if t.state == optuna.trial.TrialState.COMPLETE]
    retried = {t.system_attrs["failed_trial"] for t in every if t.system_attrs.get("failed_trial") is not None}
    lost = [t for t in every if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
            or (t.state == optuna.trial.TrialState.FAIL and t.number not in retried)]
    twice = [t for t in complete if t.system_attrs.get("failed_trial") is not None
             and every[t.system_attrs["failed_trial"]].state == optuna.trial.TrialState.COMPLETE]
    archs = [tuple(sorted(t.params.items())) for t in complete]
    # fitness is the accuracy for a trial predicted to meet the budget, negative otherwise
    feasible = [t.user_attrs["fitness"] for t in complete if t.user_attrs.get("fitness", -1.0) >= 0]
    return {"workers": workers, "killed": killed_trial is not None, "killed_trial": killed_trial,
            "complete": len(complete), "lost": len(lost), "duplicates": len(twice),
            "retried": len(retried), "repeated_archs": len(archs) - len(set(archs)),
            "surplus": sum(t.state == optuna.trial.TrialState.PRUNED for t in every),
            "best": max(feasible) if feasible else float("nan"), "wall_s": wall_s}


def main() -> int:
    from nas.postgresql import INSTALL_HINT, TemporaryPostgres, server_binaries

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=120, help="trials in each study (the total budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trial-s", type=float, default=0.1, help="seconds each trial is made to cost")
    parser.add_argument("--storage-kind", choices=("postgresql", "journal"), default="postgresql",
                        help="where the study lives: a throwaway PostgreSQL server, or a journal file")
    options = parser.parse_args()
    journal = options.storage_kind == "journal"
    if not journal and server_binaries() is None:
        print(f"distributed_search: no PostgreSQL server: {INSTALL_HINT}", file=sys.stderr)
        return 2
    configurations = [(1, False), (1, True), (2, True), (4, True)]
    rows, results = [], []
    with (tempfile.TemporaryDirectory() if journal else TemporaryPostgres(max_connections=300)) as server:
        for seed in options.seeds:
            for workers, kill in configurations:
                name = f"study_{seed}_{workers}_{int(kill)}"
                storage = f"journal:///{server}/{name}.log" if journal else server.create_database(name)
                result = dict(run(storage, "distributed", workers, options.trials, seed, options.trial_s, kill),
                              seed=seed)
                results.append(result)
                row = (f"| {seed} | {workers} | {'yes' if kill else 'no'} | {result['complete']} | "
                       f"{result['lost']} | {result['duplicates']} | {result['retried']} | {result['surplus']} | "
                       f"{result['repeated_archs']} | {result['best']:.2f} | {result['wall_s']:.1f} |")
                rows.append(row)
                print(row, file=sys.stderr, flush=True)
    summary = []
    for workers, kill in configurations:
        mine = [r for r in results if r["workers"] == workers and r["killed"] == kill]
        baseline = [r for r in results if r["workers"] == 1 and not r["killed"]]
        gap = [m["best"] - b["best"] for m, b in zip(mine, baseline)]
        summary.append(f"| {workers} | {'yes' if kill else 'no'} | {sum(r['complete'] for r in mine)} | "
                       f"{sum(r['lost'] for r in mine)} | {sum(r['duplicates'] for r in mine)} | "
                       f"{statistics.mean(r['best'] for r in mine):.2f} | {statistics.mean(gap):+.2f} | "
                       f"{statistics.median(r['wall_s'] for r in mine):.1f} |")
    text = "\n".join([
        f"# Distributed search: one study, several workers, {'a journal file' if journal else 'PostgreSQL'}",
        "",
        f"{machine_line()}.",
        f"Aging evolution on nb201 / pixel2 / 14 ms / CIFAR-100, {options.trials} trials per study, each made to "
        f"cost {options.trial_s:g} s; heartbeat 2 s (a dead worker's trial is failed after 6 s and retried); "
        f"seeds {', '.join(map(str, options.seeds))}. Best: the most accurate trial whose predicted interval "
        f"meets the budget (%). Wall time from all workers ready to all done (with one worker killed, it "
        f"includes starting its replacement).",
        "",
        "| seed | workers | one killed | trials completed | lost | duplicates | retried | surplus declined | "
        "archs drawn twice | best accuracy % | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Over the seeds (best vs a single unkilled worker with the same total budget, same seed):",
        "",
        "| workers | one killed | trials completed | lost | duplicates | mean best % | mean gap to 1 worker | "
        "median wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *summary,
        "",
        f"Reproduce: `.venv/bin/python experiments/distributed_search.py --trials {options.trials} --seeds "
        f"{' '.join(map(str, options.seeds))} --trial-s {options.trial_s:g}"
        f"{' --storage-kind journal' if journal else ''}`",
        "",
    ])
    print(text)
    write_keeping_reading(JOURNAL_RESULTS if journal else RESULTS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
