"""Latency-constrained architecture search.

Strategies are found through a registry (the CLI's ``--strategy`` choices
come from it)::

    >>> from nas.search import get_strategy, list_strategies, search_under_budget
    >>> result = search_under_budget("nb201", "pixel2", "14ms", dataset="cifar100")

Adding a strategy::

    @register_strategy("mine")
    class Mine(SearchStrategy):
        def search(self, problem, progress=None) -> SearchResult: ...

A strategy that trains its own supernet (ProxylessNAS) sets
``needs_data = True`` (it then receives ``data_dir``), may add CLI options in
``add_arguments(parser)`` (they reach its constructor as keyword options),
and may return the trained network as ``SearchResult.model``; the pipeline
does the rest (adapting the latency predictor, verifying on the device,
export). See :mod:`nas.search.base`.
"""

from __future__ import annotations

from nas.errors import UserInputError
from nas.registry import Registry
from nas.search.accuracy import (AccuracyEstimator, get_accuracy_estimator, list_accuracy_spaces,
                                 register_accuracy_estimator)
from nas.search.base import Candidate, SearchProblem, SearchResult, SearchStrategy

STRATEGIES: Registry = Registry("search strategy", name_attribute="name")

#: strategy used when none is named and the space is too big to score whole
DEFAULT_STRATEGY = "evolution"

register_strategy = STRATEGIES.register
list_strategies = STRATEGIES.names
strategy_class = STRATEGIES.lookup


def get_strategy(name: str, **options) -> SearchStrategy:
    """A new strategy ``name`` built with keyword ``options``; unknown options are refused."""
    cls = strategy_class(name)
    try:
        return cls(**options)
    except TypeError as error:
        raise UserInputError(f"strategy {name!r} does not take these options: {error}") from None


from nas.search._evolution import RegularizedEvolution  # noqa: E402
from nas.search._optuna import NSGA2Search, TPESearch  # noqa: E402
from nas.search._random import ExhaustiveSearch, RandomSearch  # noqa: E402

register_strategy("evolution")(RegularizedEvolution)
register_strategy("random")(RandomSearch)
register_strategy("exhaustive")(ExhaustiveSearch)
register_strategy("tpe")(TPESearch)
register_strategy("nsga2")(NSGA2Search)



def default_strategy(space: str) -> str:
    """``exhaustive`` for a space small enough to score every architecture
    with the predictor (NB201), else :data:`DEFAULT_STRATEGY`."""
    from nas.search_space import get_space

    search_space = get_space(space)
    listable = getattr(search_space, "all_archs", None) is not None
    small = (search_space.num_archs or SearchProblem.BATCH_ALL_LIMIT + 1) <= SearchProblem.BATCH_ALL_LIMIT
    return "exhaustive" if listable and small else DEFAULT_STRATEGY


from nas.search.pipeline import SearchOutcome, search_under_budget  # noqa: E402

#: packages that register strategies or accuracy estimators when imported
PLUGIN_MODULES = ("nas.proxyless",)


def _load_plugins() -> None:
    import importlib

    for module in PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional part that is absent: its strategies are simply not offered
            pass


_load_plugins()

__all__ = ["AccuracyEstimator", "Candidate", "DEFAULT_STRATEGY", "SearchOutcome", "SearchProblem",
           "SearchResult", "SearchStrategy", "default_strategy", "get_accuracy_estimator", "get_strategy",
           "list_accuracy_spaces", "list_strategies", "register_accuracy_estimator", "register_strategy",
           "search_under_budget", "strategy_class"]
