"""Optuna studies: storage URLs checked up front, stable study names, reused
studies checked, killed workers' trials retried, evolution as a sampler."""

import sqlite3
import subprocess
import sys
import time

import optuna
import pytest

from nas.errors import UserInputError
from nas.search import get_strategy
from nas.search._optuna import AgingEvolutionSampler, open_storage


@pytest.mark.parametrize("url, message", [
    ("not a url", "not a storage URL"),
    ("study.db", "sqlite:///study.db"),
    ("/some/folder/study.db", "sqlite:////some/folder/study.db"),
    ("sqlite://x.db", "three slashes"),
    ("sqlite://", "names no file"),
    ("sqlite:///:memory:", "names no file"),
    ("mongodb://localhost/x", "unknown kind"),
    ("postgresql+psycopg://localhost", "names no database"),
    ("journal:", "names no file"),
])
def test_a_malformed_storage_url_says_what_is_allowed(url, message):
    with pytest.raises(UserInputError, match=message):
        open_storage(url)


def test_a_location_that_cannot_hold_a_study_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path / 'missing' / 'study.db'}")
    text = tmp_path / "notes.db"
    text.write_text("these are notes, not a database\n")
    with pytest.raises(UserInputError, match="not a SQLite database"):
        open_storage(f"sqlite:///{text}")
    other = tmp_path / "measurements.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE measurements (arch TEXT)")
    with pytest.raises(UserInputError, match="something else"):
        open_storage(f"sqlite:///{other}")
    with pytest.raises(UserInputError, match="not an Optuna journal"):
        open_storage(f"journal:///{text}")


def test_an_unreachable_postgresql_server_says_how_to_start_one():
    with pytest.raises(UserInputError, match="cannot reach.*pg_ctl"):
        open_storage("postgresql://nas:secret@127.0.0.1:9/nas")
    with pytest.raises(UserInputError) as error:
        open_storage("postgresql://nas:secret@127.0.0.1:9/nas")
    assert "secret" not in str(error.value)


