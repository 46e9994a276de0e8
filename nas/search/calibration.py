"""A latency predictor whose interval is calibrated on the device's own samples.

Few-shot predictors are often sure of themselves where they should not be
(the transfer baseline has no interval at all). Wrapping one in
:class:`CalibratedPredictor` gives an interval from its measured errors on
this device: leave-one-out on the adaptation samples, then the
out-of-sample error of every later measurement (``add``). The interval
reported is the wider of the predictor's own and the calibrated one.
"""

from __future__ import annotations

import copy
import math
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import norm

from nas.predictors.base import LatencyPredictor
from nas.search_space import Arch


class CalibratedPredictor(LatencyPredictor):
    """Wraps an unadapted predictor; errors are modelled in log-latency.

    ``sigma_floor`` keeps the spread from collapsing when the few residuals
    happen to be tiny; with fewer than 4 samples the spread is ``fallback_sigma``.
    """

    name = "calibrated"

    def __init__(self, base: LatencyPredictor, *, sigma_floor: float = 0.02, fallback_sigma: float = 0.25):
        super().__init__(base.space)
        self.base = base
        self.sigma_floor = sigma_floor
        self.fallback_sigma = fallback_sigma
        self.samples: dict[str, float] = {}
        self.residuals: list[float] = []  # log(measured / predicted), each predicted without that sample
        self.inner: LatencyPredictor | None = None

    def _adapted(self, samples: Mapping[str, float]) -> LatencyPredictor:
        # a fresh copy each time (adapting may start from the current state); the
        # search space is shared and stateless, and copying its caches is slow
        shared = {id(self.base.search_space): self.base.search_space}
        return copy.deepcopy(self.base, memo=shared).adapt(dict(samples))

    def adapt(self, measurements: Mapping[str, float]) -> "CalibratedPredictor":
        self.samples = dict(measurements)
        self.residuals = []
        if len(self.samples) >= 4:
            for held_out, latency_ms in self.samples.items():
                rest = {a: v for a, v in self.samples.items() if a != held_out}
                predicted = float(self._adapted(rest).predict([self.search_space.from_string(held_out)])[0])
                self.residuals.append(math.log(latency_ms / max(predicted, 1e-9)))
        self.inner = self._adapted(self.samples)
        return self

    def add(self, arch: str, latency_ms: float) -> None:
        """Add one more device measurement (canonical string, ms): its error
        before re-adapting joins the calibration, then the predictor re-adapts."""
        predicted = float(self.predict([self.search_space.from_string(arch)])[0])
        self.residuals.append(math.log(latency_ms / max(predicted, 1e-9)))
        self.samples[arch] = latency_ms
        self.inner = self._adapted(self.samples)

    @property
    def sigma(self) -> float:
        """Spread of log(measured / predicted) on this device."""
        if len(self.residuals) < 4:
            return self.fallback_sigma
        return max(self.sigma_floor, float(np.sqrt(np.mean(np.square(self.residuals)))))

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        if self.inner is None:
            raise RuntimeError("call adapt() before predict()")
        return np.maximum(np.asarray(self.inner.predict(archs), dtype=np.float64), 1e-9)

    def predict_interval(self, archs: Sequence[Arch], coverage: float = 0.9):
        if self.inner is None:
            raise RuntimeError("call adapt() before predict_interval()")
        predicted, low, high = (np.asarray(v, dtype=np.float64) for v in self.inner.predict_interval(archs, coverage))
        predicted = np.maximum(predicted, 1e-9)
        spread = math.exp(norm.ppf(0.5 + coverage / 2) * self.sigma)
        return predicted, np.minimum(low, predicted / spread), np.maximum(high, predicted * spread)

    def probability_within(self, archs: Sequence[Arch], budget_ms: float) -> np.ndarray:
        """P(latency <= budget_ms) under the calibrated log-normal error."""
        return norm.cdf((math.log(budget_ms) - np.log(self.predict(archs))) / self.sigma)
