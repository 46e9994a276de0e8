"""The strategy contract: explore a space under a latency budget by asking
the problem, never a device.

A strategy receives a :class:`SearchProblem` (accuracy estimator + adapted
latency predictor + budget) and returns a :class:`SearchResult` holding every
candidate it evaluated. Measuring on the device is the pipeline's job
(``nas.search.pipeline``), so a strategy never imports a profiler.

Strategies that train their own network (ProxylessNAS) hook in with three
class attributes/methods, all optional:

- ``needs_data = True``: the constructor receives ``data_dir`` (from
  ``--data-dir`` on the command line; from ``strategy_options`` in Python);
- ``add_arguments(parser)``: a classmethod adding the strategy's own CLI
  options; the parsed values reach the constructor as keyword options
  (argument ``dest`` = option name);
- ``SearchResult.model``: a trained ``torch.nn.Module`` for the best
  architecture, exported instead of freshly initialised weights.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nas.predictors.base import LatencyPredictor
from nas.search.accuracy import AccuracyEstimator
from nas.search_space import Arch, get_space

#: callback a strategy calls with the number of new evaluations (drives progress bars)
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class Candidate:
    """One evaluated architecture: accuracy estimate (percent) and predicted
    latency with its interval (milliseconds)."""

    arch: Arch
    accuracy: float
    predicted_ms: float
    low_ms: float
    high_ms: float

    def safe_under(self, budget_ms: float) -> bool:
        """True when even the interval's upper bound meets the budget."""
        return self.high_ms <= budget_ms


