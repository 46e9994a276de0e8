"""Aging (regularized) evolution, Real et al. 2019: tournament selection,
one mutation per child, the oldest member dies."""

from __future__ import annotations

import collections

import numpy as np

from nas.errors import UserInputError

from nas.search.base import ProgressCallback, SearchProblem, SearchResult, SearchStrategy, check_positive


class RegularizedEvolution(SearchStrategy):
    """Aging evolution on the problem's fitness (accuracy when safely under budget)."""

    def __init__(self, *, seed: int = 0, num_evaluations: int | None = 3000,
                 population_size: int = 64, tournament_size: int = 16):
        super().__init__(seed=seed, num_evaluations=num_evaluations)
        self.num_evaluations = check_positive("num_evaluations", num_evaluations if num_evaluations is not None else 3000)
        self.population_size = check_positive("population_size", population_size)
        allowed = f"a whole number from 1 to population_size ({self.population_size})"
        self.tournament_size = check_positive("tournament_size", tournament_size, allowed)
        if self.tournament_size > self.population_size:
            raise UserInputError(f"option tournament_size={tournament_size!r} is invalid; allowed: {allowed}")

    def search(self, problem: SearchProblem, progress: ProgressCallback | None = None) -> SearchResult:
        rng = np.random.default_rng(self.seed)
        space = problem.search_space
        size = space.num_archs
        # the budget counts distinct architectures; a small space cannot absorb more than it holds
        wanted = min(self.num_evaluations, size) if size else self.num_evaluations
        population: collections.deque = collections.deque()
        seen: dict = {}

        def add(candidate) -> None:
            population.append(candidate)
            if candidate.arch not in seen:
                seen[candidate.arch] = candidate
                if progress:
                    progress(1)

        while len(population) < min(self.population_size, wanted):
            add(problem.evaluate([space.sample(rng)])[0])
        cycles = 0
        # revisits are free (cached) but cap the loop, as converged populations mostly revisit
        while len(seen) < wanted and cycles < 20 * wanted:
            cycles += 1
            picks = rng.choice(len(population), size=min(self.tournament_size, len(population)), replace=False)
            parent = max((population[i] for i in picks), key=problem.fitness)
            add(problem.evaluate([space.mutate(parent.arch, rng)])[0])
            if len(population) > self.population_size:
                population.popleft()
        return SearchResult(self.name, list(seen.values()), problem.budget_ms,
                            info={"population_size": self.population_size,
                                  "tournament_size": self.tournament_size, "cycles": cycles})
