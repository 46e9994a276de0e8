"""Latency-budgeted search for a hybrid small language model (after
Nemotron-Flash): ``nas search --space slm``.

1. The device's reference architectures are measured (decode ms/token after
   a prompt of ``context`` tokens) and the latency predictor is adapted on them.
2. Aging evolution over *layouts*: tournament selection, each child one
   mutation of the space (an operator of a block type, the mixer ratio, the
   FFN count, or the blocks per stage). The first members are the seed
   layouts (:data:`SEED_LAYOUTS`: the paper's released pattern and
   Mamba2-led hybrids), then random layouts until the population is full;
   every one is shrunk until a width is predicted to meet the budget.
   Width is not a gene: each layout gets
   the widest width on the ladder whose predicted ms/token plus the spread
   its measurement is expected to have (the references' median spread, as a
   share of their latency) meets the budget, so candidates compete on loss
   alone, each at the width a finalist's measurement (median plus spread)
   most likely leaves it.
3. Each candidate is trained for the same token budget and scored by
   validation bits per byte (:mod:`nas.slm.training`).
4. Finalists (lowest loss first) are measured on the device and moved along
   the width ladder by their *measured* latency: up while the next width's
   median plus spread still meets the budget, down while theirs does not.
   A finalist whose width moved is retrained at it (same seed, same tokens).
   The result is the lowest-loss finalist so sized, never one measured over
   the budget. Its test bits per byte and associative-recall
   accuracy are reported, and ``out`` gets its decode and prefill ONNX graphs
   with the trained weights.

Every trained candidate is recorded in the work folder as it finishes
(``candidates.jsonl`` plus the weights of the best few), so ``resume=True``
replays the same evolution without training anything twice.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from nas import package_versions
from nas.budget import parse_latency_ms
from nas.devices import Device, get_device
from nas.errors import UserInputError
from nas.search_space import get_space
from nas.slm import latency as decode_latency
from nas.slm.corpus import load_corpus
from nas.slm.recall import RecallTask, recall_accuracy
from nas.slm.training import TrainingConfig, bits_per_byte, train_language_model

SPACE = "slm"
#: bytes of the continuation prompt shown in ``summary.txt`` (its end)
PROMPT_SHOWN = 240
#: the evolution's first members, before random layouts (:attr:`SlmSearchConfig.seed_layouts`)
SEED_LAYOUTS = (
    # the paper's released 1B layout, D F M2 F | A F M2 F | ..., shortened (the space's default architecture)
    "D F M2 F | A F M2 F | D F M2 F",
    # Mamba2-majority hybrids led by a Mamba2 stage, attention or DeltaNet once in the middle stage. After the
    # search's short training runs the first mixer decides most: at width 96 (40,960 bytes) the paper's
    # D-first layout scored 3.93 bits/byte, pure Mamba2 3.49 and the first of these 3.41
    # (experiments/results/slm_mixer_placement.md); a uniform sample starts with Mamba2 once in five draws
    "M2 F M2 F M2 F M2 F | A F M2 F M2 F M2 F | -",
    "M2 F M2 F M2 F M2 F | D F M2 F M2 F M2 F | -",
    # attention or DeltaNet twice in the middle stage (1:1): at width 224 they scored 2.940 and 2.927
    # bits/byte against 2.951 and 2.953 with one, 2.953 for pure Mamba2 (same training run, seed 0)
    "M2 F M2 F M2 F M2 F | A F M2 F A F M2 F | -",
    "M2 F M2 F M2 F M2 F | D F M2 F D F M2 F | -",
)


@dataclass(frozen=True)
class SlmSearchConfig:
    """Sizes of one search. The defaults finish in minutes on 2 CPU cores."""

    num_candidates: int = 10
    #: room for every seed layout and one random layout before the first child
    population_size: int = 6
    tournament_size: int = 2
    finalists: int = 2
    #: at most this many device measurements of finalists
    verify: int = 10
    #: decode latency is measured after a prompt of this many tokens
    context: int = 512
    training: TrainingConfig = TrainingConfig()
    recall: RecallTask = RecallTask()
    #: bytes of the test split scored for the result's test bits per byte (windows spread over the split)
    test_bytes: int = 65_536
    seed: int = 0
    #: layouts (canonical strings without width) that fill the evolution's population first, in order,
    #: before random ones; each is shrunk like a random one until a width is predicted to meet the budget.
    #: Empty: a population of random layouts only
    seed_layouts: tuple[str, ...] = SEED_LAYOUTS

    def __post_init__(self):
        for name in ("num_candidates", "population_size", "tournament_size", "finalists", "verify"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"option {name}={value!r} is invalid; allowed: a whole number >= 1")
        check_context(self.context)
        if self.tournament_size > self.population_size:
            raise UserInputError(f"option tournament_size={self.tournament_size} is invalid; allowed: "
                                 f"1 to population_size ({self.population_size})")
        for text in self.seed_layouts:
            try:
                parse_layout(text)
            except ValueError as error:
                raise UserInputError(f"seed layout {text!r} is invalid: {error}") from None

    def seeds(self) -> list:
        """:attr:`seed_layouts` as layouts of the space (at the narrowest width)."""
        return [parse_layout(text) for text in self.seed_layouts]

    def fingerprint(self) -> str:
        """What a trained candidate's loss depends on besides its layout and width."""
        corpus = load_corpus().manifest["splits"]["train"]["sha256"]
        key = json.dumps({"training": asdict(self.training), "corpus": corpus}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def build(arch: str) -> torch.nn.Module:
    """A freshly initialised model of the canonical string ``arch``."""
    space = get_space(SPACE)
    return space.build(space.from_string(arch))


def parse_layout(text: str) -> tuple:
    """A layout typed by a user (``D F M2 F | A F M2 F | -``, a trailing
    ``@width`` allowed and ignored: the budget picks the width)."""
    space = get_space(SPACE)
    layout = text.rpartition("@")[0] if "@" in text else text
    return space.from_string(f"{layout.strip()} @{space.widths[0]}")


def check_context(context: Any) -> int:
    """``context`` as a positive whole number of tokens, else a :class:`UserInputError`."""
    try:
        value = int(str(context).strip())
    except ValueError:
        value = None
    if value is None or value < 1 or str(value) != str(context).strip():
        raise UserInputError(f"context length {context!r} is not a positive whole number of tokens; "
                             f"give one like --context 512")
    return value


@dataclass
class CandidateRecord:
    """One layout trained at its chosen width. Latencies in ms/token, losses in bits per byte."""

    layout: str
    arch: str | None  # layout at its width; None when no width meets the budget
    width: int | None
    predicted_ms: float | None
    low_ms: float | None
    high_ms: float | None
    val_bpb: float | None = None
    train_wall_s: float = 0.0
    weights: str | None = None  # file name in the work folder, while kept

    @property
    def feasible(self) -> bool:
        return self.arch is not None

    def fitness(self) -> float:
        return -self.val_bpb if self.feasible and self.val_bpb is not None else -math.inf


@dataclass
class SlmSearchOutcome:
    """What the search found; ``status`` ``verified`` or ``over_budget``."""

    device: str
    budget_ms: float
    context: int
    status: str
    arch: str | None
    layout: str | None
    width: int | None
    val_bpb: float | None
    test_bpb: float | None
    recall_accuracy: float | None
    predicted_ms: float | None
    predicted_interval_ms: tuple[float, float] | None
    measured_ms: float | None
    measured_spread_ms: float | None
    candidates: list[CandidateRecord]
    finalists: list[dict[str, Any]]
    device_measurements: list[dict[str, Any]]
    reference_source: str
    training: dict[str, Any]
    recall_task: dict[str, Any]
    seed: int
    wall_s: float = 0.0
    resumed_candidates: int = 0
    latency_predictor: str = ""
    model: Any = None
    continuation: str | None = None
    prompt_tail: str | None = None
    #: the layouts the evolution started from (none when the layouts were given)
    seed_layouts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": SPACE, "device": self.device, "budget_ms": self.budget_ms, "context": self.context,
            "status": self.status, "arch": self.arch, "layout": self.layout, "width": self.width,
            "val_bpb": self.val_bpb, "test_bpb": self.test_bpb, "recall_accuracy": self.recall_accuracy,
            "predicted_ms_per_token": self.predicted_ms,
            "predicted_interval_ms": list(self.predicted_interval_ms) if self.predicted_interval_ms else None,
            "measured_ms_per_token": self.measured_ms, "measured_spread_ms": self.measured_spread_ms,
            "finalists": self.finalists,
            "device_measurements": self.device_measurements,
            "device_measurement_count": len(self.device_measurements),
            "reference_source": self.reference_source, "latency_predictor": self.latency_predictor,
            "candidates": [asdict(c) for c in self.candidates],
            "trained_candidates": sum(c.val_bpb is not None for c in self.candidates),
            "resumed_candidates": self.resumed_candidates,
            "training": self.training, "recall_task": self.recall_task, "seed": self.seed,
            "seed_layouts": list(self.seed_layouts),
            "continuation_prompt": f"the first {self.context} bytes of the corpus's test split",
            "continuation": self.continuation,
            "wall_s": round(self.wall_s, 2), "versions": package_versions(),
        }

    def summary(self) -> str:
        lines = [f"search: slm on {self.device}, budget {self.budget_ms:g} ms/token (decode after "
                 f"{self.context} tokens), {len(self.candidates)} layouts, seed {self.seed}"]
        if self.status == "verified":
            lines += [f"architecture: {self.arch}",
                      f"validation: {self.val_bpb:.3f} bits/byte, test: {self.test_bpb:.3f} bits/byte "
                      f"({self.training['tokens']} training tokens)",
                      f"associative recall: {100 * self.recall_accuracy:.1f}% of answers right"
                      if self.recall_accuracy is not None else "associative recall: not scored",
                      f"predicted latency: {self.predicted_ms:.2f} ms/token (90% interval "
                      f"{self.predicted_interval_ms[0]:.2f}-{self.predicted_interval_ms[1]:.2f})",
                      f"measured latency: {self.measured_ms:.2f} ms/token on {self.device} "
                      f"-- meets the {self.budget_ms:g} ms budget"]
        else:
            lines.append(f"no measured finalist meets the {self.budget_ms:g} ms budget on {self.device}")
        for f in self.finalists:
            measured = f"{f['measured_ms']:.2f} ms measured" if f.get("measured_ms") is not None else "not measured"
            recall = f", recall {100 * f['recall_accuracy']:.1f}%" if f.get("recall_accuracy") is not None else ""
            loss = f"val {f['val_bpb']:.3f} bpb" if f.get("val_bpb") is not None else "no width measured within budget"
            lines.append(f"  finalist: {loss}, predicted {f['predicted_ms']:.2f}, {measured}{recall}  {f['arch']}")
        finalists = sum(m["role"] == "finalist" for m in self.device_measurements)
        lines.append(f"target-device measurements: {len(self.device_measurements)} ({self.reference_source}, "
                     f"{finalists} finalist{'s' if finalists != 1 else ''})")
        if self.continuation is not None:
            lines += ["", f"greedy continuation by ONNX Runtime from prefill.onnx and decode.onnx; prompt: the "
                          f"first {self.context} bytes of the held-out test split (the last "
                          f"{min(PROMPT_SHOWN, self.context)} shown), then '>>>' and the continuation:",
                      self.prompt_tail + ">>>" + self.continuation]
        return "\n".join(lines)


