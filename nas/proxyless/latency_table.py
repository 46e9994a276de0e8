"""Per-(layer, candidate) latency lookup table of ``fbnet`` on one device.

ProxylessNAS makes latency differentiable as the expected sum of per-layer
latencies. The table here is fitted (non-negative least squares on the
one-hot layer encoding plus a constant for stem, head and runtime overhead)
so that its sums reproduce a latency model of the device on many sampled
architectures:

- replay devices: the recorded latencies of the 5,000 benchmark architectures;
- measurable devices (``local-cpu``, ...): the project's default predictor,
  adapted on the device's reference architectures, evaluated on the 5,000
  benchmark architectures, together with the measured latencies of the
  references and of a few anchor architectures (the 9 single-candidate
  networks and 3 skip-heavy mixes). The benchmark architectures are uniform
  samples, so the predictor never saw the fast or the slow end of the space
  (on ``local-cpu`` it put all-``skip`` at 0.01 ms, measured 0.31 ms); the
  anchors, weighted as much as all predictor rows together, pin those ends.

The fit is reported (R^2 and Spearman on held-out architectures, and against
the device's own measurements when there are any).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy.optimize import nnls
from scipy.stats import spearmanr

from nas.devices import Device, get_device
from nas.search_space import Arch, get_space

SPACE = "fbnet"


@dataclass
class LatencyLookupTable:
    """``latency_ms[layer, candidate]`` plus ``base_ms`` (stem, head, overhead) on ``device``."""

    device: str
    candidates: tuple[str, ...]
    latency_ms: np.ndarray
    base_ms: float
    fit: dict[str, Any] = field(default_factory=dict)

    def arch_latency_ms(self, arch: Sequence[str]) -> float:
        """Table latency of one architecture, in milliseconds."""
        rows = np.arange(len(arch))
        cols = [self.candidates.index(op) for op in arch]
        return float(self.base_ms + self.latency_ms[rows, cols].sum())

    def archs_latency_ms(self, archs: Sequence[Sequence[str]]) -> np.ndarray:
        return np.array([self.arch_latency_ms(a) for a in archs])

    def expected_latency_ms(self, probs: torch.Tensor) -> torch.Tensor:
        """E[latency] = base + sum_layers sum_candidates p * latency (differentiable in ``probs``)."""
        table = torch.as_tensor(self.latency_ms, dtype=probs.dtype)
        return self.base_ms + (probs * table).sum()

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "candidates": list(self.candidates),
                "latency_ms": self.latency_ms.tolist(), "base_ms": self.base_ms, "fit": self.fit}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "LatencyLookupTable":
        return cls(raw["device"], tuple(raw["candidates"]), np.asarray(raw["latency_ms"], dtype=np.float64),
                   float(raw["base_ms"]), dict(raw.get("fit") or {}))


def _design(archs: Sequence[Arch]) -> np.ndarray:
    """One-hot layer encoding plus a constant column."""
    encoded = get_space(SPACE).encode_many(list(archs)).astype(np.float64)
    return np.concatenate([encoded, np.ones((len(archs), 1))], axis=1)


def fit_lookup_table(device: str, archs: Sequence[Arch], latency_ms: Sequence[float], *,
                     measured: tuple[Sequence[Arch], Sequence[float]] | None = None,
                     holdout: float = 0.2, seed: int = 0) -> LatencyLookupTable:
    """Fit a non-negative table whose sums reproduce ``latency_ms`` of ``archs``.

    ``measured`` (architectures, device latencies) are fitted too, their rows
    weighted so that together they count as much as all of ``archs``. A
    ``holdout`` fraction of ``archs`` is kept out of the fit to report ``r2``
    and ``spearman``; the final table is refitted on everything.
    """
    space = get_space(SPACE)
    candidates = space.choices[0]
    X, y = _design(archs), np.asarray(latency_ms, dtype=np.float64)
    if measured is not None and len(measured[0]):
        weight = np.sqrt(len(y) / len(measured[0]))
        X_m, y_m = weight * _design(measured[0]), weight * np.asarray(measured[1], dtype=np.float64)
    else:
        X_m, y_m = np.empty((0, X.shape[1])), np.empty(0)
    order = np.random.default_rng(seed).permutation(len(y))
    n_check = int(len(y) * holdout)
    check, train = order[:n_check], order[n_check:]
    fit: dict[str, Any] = {"n_fit": int(len(y)), "n_measured_rows": int(len(y_m))}
    if n_check >= 3:
        weights, _ = nnls(np.concatenate([X[train], X_m]), np.concatenate([y[train], y_m]))
        fit.update(n_holdout=int(n_check), **agreement(X[check] @ weights, y[check]))
    weights, _ = nnls(np.concatenate([X, X_m]), np.concatenate([y, y_m]))
    table = weights[:-1].reshape(len(space.choices), len(candidates))
    return LatencyLookupTable(device, tuple(candidates), table, float(weights[-1]), fit)


def anchor_archs() -> list[Arch]:
    """Architectures measured beside the references when a table is built: the
    9 single-candidate networks and 3 skip-heavy mixes (fixed, so a store reuses them)."""
    candidates = get_space(SPACE).choices[0]
    layers = len(get_space(SPACE).choices)
    anchors = [(name,) * layers for name in candidates]
    rng = np.random.default_rng(20260)
    for skip_share in (0.5, 0.7, 0.9):
        anchors.append(tuple("skip" if rng.random() < skip_share else candidates[rng.integers(len(candidates) - 1)]
                             for _ in range(layers)))
    return anchors


def agreement(predicted: np.ndarray, target: np.ndarray) -> dict[str, float]:
    residual = ((target - predicted) ** 2).sum()
    total = ((target - target.mean()) ** 2).sum()
    return {"r2": float(1 - residual / total) if total > 0 else float("nan"),
            "spearman": float(spearmanr(predicted, target).statistic),
            "mean_abs_error_ms": float(np.abs(target - predicted).mean())}


def build_lookup_table(device: Device | str, *, measure: Callable[[list[Arch]], list[float]] | None = None,
                       progress: Callable[[str], None] | None = None) -> tuple[LatencyLookupTable, int]:
    """The lookup table of ``device`` and how many device measurements it took.

    ``measure(archs) -> latency_ms`` reaches the device (needed unless it is
    a replay device).
    """
    device = get_device(device) if isinstance(device, str) else device
    space = get_space(SPACE)
    say = progress or (lambda _message: None)
    if device.profiler_kind == "replay":
        from nas import benchmarks

        column = device.settings.get("table_column", device.name)
        latency = benchmarks.latency_table(SPACE).column(column)
        table = fit_lookup_table(device.name, list(space.measured_archs()), latency)
        table.fit["source"] = "recorded benchmark latencies"
        return table, 0
    if measure is None:
        raise ValueError(f"device {device.name!r} must be measured to build its table; pass measure=")
    predictor, references, source = _default_predictor()
    anchors = anchor_archs()
    say(f"measuring {len(references)} reference architectures on {device.name} to adapt the {source}, "
        f"and {len(anchors)} anchors")
    measured = np.asarray(measure(list(references) + anchors), dtype=np.float64)
    ref_ms, anchor_ms = measured[:len(references)], measured[len(references):]
    predictor.adapt({space.to_string(a): float(ms) for a, ms in zip(references, ref_ms)})
    table = fit_to_predictor(predictor, device.name, measured=(list(references) + anchors, measured))
    table.fit["source"] = (f"{source} adapted on {len(references)} measurements, "
                           f"plus {len(anchors)} measured anchors")
    table.fit["predictor_vs_measured"] = agreement(np.asarray(predictor.predict(list(references))), ref_ms)
    table.fit["predictor_vs_anchors"] = agreement(np.asarray(predictor.predict(anchors)), anchor_ms)
    return table, len(measured)


def fit_to_predictor(predictor, device: str,
                     measured: tuple[Sequence[Arch], Sequence[float]] | None = None) -> LatencyLookupTable:
    """The table whose sums reproduce an adapted ``predictor`` on the 5,000
    benchmark architectures and, when given, ``measured`` (architectures,
    device milliseconds; ``fit['vs_measured']`` is then their in-sample agreement)."""
    archs = list(get_space(SPACE).measured_archs())
    predicted = np.asarray(predictor.predict(archs), dtype=np.float64)
    table = fit_lookup_table(device, archs, predicted, measured=measured)
    table.fit["source"] = f"adapted {getattr(predictor, 'name', type(predictor).__name__)} predictor" + (
        f", plus {len(measured[0])} measured architectures" if measured else "")
    if measured:
        table.fit["vs_measured"] = agreement(table.archs_latency_ms(measured[0]), np.asarray(measured[1]))
        table.fit["n_measured"] = len(measured[0])
    return table


def _default_predictor():
    """(predictor, reference architectures, description): the project's default
    predictor once it exists, else the transfer baseline on HELP's references."""
    from nas import predictors

    space = get_space(SPACE)
    if hasattr(predictors, "load_default_predictor") and hasattr(predictors, "reference_archs"):
        predictor = predictors.load_default_predictor(SPACE)
        references = [space.validate(a) if not isinstance(a, str) else space.from_string(a)
                      for a in predictors.reference_archs(SPACE)]
        return predictor, references, f"default predictor ({getattr(predictor, 'name', type(predictor).__name__)})"
    from nas import benchmarks
    from nas.predictors import TransferPredictor

    references = [space.from_index(i) for i in benchmarks.help_protocol(SPACE).reference_indices]
    return TransferPredictor(SPACE), references, "transfer predictor"
