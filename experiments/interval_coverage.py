"""Coverage of the default predictor's 90 % latency interval, device by device.

Devices: each space's HELP meta-test devices (recorded tables) and the
held-out devices of ``nas/data/heldout/`` (runtimes on this CPU, measured by
``experiments/heldout_devices.py``). Neither is read when the interval is
calibrated; nothing here is chosen on them.

Per device:

- *protocol*: the shipped predictor adapted on the 10 reference
  architectures; the share of every other measured architecture whose
  latency lies in its 90 % interval (target 85-95 %) and the interval's
  median span (upper / lower bound);
- *draws*: the same predictor adapted on ``--draws`` random sets of 10 other
  architectures of the device, each scored on the rest: the share of draws
  whose coverage lands in 85-95 % and under 85 %. One set of 10 samples
  decides a device's coverage by chance; the draws say how often a device
  like this one gets an interval that holds;
- *oracle*: how far 10 samples can get at all. An oracle that knows the
  device's residual distribution (the protocol's test residuals) but
  estimates its scale from 10 of them drawn at random (root mean square),
  with the multiplier best for that device: the probability that its
  coverage lands in 85-95 %, freely and when it may fall under 85 % in at
  most 5 % of draws.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python experiments/interval_coverage.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine_line, write_keeping_reading  # noqa: E402  (beside this script)

RESULTS = Path(__file__).resolve().parent / "results" / "interval_coverage.md"
SPACES = ("nb201", "fbnet")
COVERAGE = 0.9
BAND = (85.0, 95.0)
#: test architectures scored per random draw on a recorded table (all of them on a held-out device,
#: and all of them under the protocol)
MAX_TEST = 3000
#: draws of 10 residuals per device for the oracle
ORACLE_DRAWS = 2000
#: the oracle's multipliers of the estimated scale, tried per device
ORACLE_MULTIPLIERS = np.exp(np.linspace(-1.0, 3.0, 241))
ORACLE_RISK = 0.05


def in_band(coverage_pct) -> np.ndarray:
    coverage_pct = np.asarray(coverage_pct)
    return (coverage_pct >= BAND[0]) & (coverage_pct <= BAND[1])


def device_columns(space: str):
    """``(device, kind, latency_ms of every table row (NaN where not measured))`` of the reported devices."""
    from nas import benchmarks
    from nas.predictors.evaluation import heldout_table

    table = benchmarks.latency_table(space)
    out = [(d, "meta-test", table.column(d)) for d in benchmarks.help_protocol(space).meta_test_devices]
    held = heldout_table(space)
    for device in held.devices if held is not None else ():
        column = np.full(len(table.column(out[0][0])), np.nan)
        column[held.rows] = held.column(device)
        out.append((device, "held-out", column))
    return out


def adapted_residuals(predictor, codes, latency_ms, support, test):
    """Adapt on ``support`` rows; ``(|log(measured / predicted)|`` on ``test`` rows, the predictor)."""
    predictor.adapt_codes(codes[support], latency_ms[support])
    return np.abs(np.log(latency_ms[test]) - np.log(predictor.predict_codes(codes[test]))), predictor


def oracle(abs_residuals: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """``(P(in band) with the best multiplier, the same with P(under 85 %) <= ORACLE_RISK)`` for a
    scale estimated from 10 of the device's own residuals."""
    ordered = np.sort(abs_residuals)
    scale = np.sqrt(np.mean(np.square(rng.choice(abs_residuals, (ORACLE_DRAWS, 10))), axis=1))
    coverage = np.stack([np.searchsorted(ordered, k * scale, side="right") / len(ordered) * 100
                         for k in ORACLE_MULTIPLIERS])
    band = in_band(coverage).mean(axis=1)
    safe = (coverage < BAND[0]).mean(axis=1) <= ORACLE_RISK
    return float(band.max()), float(band[safe].max()) if safe.any() else 0.0