def _say(message: str) -> None:
    print(f"[slm] {message}", file=sys.stderr, flush=True)


class _WorkFolder:
    """``candidates.jsonl`` (one line per trained layout, and one per finalist
    retrained at its measured width) and weight files."""

    def __init__(self, path: Path, fingerprint: str, resume: bool):
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)
        self.log = path / "candidates.jsonl"
        self.fingerprint = fingerprint
        self.records: dict[str, CandidateRecord] = {}
        self.sized: dict[str, CandidateRecord] = {}  # finalists retrained at their measured width, by arch
        if resume and self.log.is_file():
            for line in self.log.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:  # a line another worker sharing the folder is writing right now
                    continue
                sized = entry.pop("sized", False)
                if entry.pop("fingerprint", None) == fingerprint:
                    if sized:
                        self.sized[entry["arch"]] = CandidateRecord(**entry)
                    else:
                        self.records[entry["layout"]] = CandidateRecord(**entry)
        elif self.log.exists():
            self.log.unlink()
            for old in path.glob("*.pt"):
                old.unlink()
        if not resume:
            self.sizing_file.unlink(missing_ok=True)
        self.resumed = len(self.records)

    @property
    def sizing_file(self) -> Path:
        return self.path / "sizing.json"

    def sizing(self) -> dict[str, Any] | None:
        """What sized the candidates of the interrupted run (reference latencies and spread share), if
        it was recorded under this configuration."""
        try:
            entry = json.loads(self.sizing_file.read_text())
        except (OSError, ValueError):
            return None
        return entry if entry.get("fingerprint") == self.fingerprint else None

    def save_sizing(self, sizing: dict[str, Any]) -> None:
        partial = self.sizing_file.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(dict(sizing, fingerprint=self.fingerprint)))
        partial.replace(self.sizing_file)  # atomic: a worker sharing the folder never reads half a file

    def save(self, record: CandidateRecord, model: torch.nn.Module | None, sized: bool = False) -> None:
        if model is not None:
            record.weights = f"{hashlib.sha256(record.arch.encode()).hexdigest()[:16]}{'-sized' if sized else ''}.pt"
            torch.save(model.state_dict(), self.path / record.weights)
        if sized:
            self.sized[record.arch] = record
        else:
            self.records[record.layout] = record
        extra = {"sized": True} if sized else {}
        with self.log.open("a") as handle:
            handle.write(json.dumps(dict(asdict(record), fingerprint=self.fingerprint, **extra)) + "\n")

    def prune(self, keep: int) -> None:
        """Keep the weights of the ``keep`` lowest-loss candidates only."""
        ranked = sorted((r for r in self.records.values() if r.weights), key=lambda r: -r.fitness())
        for record in ranked[keep:]:
            (self.path / record.weights).unlink(missing_ok=True)
            record.weights = None

    def hold_finalists(self) -> None:
        """Wait until no other process sharing this folder is sizing finalists, then take the turn and
        read the finalists they trained meanwhile (released by :meth:`release_finalists` or at exit)."""
        import fcntl

        self._finalists_lock = (self.path / "finalists.lock").open("w")
        fcntl.flock(self._finalists_lock, fcntl.LOCK_EX)
        for line in self.log.read_text().splitlines() if self.log.is_file() else []:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.pop("sized", False) and entry.pop("fingerprint", None) == self.fingerprint:
                self.sized.setdefault(entry["arch"], CandidateRecord(**entry))

    def release_finalists(self) -> None:
        lock = getattr(self, "_finalists_lock", None)
        if lock is not None:
            lock.close()  # closing the file releases the lock
            self._finalists_lock = None

    def load_model(self, record: CandidateRecord) -> torch.nn.Module | None:
        if not record.weights or not (self.path / record.weights).is_file():
            return None
        model = build(record.arch)
        model.load_state_dict(torch.load(self.path / record.weights, weights_only=True))
        return model.eval()


