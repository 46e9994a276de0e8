"""The slm search on an Optuna study shared by several workers: layouts drawn
from every worker's candidates, none trained twice, a killed worker's trial
run again by another, and a real tiny search that a second worker continues."""

import json
import signal
import subprocess
import sys
import time

import optuna
import pytest

from nas.search._optuna import open_storage
from nas.search_space import get_space
from nas.slm.search import CandidateRecord
from nas.slm.study import LayoutEvolutionSampler, evolve_on_study, layout_from_params, open_study

#: a worker whose "training" takes 0.4 s and scores a layout by its layer count; it logs each layout it finished
WORKER = """
import sys, time
from nas.search_space import get_space
from nas.slm.search import CandidateRecord
from nas.slm.study import LayoutEvolutionSampler, evolve_on_study, open_study

storage, log, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
space = get_space("slm")

def evaluate(layout):
    time.sleep(0.4)
    key = space.layout(layout)
    with open(log, "a") as handle:
        handle.write(key + "\\n")
    return CandidateRecord(key, key + " @64", 64, 1.0, 0.9, 1.1, len(space.layers(layout)) / 10)

sampler = LayoutEvolutionSampler(lambda layout: True, population_size=3, tournament_size=2, seed=0)
study = open_study(storage, "shared", {"space": "slm"}, sampler, 1, print)
evolve_on_study(evaluate, study, count, lambda records: None)
print("DONE", flush=True)
"""


def _made_up(layout):
    space = get_space("slm")
    key = space.layout(layout)
    return CandidateRecord(key, key + " @64", 64, 1.0, 0.9, 1.1, len(space.layers(layout)) / 10)


@pytest.mark.parametrize("kind", ["journal", "sqlite", "postgresql"])
def test_a_second_worker_draws_from_the_first_workers_candidates_and_repeats_none(tmp_path, request, kind):
    if kind == "postgresql":
        storage = request.getfixturevalue("postgres").create_database("slm_study")
    else:
        storage = f"journal:///{tmp_path / 'study.log'}" if kind == "journal" else f"sqlite:///{tmp_path / 's.db'}"
    space = get_space("slm")
    evaluated = {"a": [], "b": []}

    def worker(name, count):
        sampler = LayoutEvolutionSampler(lambda layout: True, population_size=4, tournament_size=2, seed=0)
        study = open_study(storage, "s", {"space": "slm", "budget_ms": 3.0}, sampler, 1, lambda m: None)
        seen = {}
        evolve_on_study(lambda layout: evaluated[name].append(space.layout(layout)) or _made_up(layout), study,
                        count, seen.update)
        return study, seen

    worker("a", 6)
    study, seen = worker("b", 12)
    assert len(evaluated["a"]) == 6 and len(evaluated["b"]) == 6
    assert not set(evaluated["a"]) & set(evaluated["b"])  # nothing the first worker had is trained again
    assert set(evaluated["a"]) <= set(seen)  # and the second worker was given the first one's records
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 12
    layouts = [layout_from_params(t.params) for t in finished]
    # after the population filled, each child is one mutation of an earlier trial's layout
    for i, child in enumerate(layouts[6:], start=6):
        assert any(sum(a != b for a, b in zip(child, parent)) in (1, 2, 3, 4) and child[-1] == parent[-1]
                   for parent in layouts[:i])
    with pytest.raises(Exception, match="budget_ms 3.0"):
        open_study(storage, "s", {"space": "slm", "budget_ms": 5.0}, None, 1, lambda m: None)


