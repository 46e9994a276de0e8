"""The latency-predictor contract.

A predictor belongs to one search space. ``adapt`` takes a few measurements
from the target device (canonical architecture string -> milliseconds);
``predict`` returns milliseconds.
"""

from __future__ import annotations

import abc
from typing import Mapping, Sequence

import numpy as np

from nas.search_space import Arch, get_space


class LatencyPredictor(abc.ABC):
    """Few-shot latency predictor for one search space."""

    #: registry name of the method
    name: str = ""

    def __init__(self, space: str):
        self.space = space
        self.search_space = get_space(space)

    @abc.abstractmethod
    def adapt(self, measurements: Mapping[str, float]) -> "LatencyPredictor":
        """Fit to the target device from ``{canonical arch string: latency_ms}``; returns ``self``."""

    @abc.abstractmethod
    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted latency in milliseconds of each architecture (tuples of the space)."""

    def predict_interval(self, archs: Sequence[Arch], coverage: float = 0.9
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(predicted_ms, low_ms, high_ms)``; predictors without an interval
        model return a zero-width interval."""
        predicted = self.predict(archs)
        return predicted, predicted.copy(), predicted.copy()

    def _parse_measurements(self, measurements: Mapping[str, float]) -> tuple[list[Arch], np.ndarray]:
        archs = [self.search_space.from_string(s) for s in measurements]
        return archs, np.asarray(list(measurements.values()), dtype=np.float64)
