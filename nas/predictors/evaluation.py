"""The HELP evaluation protocol on the recorded tables.

A predictor adapts on a device's reference measurements (10, or more for
baselines that train on many samples); it is scored on every other
architecture of that device's table: Spearman's rho, Kendall's tau, MAPE
(percent) and the share of predictions within +-10 % (percent), plus the
coverage of its 90 % interval.
"""

from __future__ import annotations

import csv
import functools
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.stats import kendalltau, spearmanr

from nas import benchmarks
from nas.predictors.features import op_codes
from nas.search_space import Arch, get_space


@functools.lru_cache(maxsize=None)
def table_archs(space: str) -> tuple[Arch, ...]:
    """Every architecture of the space's latency table, in row order."""
    search_space = get_space(space)
    return tuple(search_space._parse(s) for s in benchmarks.arch_strings(space))


@functools.lru_cache(maxsize=None)
def table_codes(space: str) -> np.ndarray:
    return op_codes(space, table_archs(space))


def measurement_rows(space: str, num_samples: int = 10, seed: int = 0) -> np.ndarray:
    """Rows the device is measured on: the 10 reference architectures, then
    (for ``num_samples`` > 10) further rows drawn with ``seed``."""
    reference = np.array(benchmarks.help_protocol(space).reference_indices)
    if num_samples <= len(reference):
        return reference[:num_samples]
    others = np.setdiff1d(np.arange(len(table_archs(space))), reference)
    extra = np.random.default_rng(seed).choice(others, num_samples - len(reference), replace=False)
    return np.concatenate([reference, extra])


def table_measurements(space: str, device: str, rows: Sequence[int]) -> dict[str, float]:
    """``{canonical arch string: latency_ms}`` recorded for ``device`` at ``rows``."""
    column = benchmarks.latency_table(space).column(device)
    strings = benchmarks.arch_strings(space)
    return {strings[r]: float(column[r]) for r in rows}


@dataclass
class DeviceScore:
    device: str
    spearman: float
    kendall: float
    mape: float
    within_10: float
    coverage_90: float | None
    adapt_s: float
    #: median of upper / lower bound of the 90 % interval (1.2: the interval spans 20 %)
    interval_ratio_90: float | None = None


def score(device: str, measured_ms: np.ndarray, predicted_ms: np.ndarray, low_ms=None, high_ms=None,
          adapt_s: float = 0.0) -> DeviceScore:
    relative = np.abs(predicted_ms - measured_ms) / measured_ms
    coverage = ratio = None
    if low_ms is not None and np.any(high_ms > low_ms):
        coverage = float(np.mean((measured_ms >= low_ms) & (measured_ms <= high_ms)) * 100)
        ratio = float(np.median(high_ms / np.maximum(low_ms, 1e-12)))
    return DeviceScore(device, float(spearmanr(predicted_ms, measured_ms)[0]),
                       float(kendalltau(predicted_ms, measured_ms)[0]), float(relative.mean() * 100),
                       float(np.mean(relative <= 0.1) * 100), coverage, adapt_s, ratio)


def evaluate(make_predictor: Callable[[], object], space: str, devices: Sequence[str] | None = None,
             num_samples: int = 10, seed: int = 0) -> list[DeviceScore]:
    """Adapt a fresh predictor (``make_predictor()``) per device and score it.

    ``devices`` defaults to the meta-test devices of the HELP protocol.
    """
    devices = devices or benchmarks.help_protocol(space).meta_test_devices
    archs = table_archs(space)
    rows = measurement_rows(space, num_samples, seed)
    held_out = np.setdiff1d(np.arange(len(archs)), rows)
    held_out_archs = [archs[r] for r in held_out]
    scores = []
    for device in devices:
        predictor = make_predictor()
        start = time.perf_counter()
        predictor.adapt(table_measurements(space, device, rows))
        adapt_s = time.perf_counter() - start
        predicted, low, high = predictor.predict_interval(held_out_archs, coverage=0.9)
        measured = benchmarks.latency_table(space).column(device)[held_out]
        scores.append(score(device, measured, predicted, low, high, adapt_s))
    return scores


