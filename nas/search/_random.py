"""Random search: uniform samples, the baseline every strategy must beat."""

from __future__ import annotations

import numpy as np

from nas.search.base import ProgressCallback, SearchProblem, SearchResult, SearchStrategy, check_positive


class RandomSearch(SearchStrategy):
    """Scores ``num_evaluations`` uniformly sampled architectures (distinct when the space allows)."""

    def __init__(self, *, seed: int = 0, num_evaluations: int | None = 3000):
        super().__init__(seed=seed, num_evaluations=num_evaluations)
        self.num_evaluations = check_positive("num_evaluations", num_evaluations if num_evaluations is not None else 3000)

    def search(self, problem: SearchProblem, progress: ProgressCallback | None = None) -> SearchResult:
        rng = np.random.default_rng(self.seed)
        everything = problem.all_archs()
        if everything is not None:
            picks = rng.choice(len(everything), size=min(self.num_evaluations, len(everything)), replace=False)
            archs = [everything[i] for i in picks]
        else:
            archs = list(dict.fromkeys(problem.search_space.sample(rng) for _ in range(self.num_evaluations)))
        candidates = problem.evaluate(archs)
        if progress:
            progress(len(candidates))
        return SearchResult(self.name, candidates, problem.budget_ms)


class ExhaustiveSearch(SearchStrategy):
    """Scores every architecture of a space that can list them (NB201: 15,625 cells)."""

    def search(self, problem: SearchProblem, progress: ProgressCallback | None = None) -> SearchResult:
        from nas.errors import UserInputError

        everything = problem.all_archs()
        if everything is None:
            raise UserInputError(f"strategy 'exhaustive' needs a space whose architectures can be listed; "
                                 f"{problem.space} cannot. Use --strategy evolution or tpe")
        candidates = problem.evaluate(list(everything))
        if progress:
            progress(len(candidates))
        return SearchResult(self.name, candidates, problem.budget_ms)
