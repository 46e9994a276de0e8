"""The constrained-search pipeline behind ``nas search``: one function,
:func:`search_under_budget`, that a Python user calls exactly as the CLI does.

1. adapt the default latency predictor on the device's 10 reference
   architectures (measured, replayed, or read from a measurements CSV);
2. let a strategy maximise accuracy subject to the predicted interval's
   upper bound <= budget;
3. when the device can be measured, verify candidates on it
   (:mod:`nas.search.verification`) and return the most accurate one whose
   measured latency meets the budget; otherwise return the prediction with
   its interval.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nas import package_versions
from nas.budget import parse_latency_ms
from nas.devices import Device, resolve_device
from nas.errors import DeviceUnavailableError, UserInputError
from nas.search.accuracy import get_accuracy_estimator
from nas.search.base import Candidate, SearchProblem
from nas.search.calibration import CalibratedPredictor
from nas.search.verification import VerifiedCandidate, verify
from nas.search_space import get_space

#: statuses of a :class:`SearchOutcome`
VERIFIED, OVER_BUDGET, PREDICTED, NO_CANDIDATE = "verified", "over_budget", "predicted", "no_candidate"


@dataclass
class SearchOutcome:
    """What ``nas search`` found. Latencies in milliseconds, accuracy in percent.

    ``status``: ``verified`` (measured on the device and meets the budget),
    ``over_budget`` (measured candidates all broke it; ``arch`` is None and
    ``fastest`` says the fastest measured), ``predicted`` (device not
    measurable: predicted, with its interval), ``no_candidate`` (nothing is
    predicted to meet the budget).
    """

    space: str
    device: str
    budget_ms: float
    dataset: str | None
    strategy: str
    seed: int
    status: str
    arch: str | None
    accuracy: float | None
    predicted_latency_ms: float | None
    predicted_interval_ms: tuple[float, float] | None
    coverage: float
    measured_latency_ms: float | None
    device_samples: int
    samples_reused: int
    reference_source: str
    accuracy_source: str
    verification: list[dict[str, Any]] = field(default_factory=list)
    fastest: dict[str, Any] | None = None
    num_evaluations: int = 0
    wall_s: float = 0.0
    model: Any = None  # a trained torch.nn.Module when the strategy trained one
    num_classes: int | None = None
    measurable: bool = True  # whether the device could be measured in this run
    unverified_reason: str = ""  # why a found architecture was not measured, when it was not
    strategy_info: dict[str, Any] = field(default_factory=dict)  # e.g. test_accuracy of a trained model
    strategy_samples: int = 0  # device measurements the strategy itself asked for (e.g. latency-table anchors)
    searched: str = ""  # which architectures the strategy could pick from, when not the whole space
    reference_sample: bool = False  # the result is one of the samples measured to adapt the predictor
    samples_device: str | None = None  # the device the reference samples were measured on
    warnings: list[str] = field(default_factory=list)  # what a user must know before trusting the result

    @property
    def weights(self) -> str:
        return "trained by the search strategy" if self.model is not None else \
            f"freshly initialised (seed {self.seed}), not trained"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready record (``result.json``, ``--json``)."""
        from nas.profilers.base import LATENCY_STATISTIC

        return {
            "space": self.space, "device": self.device, "budget_ms": self.budget_ms, "status": self.status,
            "arch": self.arch, "accuracy": self.accuracy, "dataset": self.dataset,
            "accuracy_source": self.accuracy_source,
            "predicted_latency_ms": self.predicted_latency_ms,
            "predicted_interval_ms": list(self.predicted_interval_ms) if self.predicted_interval_ms else None,
            "interval_coverage": self.coverage,
            "measured_latency_ms": self.measured_latency_ms,
            # what a measured latency is (a replayed device's is its recorded table value)
            "measured_latency_statistic": LATENCY_STATISTIC,
            "device_samples": self.device_samples, "device_samples_reused": self.samples_reused,
            "strategy_samples": self.strategy_samples,
            "reference_source": self.reference_source,
            "verification": self.verification, "fastest_measured": self.fastest,
            "strategy": self.strategy, "seed": self.seed, "num_evaluations": self.num_evaluations,
            "weights": self.weights, "wall_s": round(self.wall_s, 3), "versions": package_versions(),
            # measured on the held-out test split when the strategy trained the returned network
            "test_accuracy": self.strategy_info.get("test_accuracy") if self.model is not None else None,
            "num_classes": self.num_classes,
            "searched": self.searched or f"the whole {self.space} space",
            "found_by": "reference_sample" if self.reference_sample else ("search" if self.arch else None),
            "reference_samples_device": self.samples_device,
            "verification_device": self.device if self.verification or self.status == OVER_BUDGET else None,
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        """A few readable lines: what was found and how far to trust it."""
        lines = [f"search: {self.space} on {self.device}, budget {self.budget_ms:g} ms, "
                 f"strategy {self.strategy}, seed {self.seed}"]
        if self.searched:
            lines.append(f"searched: {self.searched}")
        if self.status in (VERIFIED, PREDICTED):
            lines.append(f"architecture: {self.arch}")
            lines.append(f"accuracy: {self.accuracy:.2f}% ({self.accuracy_source})")
            if self.model is not None and self.strategy_info.get("test_accuracy") is not None:
                lines.append(f"test accuracy of the retrained network: {self.strategy_info['test_accuracy']:.2f}%")
            low, high = self.predicted_interval_ms
            lines.append(f"predicted latency: {self.predicted_latency_ms:.2f} ms "
                         f"({self.coverage:.0%} interval {low:.2f}-{high:.2f} ms)")
        if self.status == VERIFIED:
            lines.append(f"measured latency: {self.measured_latency_ms:.2f} ms on {self.device} "
                         f"-- meets the {self.budget_ms:g} ms budget")
            if self.predicted_interval_ms[1] > self.budget_ms:
                lines.append("  (its predicted interval crosses the budget: it was measured because it was likely "
                             "enough to meet it, and the measurement decides)")
            if self.reference_sample:
                lines.append(f"note: this is one of the reference samples measured on "
                             f"{self.samples_device or self.device} before the search to adapt the predictor, "
                             f"not an architecture the strategy found: {self._why_reference()}")
        elif self.status == PREDICTED:
            why = self.unverified_reason or ("--verify 0" if self.measurable
                                             else f"{self.device} cannot be measured from here")
            lines.append(f"measured latency: not measured ({why}); the latency above is a PREDICTION")
        elif self.status == OVER_BUDGET:
            fastest = self.fastest
            lines.append(f"no measured architecture meets the {self.budget_ms:g} ms budget on {self.device}")
            if fastest:
                lines.append(f"fastest measured: {fastest['arch']} at {fastest['measured_latency_ms']:.2f} ms "
                             f"(accuracy {fastest['accuracy']:.2f}%); try a budget of at least that, or more --verify")
        else:
            lines.append(f"no architecture is predicted to meet the {self.budget_ms:g} ms budget; "
                         f"the fastest predicted is {self.fastest['arch']} at "
                         f"{self.fastest['predicted_latency_ms']:.2f} ms")
        for number, v in enumerate(self.verification, start=1):
            if v["meets_budget"]:
                verdict = "meets budget"
            elif v["measured_latency_ms"] <= self.budget_ms:  # only its spread crosses the budget
                verdict = f"too close to call (spread {v['spread_ms']:.2f} ms)"
            else:
                verdict = "over budget"
            lines.append(f"  verification {number}: {v['measured_latency_ms']:.2f} ms measured "
                         f"(predicted {v['predicted_latency_ms']:.2f}), accuracy {v['accuracy']:.2f}%, "
                         f"{verdict}  {v['arch']}")
        reused = f", {self.samples_reused} reused from the measurement store" if self.samples_reused else ""
        by_strategy = f" + {self.strategy_samples} by the strategy" if self.strategy_samples else ""
        lines.append(f"target-device measurements: {self.device_samples} ({self.reference_source} reference "
                     f"samples{by_strategy} + {len(self.verification)} verification{reused})")
        if self.samples_device and self.samples_device != self.device:
            where = f"; verification on {self.device}" if self.verification else ""
            lines.append(f"reference samples: from {self.samples_device}{where}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _why_reference(self) -> str:
        if not self.verification:
            return "no candidate of the search was measured, and none predicted to meet the budget is more accurate"
        if not any(v["meets_budget"] for v in self.verification):
            return (f"every verified candidate of the search ({len(self.verification)}) was over budget, so the "
                    f"result falls back to the most accurate reference sample that meets it")
        return "it is more accurate than every verified candidate that meets the budget"

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``model.onnx`` (when an architecture was found), ``result.json`` and ``summary.txt``."""
        from nas.export import export_arch

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        summary = self.summary()
        if self.arch is not None:
            model = self.model
            if model is None:
                import torch

                torch.manual_seed(self.seed)
                search_space = get_space(self.space)
                model = search_space.build(search_space.from_string(self.arch), num_classes=self.num_classes)
            paths["model"] = export_arch(self.space, self.arch, out / "model.onnx", model=model)
            summary += f"\nmodel.onnx: weights {self.weights}"
        else:
            summary += "\nmodel.onnx: not written (no architecture met the budget)"
        paths["result"] = out / "result.json"
        paths["result"].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        paths["summary"] = out / "summary.txt"
        paths["summary"].write_text(summary + "\n")
        return paths


def ways_forward(device: Device, space: str, reason: str) -> str:
    """The message for a device that cannot be measured: why, and what to do instead."""
    return (f"device {device.name!r} cannot be measured right now ({reason}). Ways forward:\n"
            f"  - connect it (for a phone: USB debugging on, visible in 'adb devices') and run again;\n"
            f"  - measure the 10 reference architectures on it ('nas predictor reference-archs --space {space}') "
            f"and pass them with --measurements m.csv (header arch,latency_ms); the result is then a prediction;\n"
            f"  - pick a catalog device that can be measured or replayed ('nas devices list'), e.g. pixel2 or local-cpu")


class ProgressLines:
    """Progress of one phase on stderr when stderr is not a terminal (a log file, CI):
    a plain line every ``every`` items or ``interval_s`` seconds, with elapsed time and ETA."""

    def __init__(self, total: int | None, desc: str, stream=None, every: int | None = None,
                 interval_s: float = 30.0, unit: str = "architectures"):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.every = every or (max(1, total // 10) if total else 50)
        self.interval_s = interval_s
        self.count = self._last_count = 0
        self.started = self._last_time = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.perf_counter()
        if self.count - self._last_count >= self.every or now - self._last_time >= self.interval_s:
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.started
        done = f"{self.count}/{self.total}" if self.total else f"{self.count}"
        eta = ""
        if self.total and 0 < self.count < self.total:
            eta = f", ETA {_duration(elapsed / self.count * (self.total - self.count))}"
        print(f"{self.desc}: {done} {self.unit}, {_duration(elapsed)} elapsed{eta}", file=self.stream, flush=True)
        self._last_count, self._last_time = self.count, now

    def __enter__(self) -> "ProgressLines":
        return self

    def __exit__(self, *exc) -> None:
        if self.count != self._last_count:
            self._line(time.perf_counter())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _progress_bar(total: int | None, desc: str, enabled: bool):
    """A tqdm bar on a terminal, :class:`ProgressLines` otherwise, nothing when not ``enabled``."""
    if not enabled:
        return _Silent()
    if not sys.stderr.isatty():
        return ProgressLines(total, desc)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="arch", file=sys.stderr, leave=False, mininterval=0.5)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def chance_level_warning(accuracy_percent: float | None, num_classes: int | None, what: str) -> str | None:
    """A warning when ``accuracy_percent`` is near chance for ``num_classes`` classes
    (within a tenth of the way from chance to 100%), else None."""
    if accuracy_percent is None or not num_classes or num_classes < 2:
        return None
    chance = 100.0 / num_classes
    if accuracy_percent > chance + 0.1 * (100.0 - chance):
        return None
    return (f"{what} {accuracy_percent:.1f}% is near chance ({chance:.1f}% for {num_classes} classes): the "
            f"network has not learned the task; train it longer (more --epochs / --retrain-epochs) "
            f"before using it")


def measurements_device(path: str | os.PathLike) -> str | None:
    """The device a measurements CSV names in its ``device`` column (as ``nas profile --out`` writes
    it), None when it has no such column; refuses a file naming several devices."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if "device" not in (reader.fieldnames or []):
                return None
            names = {(row.get("device") or "").strip() for row in reader} - {""}
    except (OSError, UnicodeDecodeError, csv.Error):
        return None  # the measurements reader gives the error that explains it
    if len(names) > 1:
        raise UserInputError(f"{path}: its device column names several devices ({', '.join(sorted(names))}); "
                             f"the reference samples must come from one device")
    return names.pop() if names else None


def search_under_budget(space: str, device: str | Device, latency: str | float, *, dataset: str | None = None,
                        strategy: str | None = None, strategy_options: Mapping[str, Any] | None = None,
                        seed: int = 0, verify_max: int = 10, measurements: str | os.PathLike | Mapping[str, float] | None = None,
                        store: Any = None, coverage: float = 0.9, predictor: Any = None,
                        progress: bool = False, out: str | os.PathLike | None = None,
                        on_measure=None, data_dir: str | os.PathLike | None = None) -> SearchOutcome:
    """Find the most accurate architecture of ``space`` whose latency on ``device`` meets ``latency``.

    ``latency`` is a budget like ``"14ms"`` (see :func:`nas.budget.parse_latency_ms`).
    ``measurements`` (CSV path or ``{arch string: ms}``) replaces measuring
    the reference architectures; ``verify_max`` caps verification
    measurements; ``store`` is the measurement store (see
    :func:`nas.profilers.measure`); ``predictor`` an unadapted latency
    predictor (default: the shipped default predictor). ``out`` writes
    model/result/summary there. ``on_measure`` is called with each
    verification measurement as it is taken. ``data_dir`` is passed to an accuracy
    estimator that reads data (``fbnet``'s supernet with ``dataset="cifar10"``). Raises :class:`UserInputError` for bad input
    and :class:`DeviceUnavailableError` when nothing can be measured or read.
    """
    from nas import predictors
    from nas.search import default_strategy, get_strategy

    started = time.perf_counter()
    budget_ms = parse_latency_ms(latency)
    if out is not None:
        from nas.outputs import check_output_dir

        check_output_dir(out)  # before the work: a long search must not end in an unwritable folder
    search_space = get_space(space)
    # data_dir is where a named dataset lives: without --dataset it is the strategy's (proxyless --data)
    accuracy_options = {k: v for k, v in (("dataset", dataset), ("data_dir", data_dir if dataset else None))
                        if v is not None}
    accuracy = get_accuracy_estimator(space, **accuracy_options)
    if not (isinstance(verify_max, int) and verify_max >= 0):
        raise UserInputError(f"--verify must be a whole number >= 0, got {verify_max!r}")
    if not 0 < coverage < 1:
        raise UserInputError(f"coverage must be between 0 and 1, got {coverage!r}")
    options = dict(strategy_options or {})
    strategy = strategy or default_strategy(space)
    if accuracy.default_evaluations and "num_evaluations" not in options \
            and (_default_evaluations(strategy) or 0) > accuracy.default_evaluations:
        options["num_evaluations"] = accuracy.default_evaluations  # a costly estimator: a count that finishes
    searcher = get_strategy(strategy, seed=seed, **options)
    if isinstance(store, (str, os.PathLike)):  # a bad --store is reported before any work
        from nas.profilers.store import open_store

        store = open_store(store)
    # a device outside the catalog can be searched for on measurements made elsewhere
    device = resolve_device(device, unlisted_ok=measurements is not None) if isinstance(device, str) else device
    if device.spaces and space not in device.spaces:
        raise UserInputError(f"device {device.name!r} has data only for {', '.join(device.spaces)}, "
                             f"not space {space!r}")

    unmeasurable = _why_not_measurable(device)
    sample_spreads: dict[str, float] = {}  # ms, of measured device samples
    samples_reused = 0
    device_samples = 0

    def measure_on_device(archs) -> list:
        nonlocal device_samples, samples_reused
        from nas.profilers import measure

        # the profiler reports each finished group; replayed devices answer at once
        records = measure(device, space, archs, store=store, progress=progress and device.profiler_kind != "replay")
        device_samples += len(records)
        samples_reused += sum(r.source == "stored" for r in records)
        return records

    if measurements is not None:
        if isinstance(measurements, Mapping):
            samples = {search_space.to_string(search_space.from_string(a)): float(v) for a, v in measurements.items()}
        else:
            samples = predictors.measurements.read_measurements_csv(measurements, space)
        reference_source = f"{len(samples)} given"
        device_samples = len(samples)
        samples_device = None if isinstance(measurements, Mapping) else measurements_device(measurements)
        will_verify = unmeasurable is None and verify_max > 0
        if samples_device is not None and samples_device != device.name:
            raise UserInputError(
                f"--measurements {measurements} holds measurements of {samples_device} (its device column), "
                f"but --device is {device.name}: the predictor would be adapted on one device and the result "
                f"{'verified on' if will_verify else 'predicted for'} another. Use --device {samples_device}, or "
                f"leave out --measurements so {device.name}'s reference samples are "
                f"{'measured' if unmeasurable is None else 'given for it'}")
        if samples_device is None and will_verify and progress:
            _say(f"note: --measurements does not say which device it was measured on; it is taken to be "
                 f"{device.name}, where the candidates are verified (give --device the device it came from, or "
                 f"add a device column as 'nas profile --out' writes)")
        samples_device = samples_device or f"{device.name} (assumed: not stated in the measurements)"
        if not device.listed:
            _store_given(device, space, samples, store)
    elif unmeasurable:
        raise unmeasurable if isinstance(unmeasurable, DeviceUnavailableError) else \
            DeviceUnavailableError(ways_forward(device, space, str(unmeasurable)))
    else:
        references = predictors.reference_archs(space)
        with _progress_bar(len(references), f"measuring references on {device.name}", progress) as bar:
            records = measure_on_device(references)
            bar.update(len(references))
        samples = {search_space.to_string(a): r.latency_ms for a, r in zip(references, records)}
        sample_spreads = {search_space.to_string(a): r.spread_ms for a, r in zip(references, records)}
        reference_source = f"{len(samples)} {'replayed' if device.profiler_kind == 'replay' else 'measured'}"
        samples_device = device.name

    # a replayed device verifies only what its table holds: in a space too big to list, search those
    searched, domain = "", None
    recorded = getattr(search_space, "measured_archs", None)
    if device.profiler_kind == "replay" and unmeasurable is None and getattr(search_space, "all_archs", None) is None \
            and recorded is not None and not searcher.needs_data:  # a strategy that trains derives its own
        domain = list(recorded())
        searched = (f"the {len(domain):,} {space} architectures recorded for {device.name} (a replayed device "
                    f"can verify only those)")
        if progress:
            _say(f"{device.name} replays recorded latencies: searching {searched[4:]}")
    if progress and not searcher.needs_data:  # a strategy that trains a network scores with it
        announced = accuracy.announce()
        if announced:
            _say(announced)
        if not accuracy.cheap:
            total = options.get("num_evaluations", _default_evaluations(strategy))
            _say(f"strategy {strategy} scores {f'up to {total} ' if total else ''}architectures, each with "
                 f"{accuracy.description}; progress lines with an ETA follow (--evaluations N to change)")
        accuracy.report = _say

    base = predictor if predictor is not None else predictors.load_default_predictor(space)
    calibrated = CalibratedPredictor(base).adapt(samples)
    # for strategies that time architectures of their own choosing (a replayed device knows only its table's)
    device_measure = None if unmeasurable or device.profiler_kind == "replay" else (
        lambda archs: [r.latency_ms for r in measure_on_device(archs)])
    problem = SearchProblem(space, budget_ms, accuracy, calibrated, coverage=coverage, dataset=dataset,
                            samples=samples, measure=device_measure, archs=domain, device=device.name)
    before_search = device_samples
    with _progress_bar(getattr(searcher, "num_evaluations", None), f"searching ({strategy})", progress) as bar:
        result = searcher.search(problem, progress=bar.update)
    strategy_samples = device_samples - before_search
    pool = list(result.candidates)
    if result.model is None:
        # the device samples are candidates too: one that meets the budget is verified for free;
        # a strategy that trained its own network keeps to its candidates, whose weights it returns
        sample_archs = [search_space.from_string(a) for a in samples]
        pool += problem.evaluate([a for a in sample_archs if problem.nearest(a) == a])
        if not unmeasurable and verify_max > 0 and problem.all_archs() is not None and domain is None \
                and accuracy.cheap:
            pool += neighbourhood(problem, pool, calibrated)  # cheap where the whole space is scored

    common = dict(space=space, device=device.name, budget_ms=budget_ms, dataset=dataset, strategy=strategy,
                  seed=seed, coverage=coverage, reference_source=reference_source,
                  accuracy_source=accuracy.description or type(accuracy).__name__,
                  num_evaluations=problem.num_evaluations, model=None, num_classes=accuracy.num_classes,
                  measurable=unmeasurable is None, searched=searched, samples_device=samples_device)
    if not device.listed:
        common["unverified_reason"] = (f"{device.name} is not in the catalog, so nothing can be verified; "
                                       f"'nas devices add {device.name} --profiler KIND' makes it measurable")

    def finish(outcome: SearchOutcome) -> SearchOutcome:
        outcome.device_samples = device_samples
        outcome.strategy_samples = strategy_samples
        if outcome.arch is not None and result.model is not None and result.best is not None \
                and search_space.to_string(result.best.arch) == outcome.arch:
            outcome.model = result.model  # the strategy's trained network: ranked by its retrained accuracy
            outcome.strategy_info = dict(result.info)
            if result.info.get("val_accuracy") == outcome.accuracy:
                outcome.accuracy_source = "validation accuracy of the network the strategy retrained"
        outcome.samples_reused = samples_reused
        outcome.reference_sample = outcome.arch is not None and outcome.arch in samples
        if outcome.model is not None:
            warning = chance_level_warning(outcome.strategy_info.get("test_accuracy"), outcome.num_classes,
                                           "the retrained network's test accuracy")
            if warning:
                outcome.warnings.append(warning)
        if progress:
            for warning in outcome.warnings:
                _say(f"warning: {warning}")
        outcome.wall_s = time.perf_counter() - started
        if out is not None:
            outcome.write(out)
        return outcome

    checkable = [] if unmeasurable else [c for c in pool if _can_measure(device, search_space, c.arch)]
    if unmeasurable or verify_max == 0 or not checkable:
        if not (unmeasurable or verify_max == 0):
            common["unverified_reason"] = (f"{device.name} replays recorded latencies and its table has none "
                                           f"of the candidates")
        safe = [c for c in pool if c.safe_under(budget_ms)]
        best = max(safe, key=lambda c: (c.accuracy, -c.high_ms), default=None)
        if best is None:
            fastest = min(pool, key=lambda c: c.predicted_ms)
            return finish(SearchOutcome(**common, status=NO_CANDIDATE, arch=None, accuracy=None,
                                        predicted_latency_ms=None, predicted_interval_ms=None,
                                        measured_latency_ms=None, device_samples=0, samples_reused=0,
                                        fastest=_candidate_dict(search_space, fastest)))
        measured_ms = samples.get(search_space.to_string(best.arch))
        spread_ms = sample_spreads.get(search_space.to_string(best.arch), 0.0)
        return finish(_found(common, search_space, best, measured_ms, VERIFIED if measured_ms is not None
                             and measured_ms + spread_ms <= budget_ms else PREDICTED))

    with _progress_bar(verify_max, f"verifying on {device.name}", progress) as bar:
        def note(verified: VerifiedCandidate) -> None:
            bar.update(1)
            if on_measure:
                on_measure(verified)
        relative = [sample_spreads[a] / v for a, v in samples.items() if a in sample_spreads and v > 0]
        report = verify(checkable, budget_ms, calibrated,
                        measure_on_device,
                        max_measurements=verify_max, coverage=coverage, on_measure=note,
                        sample_spreads=sample_spreads,
                        relative_spread=float(np.median(relative)) if relative else 0.0)
    trail = [dict(_candidate_dict(search_space, v.candidate), measured_latency_ms=v.measured_ms,
                  spread_ms=v.spread_ms, meets_budget=v.meets(budget_ms)) for v in report.measured]
    chosen = report.best
    if chosen is None:
        fastest = report.fastest
        return finish(SearchOutcome(**common, status=OVER_BUDGET, arch=None, accuracy=None,
                                    predicted_latency_ms=None, predicted_interval_ms=None, measured_latency_ms=None,
                                    device_samples=0, samples_reused=0, verification=trail,
                                    fastest=None if fastest is None else dict(
                                        _candidate_dict(search_space, fastest.candidate),
                                        measured_latency_ms=fastest.measured_ms)))
    outcome = _found(common, search_space, chosen.candidate, chosen.measured_ms, VERIFIED)
    outcome.verification = trail
    return finish(outcome)


def neighbourhood(problem: SearchProblem, candidates: list[Candidate], predictor: CalibratedPredictor,
                  top: int = 200, min_probability: float = 0.01) -> list[Candidate]:
    """Every one-operation change of the ``top`` most accurate candidates that
    might meet the budget (P >= ``min_probability``), scored.

    Strategies aim at the predicted-safe side of the budget; the most accurate
    architecture that truly meets it often sits just across, next to what
    they found, which is where verification looks.
    """
    space = problem.search_space
    unique = list({c.arch: c for c in candidates}.values())
    if not unique:
        return []
    chance = predictor.probability_within([c.arch for c in unique], problem.budget_ms)
    promising = sorted((c for c, p in zip(unique, chance) if p >= min_probability), key=lambda c: -c.accuracy)[:top]
    known = {c.arch for c in unique}
    fresh = {}
    for candidate in promising:
        for position, ops in enumerate(space.choices):
            for op in ops:
                arch = candidate.arch[:position] + (op,) + candidate.arch[position + 1:]
                if arch not in known:
                    fresh[arch] = None
    return problem.evaluate(list(fresh))


def _found(common: dict, search_space, candidate: Candidate, measured_ms: float | None, status: str) -> SearchOutcome:
    return SearchOutcome(**common, status=status, arch=search_space.to_string(candidate.arch),
                         accuracy=candidate.accuracy, predicted_latency_ms=candidate.predicted_ms,
                         predicted_interval_ms=(candidate.low_ms, candidate.high_ms),
                         measured_latency_ms=measured_ms, device_samples=0, samples_reused=0)


def _default_evaluations(strategy: str) -> int | None:
    """The ``num_evaluations`` default of a strategy's constructor (None when it has none)."""
    import inspect

    from nas.search import strategy_class

    parameter = inspect.signature(strategy_class(strategy)).parameters.get("num_evaluations")
    default = None if parameter is None else parameter.default
    return default if isinstance(default, int) else None


def _candidate_dict(search_space, candidate: Candidate) -> dict[str, Any]:
    return {"arch": search_space.to_string(candidate.arch), "accuracy": candidate.accuracy,
            "predicted_latency_ms": candidate.predicted_ms, "predicted_high_ms": candidate.high_ms}


def _can_measure(device: Device, search_space, arch) -> bool:
    """Replayed devices know only the architectures their table recorded."""
    if device.profiler_kind != "replay":
        return True
    try:
        search_space.index_of(arch)
    except KeyError:
        return False
    return True


def _why_not_measurable(device: Device) -> UserInputError | None:
    """None when ``device`` can be measured (or replayed) now, else the error saying why.

    A :class:`DeviceUnavailableError` from the profiler already lists how to
    reach the device, so it is passed on as it is.
    """
    try:
        from nas.profilers import make_profiler

        make_profiler(device).check_available()
    except UserInputError as error:
        return error
    return None


def _store_given(device: Device, space: str, samples: Mapping[str, float], store: Any) -> None:
    """Keep measurements given for a device outside the catalog in the store, under its name."""
    from nas.profilers.protocol import _open_store

    opened = _open_store(store)
    if opened is not None:
        opened.put_latencies(device, {}, space, dict(samples), source="imported")
