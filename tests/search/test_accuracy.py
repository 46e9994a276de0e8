"""Accuracy estimators: the NB201 table, and a clear refusal for a space without one."""

import numpy as np
import pytest

from nas import benchmarks
from nas.errors import UserInputError
from nas.search import accuracy
from nas.search.accuracy import AccuracyEstimator, get_accuracy_estimator, register_accuracy_estimator
from nas.search_space import get_space


def test_nb201_estimate_is_the_recorded_200_epoch_accuracy():
    space = get_space("nb201")
    archs = [space.from_index(i) for i in (0, 7, 15624)]
    for dataset in ("cifar10", "cifar100", "imagenet16-120"):
        estimator = get_accuracy_estimator("nb201", dataset=dataset)
        assert isinstance(estimator, AccuracyEstimator) and estimator.space == "nb201"
        expected = benchmarks.nb201_accuracy(dataset)[[0, 7, 15624]]
        np.testing.assert_allclose(estimator.estimate(archs), expected)
    assert get_accuracy_estimator("nb201", dataset="cifar100").num_classes == 100


def test_unknown_dataset_names_the_allowed_ones():
    with pytest.raises(UserInputError, match="cifar100"):
        get_accuracy_estimator("nb201", dataset="mnist")


def test_space_without_an_estimator_is_refused(monkeypatch):
    monkeypatch.delitem(accuracy.ESTIMATORS, "fbnet", raising=False)
    with pytest.raises(UserInputError, match="space fbnet has no accuracy estimator yet"):
        get_accuracy_estimator("fbnet")


def test_registering_an_estimator_makes_the_space_searchable(monkeypatch):
    monkeypatch.setitem(accuracy.ESTIMATORS, "fbnet", None)  # the original is restored after the test

    class Constant(AccuracyEstimator):
        space = "fbnet"

        def estimate(self, archs):
            return np.full(len(archs), 50.0)

    register_accuracy_estimator("fbnet")(lambda **options: Constant())
    space = get_space("fbnet")
    assert get_accuracy_estimator("fbnet").estimate([space.default_arch()]).tolist() == [50.0]
