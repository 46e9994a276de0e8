"""The default predictor: a stack of small latency models, weighted by
how well each predicts the device's own measurements left out.

Each candidate is linear in milliseconds over one feature family, or a
power law of one feature:

- transfer: the latencies the meta-train devices record for the architecture
  (all of them by non-negative least squares, each alone, each pair);
- cost: hardware-independent cost features (operation counts for NB201;
  1x1 / depthwise MACs, activation traffic, parameters, conv count for FBNet);
- FLOPs, and each structural prior alone (parameters, layer, convolution
  and operator counts, memory traffic; see
  :func:`nas.predictors.baselines.structural_priors`);
- an additive per-layer latency table (ridge on the one-hot code), which
  only earns weight when the device gives many measurements;
- power laws: log latency affine in the log of one positive feature (each
  source device, MFLOPs, each structural prior), for devices whose latency
  grows faster or slower than linearly in every feature (a runtime whose
  large cells spill out of cache), where a fit in milliseconds is steered by
  the largest sample and misses the small ones by a factor.

Adapting fits every candidate on the measurements, scores it by leave-one-out
error in log space, and mixes the candidates' log predictions with softmin
weights of that error (the temperature is meta-learned on held-out recorded
devices and on devices unlike every table, :func:`unlike_devices`); a model
whose held-out error is far below the mixture's predicts alone. The error is
robust: the ``ROBUST_QUANTILE`` quantile of the squared held-out errors, so
one disturbed sample among ten (a measurement taken under load) does not
decide which model explains the device; a reference sample the mixture (or
else the model that would predict alone) misses by ``OUTLIER_RATIO`` times
the device's error scale is left out of the fit, and only then may one model
predict alone (see :meth:`StackedPredictor.adapt_codes`).
Devices unlike every training table fall back on the cost and structural
models, so the predictor does not fall apart there.

The interval is split-conformal: a device's log residuals are taken to be
its held-out error scale (:func:`held_out_scale`) times a factor common to
all devices, whose quantiles are calibrated on the sample sets of
:func:`calibration_sets`: meta-train (leave-device-out) and meta-valid
devices and the launch-overhead and power-of-FLOPs devices of
:func:`unlike_devices`, each adapted on its reference architectures and on
``CALIBRATION_DRAWS`` random sets of 10 (the 90 % factor then moves by
about 3 % between seeds). Ten samples do not pin one device's error scale
within the 85-95 % band of a 90 % interval: even an oracle that knows a
device's residual distribution and estimates only its scale from ten of its
residuals lands in that band for about half the devices (see
``experiments/results/interval_coverage.md``). A device the samples explain
poorly gets a wide interval, not a confident wrong one.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from nas import benchmarks
from nas.errors import UserInputError
from nas.predictors.base import LatencyPredictor
from nas.predictors.baselines import structural_priors
from nas.predictors.features import SourceLatencies, cost_features, flops_and_params, one_hot, op_codes
from nas.predictors.registry import register_predictor
from nas.search_space import Arch

MIN_MEASUREMENTS = 4
#: leave-one-out up to this many measurements, 10-fold cross-validation above
MAX_LEAVE_ONE_OUT = 40
COST_RIDGE = (0.1, 1.0)
ONE_HOT_RIDGE = (1.0, 10.0)
SCALE_FLOOR = 0.005
#: random 10-sample sets per calibration device, beside its reference architectures
CALIBRATION_DRAWS = 20
#: test architectures scored per calibration sample set
CALIBRATION_ROWS = 2000
#: quantiles of the calibration factor kept in a checkpoint (at levels k / (n + 1), k = 1..n)
CALIBRATION_QUANTILES = 999
#: draws of disturbed reference measurements per recorded device among the devices unlike every table
DISTURBED_DRAWS = 4
#: models whose mixture weight is below this share of the largest are dropped after adapting
MIN_WEIGHT = 1e-3
#: a model predicts alone when its held-out error is below this share of the mixture's (on the
#: recorded devices the best model never gets there; choosing it at any lower error loses rank there:
#: 0.7, 0.85 and 1.0 lose on the held-out recorded devices and on devices unlike every table)
ALONE_RATIO = 0.5
#: quantile of the squared held-out log errors that scores a model (1.0 would be the maximum; the
#: mean lets one disturbed sample of ten choose the model)
ROBUST_QUANTILE = 0.9
#: a sample missed by this many times the device's error scale is refitted without (see ``adapt_codes``)
OUTLIER_RATIO = 3.0
#: a disturbed sample is dropped only among at most this many (see ``adapt_codes``)
MAX_DROP_SAMPLES = 10
#: the number of samples the temperature is meta-learned at (the reference architectures); with n
#: > 10 samples the mixture uses ``temperature * (TEMPERATURE_SAMPLES / n) ** TEMPERATURE_EXPONENT``
TEMPERATURE_SAMPLES = 10
#: chosen on the meta-training groups (recorded held-out devices, devices unlike every table; 20 and 40
#: samples, both spaces): 0.5 is never more than 0.0001 below the best exponent's worse group, 1.0 falls
#: 0.0006 below it (nb201, 40 samples), a fixed temperature (0) 0.0018 (experiments/stack_temperature.py)
TEMPERATURE_EXPONENT = 0.5


def fit_candidates(phi: np.ndarray, latency_ms: np.ndarray, num_sources: int, num_cost: int,
                   num_priors: int = 0) -> np.ndarray:
    """``[features, models]`` coefficients of every candidate, fitted on ``phi`` rows.

    ``phi`` columns: source latencies (``num_sources``), standardised cost
    features (``num_cost``), MFLOPs, constant 1, the one-hot code, then the
    standardised structural priors (``num_priors``, last).
    """
    features = phi.shape[1]
    one = num_sources + num_cost + 1
    priors = list(range(features - num_priors, features))
    models = []

    def add(columns, weights):
        vector = np.zeros(features)
        vector[list(columns)] = weights
        models.append(vector)

    sources = list(range(num_sources))
    add(sources + [one], nnls(phi[:, sources + [one]], latency_ms)[0])
    for j in sources:
        add([j, one], np.linalg.lstsq(phi[:, [j, one]], latency_ms, rcond=None)[0])
    for i, j in itertools.combinations(sources, 2):
        add([i, j, one], nnls(phi[:, [i, j, one]], latency_ms)[0])
    cost = list(range(num_sources, num_sources + num_cost)) + [one]
    scale = float(latency_ms.mean())
    design = phi[:, cost]
    for lam in COST_RIDGE:
        penalty = np.r_[np.full(num_cost, lam), 1e-8]
        add(cost, scale * np.linalg.solve(design.T @ design + np.diag(penalty), design.T @ latency_ms / scale))
    flops = [num_sources + num_cost, one]
    add(flops, np.linalg.lstsq(phi[:, flops], latency_ms, rcond=None)[0])
    # each structural prior alone: on a device run by per-layer or per-operator overhead
    # one count explains the latency, and held-out error finds which
    for j in priors:
        add([j, one], np.linalg.lstsq(phi[:, [j, one]], latency_ms, rcond=None)[0])
    # additive per-layer latency table (ridge on the one-hot code, dual form): weak at 10
    # samples, where held-out error mutes it, and the best model with hundreds
    code = phi[:, one + 1:features - num_priors]
    gram = code @ code.T
    for lam in ONE_HOT_RIDGE:
        alpha = np.linalg.solve(gram + lam * np.eye(len(latency_ms)), latency_ms / scale - 1.0)
        add(list(range(one + 1, features - num_priors)) + [one], np.r_[scale * (code.T @ alpha), scale])
    return np.stack(models, axis=1)


def fit_power_laws(log_positive: np.ndarray, latency_ms: np.ndarray) -> np.ndarray:
    """``[2, features]``: per positive feature, the intercept and exponent of
    ``log latency = a + b log feature`` (least squares in log space)."""
    log_y = np.log(latency_ms)
    x_mean = log_positive.mean(axis=0)
    centred = log_positive - x_mean
    spread = (centred ** 2).sum(axis=0)
    slope = np.where(spread > 1e-12, centred.T @ (log_y - log_y.mean()) / np.maximum(spread, 1e-12), 0.0)
    return np.stack([log_y.mean() - slope * x_mean, slope])


def _folds(n: int) -> list[np.ndarray]:
    if n <= MAX_LEAVE_ONE_OUT:
        return [np.array([i]) for i in range(n)]
    return np.array_split(np.random.default_rng(0).permutation(n), 10)


def held_out_predictions(phi: np.ndarray, latency_ms: np.ndarray, num_sources: int, num_cost: int,
                         num_priors: int = 0) -> np.ndarray:
    """``[n, models]``: each measurement predicted by candidates fitted without it
    (leave-one-out, or 10 folds beyond ``MAX_LEAVE_ONE_OUT`` measurements)."""
    n = len(latency_ms)
    out = None
    for fold in _folds(n):
        keep = np.setdiff1d(np.arange(n), fold)
        coefficients = fit_candidates(phi[keep], latency_ms[keep], num_sources, num_cost, num_priors)
        predicted = phi[fold] @ coefficients
        if out is None:
            out = np.zeros((n, predicted.shape[1]))
        out[fold] = predicted
    return out


def held_out_power_laws(log_positive: np.ndarray, latency_ms: np.ndarray) -> np.ndarray:
    """``[n, features]``: each measurement's log latency predicted by power laws fitted without it."""
    out = np.zeros_like(log_positive)
    for fold in _folds(len(latency_ms)):
        keep = np.setdiff1d(np.arange(len(latency_ms)), fold)
        intercept, slope = fit_power_laws(log_positive[keep], latency_ms[keep])
        out[fold] = intercept + slope * log_positive[fold]
    return out


