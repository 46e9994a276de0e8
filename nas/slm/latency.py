"""Decode latency of `slm` models during a search: measuring on the device,
predicting from a few measurements, and choosing each layout's width.

Latency is milliseconds per generated token at batch 1 after a prompt of
``context`` tokens (the ``slm`` profiler's setting). The search measures the
space's reference architectures on the device, adapts a latency predictor on
them (the space's shipped default predictor when it has one, else
:class:`CostFitPredictor`, a fit of layer count and multiply-accumulates),
and wraps it in :class:`nas.search.calibration.CalibratedPredictor` so its
90% interval comes from its own errors on this device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from nas.devices import Device
from nas.errors import UserInputError
from nas.predictors.base import LatencyPredictor
from nas.search.calibration import CalibratedPredictor
from nas.search_space import Arch, get_space

SPACE = "slm"

#: measured on a device when the space ships no reference list: fast to slow, narrow to wide
FALLBACK_REFERENCES = (
    "SWA | SWA | - @64",
    "M2 | D | - @64",
    "D F | D F | - @96",
    "A F | M2 F | - @128",
    "D F M2 F | A F M2 F | D F M2 F @128",
    "M2 F F | M2 F F | M2 F F @160",
    "A F | A F | A F @192",
    "D F M2 F D F M2 F | A F M2 F | D F M2 F @96",
    "GD F D F | SWA F SWA F | M2 F @224",
    "D F M2 F | A F M2 F | D F M2 F @256",
)


def reference_archs() -> list[Arch]:
    """The architectures measured on a device before searching it."""
    from nas import predictors

    try:
        return list(predictors.reference_archs(SPACE))
    except (UserInputError, KeyError, FileNotFoundError, ValueError):
        space = get_space(SPACE)
        return [space.from_string(text) for text in FALLBACK_REFERENCES]


class CostFitPredictor(LatencyPredictor):
    """Decode ms/token as ``a + b * layers + c * MMACs`` (non-negative
    coefficients, least squares on the device's samples); MACs per generated
    token after ``context`` tokens, from the space."""

    name = "slm-cost-fit"

    def __init__(self, space: str = SPACE, context: int = 512):
        super().__init__(space)
        self.context = context
        self.coefficients: np.ndarray | None = None

    def _features(self, archs: Sequence[Arch]) -> np.ndarray:
        space = self.search_space
        return np.array([[1.0, len(space.layers(a)), space.flops(a, self.context) / 1e6] for a in archs])

    def adapt(self, measurements: Mapping[str, float]) -> "CostFitPredictor":
        archs, latency_ms = self._parse_measurements(measurements)
        features = self._features(archs)
        scale = features.max(axis=0)
        self.coefficients = nnls(features / scale, latency_ms)[0] / scale
        return self

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        if self.coefficients is None:
            raise RuntimeError("call adapt() before predict()")
        return np.maximum(self._features(archs) @ self.coefficients, 1e-3)

    def state(self):
        return {"context": self.context}, ({} if self.coefficients is None else {"coefficients": self.coefficients})

    @classmethod
    def from_state(cls, space, meta, arrays):
        predictor = cls(space, meta.get("context", 512))
        predictor.coefficients = arrays.get("coefficients")
        return predictor


class FallbackPredictor(LatencyPredictor):
    """``primary`` until it fails on an architecture (a checkpoint that does
    not cover every layout), then :class:`CostFitPredictor` from that call on,
    for the rest of the search; ``failure`` says why."""

    name = "slm-fallback"

    def __init__(self, primary: LatencyPredictor, context: int = 512):
        super().__init__(SPACE)
        self.primary = primary
        self.fallback = CostFitPredictor(SPACE, context)
        self.failure: str | None = None
        self.failures: list[str] = []  # shared by copies (a calibrated predictor re-adapts copies)

    def __deepcopy__(self, memo):
        import copy

        clone = FallbackPredictor.__new__(FallbackPredictor)
        clone.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items() if k != "failures"})
        clone.failures = self.failures
        return clone

    def _failed(self, error: Exception) -> None:
        self.failure = str(error)
        self.failures.append(self.failure)

    def adapt(self, measurements: Mapping[str, float]) -> "FallbackPredictor":
        self.fallback.adapt(measurements)
        if self.failure is None:
            try:
                self.primary.adapt(measurements)
            except (ValueError, KeyError, RuntimeError, IndexError) as error:
                self._failed(error)
        return self

    def _call(self, method: str, *args):
        if self.failure is None:
            try:
                return getattr(self.primary, method)(*args)
            except (ValueError, KeyError, RuntimeError, IndexError) as error:
                self._failed(error)
        return getattr(self.fallback, method)(*args)

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        return self._call("predict", archs)

    def predict_interval(self, archs: Sequence[Arch], coverage: float = 0.9):
        return self._call("predict_interval", archs, coverage)


def base_predictor(context: int) -> tuple[LatencyPredictor, str]:
    """The unadapted predictor a search uses, and a line saying which it is."""
    from nas import predictors

    try:
        path = predictors.default_checkpoint_path(SPACE)
        if path.is_file():
            return (FallbackPredictor(predictors.load_default_predictor(SPACE), context),
                    f"default slm predictor ({path.name})")
    except (UserInputError, KeyError, FileNotFoundError, ValueError):
        pass
    return CostFitPredictor(SPACE, context), "fit of layer count and MACs on the reference measurements"


@dataclass(frozen=True)
class WidthChoice:
    """A layout at a width, with its predicted ms/token and 90% interval."""

    arch: str
    width: int
    predicted_ms: float
    low_ms: float
    high_ms: float


def width_choices(layout: Arch, predictor: LatencyPredictor, coverage: float = 0.9) -> list[WidthChoice]:
    """``layout`` at every width of the ladder, narrowest first."""
    space = get_space(SPACE)
    archs = [space.with_width(layout, w) for w in space.widths]
    predicted, low, high = (np.asarray(v, dtype=float) for v in predictor.predict_interval(archs, coverage))
    return [WidthChoice(space.to_string(a), w, float(p), float(min(lo, p)), float(max(hi, p)))
            for a, w, p, lo, hi in zip(archs, space.widths, predicted, low, high)]


def widest_within(layout: Arch, predictor: LatencyPredictor, budget_ms: float) -> WidthChoice | None:
    """The widest width whose predicted interval's upper end meets ``budget_ms`` (None: no width does)."""
    meeting = [c for c in width_choices(layout, predictor) if c.high_ms <= budget_ms]
    return meeting[-1] if meeting else None


def widest_expected(layout: Arch, predictor: LatencyPredictor, budget_ms: float,
                    spread_share: float) -> WidthChoice | None:
    """The widest width whose predicted ms/token plus the spread its measurement
    is expected to have (``spread_share`` times the prediction) meets
    ``budget_ms``: the rule a finalist's measurement is held to (median plus
    spread), applied to the prediction. None: no width does."""
    meeting = [c for c in width_choices(layout, predictor) if c.predicted_ms * (1 + spread_share) <= budget_ms]
    return meeting[-1] if meeting else None


def minimal_layouts() -> list[Arch]:
    """Every layout with the fewest layers the space allows (one mixer in each
    of the first two stages, no FFN, an empty last stage), at the narrowest width."""
    space = get_space(SPACE)
    mixers = [m for m in space.choices[0]]
    return [space.from_string(f"{a} | {b} | - @{space.widths[0]}") for a in mixers for b in mixers]


def fastest_layout(predictor: LatencyPredictor) -> WidthChoice:
    """The minimal layout predicted fastest at the narrowest width."""
    space = get_space(SPACE)
    archs = minimal_layouts()
    predicted, low, high = (np.asarray(v, dtype=float) for v in predictor.predict_interval(archs, 0.9))
    i = int(np.argmin(predicted))
    return WidthChoice(space.to_string(archs[i]), space.widths[0], float(predicted[i]),
                       float(min(low[i], predicted[i])), float(max(high[i], predicted[i])))


def _probe_archs(count: int = 40) -> list[Arch]:
    """Seeded random layouts at every width, plus the minimal ones: what a search asks the predictor about."""
    space = get_space(SPACE)
    rng = np.random.default_rng(12345)
    samples = [space.sample(rng) for _ in range(count)]
    return minimal_layouts() + [space.with_width(a, w) for a in samples for w in space.widths]


class DecodeTiming:
    """Every device measurement one search takes, and the predictor adapted on them."""

    def __init__(self, device: Device, *, context: int = 512, store: Any = None, progress: bool = False,
                 references: Sequence[str] | None = None):
        space = get_space(SPACE)
        self.references = [space.from_string(r) for r in references] if references else None
        self.device = device.with_settings(context_length=context)
        self.context = context
        self.store = store
        self.progress = progress
        self.records: list[tuple[str, Any]] = []  # (role, LatencyMeasurement)
        self.reference_samples: dict[str, float] = {}
        self._pinned_share: float | None = None  # a resumed run's spread share (see :meth:`sizing`)
        self.predictor: CalibratedPredictor | None = None
        self.predictor_source = ""
        self.reference_source = ""

    def _measure(self, archs: Sequence[Arch], role: str) -> list:
        from nas.profilers import measure

        records = measure(self.device, SPACE, list(archs), store=self.store, progress=self.progress)
        self.records += [(role, r) for r in records]
        return records

    def adapted_predictor(self, pinned: dict[str, Any] | None = None) -> CalibratedPredictor:
        """Measure the references and adapt the predictor on them; with ``pinned`` (what
        :meth:`sizing` returned in an earlier run) adapt on those latencies instead, measuring nothing."""
        from nas.profilers.protocol import check_runtime_settings  # noqa: F401  (fails early on bad settings)

        space = get_space(SPACE)
        if pinned is not None:
            samples = {arch: float(ms) for arch, ms in pinned["samples"].items()}
            self._pinned_share = float(pinned["spread_share"])
            reused = len(samples)
        else:
            references = self.references or reference_archs()
            records = self._measure(references, "reference")
            samples = {space.to_string(a): r.latency_ms for a, r in zip(references, records)}
            reused = sum(getattr(r, "source", "") == "stored" for r in records)
        self.reference_samples = dict(samples)
        base, self.predictor_source = base_predictor(self.context)
        try:
            self.predictor = CalibratedPredictor(base).adapt(samples)
            self.predictor.predict_interval(_probe_archs(), 0.9)  # it must answer for every kind of layout
        except (ValueError, KeyError, RuntimeError) as error:  # e.g. a checkpoint for other reference settings
            fallback = CostFitPredictor(SPACE, self.context)
            self.predictor = CalibratedPredictor(fallback).adapt(samples)
            self.predictor_source = (f"fit of layer count and MACs on the reference measurements "
                                     f"({self.predictor_source} could not adapt: {error})")
        if pinned is not None:
            self.reference_source = (f"{len(samples)} reference latencies recorded by the run this one resumes "
                                     f"(sized as it was)")
        else:
            self.reference_source = (f"{len(samples)} reference architectures measured"
                                     + (f", {reused} of them reused from the store" if reused else ""))
        return self.predictor

    def sizing(self) -> dict[str, Any]:
        """What sizes candidates: the reference latencies the predictor was adapted on and the
        spread share (JSON-ready; :meth:`adapted_predictor` takes it back as ``pinned``)."""
        return {"samples": dict(self.reference_samples), "spread_share": self.spread_share}

    def measure(self, arch: str):
        """Measure one finalist; the predictor learns from it."""
        space = get_space(SPACE)
        record = self._measure([space.from_string(arch)], "finalist")[0]
        if self.predictor is not None and arch not in self.predictor.samples:
            self.predictor.add(arch, record.latency_ms)
        return record

    @property
    def latency_model(self) -> str:
        """Which predictor chose the widths, including a switch to the cost fit mid-search."""
        base = getattr(self.predictor, "base", None)
        if isinstance(base, FallbackPredictor) and base.failures:
            return (f"{self.predictor_source}, the fit of layer count and MACs wherever the default predictor "
                    f"failed ({len(base.failures)} times, first: {base.failures[0]})")
        return self.predictor_source

    @property
    def spread_share(self) -> float:
        """The measured spread expected of a layout on this device, as a share of
        its latency: the median of ``spread_ms / latency_ms`` over the references."""
        if self._pinned_share is not None:
            return self._pinned_share
        shares = [r.spread_ms / r.latency_ms for role, r in self.records if role == "reference" and r.latency_ms > 0]
        return float(np.median(shares)) if shares else 0.0

    @property
    def verifications(self) -> list:
        return [r for role, r in self.records if role == "finalist"]

    def log(self) -> list[dict[str, Any]]:
        """Every measurement, in order, as plain dicts."""
        return [{"role": role, "arch": r.arch, "latency_ms": r.latency_ms, "spread_ms": r.spread_ms,
                 "source": getattr(r, "source", "measured"), "settings": dict(r.settings)}
                for role, r in self.records]
