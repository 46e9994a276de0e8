"""Aging (regularized) evolution, Real et al. 2019: tournament selection,
one mutation per child, the oldest member dies. With a study storage it runs
as an Optuna sampler over the study's trials (:mod:`nas.search._optuna`), so
several workers can share one search."""

from __future__ import annotations

import collections

import numpy as np

from nas.errors import UserInputError

from nas.search._optuna import HEARTBEAT_S, OptunaEvolution, OptunaSearch
from nas.search.base import ProgressCallback, SearchProblem, SearchResult, SearchStrategy, check_positive


class RegularizedEvolution(SearchStrategy):
    """Aging evolution on the problem's fitness (accuracy when safely under budget)."""

    #: children bred from the same population and scored together when the accuracy estimator is costly
    ROUND_SIZE = 16

    #: the same --storage / --study options as the Optuna strategies
    add_arguments = classmethod(OptunaSearch.add_arguments.__func__)

    def __init__(self, *, seed: int = 0, num_evaluations: int | None = 3000,
                 population_size: int = 64, tournament_size: int = 16,
                 storage: str | None = None, study_name: str | None = None, heartbeat_s: int = HEARTBEAT_S):
        super().__init__(seed=seed, num_evaluations=num_evaluations)
        self.num_evaluations = check_positive("num_evaluations", num_evaluations if num_evaluations is not None else 3000)
        self.population_size = check_positive("population_size", population_size)
        allowed = f"a whole number from 1 to population_size ({self.population_size})"
        self.tournament_size = check_positive("tournament_size", tournament_size, allowed)
        if self.tournament_size > self.population_size:
            raise UserInputError(f"option tournament_size={tournament_size!r} is invalid; allowed: {allowed}")
        self.shared = None
        if storage is not None or study_name is not None:
            self.shared = OptunaEvolution(seed=seed, num_evaluations=self.num_evaluations, storage=storage,
                                          study_name=study_name, heartbeat_s=heartbeat_s,
                                          population_size=self.population_size,
                                          tournament_size=self.tournament_size)

    def search(self, problem: SearchProblem, progress: ProgressCallback | None = None) -> SearchResult:
        if self.shared is not None:
            self.shared.name = self.name
            return self.shared.search(problem, progress)
        rng = np.random.default_rng(self.seed)
        size = len(problem.domain) if problem.domain is not None else problem.search_space.num_archs
        # the budget counts distinct architectures; a small space cannot absorb more than it holds
        wanted = min(self.num_evaluations, size) if size else self.num_evaluations
        # a costly estimator (a network run per architecture) scores a round of children in one call
        round_size = 1 if problem.accuracy.cheap else self.ROUND_SIZE
        population: collections.deque = collections.deque()
        seen: dict = {}

        def add(candidate) -> None:
            population.append(candidate)
            if candidate.arch not in seen:
                seen[candidate.arch] = candidate
                if progress:
                    progress(1)

        first = [problem.sample(rng) for _ in range(min(self.population_size, wanted))]
        step = len(first) if problem.accuracy.cheap else round_size  # progress as the first population is scored
        for start in range(0, len(first), max(step, 1)):
            for candidate in problem.evaluate(first[start:start + step]):
                add(candidate)
        cycles = 0
        # revisits are free (cached) but cap the loop, as converged populations mostly revisit
        while len(seen) < wanted and cycles < 20 * wanted:
            children = []
            for _ in range(min(round_size, wanted - len(seen))):
                cycles += 1
                picks = rng.choice(len(population), size=min(self.tournament_size, len(population)), replace=False)
                parent = max((population[i] for i in picks), key=problem.fitness)
                children.append(problem.mutate(parent.arch, rng))
            for child in problem.evaluate(children):
                add(child)
                if len(population) > self.population_size:
                    population.popleft()
        return SearchResult(self.name, list(seen.values()), problem.budget_ms,
                            info={"population_size": self.population_size,
                                  "tournament_size": self.tournament_size, "cycles": cycles})
