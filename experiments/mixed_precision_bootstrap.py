"""Paired bootstrap over test items for the mixed-precision benchmarks: how
far a difference between two orderings (interlayer minus layer-wise Hessian:
area under the curve, quality at the same latency) moves when the test
items (images, text windows) are drawn again.

Every configuration's per-item values (1/0 correct for an image, bits per
byte of a window) are resampled with the same item indices for all
configurations, so the two orderings' curves stay paired; the statistic is
recomputed from the configurations' resampled means. Percentile interval
(Efron and Tibshirani, An Introduction to the Bootstrap, 1993, ch. 13).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

RESAMPLES = 2000
LEVEL = 0.90


def paired_bootstrap(item_values: Mapping[str, np.ndarray], statistic: Callable[[dict[str, float]], float],
                     resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """``statistic`` of the configurations' mean item values, and its ``level`` percentile interval
    over ``resamples`` paired resamples of the items. ``item_values`` maps a configuration to its
    values on the same items, in the same item order."""
    keys = list(item_values)
    matrix = np.stack([np.asarray(item_values[key], dtype=float) for key in keys])  # [configurations, items]
    items = matrix.shape[1]
    counts = np.random.default_rng(seed).multinomial(items, np.full(items, 1 / items), size=resamples)
    means = counts @ matrix.T / items  # [resamples, configurations]
    values = np.array([statistic(dict(zip(keys, row.tolist()))) for row in means])
    point = statistic({key: float(matrix[i].mean()) for i, key in enumerate(keys)})
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(point), float(low), float(high)


def interval_text(point: float, low: float, high: float, digits: int = 4) -> str:
    """``+0.0012 [-0.0003, +0.0027]``, and whether the interval excludes zero."""
    mark = "" if low <= 0 <= high else " (excludes 0)"
    return f"{point:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]{mark}"