class SearchProblem:
    """Maximise accuracy subject to predicted latency (interval upper bound) <= budget.

    ``evaluate`` caches; for a space whose architectures can be listed and
    are few (NB201's 15,625), the first call scores all of them in one batch,
    which is cheaper than many small predictor calls (only when the accuracy
    estimator is cheap: a table, not a network).

    ``archs`` restricts the search to a fixed list (a replayed device's
    recorded architectures, the only ones it can verify): strategies draw
    with :meth:`sample` and :meth:`mutate`, and :meth:`evaluate` answers an
    architecture outside the list with the nearest one in it (fewest
    differing positions).
    """

    #: spaces up to this size are scored in one batch on first use
    BATCH_ALL_LIMIT = 100_000

    def __init__(self, space: str, budget_ms: float, accuracy: AccuracyEstimator,
                 predictor: LatencyPredictor, *, coverage: float = 0.9, dataset: str | None = None,
                 samples: Mapping[str, float] | None = None,
                 measure: Callable[[list[Arch]], list[float]] | None = None,
                 archs: Sequence[Arch] | None = None, device: str | None = None):
        self.space = space
        #: name of the device the budget is for (recorded in shared studies)
        self.device = device
        self.search_space = get_space(space)
        self.budget_ms = float(budget_ms)
        self.accuracy = accuracy
        self.predictor = predictor
        self.coverage = coverage
        self.dataset = dataset
        #: the device's measured samples the predictor was adapted on (canonical string -> ms)
        self.samples = dict(samples or {})
        #: measures architectures on the device (milliseconds, in order); None where it cannot be reached
        self.measure = measure
        #: the only architectures the search may return, or None for the whole space
        self.domain: tuple[Arch, ...] | None = None if archs is None else tuple(dict.fromkeys(tuple(a) for a in archs))
        if self.domain is not None and not self.domain:
            raise ValueError("archs is empty: a restricted search needs at least one architecture")
        self._domain_codes: np.ndarray | None = None
        self._domain_index: dict[Arch, int] = {}
        self._cache: dict[Arch, Candidate] = {}
        self._asked: set[Arch] = set()

    @property
    def num_evaluations(self) -> int:
        """Distinct architectures asked about so far."""
        return len(self._asked)

    def all_archs(self) -> Sequence[Arch] | None:
        """Every architecture the search may return when they can be listed
        (the restricted list, or the whole space), else ``None``."""
        if self.domain is not None:
            return self.domain
        lister = getattr(self.search_space, "all_archs", None)
        return lister() if lister is not None else None

    # --- drawing architectures (within the restricted list when there is one) -----
    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture the search may return."""
        if self.domain is None:
            return self.search_space.sample(rng)
        return self.domain[int(rng.integers(len(self.domain)))]

    def mutate(self, arch: Arch, rng: np.random.Generator, neighbours: int = 8) -> Arch:
        """A small change of ``arch``: one position in the whole space; within a
        restricted list, one of the ``neighbours`` listed architectures nearest to it."""
        if self.domain is None:
            return self.search_space.mutate(arch, rng)
        if len(self.domain) == 1:
            return self.domain[0]
        distance = self._distances(arch)
        distance[distance == 0] = np.iinfo(distance.dtype).max  # never the architecture itself
        k = min(neighbours, len(self.domain) - 1)
        nearest = np.argpartition(distance, k - 1)[:k]
        return self.domain[int(nearest[rng.integers(k)])]

    def nearest(self, arch: Arch) -> Arch:
        """``arch`` itself when the search may return it, else the nearest architecture it may."""
        arch = tuple(arch)
        if self.domain is None:
            return arch
        if not self._domain_index:
            self._domain_index = {a: i for i, a in enumerate(self.domain)}
        if arch in self._domain_index:
            return arch
        return self.domain[int(np.argmin(self._distances(arch)))]

    def _distances(self, arch: Arch) -> np.ndarray:
        """Positions in which each listed architecture differs from ``arch``."""
        lookup = [{op: k for k, op in enumerate(ops)} for ops in self.search_space.choices]
        codes = lambda archs: np.array([[lookup[i].get(op, -1) for i, op in enumerate(a)]  # noqa: E731
                                        for a in archs], dtype=np.int16)
        if self._domain_codes is None:
            self._domain_codes = codes(self.domain)
        return (self._domain_codes != codes([tuple(arch)])[0]).sum(axis=1).astype(np.int32)

    def _score(self, archs: Sequence[Arch]) -> None:
        accuracy = np.asarray(self.accuracy.estimate(archs), dtype=np.float64)
        predicted, low, high = (np.asarray(v, dtype=np.float64)
                                for v in self.predictor.predict_interval(archs, self.coverage))
        for a, acc, p, lo, hi in zip(archs, accuracy, predicted, low, high):
            self._cache[a] = Candidate(a, float(acc), float(p), float(min(lo, p)), float(max(hi, p)))

    def evaluate(self, archs: Sequence[Arch]) -> list[Candidate]:
        """Candidates for ``archs`` (tuples of the space), in order; outside a
        restricted list, each is answered for its :meth:`nearest` listed architecture."""
        archs = [self.nearest(a) for a in archs]
        missing = [a for a in dict.fromkeys(archs) if a not in self._cache]
        if missing:
            everything = self.all_archs()
            if not self._cache and everything is not None and len(everything) <= self.BATCH_ALL_LIMIT \
                    and self.accuracy.cheap:
                self._score(list(everything))
            else:
                self._score(missing)
        self._asked.update(archs)
        return [self._cache[a] for a in archs]

    def fitness(self, candidate: Candidate) -> float:
        """Single number to maximise: accuracy when safely under budget; below
        every feasible value otherwise, less so the smaller the excess."""
        if candidate.safe_under(self.budget_ms):
            return candidate.accuracy
        return -1.0 - (candidate.high_ms - self.budget_ms) / self.budget_ms


@dataclass
class SearchResult:
    """Everything a strategy evaluated, plus the best safe candidate."""

    strategy: str
    candidates: list[Candidate]
    budget_ms: float
    model: Any = None  # trained torch.nn.Module of ``best`` (strategies that train), else None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def safe(self) -> list[Candidate]:
        """Candidates whose predicted upper bound meets the budget, most accurate first."""
        return sorted((c for c in self.candidates if c.safe_under(self.budget_ms)),
                      key=lambda c: (-c.accuracy, c.high_ms))

    @property
    def best(self) -> Candidate | None:
        safe = self.safe
        return safe[0] if safe else None


class SearchStrategy(abc.ABC):
    """Explores a space for :class:`SearchProblem` s.

    Constructor options are keyword-only and validated up front;
    ``num_evaluations`` bounds how many distinct architectures are scored.
    """

    #: registry name, set by ``register_strategy``
    name: str = ""
    #: strategies that train a supernet get ``data_dir`` (see module docstring)
    needs_data: bool = False

    def __init__(self, *, seed: int = 0, num_evaluations: int | None = None):
        self.seed = int(seed)
        self.num_evaluations = num_evaluations

    @classmethod
    def add_arguments(cls, parser) -> None:
        """Add strategy-specific options to the ``nas search`` parser (none by default)."""

    @abc.abstractmethod
    def search(self, problem: SearchProblem, progress: ProgressCallback | None = None) -> SearchResult:
        """Explore and return every evaluated candidate."""


def check_positive(name: str, value, allowed: str = "a whole number >= 1") -> int:
    """Validate an integer option, naming it in the error."""
    from nas.errors import UserInputError

    if value is None or int(value) != value or int(value) < 1:
        raise UserInputError(f"option {name}={value!r} is invalid; allowed: {allowed}")
    return int(value)
