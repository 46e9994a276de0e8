"""Random search: uniform samples, the baseline every strategy must beat."""

from __future__ import annotations

import numpy as np

from nas.search._optuna import HEARTBEAT_S, OptunaRandom, OptunaSearch
from nas.search.base import ProgressCallback, SearchProblem, SearchResult, SearchStrategy, check_positive


class RandomSearch(SearchStrategy):
    """Scores ``num_evaluations`` uniformly sampled architectures (distinct when the space allows).

    With a study storage it samples on an Optuna study, so several workers can share it.
    """

    #: the same --storage / --study options as the Optuna strategies
    add_arguments = classmethod(OptunaSearch.add_arguments.__func__)

    def __init__(self, *, seed: int = 0, num_evaluations: int | None = 3000,
                 storage: str | None = None, study_name: str | None = None, heartbeat_s: int = HEARTBEAT_S):
        super().__init__(seed=seed, num_evaluations=num_evaluations)
        self.num_evaluations = check_positive("num_evaluations", num_evaluations if num_evaluations is not None else 3000)
        self.shared = None
        if storage is not None or study_name is not None:
            self.shared = OptunaRandom(seed=seed, num_evaluations=self.num_evaluations, storage=storage,
                                       study_name=study_name, heartbeat_s=heartbeat_s)

    def search(self, problem: SearchProblem, progress: ProgressCallback | None = None) -> SearchResult:
        if self.shared is not None:
            self.shared.name = self.name
            return self.shared.search(problem, progress)
        rng = np.random.default_rng(self.seed)
        everything = problem.all_archs()
        if everything is not None:
            picks = rng.choice(len(everything), size=min(self.num_evaluations, len(everything)), replace=False)
            archs = [everything[i] for i in picks]
        else:
            archs = list(dict.fromkeys(problem.sample(rng) for _ in range(self.num_evaluations)))
        return SearchResult(self.name, evaluate_in_rounds(problem, archs, progress), problem.budget_ms)


class ExhaustiveSearch(SearchStrategy):
    """Scores every architecture of a space that can list them (NB201: 15,625 cells)."""

    def search(self, problem: SearchProblem, progress: ProgressCallback | None = None) -> SearchResult:
        from nas.errors import UserInputError

        everything = problem.all_archs()
        if everything is None:
            raise UserInputError(f"strategy 'exhaustive' needs a space whose architectures can be listed; "
                                 f"{problem.space} cannot. Use --strategy evolution or tpe")
        return SearchResult(self.name, evaluate_in_rounds(problem, list(everything), progress), problem.budget_ms)


def evaluate_in_rounds(problem: SearchProblem, archs: list, progress: ProgressCallback | None,
                       round_size: int = 16) -> list:
    """``problem.evaluate(archs)``; with a costly accuracy estimator, ``round_size`` at a
    time, so progress is reported as the scoring goes."""
    step = len(archs) if problem.accuracy.cheap else round_size
    candidates = []
    for start in range(0, len(archs), max(step, 1)):
        scored = problem.evaluate(archs[start:start + step])
        candidates += scored
        if progress:
            progress(len(scored))
    return candidates
