"""Accuracy estimators: how accurate an architecture is expected to be, in percent.

A search space gets an estimator by registering a factory::

    @register_accuracy_estimator("fbnet")
    def _fbnet(**options) -> AccuracyEstimator: ...

``get_accuracy_estimator(space, **options)`` refuses, with exit code 2, a space
that has none: the search never guesses accuracy.
"""

from __future__ import annotations

import abc
from typing import Callable, Sequence

import numpy as np

from nas import benchmarks
from nas.errors import UserInputError
from nas.registry import Registry
from nas.search_space import Arch, get_space
from nas.search_space.nb201 import DATASET_CLASSES

#: space -> factory(**options) -> AccuracyEstimator
ESTIMATORS: Registry = Registry("accuracy estimator")


class AccuracyEstimator(abc.ABC):
    """Expected accuracy (percent) of architectures of one space."""

    #: search space the estimator belongs to
    space: str = ""
    #: one line for summaries, e.g. "NB201 200-epoch test accuracy on cifar100"
    description: str = ""
    #: classes of the task the accuracy is for (sizes the exported classifier); None: the space's default
    num_classes: int | None = None
    #: True for look-ups (a recorded table): a search may score a whole listable space at once
    cheap: bool = True
    #: architectures a strategy scores when not told (None: the strategy's own default); a costly
    #: estimator (a network run per architecture) names a count that finishes in minutes
    default_evaluations: int | None = None

    #: where long work is reported, a line at a time (``nas search`` sets it to stderr); None: silent
    report: Callable[[str], None] | None = None

    def announce(self) -> str | None:
        """What the first :meth:`estimate` will spend long on, and why (e.g. training a network), or None."""
        return None

    @abc.abstractmethod
    def estimate(self, archs: Sequence[Arch]) -> np.ndarray:
        """Accuracy in percent of each architecture, in order."""


register_accuracy_estimator = ESTIMATORS.register
list_accuracy_spaces = ESTIMATORS.names


def get_accuracy_estimator(space: str, **options) -> AccuracyEstimator:
    """The accuracy estimator of ``space`` built with ``options`` (e.g. ``dataset``)."""
    get_space(space)  # unknown space: its own error
    if space not in ESTIMATORS:
        raise UserInputError(
            f"space {space} has no accuracy estimator yet; a latency-constrained search needs one to "
            f"rank architectures. Spaces that have one: {', '.join(list_accuracy_spaces())}. "
            f"Search one of those, or register an estimator with "
            f"nas.search.accuracy.register_accuracy_estimator({space!r})")
    try:
        return ESTIMATORS[space](**options)
    except TypeError as error:  # an option this space's estimator does not take
        raise UserInputError(f"the {space} accuracy estimator does not take these options "
                             f"({', '.join(sorted(options))}): {error}") from None


class NB201TableAccuracy(AccuracyEstimator):
    """NAS-Bench-201's recorded 200-epoch test accuracy (mean over seeds)."""

    space = "nb201"

    def __init__(self, dataset: str = "cifar100"):
        self.dataset = dataset
        self._table = benchmarks.nb201_accuracy(dataset)  # validates the dataset name
        self._space = get_space("nb201")
        self.num_classes = DATASET_CLASSES[dataset]
        self.description = f"NAS-Bench-201 200-epoch test accuracy on {dataset} (recorded, not estimated)"

    def estimate(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([self._table[self._space.index_of(a)] for a in archs], dtype=np.float64)

    def all_accuracies(self) -> np.ndarray:
        """Accuracy of every cell, in benchmark index order."""
        return self._table


@register_accuracy_estimator("nb201")
def _nb201(dataset: str = "cifar100") -> AccuracyEstimator:
    return NB201TableAccuracy(dataset)
