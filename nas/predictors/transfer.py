"""Transfer baseline: the target device's latency as a non-negative mix of
the meta-train devices' recorded latencies, fitted on the few samples."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from nas import benchmarks
from nas.errors import UserInputError
from nas.predictors.base import LatencyPredictor
from nas.search_space import Arch


class TransferPredictor(LatencyPredictor):
    """NNLS mix of the meta-train devices' latency columns.

    Only predicts architectures the benchmark table records (it reads their
    latencies on the training devices).
    """

    name = "transfer"

    def __init__(self, space: str):
        super().__init__(space)
        protocol = benchmarks.help_protocol(space)
        table = benchmarks.latency_table(space)
        self.source_devices = protocol.meta_train_devices
        self._columns = np.stack([table.column(d) for d in self.source_devices], axis=1)
        self.weights: np.ndarray | None = None

    def _features(self, archs: Sequence[Arch]) -> np.ndarray:
        try:
            rows = [self.search_space.index_of(a) for a in archs]
        except KeyError as missing:
            raise UserInputError(f"the transfer predictor only knows architectures of the {self.space} "
                                 f"benchmark table; {missing} is not one of them") from None
        return np.concatenate([self._columns[rows], np.ones((len(rows), 1))], axis=1)

    def adapt(self, measurements: Mapping[str, float]) -> "TransferPredictor":
        archs, latency_ms = self._parse_measurements(measurements)
        self.weights, _ = nnls(self._features(archs), latency_ms)
        return self

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("call adapt() before predict()")
        return self._features(archs) @ self.weights