def default_work_dir(device: str, budget_ms: float, config: SlmSearchConfig) -> Path:
    """Where a search keeps its trained candidates when no folder is given."""
    from nas.store import default_store_path

    key = f"{device}-{budget_ms:g}ms-ctx{config.context}-seed{config.seed}-{config.fingerprint()}"
    return Path(default_store_path()).parent / "slm-search" / key


def search_slm(device: str | Device, latency: str | float, *, config: SlmSearchConfig = SlmSearchConfig(),
               layouts: Sequence[str] | None = None, work_dir: str | os.PathLike | None = None,
               resume: bool = False, out: str | os.PathLike | None = None, store: Any = None,
               progress: bool = True, threads: int | None = None,
               references: Sequence[str] | None = None, storage: str | None = None,
               study_name: str | None = None, heartbeat_s: int | None = None) -> SlmSearchOutcome:
    """Search the ``slm`` space for the lowest-loss language model whose measured
    decode latency on ``device`` meets ``latency`` (ms per generated token).

    ``layouts`` (canonical layout strings) replaces evolution: exactly those
    layouts are trained, each at its widest width meeting the budget (a
    single layout is sized on the device first and trained once).
    ``work_dir`` keeps trained candidates (default under the measurement
    store's folder); ``resume`` reuses them. ``references`` (canonical
    strings) replaces the space's reference architectures measured to adapt
    the latency predictor. ``out`` writes the ONNX graphs,
    ``result.json`` and ``summary.txt``. ``storage`` (an Optuna storage URL,
    see :func:`nas.search._optuna.open_storage`) runs the evolution on a
    study that several workers share (:mod:`nas.slm.study`; ``study_name``
    names it, ``heartbeat_s`` sets its heartbeat): every worker trains
    layouts the others have not, the study stops at ``num_candidates``
    trained by all of them, and each worker then sizes the finalists among
    all of them. Raises :class:`UserInputError` for
    bad input, including a budget no layout can meet.
    """
    started = time.perf_counter()
    budget_ms = parse_latency_ms(latency)
    device = get_device(device) if isinstance(device, str) else device
    space = get_space(SPACE)
    fixed = [parse_layout(text) for text in layouts] if layouts else None
    if threads:
        torch.set_num_threads(int(threads))
    say = _say if progress else (lambda message: None)
    corpus = load_corpus()
    if study_name and not storage:
        raise UserInputError("--study needs --storage (e.g. --storage sqlite:///study.db)")
    if storage and fixed is not None:
        raise UserInputError("--storage shares an evolution between workers; with --arch there is none: leave "
                             "one of them out")
    if storage:  # a bad URL or an unreachable server is reported before anything is measured
        from nas.search._optuna import open_storage

        open_storage(storage, heartbeat_s=None)
    # workers sharing a study share the work folder too: it is never cleared under them
    work = _WorkFolder(Path(work_dir) if work_dir else default_work_dir(device.name, budget_ms, config),
                       config.fingerprint(), resume or bool(storage))
    if work.resumed:
        say(f"resuming: {work.resumed} trained candidates found in {work.path}")

    timing = decode_latency.DecodeTiming(device, context=config.context, store=store, progress=progress,
                                         references=references)
    # a resumed run sizes layouts exactly as the interrupted one did: stored reference latencies are rescaled
    # to the device's current level, and a few percent moved which blocks a layout lost to fit the budget
    pinned = work.sizing() if work.resumed or storage else None
    if pinned is None:
        say(f"measuring the reference architectures on {device.name} (decode after {config.context} tokens)")
    else:
        say(f"sizing layouts as the run that started this folder did ({len(pinned['samples'])} reference "
            f"latencies in {work.sizing_file.name})")
    latency_model = timing.adapted_predictor(pinned)
    if pinned is None:
        work.save_sizing(timing.sizing())
    narrowest = decode_latency.fastest_layout(latency_model)
    if narrowest.low_ms > budget_ms:
        raise UserInputError(
            f"a budget of {budget_ms:g} ms/token is below the fastest layout of the space: {narrowest.arch} "
            f"(narrowest width) is predicted at {narrowest.predicted_ms:.2f} ms/token "
            f"(90% interval {narrowest.low_ms:.2f}-{narrowest.high_ms:.2f}) on {device.name}; "
            f"give a budget of at least {narrowest.high_ms:.2f} ms")

    single = fixed is not None and len(fixed) == 1
    # candidates are sized as finalists are judged: median plus spread. The predictor's 90% interval is wider
    # (its own errors on the references: up to 3.3x the prediction on a loaded machine), and sizing by it
    # trained and ranked candidates below the width their measurement then kept (64 instead of 96 at 3 ms)
    spread_share = timing.spread_share
    say(f"candidates sized by predicted latency plus {100 * spread_share:.0f}% (the references' median measured "
        f"spread)")

    def evaluate(layout) -> CandidateRecord:
        key = space.layout(layout)
        if key in work.records:
            return work.records[key]
        choice = decode_latency.widest_expected(layout, latency_model, budget_ms, spread_share)
        if choice is None and single:  # the device, not the prediction, has the last word: start narrowest
            choice = decode_latency.width_choices(layout, latency_model)[0]
        if choice is None:
            record = CandidateRecord(key, None, None, None, None, None)
            work.save(record, None)
            say(f"layout {key}: no width is predicted to meet the budget, not trained")
            return record
        if single:  # nothing to rank: its width is settled on the device before its only training run
            record = CandidateRecord(key, choice.arch, choice.width, choice.predicted_ms, choice.low_ms,
                                     choice.high_ms)
            work.save(record, None)
            return record
        torch.manual_seed(config.seed)
        model = build(choice.arch)
        run = train_language_model(model, corpus.train, corpus.validation, config.training)
        record = CandidateRecord(key, choice.arch, choice.width, choice.predicted_ms, choice.low_ms,
                                 choice.high_ms, run.val_bpb, run.wall_s)
        work.save(record, model)
        work.prune(config.finalists + 2)
        trained = sum(r.val_bpb is not None for r in work.records.values())
        say(f"candidate {trained}: {choice.arch}  val {run.val_bpb:.3f} bpb, predicted "
            f"{choice.predicted_ms:.2f} ms/token, trained in {run.wall_s:.0f} s")
        return record

    def feasible(layout) -> bool:
        return decode_latency.widest_expected(layout, latency_model, budget_ms, spread_share) is not None

    if fixed is not None:
        for layout in fixed:
            evaluate(layout)
    elif storage:
        _evolve_shared(evaluate, feasible, config, work, storage, study_name, heartbeat_s, say,
                       dict(space=SPACE, device=device.name, budget_ms=budget_ms, context=config.context,
                            seed=config.seed, fingerprint=config.fingerprint()))
    else:
        _evolve(evaluate, feasible, config)

    trained = sorted((r for r in work.records.values() if r.feasible and (r.val_bpb is not None or single)),
                     key=lambda r: r.val_bpb if r.val_bpb is not None else math.inf)
    if not trained:
        raise UserInputError(f"no layout tried has a width predicted to meet {budget_ms:g} ms/token on "
                             f"{device.name}; raise the budget (fastest layout: {narrowest.arch})")

    # finalists, lowest loss first: each is measured on the device and moved along the width ladder by
    # its measured latency, then retrained at that width if it moved; the predicted width is only a start
    if storage:  # workers sharing the folder size finalists one at a time, reusing what the others trained
        work.hold_finalists()
    finalists: list[dict[str, Any]] = []
    sized: list[tuple[CandidateRecord, Any]] = []
    for record in trained:
        allowance = config.verify - len(timing.verifications)
        if allowance < 1 or len(sized) >= config.finalists:
            break
        fit, steps = widest_measured(record.arch, timing.measure, budget_ms, allowance)
        for arch, measurement in steps:
            say(f"finalist {arch}: measured {measurement.latency_ms:.2f} ms/token (spread "
                f"{measurement.spread_ms:.2f}; {'meets' if meets_budget(measurement, budget_ms) else 'over'} "
                f"the {budget_ms:g} ms budget)")
        entry = {"layout": record.layout, "trained_width": record.width, "val_bpb_at_trained_width": record.val_bpb,
                 "width_steps": [{"arch": a, "measured_ms": m.latency_ms, "spread_ms": m.spread_ms}
                                 for a, m in steps]}
        if fit is None:
            last = steps[-1][1]
            finalists.append({**entry, "arch": steps[-1][0], "val_bpb": None,
                              "predicted_ms": record.predicted_ms, "measured_ms": last.latency_ms,
                              "spread_ms": last.spread_ms, "meets_budget": False})
            continue
        arch, measurement = fit
        sized_record = work.sized.get(arch) or (record if arch == record.arch and record.val_bpb is not None
                                                else None)
        if sized_record is None:
            choice = next(c for c in decode_latency.width_choices(space.from_string(arch), latency_model)
                          if c.arch == arch)
            torch.manual_seed(config.seed)
            model = build(arch)
            run = train_language_model(model, corpus.train, corpus.validation, config.training)
            sized_record = CandidateRecord(record.layout, arch, choice.width, choice.predicted_ms, choice.low_ms,
                                           choice.high_ms, run.val_bpb, run.wall_s)
            work.save(sized_record, model, sized=True)
            say(f"finalist {arch} {'re' if record.val_bpb is not None else ''}trained at its measured width: "
                f"val {run.val_bpb:.3f} bpb "
                f"({run.wall_s:.0f} s)")
        finalists.append({**entry, "arch": arch, "val_bpb": sized_record.val_bpb,
                          "predicted_ms": sized_record.predicted_ms, "measured_ms": measurement.latency_ms,
                          "spread_ms": measurement.spread_ms, "meets_budget": True})
        sized.append((sized_record, measurement))
    chosen = min(sized, key=lambda pair: pair[0].val_bpb) if sized else None
    work.release_finalists()

    for finalist in finalists:
        if finalist["meets_budget"]:
            say(f"associative recall: {finalist['arch']}")
            result = recall_accuracy(lambda a=finalist["arch"]: build(a), config.recall)
            finalist["recall_accuracy"] = result.accuracy

    common = dict(device=device.name, budget_ms=budget_ms, context=config.context,
                  candidates=list(work.records.values()), finalists=finalists,
                  device_measurements=timing.log(), reference_source=timing.reference_source,
                  training=config.training.to_dict(), recall_task=asdict(config.recall), seed=config.seed,
                  resumed_candidates=work.resumed, latency_predictor=timing.latency_model,
                  seed_layouts=tuple(config.seed_layouts) if fixed is None else ())
    if chosen is None:
        outcome = SlmSearchOutcome(**common, status="over_budget", arch=None, layout=None, width=None,
                                   val_bpb=None, test_bpb=None, recall_accuracy=None, predicted_ms=None,
                                   predicted_interval_ms=None, measured_ms=None, measured_spread_ms=None)
    else:
        record, measurement = chosen
        model = work.load_model(record)
        if model is None:  # weights pruned or lost: retrain exactly as before (same seed and batches)
            torch.manual_seed(config.seed)
            model = build(record.arch)
            train_language_model(model, corpus.train, None, config.training)
        test_bpb = bits_per_byte(model, corpus.test, context=config.training.context, max_bytes=config.test_bytes)
        recall = next(f.get("recall_accuracy") for f in finalists if f["arch"] == record.arch)
        outcome = SlmSearchOutcome(**common, status="verified", arch=record.arch, layout=record.layout,
                                   width=record.width, val_bpb=record.val_bpb, test_bpb=test_bpb,
                                   recall_accuracy=recall, predicted_ms=record.predicted_ms,
                                   predicted_interval_ms=(record.low_ms, record.high_ms),
                                   measured_ms=measurement.latency_ms, measured_spread_ms=measurement.spread_ms,
                                   model=model)
    outcome.device_measurements = timing.log()
    outcome.wall_s = time.perf_counter() - started
    if out is not None:
        write_outcome(outcome, out)
    return outcome


