"""Optuna-backed strategies: TPE (single objective, constrained) and NSGA-II
(accuracy vs predicted latency, constrained).

Each position of the architecture is one categorical parameter. With
``storage`` (e.g. ``sqlite:///study.db``) and ``study_name`` the study is
persistent: rerunning continues it, and several processes can share it.
"""

from __future__ import annotations

import abc

import optuna

from nas.errors import UserInputError
from nas.search.base import (Candidate, ProgressCallback, SearchProblem, SearchResult, SearchStrategy,
                             check_positive)


class OptunaSearch(SearchStrategy):
    """Base of the Optuna strategies; subclasses choose sampler and objectives."""

    multi_objective = False

    def __init__(self, *, seed: int = 0, num_evaluations: int | None = 300,
                 storage: str | None = None, study_name: str | None = None):
        super().__init__(seed=seed, num_evaluations=num_evaluations)
        self.num_evaluations = check_positive("num_evaluations", num_evaluations if num_evaluations is not None else 300)
        if study_name and not storage:
            raise UserInputError("--study needs --storage (e.g. --storage sqlite:///study.db); "
                                 "an in-memory study cannot be resumed")
        self.storage = storage
        self.study_name = study_name

    @classmethod
    def add_arguments(cls, parser) -> None:
        group = parser.add_argument_group("Optuna strategies (tpe, nsga2)")
        group.add_argument("--storage", metavar="URL",
                           help="Optuna storage making the search resumable and shareable, e.g. sqlite:///study.db")
        group.add_argument("--study", dest="study_name", metavar="NAME", help="study name in --storage")

    @abc.abstractmethod
    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """The Optuna sampler this strategy searches with."""

    def _study(self) -> optuna.Study:
        directions = ["maximize", "minimize"] if self.multi_objective else ["maximize"]
        try:
            return optuna.create_study(storage=self.storage, study_name=self.study_name,
                                       sampler=self.make_sampler(), directions=directions,
                                       load_if_exists=bool(self.storage))
        except (ValueError, ImportError, optuna.exceptions.OptunaError) as error:
            raise UserInputError(f"cannot open Optuna storage {self.storage!r}: {error}. "
                                 f"Use an RDB URL like sqlite:///study.db") from None

    def search(self, problem: SearchProblem, progress: ProgressCallback | None = None) -> SearchResult:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = self._study()
        space = problem.search_space
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        for t in done:
            if t.user_attrs.get("budget_ms") != problem.budget_ms or t.user_attrs.get("space") != problem.space:
                raise UserInputError(
                    f"study {self.study_name!r} in {self.storage} was run for space "
                    f"{t.user_attrs.get('space')} and budget {t.user_attrs.get('budget_ms')} ms, not "
                    f"{problem.space} at {problem.budget_ms:g} ms; pick another --study name")
        if progress and done:
            progress(len(done))

        def objective(trial: optuna.Trial):
            arch = tuple(trial.suggest_categorical(f"op{i}", list(ops)) for i, ops in enumerate(space.choices))
            candidate = problem.evaluate([arch])[0]
            trial.set_user_attr("space", problem.space)
            trial.set_user_attr("budget_ms", problem.budget_ms)
            # <= 0 means feasible: the interval's upper bound minus the budget
            trial.set_constraint("latency_over_budget_ms", candidate.high_ms - problem.budget_ms)
            if progress:
                progress(1)
            if self.multi_objective:
                return candidate.accuracy, candidate.predicted_ms
            return candidate.accuracy

        remaining = self.num_evaluations - len(done)
        if remaining > 0:
            study.optimize(objective, n_trials=remaining)
        archs = [tuple(t.params[f"op{i}"] for i in range(len(space.choices)))
                 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        candidates: list[Candidate] = problem.evaluate(list(dict.fromkeys(archs)))
        return SearchResult(self.name, candidates, problem.budget_ms,
                            info={"study_name": study.study_name, "storage": self.storage,
                                  "trials": len(archs), "resumed_trials": len(done)})


class TPESearch(OptunaSearch):
    """Optuna's TPE sampler with the latency constraint (interval upper bound <= budget)."""

    def make_sampler(self):
        return optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=min(20, self.num_evaluations))


class NSGA2Search(OptunaSearch):
    """Optuna's NSGA-II: accuracy up, predicted latency down, constrained by the budget."""

    multi_objective = True

    def make_sampler(self):
        return optuna.samplers.NSGAIISampler(seed=self.seed, population_size=min(50, self.num_evaluations))
