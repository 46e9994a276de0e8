"""The latency-predictor contract.

A predictor belongs to one search space. ``adapt`` takes a few measurements
from the target device (canonical architecture string -> milliseconds);
``predict`` returns milliseconds; ``save`` writes a checkpoint that
:func:`nas.predictors.load_predictor` reads back.
"""

from __future__ import annotations

import abc
from typing import Any, Mapping, Sequence

import numpy as np

from nas.errors import UserInputError
from nas.predictors import checkpoint
from nas.search_space import Arch, get_space


class LatencyPredictor(abc.ABC):
    """Few-shot latency predictor for one search space."""

    #: registry name of the method
    name: str = ""
    #: measurements of the target device the method adapts on in the HELP protocol
    num_samples: int = 10

    def __init__(self, space: str):
        self.space = space
        self.search_space = get_space(space)

    @abc.abstractmethod
    def adapt(self, measurements: Mapping[str, float]) -> "LatencyPredictor":
        """Fit to the target device from ``{canonical arch string: latency_ms}``; returns ``self``.

        Adapting again starts over from the unadapted (meta-trained) state."""

    @abc.abstractmethod
    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """Predicted latency in milliseconds of each architecture (tuples of the space)."""

    def predict_interval(self, archs: Sequence[Arch], coverage: float = 0.9
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(predicted_ms, low_ms, high_ms)``; predictors without an interval
        model return a zero-width interval."""
        predicted = self.predict(archs)
        return predicted, predicted.copy(), predicted.copy()

    # --- checkpoints ------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(json-able settings, named arrays)`` that rebuild this predictor.

        Wrappers that only live inside one search (e.g. a recalibrated
        predictor) do not override this and cannot be saved."""
        raise TypeError(f"the {self.name or type(self).__name__!r} predictor has no checkpoint format")

    @classmethod
    def from_state(cls, space: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "LatencyPredictor":
        """Rebuild a predictor from what :meth:`state` returned."""
        raise TypeError(f"the {cls.name or cls.__name__!r} predictor has no checkpoint format")

    def save(self, path) -> None:
        """Write the predictor (adapted or not) to ``path`` (an ``.npz`` file, no pickles)."""
        meta, arrays = self.state()
        checkpoint.write(path, {"method": self.name, "space": self.space, **meta}, arrays)

    # --- helpers ------------------------------------------------------------------
    def _parse_measurements(self, measurements: Mapping[str, float]) -> tuple[list[Arch], np.ndarray]:
        if not measurements:
            raise UserInputError("adapt() needs at least one measurement; measure the reference "
                                 "architectures (nas predictor reference-archs) first")
        archs = [self.search_space.from_string(s) for s in measurements]
        latency_ms = np.asarray(list(measurements.values()), dtype=np.float64)
        if not np.all(np.isfinite(latency_ms)) or np.any(latency_ms <= 0):
            raise UserInputError("measured latencies must be positive, finite milliseconds")
        return archs, latency_ms