def meets_budget(measurement, budget_ms: float) -> bool:
    """A measurement meets the budget when its median plus its spread does."""
    return measurement.latency_ms + measurement.spread_ms <= budget_ms


def widest_measured(arch: str, measure: Callable[[str], Any], budget_ms: float,
                    allowance: int) -> tuple[tuple[str, Any] | None, list[tuple[str, Any]]]:
    """Move ``arch`` along the width ladder by *measured* latency: up while
    the next width still meets ``budget_ms``, down while the current one
    does not, at most ``allowance`` measurements (``measure(arch)``).

    Returns ``((arch, measurement) | None, steps)``: the widest width
    measured within the budget (None when none was) and every
    ``(arch, measurement)`` taken, in order."""
    space = get_space(SPACE)
    layout = space.from_string(arch)
    widths = list(space.widths)
    index = widths.index(int(arch.rpartition("@")[2]))
    steps: list[tuple[str, Any]] = []
    best: tuple[str, Any] | None = None
    direction = 0
    while 0 <= index < len(widths) and len(steps) < allowance:
        candidate = space.to_string(space.with_width(layout, widths[index]))
        measurement = measure(candidate)
        steps.append((candidate, measurement))
        if meets_budget(measurement, budget_ms):
            best = (candidate, measurement)
            if direction < 0:  # the width above was measured over the budget
                break
            direction = 1
        elif best is not None or direction > 0:
            break
        else:
            direction = -1
        index += direction
    return best, steps


