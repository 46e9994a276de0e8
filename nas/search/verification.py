"""Spending a few device measurements so the returned architecture truly
meets the budget, and is as accurate as the budget allows.

The predictor is only roughly right near the budget, so candidates are
verified on the device one measurement at a time:

1. the predictor's error on this device is calibrated on its own samples
   (:class:`nas.search.calibration.CalibratedPredictor`);
2. each step measures the candidate with the highest expected gain,
   P(measured <= budget) x (accuracy - best accuracy already secured),
   where, while nothing is secured, the gain counts from the most accurate
   candidate whose interval upper bound meets the budget;
3. every measurement re-adapts the predictor and joins the calibration, so
   the next choice is sharper;
4. while nothing measured meets the budget, the last measurement goes to the
   most accurate candidate whose interval upper bound meets it;
5. it stops early when no candidate can gain more than ``min_gain`` points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from nas.search.base import Candidate
from nas.search.calibration import CalibratedPredictor

#: measures architectures on the target device: one LatencyMeasurement (or anything with
#: ``latency_ms`` and ``spread_ms``) per architecture, in order
MeasureFunction = Callable[[Sequence[tuple]], list]


@dataclass
class VerifiedCandidate:
    """A candidate measured on the target device (milliseconds, percent)."""

    candidate: Candidate
    measured_ms: float
    predicted_before_ms: float  # the re-adapted predictor's value just before measuring
    spread_ms: float = 0.0  # how far the measurement's repeated rounds disagreed

    def meets(self, budget_ms: float) -> bool:
        """Meets the budget even allowing for the measurement's own spread (noisy devices)."""
        return self.measured_ms + self.spread_ms <= budget_ms


@dataclass
class Verification:
    """Every verification measurement, in the order taken."""

    budget_ms: float
    measured: list[VerifiedCandidate] = field(default_factory=list)
    #: the most accurate adaptation sample that is a candidate and meets the budget (free)
    free_incumbent: VerifiedCandidate | None = None

    @property
    def best(self) -> VerifiedCandidate | None:
        """Most accurate measured candidate whose measured latency meets the budget."""
        meeting = [v for v in self.measured if v.meets(self.budget_ms)]
        if self.free_incumbent is not None:
            meeting.append(self.free_incumbent)
        return max(meeting, key=lambda v: (v.candidate.accuracy, -v.measured_ms), default=None)

    @property
    def fastest(self) -> VerifiedCandidate | None:
        return min(self.measured, key=lambda v: v.measured_ms, default=None)


def verify(candidates: Sequence[Candidate], budget_ms: float, predictor: CalibratedPredictor,
           measure: MeasureFunction, *, max_measurements: int = 10, coverage: float = 0.9,
           min_gain: float = 0.005,
           on_measure: Callable[[VerifiedCandidate], None] | None = None) -> Verification:
    """Measure at most ``max_measurements`` of ``candidates`` and record them.

    ``predictor`` is adapted on the device samples so far and learns from
    each verification measurement. ``measure`` takes a list of architectures
    and returns their measurements. A candidate meets the budget when its
    measured latency plus the measurement's spread does. The choice is
    ``Verification.best``.
    """
    space = predictor.search_space
    report = Verification(budget_ms)
    pool = list({c.arch: c for c in candidates}.values())
    if not pool or max_measurements <= 0:
        return report
    archs = [c.arch for c in pool]
    strings = [space.to_string(a) for a in archs]
    accuracy = np.array([c.accuracy for c in pool])
    measured = np.array([s in predictor.samples for s in strings])
    meeting = [i for i in np.flatnonzero(measured) if predictor.samples[strings[i]] <= budget_ms]
    if meeting:
        i = max(meeting, key=lambda k: accuracy[k])
        report.free_incumbent = VerifiedCandidate(pool[i], predictor.samples[strings[i]],
                                                  predictor.samples[strings[i]])
    for step in range(max_measurements):
        predicted, _, high = predictor.predict_interval(archs, coverage)
        p_meets = predictor.probability_within(archs, budget_ms)
        p_meets[measured] = 0.0
        safe = (high <= budget_ms) & ~measured
        incumbent = report.best
        if incumbent is not None:
            gain = p_meets * np.maximum(accuracy - incumbent.candidate.accuracy, 0.0)
            if gain.max() <= min_gain:
                break
            pick = int(np.argmax(gain))
        else:
            baseline = accuracy[safe].max() if safe.any() else accuracy.min()
            gain = p_meets * np.maximum(accuracy - baseline, 0.0)
            if (step == max_measurements - 1 or gain.max() <= min_gain) and safe.any():
                pick = int(np.flatnonzero(safe)[np.argmax(accuracy[safe])])
            elif gain.max() > 0:
                pick = int(np.argmax(gain))
            elif (~measured).any():  # nothing looks likely to meet it: try the likeliest
                pick = int(np.argmax(np.where(measured, -1.0, p_meets)))
            else:
                break
        record = measure([archs[pick]])[0]
        latency_ms = float(record.latency_ms)
        measured[pick] = True
        verified = VerifiedCandidate(pool[pick], latency_ms, float(predicted[pick]), float(record.spread_ms))
        report.measured.append(verified)
        predictor.add(strings[pick], latency_ms)
        if on_measure:
            on_measure(verified)
    return report
