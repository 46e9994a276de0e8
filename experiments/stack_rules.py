"""Rules that would keep the default latency predictor from ranking a device below its best-ranked member.

The default predictor (:class:`nas.predictors.stacked.StackedPredictor`)
mixes candidate models by their leave-one-out (LOO) error on the device's
samples. On some devices it ranks architectures worse than *the member its
own samples rank best*: the candidate with the lowest robust LOO error,
predicting alone (:meth:`~nas.predictors.stacked.StackedPredictor.ranked_best_member`).
This benchmark judges rules that would switch or blend toward that member,
each computed from the device's samples only.

Groups the rules are judged on (the ones meta-training uses; no reported
device is among them):

- *recorded*: the recorded held-out devices of meta-training (each meta-train
  device with its own column removed from the sources, then the meta-valid
  devices), adapted on the 10 reference architectures;
- *unlike*: the devices unlike every table of
  :func:`nas.predictors.stacked.unlike_devices` (launch-overhead,
  power-of-FLOPs, recorded devices with two disturbed references), adapted on
  the references as measured;
- *random-recorded*, *random-unlike*: the interval's calibration devices
  (:meth:`StackedPredictor.calibration_devices`), each adapted on ``--draws``
  random sets of 10 non-reference architectures and scored on
  ``TEST_ROWS`` other rows.

Every sample set is scored by Spearman's rho on its test rows (every
non-reference row for the first two groups). A set is *below the member*
when a rule's rho is under the member's by more than ``TIE`` (a member
whose prediction is constant, rho undefined, counts as -1).

The reported devices, counted only: each space's HELP meta-test devices
(recorded tables) and its held-out devices (``nas/data/heldout/``), adapted on
the 10 references and scored on every other measured architecture, as in
``experiments/results/heldout_devices.md``.

Rules, all in log space, all from the kept samples (after the predictor's own
drop of a disturbed sample):

- *lone member when its LOO error < m x the stack's*: the member's robust LOO
  error against that of the stack's LOO residuals (the mixture weights fitted
  on all samples);
- *nested LOO*: each sample left out in turn, the whole stack procedure
  (scoring, weighting, lone-member choice) and the best-member procedure
  are fitted on the others and predict it; the member when its nested robust
  error (``ROBUST_QUANTILE`` quantile of squared log errors) is below m x the
  stack's; *conservative*: also its nested mean squared error below 0.4 x;
- *nested LOO Spearman*: the member when its nested predictions rank the
  samples better than the stack's;
- *blends*: ``(1 - w) log stack + w log member``;
- *NNLS stacking* (Breiman 1996, "Stacked regressions"): non-negative weights
  summing to one, fitted to the samples' log latencies on the candidates'
  LOO log predictions, blended 0.5 with the stack;
- *per-device temperature*: the softmin temperature of ``TEMPERATURES``
  whose nested LOO robust error is lowest.

Separability: over the calibration sample sets, the AUC with which a
sample-only statistic tells the sets where the member ranks better than
the stack (by more than ``TIE``) from the others.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python experiments/stack_rules.py

Takes about 2 minutes at ``--draws 10`` on one core (4 on a busy machine). ``--cache DIR`` keeps each
space's sample-set records there (pickles) and reads them on the next run;
delete them after changing the predictor.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine_line, write_keeping_reading  # noqa: E402  (beside this script)

RESULTS = Path(__file__).resolve().parent / "results" / "stack_rules.md"
SPACES = ("nb201", "fbnet")
#: softmin temperatures the per-device rule chooses among
TEMPERATURES = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
CALIBRATION_GROUPS = ("recorded", "unlike", "random-recorded", "random-unlike")
REPORTED_GROUPS = ("meta-test", "held-out")
#: test rows of each random sample set
TEST_ROWS = 2000
#: a rho lower than the member's by more than this is "below the member"
TIE = 0.0005


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")  # a constant prediction ranks nothing
    return float(spearmanr(a, b)[0])


def robust(log_residuals: np.ndarray) -> float:
    """The predictor's robust error of log residuals (quantile of the squares)."""
    from nas.predictors.stacked import robust_error

    return float(robust_error(np.square(log_residuals)[:, None])[0])


