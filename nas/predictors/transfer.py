"""Transfer baseline: the target device's latency as a non-negative mix of
the meta-train devices' latencies, fitted on the few samples."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from nas import benchmarks
from nas.predictors.base import LatencyPredictor
from nas.predictors.features import SourceLatencies, op_codes
from nas.predictors.registry import register_predictor
from nas.search_space import Arch


@register_predictor("transfer")
class TransferPredictor(LatencyPredictor):
    """NNLS mix of the meta-train devices' latency columns (plus a constant).

    Architectures outside the benchmark table get their source-device
    latencies from the additive per-layer model of :class:`SourceLatencies`.
    """

    def __init__(self, space: str, source: SourceLatencies | None = None):
        super().__init__(space)
        self.source = source or SourceLatencies(space, benchmarks.help_protocol(space).meta_train_devices)
        self.weights: np.ndarray | None = None

    def _features(self, archs: Sequence[Arch]) -> np.ndarray:
        columns = self.source(op_codes(self.space, archs))
        return np.concatenate([columns, np.ones((len(columns), 1))], axis=1)

    def adapt(self, measurements: Mapping[str, float]) -> "TransferPredictor":
        archs, latency_ms = self._parse_measurements(measurements)
        self.weights, _ = nnls(self._features(archs), latency_ms)
        return self

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("call adapt() before predict()")
        return self._features(archs) @ self.weights

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"source_coefficients": self.source.coefficients}
        if self.weights is not None:
            arrays["weights"] = self.weights
        return {"source_devices": list(self.source.devices)}, arrays

    @classmethod
    def from_state(cls, space, meta, arrays):
        predictor = cls(space, SourceLatencies(space, meta["source_devices"], arrays["source_coefficients"]))
        predictor.weights = arrays.get("weights")
        return predictor
