"""How many of the least sensitive layers can run in int8 inside an
accuracy tolerance: bisection over an ordering, and the one-layer-at-a-time
fallback (as Intel Neural Compressor tunes) for comparison.

Both search over prefixes of an ordering (the first ``k`` layers int8, the
rest float32) and ask ``evaluate(int8_layers) -> accuracy %`` for the real
accuracy of each configuration they consider.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

from nas.errors import UserInputError

#: a percentage at or above this is a fraction of the float accuracy to keep; below it, points to lose
RELATIVE_FROM_PERCENT = 50.0


@dataclass(frozen=True)
class Tolerance:
    """How far the quantized accuracy may fall below the float accuracy.

    ``absolute``: at most ``value`` percentage points lower (``1%``,
    ``0.5pt``); ``relative``: at least ``value`` percent of the float
    accuracy (``99.9%``).
    """

    kind: str
    value: float
    text: str

    @classmethod
    def parse(cls, text: str) -> "Tolerance":
        """``1%`` / ``0.5pt`` (points of accuracy that may be lost) or ``99.9%`` (share of the float accuracy
        to keep; any percentage of 50 or more reads this way)."""
        match = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*(%|pt|pts|points?)\s*", str(text))
        if not match:
            raise UserInputError(f"tolerance {text!r} is not understood; write points of accuracy that may be lost "
                                 f"('1%', '0.5pt') or the share of the float accuracy to keep ('99.9%')")
        value, unit = float(match.group(1)), match.group(2)
        if value < 0 or not math.isfinite(value):
            raise UserInputError(f"tolerance {text!r} is negative; allowed: a loss of 0 points or more ('1%', "
                                 f"'0.5pt') or a share to keep up to 100% ('99.9%')")
        if unit == "%" and value >= RELATIVE_FROM_PERCENT:
            if value > 100:
                raise UserInputError(f"tolerance {text!r} keeps more than the whole float accuracy; allowed: up to "
                                     f"100%")
            return cls("relative", value, text.strip())
        if value > 100:
            raise UserInputError(f"tolerance {text!r} allows losing more than 100 points of accuracy")
        return cls("absolute", value, text.strip())

    def floor(self, baseline: float) -> float:
        """The lowest accuracy (%) inside the tolerance of a float accuracy ``baseline`` (%)."""
        return baseline - self.value if self.kind == "absolute" else baseline * self.value / 100.0

    def allows(self, baseline: float, accuracy: float) -> bool:
        return accuracy >= self.floor(baseline) - 1e-9

    def describe(self) -> str:
        return (f"at most {self.value:g} points below float" if self.kind == "absolute"
                else f"at least {self.value:g}% of the float accuracy")


@dataclass
class Evaluation:
    """One configuration the search asked about: ``k`` int8 layers and its accuracy (%)."""

    k: int
    accuracy: float
    inside: bool


@dataclass
class SearchOutcome:
    """The chosen configuration: the first ``k`` layers of ``order`` in int8."""

    method: str
    order: list[str]
    k: int
    accuracy: float
    baseline: float
    evaluations: list[Evaluation] = field(default_factory=list)

    @property
    def int8_layers(self) -> list[str]:
        return self.order[:self.k]

    @property
    def num_evaluations(self) -> int:
        return len(self.evaluations)

    def to_dict(self) -> dict:
        return {"method": self.method, "k": self.k, "num_layers": len(self.order), "int8_layers": self.int8_layers,
                "validation_accuracy": self.accuracy, "float_validation_accuracy": self.baseline,
                "evaluations": [vars(e) for e in self.evaluations], "num_evaluations": self.num_evaluations}


def max_bisection_evaluations(num_layers: int) -> int:
    """The bisection's guaranteed bound: ``ceil(log2(N + 1)) + 1``."""
    return math.ceil(math.log2(num_layers + 1)) + 1


def bisect(order: Sequence[str], evaluate: Callable[[list[str]], float], tolerance: Tolerance, baseline: float,
           *, progress: bool = False) -> SearchOutcome:
    """The largest ``k`` whose first ``k`` layers of ``order`` in int8 stay inside
    ``tolerance`` of ``baseline`` (the float accuracy, %), all-int8 tried first.

    Accuracy is assumed to fall as ``k`` grows; each step halves the range of
    ``k`` still open, so at most ``ceil(log2(N + 1)) + 1`` configurations are
    evaluated. ``k = 0`` (all float) is inside by definition and never evaluated.
    """
    order = list(order)
    outcome = SearchOutcome("bisection", order, 0, baseline, baseline)

    def check(k: int) -> bool:
        accuracy = evaluate(order[:k])
        inside = tolerance.allows(baseline, accuracy)
        outcome.evaluations.append(Evaluation(k, accuracy, inside))
        if progress:
            print(f"bisection: {k}/{len(order)} layers int8 -> validation accuracy {accuracy:.2f}% "
                  f"({'inside' if inside else 'outside'} {tolerance.text})", file=sys.stderr, flush=True)
        if inside and k >= outcome.k:
            outcome.k, outcome.accuracy = k, accuracy
        return inside

    if not order or check(len(order)):
        return outcome
    low, high = 0, len(order)  # low is inside, high is outside
    while high - low > 1:
        middle = (low + high) // 2
        if check(middle):
            low = middle
        else:
            high = middle
    return outcome


def greedy_fallback(order: Sequence[str], evaluate: Callable[[list[str]], float], tolerance: Tolerance,
                    baseline: float, *, progress: bool = False) -> SearchOutcome:
    """All layers int8, then back to float32 one layer at a time, most
    sensitive first, until the accuracy is inside ``tolerance`` (up to N
    evaluations): how Intel Neural Compressor's tuning falls back."""
    order = list(order)
    outcome = SearchOutcome("greedy_fallback", order, 0, baseline, baseline)
    for k in range(len(order), 0, -1):
        accuracy = evaluate(order[:k])
        inside = tolerance.allows(baseline, accuracy)
        outcome.evaluations.append(Evaluation(k, accuracy, inside))
        if progress:
            print(f"fallback: {k}/{len(order)} layers int8 -> validation accuracy {accuracy:.2f}%",
                  file=sys.stderr, flush=True)
        if inside:
            outcome.k, outcome.accuracy = k, accuracy
            break
    return outcome


SEARCHES = {"bisection": bisect, "greedy_fallback": greedy_fallback}