def shrink_to_fit(layout, feasible: Callable[[Any], bool]):
    """``layout`` with blocks dropped (last stage first, one at a time) until
    ``feasible`` holds; None when even one block per required stage is not.
    Uniform samples are mostly deep; this keeps their block types under a tight budget."""
    space = get_space(SPACE)
    genes = list(layout)
    while not feasible(tuple(genes)):
        for stage in (2, 1, 0):
            floor = int(space.choices[5 * stage + 4][0])
            if int(genes[5 * stage + 4]) > floor:
                genes[5 * stage + 4] = str(int(genes[5 * stage + 4]) - 1)
                genes = list(space.normalize(genes))
                break
        else:
            return None
    return tuple(genes)


def _evolve(evaluate: Callable[[Any], CandidateRecord], feasible: Callable[[Any], bool],
            config: SlmSearchConfig) -> None:
    """Aging evolution over layouts: tournament selection, one mutation per
    child, the oldest member dies. The first members are the config's seed
    layouts, then random layouts, each shrunk until a width is predicted to
    meet the budget; a child with none
    joins the population untrained and ages out. Deterministic given the seed, the
    predictor and the candidates' losses, so a resumed search replays the
    same choices."""
    space = get_space(SPACE)
    rng = np.random.default_rng(config.seed)
    seeds = config.seeds()
    population: collections.deque = collections.deque()
    trained: set[str] = set()
    tries = 0
    while len(trained) < config.num_candidates and tries < 100 * config.num_candidates:
        tries += 1
        if len(population) < config.population_size:
            layout = shrink_to_fit(seeds.pop(0) if seeds else space.sample(rng), feasible)
            if layout is None:
                continue
        else:
            picks = rng.choice(len(population), size=config.tournament_size, replace=False)
            parent = max((population[i] for i in picks), key=lambda member: member[1].fitness())
            layout = space.mutate(parent[0], rng)
        record = evaluate(layout)
        if record.feasible:
            trained.add(record.layout)
        population.append((layout, record))
        if len(population) > config.population_size:
            population.popleft()