def test_bad_storage_exits_2_before_any_work(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nas", "search", "--device", "pixel2", "--latency", "14ms",
                             "--strategy", "tpe", "--storage", "sqlite://x.db"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "three slashes" in result.stderr and "Traceback" not in result.stderr


def test_without_a_study_name_a_stable_one_is_derived_and_resumed(pixel2_problem, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    pixel2_problem.device = "pixel2"
    first = get_strategy("tpe", num_evaluations=4, storage=storage).search(pixel2_problem)
    name = first.info["study_name"]
    assert name == "nb201-pixel2-14ms-tpe"
    assert name in capsys.readouterr().err
    again = get_strategy("tpe", num_evaluations=6, storage=storage).search(pixel2_problem)
    assert again.info["study_name"] == name and again.info["resumed_trials"] == 4 and again.info["trials"] == 6


def test_a_reused_study_is_checked_for_the_device(pixel2_problem, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    pixel2_problem.device = "pixel2"
    get_strategy("tpe", num_evaluations=2, storage=storage, study_name="s").search(pixel2_problem)
    pixel2_problem.device = "pixel3"
    with pytest.raises(UserInputError, match="device 'pixel2'.*another --study"):
        get_strategy("tpe", num_evaluations=10, storage=storage, study_name="s").search(pixel2_problem)
    pixel2_problem.device = "pixel2"
    with pytest.raises(UserInputError, match="strategy 'tpe'"):
        get_strategy("evolution", num_evaluations=10, storage=storage, study_name="s").search(pixel2_problem)


def test_the_trial_of_a_killed_worker_is_retried_and_the_study_finishes(pixel2_problem, tmp_path):
    storage_url = f"sqlite:///{tmp_path / 'study.db'}"
    pixel2_problem.device = "pixel2"
    get_strategy("evolution", num_evaluations=2, storage=storage_url, study_name="s",
                 heartbeat_s=1).search(pixel2_problem)
    # a worker that asked for a trial, beat once, and died
    storage = open_storage(storage_url, heartbeat_s=1)
    study = optuna.load_study(study_name="s", storage=storage)
    dead = study.ask()
    space = pixel2_problem.search_space
    arch = tuple(dead.suggest_categorical(f"op{i}", list(ops)) for i, ops in enumerate(space.choices))
    storage.record_heartbeat(dead._trial_id)
    result = get_strategy("evolution", num_evaluations=4, storage=storage_url, study_name="s",
                          heartbeat_s=1).search(pixel2_problem)
    trials = optuna.load_study(study_name="s", storage=storage).trials
    finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 4 and result.info["trials"] == 4
    assert trials[dead.number].state == optuna.trial.TrialState.FAIL
    retried = [t for t in finished if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1
    assert tuple(retried[0].params[f"op{i}"] for i in range(len(space.choices))) == arch


def test_aging_evolution_mutates_the_fittest_of_the_population():
    sampler = AgingEvolutionSampler(population_size=8, tournament_size=4, seed=0)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(lambda t: sum(t.suggest_categorical(f"x{i}", list(range(5))) for i in range(6)), n_trials=60)
    trials = sorted(study.trials, key=lambda t: t.number)
    # after the first 8 random trials, each child differs from an earlier trial in exactly one position
    for child in trials[8:]:
        assert any(sum(child.params[k] != t.params[k] for k in child.params) == 1 for t in trials[:child.number])
    assert study.best_value > max(t.value for t in trials[:8])


def test_the_sampler_draws_differently_for_each_trial_number():
    sampler = AgingEvolutionSampler(population_size=100, seed=0)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(lambda t: sum(t.suggest_categorical(f"x{i}", list(range(50))) for i in range(4)), n_trials=20)
    assert len({tuple(t.params.values()) for t in study.trials}) == 20


def test_random_search_shares_a_study_too(pixel2_problem, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    pixel2_problem.device = "pixel2"
    first = get_strategy("random", num_evaluations=4, storage=storage).search(pixel2_problem)
    assert first.info["study_name"] == "nb201-pixel2-14ms-random"
    again = get_strategy("random", num_evaluations=6, storage=storage).search(pixel2_problem)
    assert again.info["resumed_trials"] == 4 and again.info["trials"] == 6


@pytest.mark.parametrize("strategy", ["random", "evolution", "nsga2"])
def test_every_sampling_strategy_takes_the_storage_option(strategy, capsys):
    from nas.cli import main

    assert main(["search", "--device", "pixel2", "--latency", "14ms", "--strategy", strategy, "--evaluations", "5",
                 "--storage", "sqlite://x.db"]) == 2
    assert "three slashes" in capsys.readouterr().err


def test_a_journal_writer_killed_holding_the_lock_does_not_block_the_others(tmp_path):
    import multiprocessing
    import os
    import signal
    import threading

    from nas.search._optuna import JournalKernelLock

    journal = str(tmp_path / "study.log")
    holding = multiprocessing.get_context("fork").Event()

    def hold_forever():
        JournalKernelLock(journal).acquire()
        holding.set()
        time.sleep(600)

    holder = multiprocessing.get_context("fork").Process(target=hold_forever)
    holder.start()
    assert holding.wait(30)
    mine = JournalKernelLock(journal)
    waiter = threading.Thread(target=mine.acquire, daemon=True)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # held by the other process
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    waiter.join(5)
    assert not waiter.is_alive()  # released the moment its holder died
    mine.release()


def test_a_worker_whose_trial_another_took_over_goes_on(tmp_path, capsys):
    from nas.search._optuna import run_until_finished

    url = f"journal:///{tmp_path / 'study.log'}"
    study = optuna.create_study(storage=open_storage(url, heartbeat_s=60), study_name="s")
    other_worker = open_storage(url, heartbeat_s=60)
    taken = []

    def objective(trial):
        if not taken:  # as a worker that found this trial's heartbeat late would
            taken.append(trial.number)
            other_worker.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        return trial.suggest_float("x", 0, 1)

    run_until_finished(study, objective, 3)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3 and states[taken[0]] == optuna.trial.TrialState.FAIL
    assert "taken over by another" in capsys.readouterr().err


def test_workers_opening_a_new_database_together_all_get_it(tmp_path):
    import threading

    url = f"sqlite:///{tmp_path / 'new.db'}"
    errors = []
    start = threading.Barrier(4)

    def open_it():
        start.wait()
        try:
            open_storage(url, heartbeat_s=None)
        except Exception as error:  # noqa: BLE001 - the test reports any
            errors.append(error)

    workers = [threading.Thread(target=open_it) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not errors
