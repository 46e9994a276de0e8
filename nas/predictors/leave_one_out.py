"""Leave-one-device-out evaluation: for a table whose devices are few (the
``slm`` table's columns are runtime settings of one machine), every device
in turn is the meta-test device; the predictor is meta-trained on the others
(one of them kept for meta-validation), adapted on the held-out device's
reference measurements and scored on the rest of its column.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from nas import benchmarks
from nas.predictors.evaluation import evaluate, summary

#: what ``nas predictor eval`` compares a method with
BASELINES = ("flops", "params", "transfer")


def leave_one_device_out(method: str, space: str, num_samples: int | None = None, seed: int = 0,
                         devices: Sequence[str] | None = None,
                         log: Callable[[str], None] | None = None, options: dict | None = None) -> dict:
    """Scores of ``method`` with each device of ``space``'s table held out in
    turn (``devices``: only these), as :func:`nas.predictors.evaluation.summary`
    plus ``method``, ``space``, ``num_samples``. Checkpoints are never used:
    every fold meta-trains afresh, so the held-out device is never seen.
    ``options`` go to the method's meta-training (e.g. HELP's ``config``)."""
    from nas.predictors.methods import meta_train

    log = log or (lambda message: None)
    table_devices = benchmarks.latency_table(space).devices
    scores = []
    for held_out in devices or table_devices:
        others = [d for d in table_devices if d != held_out]
        # the device after the held-out one (cyclically) validates, the rest meta-train
        valid = others[table_devices.index(held_out) % len(others)]
        train = [d for d in others if d != valid]
        with benchmarks.device_split(space, train, [valid], [held_out]) as split:
            samples = num_samples or split.num_samples
            log(f"{method}: meta-training without {held_out}")
            predictor = meta_train(method, space, seed, log, **(options or {}))
            scores += evaluate(lambda: predictor, space, [held_out], samples, seed)
    out = summary(scores)
    out.update(method=method, space=space, num_samples=num_samples or benchmarks.help_protocol(space).num_samples)
    return out


def compare(methods: Sequence[str], space: str, num_samples: int | None = None,
            log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """:func:`leave_one_device_out` of each method, by name."""
    return {method: leave_one_device_out(method, space, num_samples, log=log) for method in methods}


def mean_spearman(result: dict) -> float:
    return float(np.mean([d["spearman"] for d in result["devices"]]))