@dataclass
class SampleSet:
    """One adaptation of the default predictor and what every rule needs from it.

    ``log_*`` arrays on the test rows are log milliseconds; ``nested_*`` are the
    log predictions of each kept sample by the procedure fitted on the others."""

    group: str
    name: str
    member: str  # name of the member the samples rank best
    log_support_ms: np.ndarray  # the kept samples
    test_ms: np.ndarray
    log_stack: np.ndarray
    log_member: np.ndarray
    log_nnls: np.ndarray
    log_chosen_temperature: np.ndarray
    stack_error: float  # robust error of the stack's LOO residuals
    member_error: float  # the member's robust LOO error
    nested_stack: np.ndarray
    nested_member: np.ndarray
    chosen_temperature: float
    rho_stack: float = field(init=False)
    rho_member: float = field(init=False)

    def __post_init__(self):
        self.rho_stack = spearman(self.log_stack, self.test_ms)
        self.rho_member = spearman(self.log_member, self.test_ms)

    @property
    def member_floor(self) -> float:
        return self.rho_member if np.isfinite(self.rho_member) else -1.0

    @property
    def nested_ratio(self) -> float:
        """Nested robust error of the member procedure over the stack procedure's."""
        return robust(self.nested_member - self.log_support_ms) / robust(self.nested_stack - self.log_support_ms)

    @property
    def nested_mean_ratio(self) -> float:
        return (float(np.mean(np.square(self.nested_member - self.log_support_ms)))
                / float(np.mean(np.square(self.nested_stack - self.log_support_ms))))

    @property
    def nested_spearman_lead(self) -> float:
        """How much better the member's nested predictions rank the samples than the stack's."""
        return (spearman(self.nested_member, self.log_support_ms)
                - spearman(self.nested_stack, self.log_support_ms))