def test_a_killed_workers_layout_is_trained_again_by_another_and_nothing_finished_is_lost(tmp_path):
    storage = f"journal:///{tmp_path / 'study.log'}"
    log = tmp_path / "finished.txt"
    running = [subprocess.Popen([sys.executable, "-c", WORKER, storage, str(log), "10"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    victim = running[1]
    reader = open_storage(storage, heartbeat_s=None)
    deadline = time.monotonic() + 180
    killed = None
    while killed is None and time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name="shared", storage=reader)
        except KeyError:  # the workers are still starting
            time.sleep(0.2)
            continue
        mine = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                if t.user_attrs.get("worker", "").endswith(f":{victim.pid}") and len(t.params) == 15]
        # kill it inside a trial, after it has finished one (what it finished must not be lost)
        done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
        if mine and done:
            victim.send_signal(signal.SIGKILL)
            killed = mine[0].number
        else:
            time.sleep(0.05)
    assert killed is not None, "the worker ran no trial to be killed in"
    assert victim.wait(timeout=30) == -signal.SIGKILL
    out, err = running[0].communicate(timeout=300)
    assert running[0].returncode == 0, err
    assert "DONE" in out

    trials = optuna.load_study(study_name="shared", storage=open_storage(storage, heartbeat_s=None)).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 10 and not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert any(t.user_attrs["worker"].endswith(f":{victim.pid}") for t in complete)  # the victim's work is kept
    assert trials[killed].state == optuna.trial.TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == trials[killed].params
    finished = log.read_text().split("\n")[:-1]
    assert len(finished) == len(set(finished)) == 10  # every layout trained to the end once, the killed one too
    space = get_space("slm")
    assert sorted(finished) == sorted(space.layout(layout_from_params(t.params)) for t in complete)


def test_two_workers_of_a_real_tiny_search_train_nothing_twice(tmp_path):
    """A real (tiny) slm search on a journal study; a second worker with its own work folder, as on another
    machine, adds the study's remaining candidates and sizes the finalists among both workers' candidates."""
    from nas.devices import get_device
    from nas.slm.recall import RecallTask
    from nas.slm.search import SlmSearchConfig, search_slm
    from nas.slm.training import TrainingConfig

    device = get_device("local-cpu").with_settings(rounds=2, runs_per_round=3, warmup_runs=1, extra_rounds=0)
    training = TrainingConfig(tokens=3 * 4 * 16, batch_size=4, context=16, eval_bytes=512)
    recall = RecallTask(num_pairs=2, num_queries=2, train_steps=2, batch_size=4, test_sequences=8)
    references = ["SWA | M2 | - @64", "D F | A F | - @128", "M2 F | D F | M2 F @192", "A F F | GD | - @256"]
    storage = f"journal:///{tmp_path / 'study.log'}"

    def worker(name, candidates):
        config = SlmSearchConfig(num_candidates=candidates, population_size=2, tournament_size=1, finalists=1,
                                 verify=2, context=16, training=training, recall=recall, test_bytes=1024)
        return search_slm(device, "1000ms", config=config, work_dir=tmp_path / name, store=str(tmp_path / "m.db"),
                          progress=False, references=references, storage=storage, study_name="tiny",
                          heartbeat_s=2)

    first = worker("first", 2)
    second = worker("second", 3)
    trained_here = [json.loads(line) for line in (tmp_path / "second" / "candidates.jsonl").read_text().splitlines()]
    first_layouts = {c.layout for c in first.candidates if c.val_bpb is not None}
    assert len(first_layouts) == 2
    assert not first_layouts & {r["layout"] for r in trained_here if not r.get("sized")}
    assert len([r for r in trained_here if not r.get("sized") and r["val_bpb"] is not None]) == 1
    assert {c.layout for c in second.candidates if c.val_bpb is not None} >= first_layouts
    assert second.status == "verified" and second.measured_ms + second.measured_spread_ms <= 1000


def test_the_shared_evolution_starts_from_the_seed_layouts_not_yet_in_the_study(tmp_path):
    from nas.slm.search import parse_layout

    space = get_space("slm")
    seeds = ["D F M2 F | A F M2 F | D F M2 F", "M2 F M2 F | A F M2 F | -"]
    sampler = LayoutEvolutionSampler(lambda layout: True, population_size=3, tournament_size=2, seed=0,
                                     seeds=[parse_layout(s) for s in seeds])
    study = open_study(f"journal:///{tmp_path / 'study.log'}", "seeded", {"space": "slm"}, sampler, 1,
                       lambda m: None)
    evolve_on_study(_made_up, study, 5, lambda records: None)
    drawn = [space.layout(layout_from_params(t.params)) for t in study.trials]
    assert drawn[:2] == seeds and len(set(drawn)) == len(drawn) == 5


def test_study_options_that_cannot_work_exit_2(tmp_path, monkeypatch, capsys):
    from nas.cli import main

    monkeypatch.setenv("NAS_STORE", str(tmp_path / "measurements.db"))
    base = ["search", "--space", "slm", "--device", "local-cpu", "--latency", "3ms"]
    assert main(base + ["--study", "s"]) == 2
    assert "--study needs --storage" in capsys.readouterr().err
    assert main(base + ["--storage", f"sqlite:///{tmp_path / 's.db'}", "--arch", "D F | A F | -"]) == 2
    assert "with --arch there is none" in capsys.readouterr().err
    assert main(base + ["--storage", "study.db"]) == 2  # before anything is measured
    assert "sqlite:///study.db" in capsys.readouterr().err


def test_a_study_where_no_layout_fits_gives_up_with_a_message(tmp_path, monkeypatch):
    from nas.errors import UserInputError
    from nas.slm import study as shared

    monkeypatch.setattr(shared, "FUTILE_DRAWS", 4)  # the default 100 per candidate takes long to exhaust

    storage = f"sqlite:///{tmp_path / 's.db'}"
    sampler = LayoutEvolutionSampler(lambda layout: True, population_size=2, tournament_size=1, seed=0)
    study = open_study(storage, "s", {"space": "slm"}, sampler, 1, lambda m: None)
    space = get_space("slm")

    def no_width_fits(layout):
        return CandidateRecord(space.layout(layout), None, None, None, None, None)

    with pytest.raises(UserInputError, match="raise the budget"):
        evolve_on_study(no_width_fits, study, 1, lambda records: None)


def test_workers_sharing_a_folder_size_finalists_in_turn_and_reuse_each_others(tmp_path):
    import threading

    from nas.slm.search import _WorkFolder

    first, second = (_WorkFolder(tmp_path, "same training", resume=True) for _ in range(2))
    first.hold_finalists()
    taken = threading.Event()

    def take_turn():
        second.hold_finalists()
        taken.set()

    waiting = threading.Thread(target=take_turn)
    waiting.start()
    assert not taken.wait(0.5)  # the first is sizing: the second waits
    sized = CandidateRecord("D | D | -", "D | D | - @96", 96, 1.0, 0.9, 1.1, 4.2)
    first.save(sized, None, sized=True)
    first.release_finalists()
    assert taken.wait(10)
    waiting.join()
    assert second.sized["D | D | - @96"].val_bpb == 4.2  # what the first trained is not trained again
    second.release_finalists()