def _evolve_shared(evaluate: Callable[[Any], CandidateRecord], feasible: Callable[[Any], bool],
                   config: SlmSearchConfig, work: "_WorkFolder", storage: str, study_name: str | None,
                   heartbeat_s: int | None, say: Callable[[str], None], settings: dict[str, Any]) -> None:
    """:func:`_evolve` on an Optuna study shared by several workers (:mod:`nas.slm.study`); afterwards
    ``work.records`` holds every worker's candidates."""
    from nas.search._optuna import HEARTBEAT_S
    from nas.slm import study as shared

    sampler = shared.LayoutEvolutionSampler(feasible, population_size=config.population_size,
                                            tournament_size=config.tournament_size, seed=config.seed,
                                            seeds=config.seeds())
    study = shared.open_study(storage, study_name, settings, sampler, heartbeat_s or HEARTBEAT_S, say)

    def known(records: dict[str, dict[str, Any]]) -> None:
        for layout, fields in records.items():
            if layout not in work.records:
                work.records[layout] = CandidateRecord(**fields)

    shared.evolve_on_study(evaluate, study, config.num_candidates, known)
    known(shared.study_records(study))
    say(f"study {study.study_name}: {sum(r.val_bpb is not None for r in work.records.values())} candidates "
        f"trained by its workers")


