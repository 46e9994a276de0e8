"""The slm search's aging evolution on an Optuna study that several workers
share (``nas search --space slm --storage URL --study NAME`` on several
processes or machines).

Each trial of the study is one layout: fifteen categorical parameters
``g0``..``g14`` (three stages of mixer, second mixer, ratio, FFNs and
blocks; the width is not a gene, the budget picks it). A worker asks the
study for a trial, :class:`LayoutEvolutionSampler` draws its layout from the
study's finished trials (whoever trained them), the worker trains it and
records the candidate in the trial (user attribute ``record``; value: its
validation bits per byte). So workers cooperate on one population:

- a layout in the study (finished, running or queued) is not drawn again,
  and a worker that draws one that another drew at the same moment gives it
  up, so no layout is trained twice;
- a worker killed mid-trial has its trial failed after three missed
  heartbeats and queued again with its layout for a live worker
  (:func:`nas.search._optuna.run_until_finished`); what it finished is in
  the study and is never lost;
- a layout with no width predicted to meet the budget is recorded as a
  pruned trial: it does not count toward the candidates.
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import asdict
from typing import Any, Callable, Sequence

import numpy as np
import optuna

from nas.errors import UserInputError
from nas.search._optuna import beyond_budget, open_storage, run_until_finished
from nas.search_space import get_space

SPACE = "slm"
#: layout genes: three stages of (mixer, second, ratio, ffns, blocks); the width gene is left out
GENES = 15
#: a worker gives up after this many trials per candidate in a row that trained nothing new
FUTILE_DRAWS = 100
_COMPLETE = optuna.trial.TrialState.COMPLETE
_PRUNED = optuna.trial.TrialState.PRUNED
_LIVE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


def layout_params(layout) -> dict[str, str]:
    """A layout's genes as the study's parameters."""
    return {f"g{i}": layout[i] for i in range(GENES)}


def layout_from_params(params: dict[str, Any]):
    """The layout (at the narrowest width) of a trial's parameters; None while they are incomplete."""
    space = get_space(SPACE)
    if any(f"g{i}" not in params for i in range(GENES)):
        return None
    return space.normalize([params[f"g{i}"] for i in range(GENES)] + [str(space.widths[0])])


def _layout_key(trial) -> str | None:
    layout = layout_from_params(trial.params)
    return None if layout is None else get_space(SPACE).layout(layout)


class LayoutEvolutionSampler(optuna.samplers.BaseSampler):
    """Aging evolution over slm layouts, on the study's finished trials.

    The population is the ``population_size`` most recently finished
    trials; a new trial mutates the lowest-loss of ``tournament_size``
    random members (:meth:`SlmSpace.mutate`); until the population is full,
    layouts are the first of ``seeds`` not yet in the study, then random,
    each shrunk until ``feasible``. A layout already in the
    study is not drawn again. Randomness comes from ``(seed, trial number)``,
    so workers never draw alike.
    """

    def __init__(self, feasible: Callable[[Any], bool], *, population_size: int, tournament_size: int, seed: int,
                 seeds: Sequence[Any] = ()):
        from nas.slm.search import shrink_to_fit

        self._shrink = shrink_to_fit
        self.feasible = feasible
        self.population_size = population_size
        self.tournament_size = tournament_size
        self.seed = seed
        self.seeds = list(seeds)

    def infer_relative_search_space(self, study, trial):
        space = get_space(SPACE)
        return {f"g{i}": optuna.distributions.CategoricalDistribution(list(space.choices[i]))
                for i in range(GENES)}

    def sample_relative(self, study, trial, search_space):
        if not search_space:
            return {}
        space = get_space(SPACE)
        rng = np.random.default_rng([self.seed, trial.number])
        trials = study.get_trials(deepcopy=False)
        taken = {_layout_key(t) for t in trials if t.state in (*_LIVE, _PRUNED)} - {None}
        finished = sorted((t for t in trials if t.state == _COMPLETE),
                          key=lambda t: (t.datetime_complete or 0, t.number))
        population = finished[-self.population_size:]
        layout = None
        if len(finished) < self.population_size:
            for seed_layout in self.seeds:
                drawn = self._shrink(seed_layout, self.feasible)
                if drawn is not None and space.layout(drawn) not in taken:
                    return layout_params(drawn)
        for _ in range(200):
            if len(finished) < self.population_size:
                drawn = self._shrink(space.sample(rng), self.feasible)
                if drawn is None:
                    continue
            else:
                picks = rng.choice(len(population), size=min(self.tournament_size, len(population)), replace=False)
                parent = min((population[i] for i in picks), key=lambda t: t.value if t.value is not None else math.inf)
                drawn = space.mutate(layout_from_params(parent.params), rng)
            layout = drawn
            if space.layout(drawn) not in taken:
                break
        if layout is None:
            raise UserInputError("no layout with a width predicted to meet the budget was found in 200 draws; "
                                 "raise the budget")
        return layout_params(layout)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return param_distribution.choices[0]  # every gene is drawn by sample_relative


