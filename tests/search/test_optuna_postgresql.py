"""Several worker processes share one Optuna study on a real PostgreSQL server
and on a journal file: the study finishes with no trial lost or run twice,
and the trial of a worker killed mid-trial is retried by another."""

import signal
import subprocess
import sys
import time

import optuna
import pytest

from nas.search._optuna import open_storage

#: a worker: aging evolution on pixel2's replayed references with a cheap predictor; each trial takes 0.3 s
WORKER = """
import sys, time
from nas import benchmarks
from nas.predictors import reference_archs
from nas.predictors.baselines import FlopsPredictor
from nas.search import SearchProblem, get_accuracy_estimator, get_strategy
from nas.search.calibration import CalibratedPredictor
from nas.search_space import get_space

storage, study, evaluations, strategy = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
space = get_space("nb201")
column = benchmarks.latency_table("nb201").column("pixel2")
samples = {space.to_string(a): float(column[space.index_of(a)]) for a in reference_archs("nb201")}
predictor = CalibratedPredictor(FlopsPredictor("nb201")).adapt(samples)
problem = SearchProblem("nb201", 14.0, get_accuracy_estimator("nb201", dataset="cifar100"), predictor,
                        device="pixel2")
score = problem.evaluate
def slow(archs):
    if len(archs) == 1:
        time.sleep(0.3)  # a trial that costs something, so a worker can be killed inside one
    return score(archs)
problem.evaluate = slow
options = dict(population_size=8, tournament_size=4) if strategy == "evolution" else {}
result = get_strategy(strategy, num_evaluations=evaluations, storage=storage, study_name=study, heartbeat_s=1,
                      **options).search(problem)
print("DONE", result.info["trials"], flush=True)
"""


def workers(storage, study, evaluations, count, strategy="evolution"):
    return [subprocess.Popen([sys.executable, "-c", WORKER, storage, study, str(evaluations), strategy],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]


def check_study(storage, study, evaluations):
    trials = optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat_s=None)).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    retried = {t.system_attrs.get("failed_trial") for t in trials if t.system_attrs.get("failed_trial") is not None}
    lost = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING
            or (t.state == optuna.trial.TrialState.FAIL and t.number not in retried)]
    twice = [t for t in complete if t.system_attrs.get("failed_trial") is not None
             and trials[t.system_attrs["failed_trial"]].state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == evaluations and not lost and not twice
    return trials


def kill_one_inside_a_trial(storage, study_name, running):
    """SIGKILL the last of ``running`` while it runs a trial of the study; returns that trial's number."""
    victim = running[-1]
    deadline = time.monotonic() + 180
    while True:
        try:
            study = optuna.load_study(study_name=study_name, storage=open_storage(storage, heartbeat_s=None))
            break
        except KeyError:  # the workers are still starting
            assert time.monotonic() < deadline
            time.sleep(0.2)
    mine = []
    while time.monotonic() < deadline and not mine:
        mine = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
        if mine:
            victim.send_signal(signal.SIGKILL)
        else:
            time.sleep(0.05)
    assert mine, "the worker ran no trial to be killed in"
    assert victim.wait(timeout=30) == -signal.SIGKILL
    return mine[0].number


def check_takeover(storage, study_name, running, evaluations, killed_number):
    """The surviving workers finish the study; the killed trial failed and was run again once, with its
    parameters."""
    for worker in running[:-1]:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        assert f"DONE {evaluations}" in out
    trials = check_study(storage, study_name, evaluations)
    killed = trials[killed_number]
    assert killed.state == optuna.trial.TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert killed.params.items() <= retry[0].params.items()  # it goes on from what the killed one drew


def test_workers_on_postgresql_finish_the_study_and_take_over_a_killed_workers_trial(postgres):
    storage = postgres.create_database("study_kill")
    running = workers(storage, "shared", 16, 3)
    killed = kill_one_inside_a_trial(storage, "shared", running)
    check_takeover(storage, "shared", running, 16, killed)


def test_workers_on_a_journal_file_take_over_a_killed_workers_trial(tmp_path):
    storage = f"journal:///{tmp_path / 'study.log'}"
    running = workers(storage, "shared", 12, 2)
    killed = kill_one_inside_a_trial(storage, "shared", running)
    check_takeover(storage, "shared", running, 12, killed)


def test_tpe_workers_share_a_study_on_a_journal_file(tmp_path):
    storage = f"journal:///{tmp_path / 'study.log'}"
    running = workers(storage, "shared", 8, 2, strategy="tpe")
    for worker in running:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    check_study(storage, "shared", 8)


def test_the_heartbeat_storage_refuses_an_unreachable_server():
    from nas.errors import UserInputError

    with pytest.raises(UserInputError, match="PostgreSQL"):
        open_storage("postgresql+psycopg://nas@127.0.0.1:1/nas")
