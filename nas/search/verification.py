"""Spending a few device measurements so the returned architecture truly
meets the budget, and is as accurate as the budget allows.

The predictor is only roughly right near the budget, and on a new device it
is often wrong the same way for every candidate there (a few percent low,
say). So candidates are verified on the device one measurement at a time,
and the loop learns from each:

1. the predictor's error on this device is calibrated on its own samples
   (:class:`nas.search.calibration.CalibratedPredictor`), and every
   measurement re-adapts it and joins the calibration;
2. the loop aims at the budget less the spread a measurement is expected
   to carry (a measured latency meets the budget only with its spread,
   which on a device whose speed swings includes its slow moments);
   the verification measurements also give the predictor's *local bias*
   near the budget (mean log of measured over predicted, shrunk towards 0),
   which shifts every candidate's chance P(measured <= budget);
3. a safety level, bisected: only candidates whose chance is at least the
   level are measured. It starts at 0.5; a measurement over the budget
   raises it halfway to the safe end (0.99), one that meets the budget
   lowers it halfway back to the level of the last one over it, so the last
   measurements land just under the budget;
4. among the candidates at or above the level, the one with the highest
   expected gain, P x (accuracy - best accuracy already secured), is
   measured (while nothing is secured, the gain counts from the most
   accurate candidate whose interval upper bound meets the budget); when no
   candidate reaches the level, the likeliest one that still gains;
5. while nothing measured meets the budget, the last measurement goes to
   the most accurate candidate whose interval upper bound meets it;
6. it stops early when no candidate can gain more than ``min_gain`` points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import norm

from nas.search.base import Candidate
from nas.search.calibration import CalibratedPredictor

#: the bold and the safe end of the bisected safety level (chance of meeting the budget)
SAFETY_LEVELS = (0.2, 0.99)

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
           min_gain: float = 0.005, sample_spreads: Mapping[str, float] | None = None,
           relative_spread: float = 0.0,
           on_measure: Callable[[VerifiedCandidate], None] | None = None) -> Verification:
    """Measure at most ``max_measurements`` of ``candidates`` and record them.

    ``predictor`` is adapted on the device samples so far and learns from
    each verification measurement. ``measure`` takes a list of architectures
    and returns their measurements. A candidate meets the budget when its
    measured latency plus the measurement's spread does, so the loop aims
    at the budget less the spread it expects: ``relative_spread`` (spread
    over latency, e.g. of the device samples' measurements) until its own
    measurements show theirs. ``sample_spreads`` (ms, by architecture
    string) are the device samples' spreads, which a sample that is a
    candidate must also fit in the budget with. The choice is
    ``Verification.best``; the order of measurements follows the
    module docstring (bisected safety level, local bias).
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
    sample_spreads = sample_spreads or {}
    free = [VerifiedCandidate(pool[i], predictor.samples[strings[i]], predictor.samples[strings[i]],
                              float(sample_spreads.get(strings[i], 0.0))) for i in np.flatnonzero(measured)]
    report.free_incumbent = max((v for v in free if v.meets(budget_ms)), key=lambda v: v.candidate.accuracy,
                                default=None)
    bias = []  # log(measured / predicted before measuring) of each verification
    level, bold = 0.5, SAFETY_LEVELS[0]
    for step in range(max_measurements):
        # aim under the budget by the spread the measurements are expected to carry
        spreads = [v.spread_ms / v.measured_ms for v in report.measured if v.measured_ms > 0]
        expected_spread = float(np.mean(spreads)) if spreads else max(relative_spread, 0.0)
        log_budget = math.log(budget_ms) - math.log1p(expected_spread)
        predicted, _, upper = predictor.predict_interval(archs, coverage)
        shift = float(np.sum(bias)) / (len(bias) + 1)  # shrunk towards no bias
        p_meets = norm.cdf((log_budget - np.log(np.maximum(predicted, 1e-12)) - shift) / predictor.sigma)
        p_meets[measured] = 0.0
        safe = (np.log(np.maximum(upper, 1e-12)) + max(shift, 0.0) <= log_budget) & ~measured
        incumbent = report.best
        if incumbent is not None:
            baseline = incumbent.candidate.accuracy
        else:
            baseline = accuracy[safe].max() if safe.any() else accuracy.min()
        gain = p_meets * np.maximum(accuracy - baseline, 0.0)
        if incumbent is None and (step == max_measurements - 1 or gain.max() <= min_gain) and safe.any():
            pick = int(np.flatnonzero(safe)[np.argmax(accuracy[safe])])  # secure something at the end
        elif gain.max() > min_gain:
            sure = (p_meets >= level) & (gain > min_gain)
            if sure.any():
                pick = int(np.flatnonzero(sure)[np.argmax(gain[sure])])
            else:  # nothing reaches the safety level: the likeliest candidate that still gains
                pick = int(np.argmax(np.where(gain > min_gain, p_meets, -1.0)))
        elif incumbent is None and (~measured).any():  # nothing looks likely to meet it: try the likeliest
            pick = int(np.argmax(np.where(measured, -1.0, p_meets)))
        else:
            break
        record = measure([archs[pick]])[0]
        latency_ms = float(record.latency_ms)
        measured[pick] = True
        verified = VerifiedCandidate(pool[pick], latency_ms, float(predicted[pick]), float(record.spread_ms))
        report.measured.append(verified)
        bias.append(math.log(latency_ms / max(float(predicted[pick]), 1e-12)))
        if verified.meets(budget_ms):  # bisect the safety level: bolder after a success ...
            level = (bold + level) / 2
        else:  # ... halfway to the safe end after a measurement over the budget
            bold, level = level, (level + SAFETY_LEVELS[1]) / 2
        predictor.add(strings[pick], latency_ms)
        if on_measure:
            on_measure(verified)
    return report