def measure(space: str, draws: int, seed: int, log, checkpoints: Path | None = None) -> list[dict]:
    from nas import benchmarks, predictors
    from nas.predictors.evaluation import table_codes

    codes = table_codes(space)
    reference = np.array(benchmarks.help_protocol(space).reference_indices)
    predictor = (predictors.load_predictor(checkpoints / f"{space}_default.npz") if checkpoints
                 else predictors.load_default_predictor(space))
    rng = np.random.default_rng(seed)
    rows_out = []
    for device, kind, latency_ms in device_columns(space):
        measured = np.flatnonzero(np.isfinite(latency_ms))
        if not np.all(np.isin(reference, measured)):
            continue  # the references are measured first; a device without them is still being measured
        others = np.setdiff1d(measured, reference)
        residuals, adapted = adapted_residuals(predictor, codes, latency_ms, reference, others)
        width = adapted.interval_halfwidth(COVERAGE)
        row = {"space": space, "device": device, "kind": kind, "test": len(others),
               "coverage": float(np.mean(residuals <= width) * 100), "span": float(np.exp(2 * width))}
        row["oracle_free"], row["oracle_safe"] = oracle(residuals, rng)
        drawn = []
        for _ in range(draws):
            support = rng.choice(others, len(reference), replace=False)
            rest = np.setdiff1d(measured, support)
            rest = rest if len(rest) <= MAX_TEST else rng.choice(rest, MAX_TEST, replace=False)
            residuals, adapted = adapted_residuals(predictor, codes, latency_ms, support, rest)
            drawn.append(np.mean(residuals <= adapted.interval_halfwidth(COVERAGE)) * 100)
        row["draws"] = np.array(drawn)
        rows_out.append(row)
        log(f"{space} {device}: protocol {row['coverage']:.1f} %, draws in band {in_band(drawn).mean():.2f}")
    return rows_out


def report(rows: list[dict], draws: int, seconds: float, checkpoints: str = "") -> str:
    lines = ["# Coverage of the default predictor's 90 % interval", "",
             f"Generated by `experiments/interval_coverage.py{checkpoints}` in {seconds:.0f} s; "
             f"{machine_line()} at the end. Protocol: see the script's docstring.", "",
             f"*protocol* = adapted on the 10 reference architectures, coverage of every other measured "
             f"architecture (target {BAND[0]:.0f}-{BAND[1]:.0f} %); *span* = median upper / lower bound; "
             f"*draws* = {draws} random sets of 10 samples of the device: share in the band / under "
             f"{BAND[0]:.0f} %; *oracle* = chance that a scale from 10 of the device's own residuals lands in "
             f"the band with the best multiplier for that device, freely / with at most "
             f"{ORACLE_RISK:.0%} of draws under {BAND[0]:.0f} %.", "",
             "| space | device | kind | protocol cover % | span | draws in band | draws under 85 % | oracle | oracle, safe |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        line = (f"| {r['space']} | {r['device']} | {r['kind']} | {r['coverage']:.1f} | ×{r['span']:.2f} | "
                f"{in_band(r['draws']).mean():.2f} | {(r['draws'] < BAND[0]).mean():.2f} | ")
        lines.append(line + f"{r['oracle_free']:.2f} | {r['oracle_safe']:.2f} |")
    n = len(rows)
    coverage = np.array([r["coverage"] for r in rows])
    drawn = np.concatenate([r["draws"] for r in rows])
    lines += ["", f"**Default predictor:** {int(in_band(coverage).sum())} of {n} devices in "
              f"{BAND[0]:.0f}-{BAND[1]:.0f} % under the protocol, {int((coverage < BAND[0]).sum())} under "
              f"{BAND[0]:.0f} % (lowest {coverage.min():.1f} %); over the random draws "
              f"{in_band(drawn).mean():.0%} in the band, {(drawn < BAND[0]).mean():.0%} under."]
    lines.append(f"**Oracle ceiling** (expected devices in the band): {sum(r['oracle_free'] for r in rows):.1f} of "
                 f"{n} freely, {sum(r['oracle_safe'] for r in rows):.1f} of {n} with at most "
                 f"{ORACLE_RISK:.0%} of draws under {BAND[0]:.0f} % per device; with that risk on each device, "
                 f"all {n} hold {BAND[0]:.0f} % together with probability {(1 - ORACLE_RISK) ** n:.2f}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=SPACES)
    parser.add_argument("--draws", type=int, default=20, help="random 10-sample sets per device")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="folder of {space}_default.npz to score instead of the shipped ones (e.g. older ones)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error(f"--draws must be at least 1, got {args.draws}")
    for space in args.spaces if args.checkpoints else ():
        if not (args.checkpoints / f"{space}_default.npz").is_file():
            parser.error(f"--checkpoints: no {space}_default.npz in {args.checkpoints}")
    started = time.perf_counter()
    rows = []
    for space in args.spaces:
        rows += measure(space, args.draws, args.seed, lambda m: print(m, file=sys.stderr, flush=True), args.checkpoints)
    text = report(rows, args.draws, time.perf_counter() - started,
                  f" --checkpoints {args.checkpoints}" if args.checkpoints else "")
    print(text)
    write_keeping_reading(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