def held_out_scale(log_residuals: np.ndarray) -> float:
    """A device's error scale in log space: the root mean square of its held-out
    log residuals with the largest left out (one disturbed sample does not
    widen every interval), floored at ``SCALE_FLOOR``."""
    squared = np.sort(np.square(log_residuals))
    kept = squared[:-1] if len(squared) > 4 else squared
    return float(np.sqrt(kept.mean() + SCALE_FLOOR ** 2))


def robust_error(squared: np.ndarray) -> np.ndarray:
    """Per model (column), the ``ROBUST_QUANTILE`` quantile of its squared held-out log errors."""
    return np.quantile(squared, ROBUST_QUANTILE, axis=0)


def _has_disturbed_sample(log_residuals: np.ndarray) -> bool:
    """Whether one held-out log residual exceeds ``OUTLIER_RATIO`` times the error scale of the
    others (:func:`held_out_scale`), among at most ``MAX_DROP_SAMPLES`` samples."""
    residuals = np.abs(log_residuals)
    return (MIN_MEASUREMENTS + 4 < len(residuals) <= MAX_DROP_SAMPLES
            and float(residuals.max()) > OUTLIER_RATIO * held_out_scale(residuals))


def softmin_weights(log_errors: np.ndarray, temperature: float) -> np.ndarray:
    """Mixture weights from each candidate's mean squared held-out log error."""
    best = max(float(log_errors.min()), 1e-12)
    logits = -(log_errors - best) / (temperature * best)
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