def mixed_log(predictor, scored, weights: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Log predictions on ``codes`` of the scored models mixed with ``weights`` (``predictor`` unchanged)."""
    mix = copy.copy(predictor)
    mix._apply(scored, weights)
    return np.log(mix.predict_codes(codes))


def with_temperature(scored, temperature: float):
    from nas.predictors.stacked import softmin_weights

    return dataclasses.replace(scored, mixture=softmin_weights(scored.log_errors, temperature))


def nested(predictor, codes: np.ndarray, latency_ms: np.ndarray):
    """Each sample's log prediction by the stack procedure, the best-member procedure and the stack at
    each of ``TEMPERATURES``, all fitted on the other samples."""
    n = len(latency_ms)
    stack, member = np.zeros(n), np.zeros(n)
    by_temperature = {t: np.zeros(n) for t in TEMPERATURES}
    for i in range(n):
        keep = np.arange(n) != i
        scored = predictor._score(codes[keep], latency_ms[keep])
        left_out = codes[i:i + 1]
        stack[i] = mixed_log(predictor, scored, predictor._choose(scored), left_out)[0]
        for t in TEMPERATURES:
            tempered = with_temperature(scored, t)
            by_temperature[t][i] = mixed_log(predictor, tempered, predictor._choose(tempered), left_out)[0]
        member[i] = mixed_log(predictor, scored, np.eye(len(scored.log_errors))[int(np.argmin(scored.log_errors))],
                              left_out)[0]
    return stack, member, by_temperature


def sample_set(predictor, support_codes, support_ms, test_codes, test_ms, group: str, name: str) -> SampleSet:
    """Adapt ``predictor`` on the support samples and record what the rules need."""
    from scipy.optimize import nnls

    predictor.adapt_codes(support_codes, support_ms)
    scored = predictor._scored
    dropped = predictor.dropped if predictor.dropped is not None else -1
    codes = support_codes[np.arange(len(support_ms)) != dropped]
    log_support = np.log(scored.latency_ms)
    member_name, member = predictor.ranked_best_member()
    best = int(np.argmin(scored.log_errors))
    weights = predictor._choose(scored)
    nested_stack, nested_member, nested_by_temperature = nested(predictor, codes, scored.latency_ms)
    errors = {t: robust(p - log_support) for t, p in nested_by_temperature.items()}
    chosen = min(errors, key=errors.get)
    tempered = with_temperature(scored, chosen)
    # NNLS on the LOO log predictions, its weights held to sum to one by a heavily weighted extra row
    held_out = scored.log_held_out
    big = 10.0 * np.sqrt(len(log_support))
    stacked = nnls(np.vstack([held_out, big * np.ones(held_out.shape[1])]), np.r_[log_support, big])[0]
    return SampleSet(
        group=group, name=name, member=member_name, log_support_ms=log_support, test_ms=np.asarray(test_ms),
        log_stack=np.log(predictor.predict_codes(test_codes)),
        log_member=np.log(member.predict_codes(test_codes)),
        log_nnls=mixed_log(predictor, scored, stacked / stacked.sum(), test_codes),
        log_chosen_temperature=mixed_log(predictor, tempered, predictor._choose(tempered), test_codes),
        stack_error=robust(scored.log_residuals(weights)), member_error=float(scored.log_errors[best]),
        nested_stack=nested_stack, nested_member=nested_member, chosen_temperature=chosen)


def collect(space: str, draws: int, seed: int, log: Callable[[str], None]) -> list[SampleSet]:
    """Every sample set of ``space``: the calibration groups, then the reported devices."""
    from nas import benchmarks, predictors
    from nas.predictors.evaluation import heldout_table, table_codes
    from nas.predictors.stacked import StackedPredictor

    started = time.perf_counter()
    default = predictors.load_default_predictor(space)
    protocol = benchmarks.help_protocol(space)
    table = benchmarks.latency_table(space)
    codes = table_codes(space)
    reference = np.array(protocol.reference_indices)
    others = np.setdiff1d(np.arange(len(codes)), reference)
    full, tasks, unlike = StackedPredictor._held_out_devices(space)
    sets = []
    for device, predictor in tasks:
        predictor.temperature = default.temperature
        y = table.column(device)
        sets.append(sample_set(predictor, codes[reference], y[reference], codes[others], y[others],
                               "recorded", device))
    log(f"{space}: {len(tasks)} recorded held-out devices ({time.perf_counter() - started:.0f} s)")
    for k, (predictor, y, support_ms) in enumerate(unlike):
        predictor.temperature = default.temperature
        sets.append(sample_set(predictor, codes[reference], support_ms, codes[others], y[others],
                               "unlike", f"unlike {k}"))
    log(f"{space}: {len(unlike)} devices unlike every table ({time.perf_counter() - started:.0f} s)")
    devices = StackedPredictor.calibration_devices(space, default.temperature, (full, tasks, unlike))
    rng = np.random.default_rng(seed)
    for k, (predictor, y) in enumerate(devices):
        group = "random-recorded" if k < len(tasks) else "random-unlike"
        for draw in range(draws):
            support = rng.choice(others, len(reference), replace=False)
            test = rng.choice(np.setdiff1d(others, support), TEST_ROWS, replace=False)
            sets.append(sample_set(predictor, codes[support], y[support], codes[test], y[test],
                                   group, f"calibration device {k}, draw {draw}"))
        log(f"{space}: calibration device {k + 1}/{len(devices)}, {draws} random sets "
            f"({time.perf_counter() - started:.0f} s)")
    for device in protocol.meta_test_devices:
        y = table.column(device)
        sets.append(sample_set(predictors.load_default_predictor(space), codes[reference], y[reference],
                               codes[others], y[others], "meta-test", device))
    held = heldout_table(space)
    for device in held.devices if held is not None else ():
        y = held.column(device)
        known = np.isfinite(y)
        is_reference = np.isin(held.rows, reference)
        support, test = known & is_reference, known & ~is_reference
        if support.sum() < len(reference) or test.sum() < 3:
            continue
        sets.append(sample_set(predictors.load_default_predictor(space), codes[held.rows[support]], y[support],
                               codes[held.rows[test]], y[test], "held-out", device))
    log(f"{space}: reported devices ({time.perf_counter() - started:.0f} s)")
    return sets


# --- rules -----------------------------------------------------------------------------------
Rule = Callable[[SampleSet], np.ndarray]


def switch(condition: Callable[[SampleSet], bool]) -> Rule:
    return lambda s: s.log_member if condition(s) else s.log_stack


def blend(weight: float, condition: Callable[[SampleSet], bool] = lambda s: True) -> Rule:
    return lambda s: (1 - weight) * s.log_stack + weight * s.log_member if condition(s) else s.log_stack


RULES: list[tuple[str, Rule]] = [
    ("current", lambda s: s.log_stack),
    ("the member alone, always", lambda s: s.log_member),
    ("lone member when its LOO error < the stack's", switch(lambda s: s.member_error < s.stack_error)),
    ("(a) lone member at < 0.7 of the stack's LOO error", switch(lambda s: s.member_error < 0.7 * s.stack_error)),
    ("(a) the same at < 0.6", switch(lambda s: s.member_error < 0.6 * s.stack_error)),
    ("(a) blend 0.5 toward it at < 0.7", blend(0.5, lambda s: s.member_error < 0.7 * s.stack_error)),
    ("(a) blend 0.5 toward it at < 0.6", blend(0.5, lambda s: s.member_error < 0.6 * s.stack_error)),
    ("(b) nested LOO, stack as a candidate: member at < 0.7 of the stack's", switch(lambda s: s.nested_ratio < 0.7)),
    ("(b) the same at < 1.0", switch(lambda s: s.nested_ratio < 1.0)),
    ("(b) the same at < 0.3", switch(lambda s: s.nested_ratio < 0.3)),
    ("(b) conservative: nested mean ratio < 0.4 and robust < 0.7",
     switch(lambda s: s.nested_mean_ratio < 0.4 and s.nested_ratio < 0.7)),
    ("member when its nested LOO Spearman is higher", switch(lambda s: s.nested_spearman_lead > 0)),
    ("fixed blend 0.3 toward the member", blend(0.3)),
    ("NNLS stacking of the LOO predictions, blend 0.5", lambda s: 0.5 * s.log_stack + 0.5 * s.log_nnls),
    ("per-device temperature by nested LOO", lambda s: s.log_chosen_temperature),
]


@dataclass
class RuleScore:
    means: dict  # (space, group) -> mean rho
    sets_below: int
    sets: int
    reported_below: list  # "space device rho<member"
    reported: int
    meta_test: dict  # space -> mean rho


def score_rule(rule: Rule, records: dict[str, list[SampleSet]]) -> RuleScore:
    means, meta_test, reported_below = {}, {}, []
    sets_below = sets = reported = 0
    for space, records_of in records.items():
        for group in CALIBRATION_GROUPS:
            rhos = []
            for s in (s for s in records_of if s.group == group):
                rho = spearman(rule(s), s.test_ms)
                rhos.append(rho)
                sets += 1
                sets_below += bool(rho < s.member_floor - TIE)
            means[(space, group)] = float(np.nanmean(rhos)) if rhos else float("nan")
        meta = []
        for s in (s for s in records_of if s.group in REPORTED_GROUPS):
            rho = spearman(rule(s), s.test_ms)
            reported += 1
            if s.group == "meta-test":
                meta.append(rho)
            if rho < s.member_floor - TIE:
                reported_below.append(f"{space} {s.name} {rho:.3f} < {s.rho_member:.3f}")
        meta_test[space] = float(np.mean(meta)) if meta else float("nan")
    return RuleScore(means, sets_below, sets, reported_below, reported, meta_test)


def auc(positive: np.ndarray, negative: np.ndarray, lower_is_positive: bool) -> float:
    """Probability that a positive case's statistic is on the positive side of a negative one's (ties half)."""
    a, b = positive[:, None], negative[None, :]
    wins = (a < b) if lower_is_positive else (a > b)
    return float(np.mean(wins + 0.5 * (a == b)))


#: (label, statistic, whether a low value points to the member)
STATISTICS = [
    ("member's nested robust LOO error / the stack's", lambda s: s.nested_ratio, True),
    ("member's nested mean squared LOO error / the stack's", lambda s: s.nested_mean_ratio, True),
    ("member's LOO error / the stack's LOO error", lambda s: s.member_error / s.stack_error, True),
    ("member's nested LOO Spearman lead over the stack", lambda s: s.nested_spearman_lead, False),
]


def separability(records_of: list[SampleSet]) -> dict:
    """Over the calibration sets with a defined member rho: how often and by how much the member ranks
    better than the stack, and the AUC of each statistic of ``STATISTICS`` for telling when."""
    sets = [s for s in records_of if s.group in CALIBRATION_GROUPS and np.isfinite(s.rho_member)]
    better = np.array([s.rho_member > s.rho_stack + TIE for s in sets])
    gain = np.array([s.rho_member - s.rho_stack for s in sets])
    out = {"sets": len(sets), "member better": int(better.sum()),
           "gain when better": float(gain[better].mean()) if better.any() else float("nan"),
           "gain otherwise": float(gain[~better].mean()) if (~better).any() else float("nan"), "auc": {}}
    for label, statistic, low in STATISTICS:
        values = np.array([statistic(s) for s in sets])
        out["auc"][label] = auc(values[better], values[~better], low) if better.any() and (~better).any() else float("nan")
    return out


# --- report ----------------------------------------------------------------------------------
def report(records: dict[str, list[SampleSet]], command: str, seconds: dict[str, float]) -> str:
    """The results file: the rule table, the reported devices, the separability table."""
    spaces = list(records)
    scores = [(name, score_rule(rule, records)) for name, rule in RULES]
    current = scores[0][1]

    def count(space, groups):
        return sum(s.group in groups for s in records[space])

    sizes = "; ".join(f"{space}: " + ", ".join(f"{count(space, (g,))} {g}" for g in CALIBRATION_GROUPS)
                      for space in spaces)
    lines = ["# Rules that would keep the default predictor level with its best-ranked member", "",
             "Generated by `experiments/stack_rules.py`; sample sets collected in "
             + ", ".join(f"{seconds[space] / 60:.1f} min ({space})" for space in spaces)
             + f"; {machine_line()} at the end. Protocol, groups and rules: see the script's docstring.", "",
             f"    {command}", "",
             "*Member* = the candidate model the device's own samples rank best (lowest robust leave-one-out "
             "error), predicting alone. Per space, mean Spearman of each calibration group in the order "
             f"{', '.join(CALIBRATION_GROUPS)} (sample sets: {sizes}); *worst change* = the largest drop of one "
             f"group's mean against the current predictor; *sets below* = calibration sample sets whose rho is "
             f"under the member's by more than {TIE} (of "
             + " + ".join(str(count(space, CALIBRATION_GROUPS)) for space in spaces)
             + "); *reported below* = the same over the reported devices (HELP meta-test and held-out; of "
             + " + ".join(str(count(space, REPORTED_GROUPS)) for space in spaces)
             + "); *meta-test* = mean rho on the HELP meta-test devices (" + ", ".join(spaces) + ").", "",
             "| rule | " + " | ".join(spaces) + " | worst change | sets below | reported below | meta-test |",
             "|---|" + "---|" * len(spaces) + "---|---|---|---|"]
    for name, score in scores:
        drops = {key: score.means[key] - current.means[key] for key in score.means}
        worst = min(drops, key=drops.get)
        change = "—" if score is current else f"{drops[worst]:+.4f} ({worst[0]} {worst[1]})"
        lines.append(f"| {name} | "
                     + " | ".join(" ".join(f"{score.means[(space, g)]:.4f}" for g in CALIBRATION_GROUPS)
                                  for space in spaces)
                     + f" | {change} | {score.sets_below} | {len(score.reported_below)} | "
                     + " ".join(f"{score.meta_test[space]:.4f}" for space in spaces) + " |")
    lines += ["", "Reported devices below the member, per rule:", "", "| rule | devices (rule's rho < member's) |",
              "|---|---|"]
    for name, score in scores:
        lines.append(f"| {name} | {'; '.join(score.reported_below) or '—'} |")
    lines += ["", "Reported devices: the current predictor against the member (what the rules would close)", "",
              "| space | device | kind | current | member | which member |", "|---|---|---|---|---|---|"]
    for space in spaces:
        for s in records[space]:
            if s.group in REPORTED_GROUPS:
                lines.append(f"| {space} | {s.name} | {s.group} | {s.rho_stack:.3f} | {s.rho_member:.3f} | {s.member} |")
    lines += ["", "Separability on the calibration sample sets (member rho defined): *better* = sets where the "
              f"member ranks better than the current predictor by more than {TIE}; mean rho gain of the member "
              "there and on the other sets; AUC of each sample-only statistic for telling the two apart "
              "(0.5 = no better than chance)", "",
              "| space | sets | member better | gain when better | gain otherwise | "
              + " | ".join(f"AUC: {label}" for label, _, _ in STATISTICS) + " |",
              "|---|---|---|---|---|" + "---|" * len(STATISTICS)]
    for space in spaces:
        sep = separability(records[space])
        lines.append(f"| {space} | {sep['sets']} | {sep['member better']} | {sep['gain when better']:+.3f} | "
                     f"{sep['gain otherwise']:+.3f} | " + " | ".join(f"{sep['auc'][label]:.3f}"
                                                                     for label, _, _ in STATISTICS) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=SPACES)
    parser.add_argument("--draws", type=int, default=10, help="random 10-sample sets per calibration device")
    parser.add_argument("--seed", type=int, default=123, help="seed of the random sample sets")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for each space's sample-set records (read when present; delete them after "
                             "changing the predictor)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.draws < 0:
        parser.error(f"--draws must be 0 or more, got {args.draws}")

    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    records, seconds = {}, {}
    for space in args.spaces:
        path = args.cache / f"{space}-draws{args.draws}-seed{args.seed}.pkl" if args.cache else None
        if path is not None and path.is_file():
            with path.open("rb") as handle:
                seconds[space], records[space] = pickle.load(handle)
            log(f"{space}: read {len(records[space])} sample sets from {path}")
            continue
        started = time.perf_counter()
        records[space] = collect(space, args.draws, args.seed, log)
        seconds[space] = time.perf_counter() - started
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as handle:
                pickle.dump((seconds[space], records[space]), handle)
    command = "OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python experiments/stack_rules.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    text = report(records, command.strip(), seconds)
    print(text)
    write_keeping_reading(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
