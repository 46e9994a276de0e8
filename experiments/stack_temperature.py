"""How the default latency predictor's mixing temperature should follow the number of samples.

The default predictor (:class:`nas.predictors.stacked.StackedPredictor`)
mixes its candidate models with softmin weights of their leave-one-out
errors, at a temperature meta-learned on sets of 10 samples (the reference
architectures). A search adds its verification measurements to those 10 and
adapts again; with more samples the held-out errors separate the models
more surely, so the mixture may lean harder on the best. The predictor uses
``temperature * (10 / n) ** exponent`` for n > 10 samples
(``TEMPERATURE_EXPONENT``); this benchmark scores exponents on the groups
meta-training chooses the temperature on (no reported device among them):

- *recorded*: the recorded held-out devices of meta-training (each meta-train
  device with its own column removed from the sources, then the meta-valid
  devices);
- *unlike*: the launch-overhead and power-of-FLOPs devices of
  :func:`nas.predictors.stacked.unlike_devices`.

Each device is adapted on its 10 reference architectures plus ``n - 10``
random other rows (``DRAWS`` draws per size), and scored by Spearman's rho on
``TEST_ROWS`` further rows. An exponent is chosen, per space and size, by the
mean of its worse group (as meta-training chooses the temperature).

Then, counted only, the held-out devices of ``nas/data/heldout/`` (reported
in ``experiments/results/heldout_devices.md``) with 10 and 30 random
architectures added to their references, 10 draws each.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python experiments/stack_temperature.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine_line, write_keeping_reading  # noqa: E402  (beside this script)

RESULTS = Path(__file__).resolve().parent / "results" / "stack_temperature.md"
SPACES = ("nb201", "fbnet")
EXPONENTS = (0.0, 0.5, 1.0)
SIZES = (10, 20, 40)
DRAWS = 4
TEST_ROWS = 1500
HELD_OUT_EXTRA = (10, 30)
HELD_OUT_DRAWS = 10


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def _adapted_rho(predictor, temperature: float, exponent: float, codes, latency, support, test) -> float:
    """Spearman on ``test`` rows after adapting on ``support`` rows with the given exponent."""
    from nas.predictors import stacked

    saved = stacked.TEMPERATURE_EXPONENT
    stacked.TEMPERATURE_EXPONENT = exponent
    try:
        predictor.temperature = temperature
        predictor.adapt_codes(codes[support], latency[support])
        return _rho(predictor.predict_codes(codes[test]), latency[test])
    finally:
        stacked.TEMPERATURE_EXPONENT = saved


def calibration_groups(space: str, log) -> dict[tuple[str, int, float], float]:
    """Mean rho per (group, number of samples, exponent) on the meta-training groups."""
    from nas import benchmarks, predictors
    from nas.predictors.evaluation import table_codes
    from nas.predictors.stacked import StackedPredictor

    temperature = predictors.load_default_predictor(space).temperature
    table = benchmarks.latency_table(space)
    codes = table_codes(space)
    reference = np.array(benchmarks.help_protocol(space).reference_indices)
    others = np.setdiff1d(np.arange(len(codes)), reference)
    full, tasks, unlike = StackedPredictor._held_out_devices(space)
    groups = {"recorded": [(p, table.column(d)) for d, p in tasks],
              "unlike": [(p, latency) for p, latency, _ in unlike if p is full]}
    out = {}
    for group, devices in groups.items():
        for size in SIZES:
            for exponent in EXPONENTS:
                rhos = []
                for index, (predictor, latency) in enumerate(devices):
                    rng = np.random.default_rng(1000 * index + size)
                    for _ in range(DRAWS if size > 10 else 1):  # 10 samples: the references, one set
                        extra = rng.choice(others, size - 10, replace=False)
                        test = rng.choice(np.setdiff1d(others, extra), TEST_ROWS, replace=False)
                        rhos.append(_adapted_rho(predictor, temperature, exponent, codes, latency,
                                                 np.concatenate([reference, extra]), test))
                out[(group, size, exponent)] = float(np.mean(rhos))
            log(f"{space} {group} {size} samples: "
                + ", ".join(f"{e}: {out[(group, size, e)]:.4f}" for e in EXPONENTS))
    return out


def held_out_devices(space: str, log) -> dict[tuple[str, int, float], float]:
    """Mean rho per (held-out device, added samples, exponent), adapted on the references plus
    random measured architectures, scored on every other measured one."""
    from nas import benchmarks, predictors
    from nas.predictors.evaluation import heldout_table, table_codes

    table = heldout_table(space)
    if table is None:
        return {}
    temperature = predictors.load_default_predictor(space).temperature
    codes = table_codes(space)[table.rows]
    reference = np.isin(table.rows, benchmarks.help_protocol(space).reference_indices)
    out = {}
    for device in table.devices:
        latency = table.column(device)
        known = np.isfinite(latency)
        if (known & reference).sum() < reference.sum():
            continue
        for extra in HELD_OUT_EXTRA:
            for exponent in EXPONENTS:
                rhos = []
                for draw in range(HELD_OUT_DRAWS):
                    rng = np.random.default_rng(draw)
                    added = rng.choice(np.flatnonzero(known & ~reference), extra, replace=False)
                    support = np.concatenate([np.flatnonzero(reference), added])
                    test = np.setdiff1d(np.flatnonzero(known), support)
                    predictor = predictors.load_default_predictor(space)
                    rhos.append(_adapted_rho(predictor, temperature, exponent, codes, latency, support, test))
                out[(device, extra, exponent)] = float(np.mean(rhos))
        log(f"{space} held-out {device}: done")
    return out


def report(groups: dict, held: dict, seconds: float, command: str) -> str:
    lines = ["# The default predictor's temperature and the number of samples", "",
             f"Generated by `experiments/stack_temperature.py` in {seconds / 60:.1f} min; {machine_line()}. "
             "Protocol: see the script's docstring.", "", f"    {command}", "",
             "Mean Spearman's rho per group; the temperature with n samples is the meta-learned one times "
             "(10 / n) ** exponent (10 samples: the references, unaffected). *Chosen* = the exponent whose "
             "worse group is best (ties to the smaller exponent).", ""]
    for space, values in groups.items():
        lines += [f"## {space}", "", "| samples | group | " + " | ".join(f"exponent {e}" for e in EXPONENTS) + " |",
                  "|---|---|" + "---|" * len(EXPONENTS)]
        for size in SIZES:
            for group in ("recorded", "unlike"):
                lines.append(f"| {size} | {group} | "
                             + " | ".join(f"{values[(group, size, e)]:.4f}" for e in EXPONENTS) + " |")
            worse = {e: min(values[(g, size, e)] for g in ("recorded", "unlike")) for e in EXPONENTS}
            row = f"| {size} | *worse group* | " + " | ".join(f"{worse[e]:.4f}" for e in EXPONENTS) + " |"
            if size > 10:  # at 10 samples every exponent is the same predictor
                best = max(worse.values())
                row += f" chosen: {min(e for e in EXPONENTS if worse[e] >= best - 1e-12)} |"
            lines.append(row)
        lines.append("")
        devices = list(dict.fromkeys(device for device, _, _ in held[space]))
        if devices:
            lines += [f"Held-out devices ({space}), references plus random measured architectures, "
                      f"{HELD_OUT_DRAWS} draws (reported, not used to choose):", "",
                      "| device | added | " + " | ".join(f"exponent {e}" for e in EXPONENTS) + " |",
                      "|---|---|" + "---|" * len(EXPONENTS)]
            for device in devices:
                for extra in HELD_OUT_EXTRA:
                    lines.append(f"| {device} | +{extra} | "
                                 + " | ".join(f"{held[space][(device, extra, e)]:.3f}" for e in EXPONENTS) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=SPACES)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    groups, held = {}, {}
    for space in args.spaces:
        groups[space] = calibration_groups(space, log)
        held[space] = held_out_devices(space, log)
    command = "OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python experiments/stack_temperature.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    text = report(groups, held, time.perf_counter() - started, command.strip())
    print(text)
    write_keeping_reading(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