@dataclass
class _ScoredModels:
    """Every candidate model of one sample set: fitted coefficients (linear models, then power
    laws), each sample's held-out log prediction, each model's robust held-out error and its
    softmin weight."""

    latency_ms: np.ndarray
    coefficients: np.ndarray  # [features, linear models]
    power: np.ndarray  # [2, positive features]
    log_held_out: np.ndarray  # [samples, models]
    log_errors: np.ndarray  # [models]
    mixture: np.ndarray  # [models], softmin weights

    def log_residuals(self, weights: np.ndarray) -> np.ndarray:
        """log(measured / predicted) of each sample, predicted by the ``weights`` mix fitted without it."""
        return np.log(self.latency_ms) - self.log_held_out @ weights

    def alone(self) -> np.ndarray | None:
        """One-hot weights of the best model when its held-out error is below ``ALONE_RATIO`` of
        the mixture's (it would predict alone), else None."""
        best = int(np.argmin(self.log_errors))
        mixed_error = float(robust_error(self.log_residuals(self.mixture) ** 2))
        if self.log_errors[best] < ALONE_RATIO * mixed_error:
            return np.eye(len(self.mixture))[best]
        return None


@register_predictor("stacked")
class StackedPredictor(LatencyPredictor):
    """Transfer, cost and FLOPs linear models mixed by held-out error (see module doc)."""

    def __init__(self, space: str, source: SourceLatencies | None = None, temperature: float = 2.0,
                 cost_center: np.ndarray | None = None, cost_scale: np.ndarray | None = None,
                 calibration: np.ndarray | None = None, prior_center: np.ndarray | None = None,
                 prior_scale: np.ndarray | None = None):
        super().__init__(space)
        self.source = source or SourceLatencies(space, benchmarks.help_protocol(space).meta_train_devices)
        self.temperature = float(temperature)
        if cost_center is None:
            codes = op_codes(space, [self.search_space._parse(s) for s in benchmarks.arch_strings(space)])
            cost = cost_features(space, codes)
            cost_center, cost_scale = cost.mean(axis=0), cost.std(axis=0) + 1e-12
        self.cost_center, self.cost_scale = np.asarray(cost_center), np.asarray(cost_scale)
        if prior_center is None:
            priors = self._priors(op_codes(space, [self.search_space._parse(s) for s in benchmarks.arch_strings(space)]))
            prior_center, prior_scale = priors.mean(axis=0), priors.std(axis=0) + 1e-12
        self.prior_center, self.prior_scale = np.asarray(prior_center), np.asarray(prior_scale)
        #: sorted quantiles of the calibration devices' absolute log residuals, each divided by its
        #: device's held-out error scale (older checkpoints: the residuals themselves)
        self.calibration = None if calibration is None else np.sort(np.asarray(calibration, dtype=np.float64))
        self.coefficients: np.ndarray | None = None
        #: ``[2, positive features]`` power laws (intercept, exponent) of the kept power-law models
        self.power: np.ndarray | None = None
        self.power_features: np.ndarray | None = None  # which positive feature each kept power law reads
        self.mixture: np.ndarray | None = None  # linear models first, then power laws
        self.log_scale: float | None = None

    # --- features -------------------------------------------------------------------
    def _priors(self, codes: np.ndarray) -> np.ndarray:
        """``[n, k]`` structural priors other than FLOPs (which has its own column)."""
        cached = getattr(self, "_priors_of", None)
        if cached is not None and cached[0] is codes:  # linear and power-law members read the same codes
            return cached[1]
        priors = structural_priors(self.space, codes)
        values = np.stack([v for name, v in priors.items() if name != "flops"], axis=1)
        self._priors_of = (codes, values)
        return values

    def design(self, codes: np.ndarray) -> np.ndarray:
        """``[n, features]``: source latencies, standardised cost features, MFLOPs, 1, one-hot
        code, standardised structural priors."""
        cost = (cost_features(self.space, codes) - self.cost_center) / self.cost_scale
        flops, _ = flops_and_params(self.space, codes)
        priors = (self._priors(codes) - self.prior_center) / self.prior_scale
        return np.concatenate([self.source(codes), cost, flops[:, None] / 1e6, np.ones((len(codes), 1)),
                               one_hot(self.space, codes), priors], axis=1)

    def log_positive(self, codes: np.ndarray) -> np.ndarray:
        """``[n, k]`` logs of the positive features the power laws read: source
        latencies (ms), MFLOPs, structural priors (each plus one, as counts can be zero)."""
        flops, _ = flops_and_params(self.space, codes)
        return np.log(np.concatenate([np.maximum(self.source(codes), 1e-6), np.maximum(flops[:, None] / 1e6, 1e-6),
                                      np.maximum(self._priors(codes), 0.0) + 1.0], axis=1))

    @property
    def _sizes(self) -> tuple[int, int, int]:
        return len(self.source.devices), len(self.cost_center), len(self.prior_center)

    # --- contract ---------------------------------------------------------------------
    def adapt(self, measurements: Mapping[str, float]) -> "StackedPredictor":
        archs, latency_ms = self._parse_measurements(measurements)
        if len(latency_ms) < MIN_MEASUREMENTS:
            raise UserInputError(f"the stacked predictor needs at least {MIN_MEASUREMENTS} measurements "
                                 f"(normally the 10 reference architectures), got {len(latency_ms)}")
        return self.adapt_codes(op_codes(self.space, archs), latency_ms)

    def adapt_codes(self, codes: np.ndarray, latency_ms: np.ndarray) -> "StackedPredictor":
        """``adapt`` on operation codes (used by meta-training and evaluation).

        A sample the mixture, fitted without it, misses by more than
        ``OUTLIER_RATIO`` times the device's error scale is a disturbed
        measurement (taken under load): the models are fitted again without
        it (``self.dropped``: its index, else None). Every model is fitted in
        part on each sample, so a robust score alone cannot undo it. Only
        among at most ``MAX_DROP_SAMPLES`` (the reference measurements):
        a measurement the search adds to verify a candidate must move the fit
        however far off it is, and among many samples one weighs little.

        The disturbed sample is looked for before one model may predict
        alone (``ALONE_RATIO``), first in the softmin mixture's residuals,
        then in those of the model that would predict alone (a model that
        explains the other samples almost exactly shows the disturbed one
        the mixture absorbs); only on the samples kept is the lone model
        chosen, and not when it still misses one sample by far. Choosing it
        first let its residuals alone decide which sample is disturbed: on
        fbnet titanx_32 (held out, temperature 2.0) a reference that the
        mixture misses by far stayed in and the lone model ranked the
        device at 0.58 (0.95 now)."""
        latency_ms = np.asarray(latency_ms, dtype=np.float64)
        scored = self._score(codes, latency_ms)
        self.dropped = None
        for weights in (scored.mixture, scored.alone()):
            if weights is None:
                continue
            residuals = scored.log_residuals(weights)
            if _has_disturbed_sample(residuals):
                worst = int(np.argmax(np.abs(residuals)))
                keep = np.arange(len(latency_ms)) != worst
                scored = self._score(codes[keep], latency_ms[keep])
                self.dropped = worst
                break
        self._settle(scored)
        return self

    def _score(self, codes: np.ndarray, latency_ms: np.ndarray) -> "_ScoredModels":
        """Every model fitted on the samples, its held-out log predictions and softmin weight."""
        phi = self.design(codes)
        log_positive = self.log_positive(codes)
        coefficients = fit_candidates(phi, latency_ms, *self._sizes)
        power = fit_power_laws(log_positive, latency_ms)
        held_out = np.maximum(held_out_predictions(phi, latency_ms, *self._sizes), 1e-3 * latency_ms.min())
        log_held_out = np.concatenate([np.log(held_out), held_out_power_laws(log_positive, latency_ms)], axis=1)
        log_errors = robust_error((log_held_out - np.log(latency_ms)[:, None]) ** 2)
        return _ScoredModels(latency_ms, coefficients, power, log_held_out, log_errors,
                             softmin_weights(log_errors, self.temperature_for(len(latency_ms))))

    def temperature_for(self, num_samples: int) -> float:
        """The mixing temperature for ``num_samples`` measurements: the meta-learned one at
        ``TEMPERATURE_SAMPLES``, lower with more. Held-out errors from more samples separate the
        models more surely, so the mixture may lean harder on the best: at a fixed temperature
        a crowd of models that each explain the device a little worse keeps its weight however
        many measurements show it (fbnet on a GPU at batch 1, 40 samples: 0.848 against 0.860).
        At ``TEMPERATURE_SAMPLES`` or fewer (the references, one of them dropped as disturbed) it
        is the meta-learned temperature itself."""
        return self.temperature * (TEMPERATURE_SAMPLES / max(num_samples, TEMPERATURE_SAMPLES)) ** TEMPERATURE_EXPONENT

    def _settle(self, scored: "_ScoredModels") -> None:
        """The adapted state from the scored models: the softmin mixture, or the best model alone
        when its held-out error is below ``ALONE_RATIO`` of the mixture's; negligible models dropped."""
        self._scored = scored  # every model of this adaptation, for ``ranked_best_member``
        self._apply(scored, self._choose(scored))

    def _choose(self, scored: "_ScoredModels") -> np.ndarray:
        """The weights of the models: the softmin mixture, or the best model alone (see ``_settle``)."""
        mixture = scored.mixture
        alone = scored.alone()
        if alone is not None and not _has_disturbed_sample(scored.log_residuals(alone)):
            # when one model explains this device's samples far better than the mix (a device
            # unlike every source, run by one count), it alone predicts; not when it misses one
            # sample by far: a model that alone trusts a disturbed sample ranks the device by it
            mixture = alone
        return mixture

    def _apply(self, scored: "_ScoredModels", mixture: np.ndarray) -> None:
        """The adapted state that mixes the scored models with ``mixture`` weights."""
        kept = mixture >= MIN_WEIGHT * mixture.max()  # negligible models cost time, not accuracy
        linear = scored.coefficients.shape[1]
        self.coefficients = scored.coefficients[:, kept[:linear]]
        self.power_features = np.flatnonzero(kept[linear:])
        self.power = scored.power[:, self.power_features]
        self.mixture = mixture[kept] / mixture[kept].sum()
        self._floor_ms = 1e-2 * float(scored.latency_ms.min())
        #: log(measured / predicted) of each sample, predicted by the mixture fitted without it
        self.held_out_log_residuals = scored.log_residuals(np.where(kept, mixture, 0.0) / mixture[kept].sum())
        self.log_scale = held_out_scale(self.held_out_log_residuals)

    def member_names(self) -> list[str]:
        """A name for each candidate model, in the order of :func:`fit_candidates`, then the power laws."""
        sources = list(self.source.devices)
        zero = np.zeros((1, len(self.search_space.choices)), dtype=np.int64)
        priors = [name for name in structural_priors(self.space, zero) if name != "flops"]
        linear = (["transfer: all sources (NNLS)"] + [f"transfer: {d}" for d in sources]
                  + [f"transfer: {a} + {b}" for a, b in itertools.combinations(sources, 2)]
                  + [f"cost features (ridge {lam})" for lam in COST_RIDGE] + ["flops"]
                  + list(priors) + [f"per-layer table (ridge {lam})" for lam in ONE_HOT_RIDGE])
        power = [f"power law of {name}" for name in [*sources, "flops", *priors]]
        return linear + power

    def ranked_best_member(self) -> tuple[str, "StackedPredictor"]:
        """``(name, predictor)``: the candidate model with the lowest robust held-out error on the
        samples of the last ``adapt``, predicting alone (what the stack is compared with)."""
        scored = getattr(self, "_scored", None)
        if scored is None:
            raise RuntimeError("call adapt() before ranked_best_member()")
        best = int(np.argmin(scored.log_errors))
        alone = copy.copy(self)
        alone._apply(scored, np.eye(len(scored.log_errors))[best])
        return self.member_names()[best], alone

    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        if self.coefficients is None:
            raise RuntimeError("call adapt() before predict()")
        linear = self.coefficients.shape[1]
        weights = np.broadcast_to(self.mixture, (len(codes), len(self.mixture))).copy()
        logs = np.zeros_like(weights)
        if linear:
            candidates = self._candidates(codes)
            logs[:, :linear] = np.log(np.maximum(candidates, self._floor_ms))
            # a linear model that predicts (next to) nothing for an architecture extrapolates past where
            # it holds (a width or depth its samples never reached): it sits out that architecture's
            # mixture and the others share its weight, unless no other model has any
            outside = np.zeros_like(weights, dtype=bool)
            outside[:, :linear] = candidates <= self._floor_ms
            kept = np.where(outside, 0.0, weights)
            total = kept.sum(axis=1, keepdims=True)
            weights = np.where(total > 0, kept / np.where(total > 0, total, 1.0), weights)
        if self.power is not None and self.power.shape[1]:
            logs[:, linear:] = self.power[0] + self.power[1] * self._log_positive_columns(codes, self.power_features)
        self._priors_of = None  # the codes are the caller's; keep no reference to them
        return np.exp((weights * logs).sum(axis=1))

    def _log_positive_columns(self, codes: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """``log_positive(codes)[:, columns]``, computing only the feature blocks those columns read."""
        sources = len(self.source.devices)
        out = np.empty((len(codes), len(columns)))
        if np.any(columns < sources):
            picked = columns < sources
            out[:, picked] = np.log(np.maximum(self.source(codes)[:, columns[picked]], 1e-6))
        if np.any(columns == sources):
            out[:, columns == sources] = np.log(np.maximum(flops_and_params(self.space, codes)[0] / 1e6, 1e-6))[:, None]
        if np.any(columns > sources):
            picked = columns > sources
            out[:, picked] = np.log(np.maximum(self._priors(codes)[:, columns[picked] - sources - 1], 0.0) + 1.0)
        return out

    def _candidates(self, codes: np.ndarray) -> np.ndarray:
        """``design(codes) @ coefficients``, block by block, skipping feature blocks no kept model reads."""
        sources, cost, priors = self._sizes
        one = sources + cost + 1
        c = self.coefficients
        out = np.broadcast_to(c[one], (len(codes), c.shape[1])).copy()
        if np.any(c[:sources]):
            out += self.source(codes) @ c[:sources]
        if np.any(c[sources:sources + cost]):
            out += ((cost_features(self.space, codes) - self.cost_center) / self.cost_scale) @ c[sources:sources + cost]
        if np.any(c[sources + cost]):
            out += np.outer(flops_and_params(self.space, codes)[0] / 1e6, c[sources + cost])
        per_op = c[one + 1:len(c) - priors]
        if np.any(per_op) and len({len(ops) for ops in self.search_space.choices}) > 1:
            out += one_hot(self.space, codes) @ per_op  # positions with different numbers of choices (slm)
        elif np.any(per_op):
            per_op = per_op.reshape(codes.shape[1], -1, c.shape[1])
            for position in range(codes.shape[1]):
                out += per_op[position, codes[:, position]]
        if priors and np.any(c[len(c) - priors:]):
            out += ((self._priors(codes) - self.prior_center) / self.prior_scale) @ c[len(c) - priors:]
        return out

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.predict_codes(op_codes(self.space, archs))

    def interval_halfwidth(self, coverage: float) -> float:
        """Half-width of the interval in log space for this device."""
        if not 0 < coverage < 1:
            raise UserInputError(f"coverage must be between 0 and 1 (e.g. 0.9), got {coverage}")
        if self.calibration is None or not len(self.calibration):
            raise RuntimeError("this predictor has no calibration; meta-train it first")
        n = len(self.calibration)
        rank = min(n - 1, int(np.ceil((n + 1) * coverage)) - 1)
        return float(self.calibration[rank]) * self.log_scale

    def predict_interval(self, archs: Sequence[Arch], coverage: float = 0.9):
        predicted = self.predict(archs)
        if self.calibration is None:
            return predicted, predicted.copy(), predicted.copy()
        width = self.interval_halfwidth(coverage)
        return predicted, predicted * np.exp(-width), predicted * np.exp(width)

    # --- checkpoints --------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"source_devices": list(self.source.devices), "temperature": self.temperature}
        arrays = {"source_coefficients": self.source.coefficients, "cost_center": self.cost_center,
                  "cost_scale": self.cost_scale, "prior_center": self.prior_center, "prior_scale": self.prior_scale}
        if self.calibration is not None:
            arrays["calibration"] = self.calibration
        if self.coefficients is not None:
            arrays.update(coefficients=self.coefficients, mixture=self.mixture)
            if self.power is not None:
                arrays.update(power=self.power, power_features=self.power_features)
            meta.update(log_scale=self.log_scale, floor_ms=self._floor_ms)
        return meta, arrays

    @classmethod
    def from_state(cls, space, meta, arrays):
        predictor = cls(space, SourceLatencies(space, meta["source_devices"], arrays["source_coefficients"]),
                        meta["temperature"], arrays["cost_center"], arrays["cost_scale"], arrays.get("calibration"),
                        arrays.get("prior_center"), arrays.get("prior_scale"))
        if "coefficients" in arrays:
            coefficients = arrays["coefficients"]
            if "prior_center" not in arrays:  # written before the structural priors joined: they weigh nothing
                coefficients = np.concatenate([coefficients, np.zeros((len(predictor.prior_center),
                                                                       coefficients.shape[1]))])
            predictor.coefficients, predictor.mixture = coefficients, arrays["mixture"]
            if "power" in arrays:  # written before the power laws joined: there are none
                predictor.power, predictor.power_features = arrays["power"], arrays["power_features"]
            predictor.log_scale, predictor._floor_ms = meta["log_scale"], meta["floor_ms"]
        return predictor

    # --- meta-training ------------------------------------------------------------------
    @classmethod
    def _held_out_devices(cls, space: str):
        """``(full, tasks, unlike)``: a predictor whose sources are every meta-train device;
        ``(device, predictor)`` for each meta-train device (its own column removed from the
        predictor's sources), then each meta-valid device (``full``); :func:`unlike_devices`."""
        from nas.predictors.evaluation import table_codes

        protocol = benchmarks.help_protocol(space)
        table = benchmarks.latency_table(space)
        full = cls(space)
        tasks = []
        for device in protocol.meta_train_devices:
            others = [d for d in protocol.meta_train_devices if d != device]
            tasks.append((device, cls(space, SourceLatencies(space, others), cost_center=full.cost_center,
                                      cost_scale=full.cost_scale, prior_center=full.prior_center,
                                      prior_scale=full.prior_scale)))
        tasks += [(device, full) for device in protocol.meta_valid_devices]
        # fixed, not drawn with the seed: the temperature is the method's, the seed only draws the
        # interval's calibration sample sets
        unlike = unlike_devices(space, table_codes(space), np.array(protocol.reference_indices), full,
                                [(predictor, table.column(device)) for device, predictor in tasks[:4]],
                                np.random.default_rng(0))
        return full, tasks, unlike

    @classmethod
    def calibration_devices(cls, space: str, temperature: float, held_out=None
                            ) -> list[tuple["StackedPredictor", np.ndarray]]:
        """``(unadapted predictor, latency_ms of every table row)`` of the devices the interval is
        calibrated on: the recorded held-out devices of meta-training and the launch-overhead and
        power-of-FLOPs devices of :func:`unlike_devices` (those with disturbed reference
        measurements are left out: their column is not what they adapt on)."""
        full, tasks, unlike = held_out or cls._held_out_devices(space)
        table = benchmarks.latency_table(space)
        devices = [(predictor, table.column(device)) for device, predictor in tasks]
        devices += [(predictor, latency) for predictor, latency, _ in unlike if predictor is full]
        for predictor, _ in devices:
            predictor.temperature = temperature
        return devices

    @classmethod
    def meta_train(cls, space: str, seed: int = 0, log=None,
                   temperatures=(0.25, 0.5, 0.75, 1.0, 2.0)) -> "StackedPredictor":
        """Choose the mixing temperature and calibrate the interval on
        held-out devices only: each meta-train device with its own column
        removed from the sources, and the meta-valid devices (the interval
        also on the launch-overhead and power-of-FLOPs devices of
        :func:`unlike_devices`). Meta-test devices are never read.

        The temperature is the one whose worse group does best, of two groups:
        those recorded devices, and devices unlike every table
        (:func:`unlike_devices`). Recorded devices alone prefer a broad mix of
        the many transfer models; on a device none of them explains, that
        crowd outweighs the few models that do."""
        from nas.predictors.evaluation import table_codes

        log = log or (lambda message: None)
        protocol = benchmarks.help_protocol(space)
        table = benchmarks.latency_table(space)
        codes = table_codes(space)
        reference = np.array(protocol.reference_indices)
        held_out = np.setdiff1d(np.arange(len(codes)), reference)
        full, tasks, unlike = cls._held_out_devices(space)
        rng = np.random.default_rng(seed)
        groups = {"recorded": [(predictor, table.column(device), table.column(device)[reference])
                               for device, predictor in tasks],
                  "unlike": unlike}
        best = None
        for temperature in temperatures:
            means = {}
            for group, members in groups.items():
                rhos = []
                for predictor, y, support_ms in members:
                    predictor.temperature = temperature
                    predictor.adapt_codes(codes[reference], support_ms)
                    rhos.append(_spearman(predictor.predict_codes(codes[held_out]), y[held_out]))
                means[group] = float(np.mean(rhos))
            log(f"temperature {temperature}: mean Spearman on held-out recorded devices {means['recorded']:.4f}, "
                f"on {len(groups['unlike'])} devices unlike them {means['unlike']:.4f}")
            if best is None or min(means.values()) > best[0]:
                best = (min(means.values()), temperature)
        calibration = cls.calibration_devices(space, best[1], (full, tasks, unlike))
        factors = calibration_factors(*calibration_sets(codes, reference, calibration, rng))
        log(f"chose temperature {best[1]}; calibrated the interval on {len(calibration)} devices, "
            f"{CALIBRATION_DRAWS + 1} sample sets each: the 90 % interval spans "
            f"{np.quantile(factors, 0.9):.2f} held-out error scales either way")
        return cls(space, full.source, best[1], full.cost_center, full.cost_scale,
                   calibration_quantiles(factors), full.prior_center, full.prior_scale)


def calibration_sets(codes: np.ndarray, reference: np.ndarray,
                     devices: Sequence[tuple["StackedPredictor", np.ndarray]], rng: np.random.Generator,
                     draws: int = CALIBRATION_DRAWS) -> tuple[np.ndarray, list[np.ndarray]]:
    """Held-out error scales and test residuals of calibration sample sets.

    Per ``(predictor, latency_ms of every row)``: the predictor adapted on the
    reference rows and on ``draws`` random sets of as many other rows, each
    scored on up to ``CALIBRATION_ROWS`` rows it did not see. Returns
    ``(per set the log_scale, per set |log(measured / predicted)|)``."""
    held_out = np.setdiff1d(np.arange(len(codes)), reference)
    log_scales, residuals = [], []
    for predictor, latency_ms in devices:
        supports = [reference] + [rng.choice(held_out, len(reference), replace=False)
                                  for _ in range(draws)]
        for support in supports:
            predictor.adapt_codes(codes[support], latency_ms[support])
            rest = np.setdiff1d(held_out, support)
            rows = rng.choice(rest, min(CALIBRATION_ROWS, len(rest)), replace=False)
            log_scales.append(predictor.log_scale)
            residuals.append(np.abs(np.log(predictor.predict_codes(codes[rows]))
                                    - np.log(np.maximum(latency_ms[rows], 1e-3))))
    return np.array(log_scales), residuals


def calibration_factors(log_scales: np.ndarray, abs_log_residuals: Sequence[np.ndarray]) -> np.ndarray:
    """Every calibration residual divided by its sample set's held-out error scale (pooled)."""
    return np.concatenate([r / scale for scale, r in zip(log_scales, abs_log_residuals)])


def calibration_quantiles(factors: np.ndarray, n: int = CALIBRATION_QUANTILES) -> np.ndarray:
    """``n`` quantiles of ``factors`` at levels ``k / (n + 1)``: what a checkpoint keeps. The
    split-conformal rank of :meth:`StackedPredictor.interval_halfwidth` then reads the quantile
    at ``ceil((n + 1) coverage) / (n + 1)``, the smallest kept level at or above the coverage."""
    return np.quantile(factors, np.arange(1, n + 1) / (n + 1)).astype(np.float32)


def unlike_devices(space: str, codes: np.ndarray, reference: np.ndarray, predictor: "StackedPredictor",
                   recorded: Sequence[tuple["StackedPredictor", np.ndarray]],
                   rng: np.random.Generator) -> list[tuple["StackedPredictor", np.ndarray, np.ndarray]]:
    """Devices unlike every recorded table, for choosing the temperature:
    ``(predictor, latency_ms of every row, latency_ms of the reference rows as measured)``.

    - launch-overhead devices: a constant plus one structural count plus a
      little compute (0.3 x FLOPs relative to their means), 5 % noise;
    - devices whose latency is a power of FLOPs (0.6 and 1.6), 5 % noise;
    - ``recorded`` devices (predictor without the device, column) whose
      reference measurements include two disturbed ones (x2 to x4, as a
      measurement taken under load), scored against the undisturbed column;
      ``DISTURBED_DRAWS`` draws of which two, so no one draw decides.
    """
    priors = structural_priors(space, codes)
    flops, _ = flops_and_params(space, codes)
    flops = flops / max(float(flops.mean()), 1e-12)
    out = []
    for name, count in priors.items():
        if name in ("flops", "params") or float(count.max()) <= float(count.min()):
            continue
        latency = 0.3 + count / max(float(count.mean()), 1e-12) + 0.3 * flops
        out.append(latency * np.exp(rng.normal(0, 0.05, len(latency))))
    for exponent in (0.6, 1.6):
        out.append((flops + 1e-3) ** exponent * np.exp(rng.normal(0, 0.05, len(flops))))
    devices = [(predictor, latency, latency[reference]) for latency in out]
    for other, latency in recorded:
        for _ in range(DISTURBED_DRAWS):
            measured = latency[reference].copy()
            disturbed = rng.choice(len(reference), 2, replace=False)
            measured[disturbed] *= rng.uniform(2.0, 4.0, 2)
            devices.append((other, latency, measured))
    return devices


@register_predictor("stacked-900")
class Stacked900Predictor(StackedPredictor):
    """The default predictor given 900 device samples (to compare with BRP-NAS at 900)."""

    num_samples = 900


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a, b)[0])