def continuation_prompt(context: int) -> bytes:
    """The fixed prompt of ``summary.txt``: the first ``context`` bytes of the
    corpus's test split (held-out standard-library source)."""
    return bytes(load_corpus().test[:context])


def write_outcome(outcome: SlmSearchOutcome, out: str | os.PathLike, new_tokens: int = 80) -> dict[str, Path]:
    """``decode.onnx`` and ``prefill.onnx`` (trained weights; the prefill graph
    takes prompts of ``context`` tokens), ``result.json`` and ``summary.txt``,
    which ends with a greedy continuation generated by ONNX Runtime from the
    two graphs."""
    from nas.search_space.slm.graphs import export_decode, export_prefill
    from nas.search_space.slm.runtime import OnnxLanguageModel

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if outcome.model is not None:
        metadata = {"nas.slm.arch": outcome.arch, "nas.slm.val_bpb": f"{outcome.val_bpb:.4f}"}
        paths["decode"] = export_decode(outcome.model, folder / "decode.onnx", metadata)
        paths["prefill"] = export_prefill(outcome.model, folder / "prefill.onnx", outcome.context, metadata)
        prompt = continuation_prompt(outcome.context)
        generated = OnnxLanguageModel(paths["decode"], paths["prefill"]).generate(prompt, new_tokens)[0]
        outcome.prompt_tail = prompt[-PROMPT_SHOWN:].decode("utf-8", errors="replace")
        outcome.continuation = bytes(generated.astype(np.uint8).tolist()).decode("utf-8", errors="replace")
    paths["result"] = folder / "result.json"
    paths["result"].write_text(json.dumps(outcome.to_dict(), indent=2) + "\n")
    paths["summary"] = folder / "summary.txt"
    paths["summary"].write_text(outcome.summary() + "\n")
    return paths