@dataclass
class HeldoutTable:
    """Latency (ms) measured on the held-out devices of ``nas/data/heldout/``:
    ``rows`` index the space's benchmark table; NaN where a device lacks a row."""

    space: str
    rows: np.ndarray
    devices: tuple[str, ...]
    latency_ms: np.ndarray  # [rows, devices]

    def column(self, device: str) -> np.ndarray:
        return self.latency_ms[:, self.devices.index(device)]


def heldout_table(space: str) -> HeldoutTable | None:
    """The held-out devices' measurements of ``space`` (None when none are shipped).

    These devices (runtimes on a CPU, see ``experiments/heldout_devices.py``)
    are never read by meta-training; they test predictors on devices unlike
    the recorded tables.
    """
    from importlib import resources

    path = resources.files("nas").joinpath("data", "heldout", f"{space}.csv")
    if not path.is_file():
        return None
    with path.open() as handle:
        records = [r for r in csv.DictReader(handle) if int(r["row"]) >= 0]  # row -1 pins the scale
    rows = sorted({int(r["row"]) for r in records})
    devices = tuple(dict.fromkeys(r["device"] for r in records))
    where = {row: i for i, row in enumerate(rows)}
    latency = np.full((len(rows), len(devices)), np.nan)
    for r in records:
        latency[where[int(r["row"])], devices.index(r["device"])] = float(r["latency_ms"])
    return HeldoutTable(space, np.array(rows, dtype=np.int64), devices, latency)


def evaluate_heldout(make_predictor: Callable[[], object], space: str,
                     devices: Sequence[str] | None = None) -> list[DeviceScore]:
    """Adapt on each held-out device's 10 reference architectures; score on
    every other architecture measured on it."""
    table = heldout_table(space)
    if table is None:
        return []
    archs = table_archs(space)
    strings = benchmarks.arch_strings(space)
    reference = set(benchmarks.help_protocol(space).reference_indices)
    scores = []
    for device in devices or table.devices:
        y = table.column(device)
        known = np.isfinite(y)
        support = known & np.isin(table.rows, list(reference))
        if support.sum() < len(reference):
            continue  # the references are measured first; a device without them is still being measured
        test = known & ~support
        predictor = make_predictor()
        start = time.perf_counter()
        predictor.adapt({strings[r]: float(v) for r, v in zip(table.rows[support], y[support])})
        adapt_s = time.perf_counter() - start
        predicted, low, high = predictor.predict_interval([archs[r] for r in table.rows[test]], coverage=0.9)
        scores.append(score(device, y[test], predicted, low, high, adapt_s))
    return scores


def summary(scores: Sequence[DeviceScore]) -> dict:
    """Per-device scores and their means, as plain data (``mean_spearman`` etc.)."""
    out = {"devices": [asdict(s) for s in scores]}
    for key in ("spearman", "kendall", "mape", "within_10", "coverage_90", "adapt_s"):
        values = [getattr(s, key) for s in scores if getattr(s, key) is not None]
        out[f"mean_{key}"] = float(np.mean(values)) if values else None
    return out


def evaluate_method(method: str, space: str, seeds: int = 1, devices: Sequence[str] | None = None,
                    log: Callable[[str], None] | None = None) -> dict:
    """Scores of ``method`` on the meta-test devices, over ``seeds`` seeds
    (seed 0 uses the shipped checkpoint when there is one).

    Returns :func:`summary` of the per-device means over seeds, plus
    ``seeds`` and ``std_spearman`` (spread of the mean Spearman across seeds).
    """
    from nas.errors import UserInputError
    from nas.predictors.methods import trained_predictor

    if seeds < 1:
        raise UserInputError(f"--seeds must be at least 1, got {seeds}")
    runs = []
    for seed in range(seeds):
        predictor = trained_predictor(method, space, seed, log)
        runs.append(evaluate(lambda: predictor, space, devices, predictor.num_samples, seed))
    averaged = []
    for per_device in zip(*runs):
        values = {}
        for key in ("spearman", "kendall", "mape", "within_10", "coverage_90", "adapt_s"):
            numbers = [getattr(s, key) for s in per_device if getattr(s, key) is not None]
            values[key] = float(np.mean(numbers)) if numbers else None
        averaged.append(DeviceScore(per_device[0].device, **values))
    out = summary(averaged)
    out.update(method=method, space=space, seeds=seeds, num_samples=predictor.num_samples,
               std_spearman=float(np.std([np.mean([s.spearman for s in run]) for run in runs])))
    return out
