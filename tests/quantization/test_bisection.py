import math

import pytest

from nas.errors import UserInputError
from nas.quantization.bisection import Tolerance, bisect, greedy_fallback, max_bisection_evaluations


@pytest.mark.parametrize("text, kind, floor", [("1%", "absolute", 89.0), ("0.5pt", "absolute", 89.5),
                                               ("99.9%", "relative", 89.91), ("0%", "absolute", 90.0)])
def test_tolerances_read_as_points_or_share_of_float(text, kind, floor):
    tolerance = Tolerance.parse(text)
    assert tolerance.kind == kind and tolerance.floor(90.0) == pytest.approx(floor)


@pytest.mark.parametrize("text", ["-1%", "abc", "1", "", "150%", "nan%"])
def test_bad_tolerances_are_user_errors(text):
    with pytest.raises(UserInputError):
        Tolerance.parse(text)


def monotone_accuracy(n, first_bad):
    """Accuracy 90% while fewer than ``first_bad`` layers are int8, then 80%; counts its calls."""
    calls = []

    def evaluate(layers):
        calls.append(len(layers))
        return 90.0 if len(layers) < first_bad else 80.0
    return evaluate, calls


@pytest.mark.parametrize("n", [1, 2, 5, 16, 33])
def test_bisection_finds_the_largest_prefix_inside_within_its_bound(n):
    order = [f"layer{i}" for i in range(n)]
    for first_bad in range(1, n + 2):
        evaluate, calls = monotone_accuracy(n, first_bad)
        outcome = bisect(order, evaluate, Tolerance.parse("1%"), 90.0)
        assert outcome.k == min(first_bad - 1, n)
        assert calls[0] == n  # all-int8 first
        assert len(calls) <= max_bisection_evaluations(n) == math.ceil(math.log2(n + 1)) + 1
        assert outcome.int8_layers == order[:outcome.k]


def test_greedy_fallback_returns_layers_to_float_one_at_a_time():
    order = [f"layer{i}" for i in range(6)]
    evaluate, calls = monotone_accuracy(6, 3)
    outcome = greedy_fallback(order, evaluate, Tolerance.parse("1%"), 90.0)
    assert outcome.k == 2 and calls == [6, 5, 4, 3, 2]