def default_study_name(device: str, budget_ms: float, context: int, seed: int, fingerprint: str) -> str:
    """The study name used when none is given: the same command gives the same name."""
    return re.sub(r"[^A-Za-z0-9_.:+-]", "_", f"slm-{device}-{budget_ms:g}ms-ctx{context}-seed{seed}-{fingerprint}")


def open_study(storage: str, study_name: str | None, settings: dict[str, Any], sampler,
               heartbeat_s: int, say: Callable[[str], None]) -> optuna.Study:
    """The shared study (created when new), checked to be one of an slm search with ``settings``."""
    if study_name is not None and not re.fullmatch(r"[A-Za-z0-9_.:+-]{1,200}", study_name):
        raise UserInputError(f"--study {study_name!r}: use letters, digits and _ . : + - (at most 200)")
    opened = open_storage(storage, heartbeat_s=heartbeat_s)
    name = study_name or default_study_name(settings["device"], settings["budget_ms"], settings["context"],
                                            settings["seed"], settings["fingerprint"])
    if study_name is None:
        say(f"Optuna study {name!r} in {storage} (pass --study {name} to name it; workers running the same "
            f"command share it)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(storage=opened, study_name=name, sampler=sampler, direction="minimize",
                                    load_if_exists=True)
    except (ValueError, optuna.exceptions.OptunaError) as error:
        raise UserInputError(f"cannot open study {name!r} in --storage {storage}: {error}") from None
    recorded = dict(study.user_attrs)
    clashes = [f"{key} {recorded[key]!r} (not {value!r})" for key, value in settings.items()
               if key in recorded and recorded[key] != value]
    if clashes or len(study.directions) != 1:
        raise UserInputError(f"study {name!r} in {storage} was run with "
                             f"{', '.join(clashes) or 'another strategy'}; pick another --study name")
    for key, value in settings.items():
        if key not in recorded:
            study.set_user_attr(key, value)
    return study


def study_records(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """Every candidate recorded in the study (by any worker), as ``layout -> record fields``."""
    found: dict[str, dict[str, Any]] = {}
    for trial in study.get_trials(deepcopy=False, states=(_COMPLETE, _PRUNED)):
        record = trial.user_attrs.get("record")
        if record:
            found.setdefault(record["layout"], record)
    return found


def evolve_on_study(evaluate: Callable[[Any], Any], study: optuna.Study, num_candidates: int,
                    known: Callable[[dict[str, dict[str, Any]]], None]) -> None:
    """Take trials of ``study`` until it holds ``num_candidates`` trained candidates (by all its workers).

    ``evaluate(layout)`` trains a layout and returns its record (a
    :class:`nas.slm.search.CandidateRecord`); ``known(records)`` receives
    the study's records before each trial, so a worker never trains what
    another worker already has.
    """
    worker = f"{socket.gethostname()}:{os.getpid()}"
    futile = []  # this worker's trials that trained nothing new

    def give_up_after_many(reason: str) -> None:
        futile.append(reason)
        if len(futile) > FUTILE_DRAWS * num_candidates:
            raise UserInputError(f"{len(futile)} layouts drawn in a row are in the study already or have no width "
                                 f"predicted to meet the budget; raise the budget or lower --evaluations")
        raise optuna.TrialPruned(reason)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker)  # who ran which trial, in a study shared by several
        if beyond_budget(study, trial.number, num_candidates):
            raise optuna.TrialPruned("the study's candidates are taken by other workers' trials")
        space = get_space(SPACE)
        params = {f"g{i}": trial.suggest_categorical(f"g{i}", list(space.choices[i])) for i in range(GENES)}
        layout = layout_from_params(params)
        key = space.layout(layout)
        retry = study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial") is not None
        twin = [t.number for t in study.get_trials(deepcopy=False, states=_LIVE)
                if t.number < trial.number and _layout_key(t) == key]
        if twin and not retry:  # drawn by another worker at the same moment: theirs counts
            give_up_after_many(f"layout {key} is trial {twin[0]}'s")
        known(study_records(study))
        record = evaluate(layout)
        trial.set_user_attr("record", asdict(record))
        if not record.feasible:
            give_up_after_many(f"layout {key}: no width is predicted to meet the budget")
        futile.clear()
        return float(record.val_bpb)

    run_until_finished(study, objective, num_candidates)
