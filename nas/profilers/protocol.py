"""Measuring truthfully on a noisy device, and ``measure()``: the one
function that turns architectures into stored latency measurements.

Shared machines and phones wander in speed, so a single timing of a cell
says little. Every profiler that runs exported ONNX models
(:class:`InterleavedProfiler`: local ONNX Runtime, the remote agent, adb)
follows one protocol:

1. each cell of a group is exported to ONNX once and loaded once;
2. the cells are timed in interleaved rounds, in a fresh random order
   every round, so slow phases of the machine hit all cells alike;
3. a block of runs is summarised by its fastest run: on a shared machine
   most slow runs are runs that another process interrupted, and the
   fastest run is the one least disturbed (a block's median is not: under
   heavy load most runs are interrupted);
4. with drift correction, a fixed reference model is timed right before and
   after every cell; a round's value is ``cell / mean(reference before,
   after)`` times the reference's latency, so a slowdown that hits both
   cancels out. The reference's latency is fixed per store (the first
   session measures it and stores it as an ordinary measurement), so every
   measurement in one store is on one scale, however busy the machine was;
5. rounds far from the median (robust z-score) are rejected; the latency
   is the median of the rest, and ``stats`` adds the median, mean, p10,
   p90 and standard deviation of every kept run (drift-corrected, ms);
6. the spread of the remaining rounds is kept with the measurement; cells
   whose relative spread is still above ``max_relative_spread`` get extra
   rounds, up to ``extra_rounds``, and are then stored ``flagged=True``.
"""

from __future__ import annotations

import abc
import math
import sys
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from nas.devices import Device, get_device
from nas.errors import UserInputError
from nas.profilers.base import LatencyMeasurement, Profiler
from nas.search_space import Arch, get_space

#: profiler kinds whose measurements cost nothing and are never stored
FREE_PROFILER_KINDS = frozenset({"replay"})

#: a timer runs a loaded model ``runs`` times and returns each run's latency in milliseconds
Timer = Callable[[int], np.ndarray]


# --------------------------------------------------------------------------- #
# The protocol
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class MeasurementProtocol:
    """How a group of cells is timed (see the module docstring).

    Parameters (all settable in a device's ``profiler.settings``):
    ``warmup_runs`` untimed runs per model before the first round;
    ``rounds`` interleaved rounds; ``runs_per_round`` timed runs of a model
    per round; ``drift_correction`` time the reference model around each
    cell; ``max_relative_spread`` the spread (standard deviation of the kept
    rounds over the latency) above which a cell is repeated and then
    flagged; ``extra_rounds`` at most this many extra rounds for such
    cells; ``outlier_z`` rounds whose robust z-score exceeds it are
    rejected; ``group_size`` cells measured together before they are
    stored; ``seed`` of the round order (``None``: fresh each time).
    """

    warmup_runs: int = 5
    rounds: int = 6
    runs_per_round: int = 10
    drift_correction: bool = True
    max_relative_spread: float = 0.05
    extra_rounds: int = 5
    outlier_z: float = 3.5
    group_size: int = 10
    seed: int | None = None

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "MeasurementProtocol":
        """The protocol named by a device's settings; a bad value names the setting and what is allowed."""
        values = {}
        for spec in fields(cls):
            if spec.name not in settings or settings[spec.name] is None:
                continue
            value = settings[spec.name]
            if spec.name == "drift_correction":
                if not isinstance(value, bool):
                    raise UserInputError(f"profiler setting drift_correction must be true or false, not {value!r}")
            elif spec.name in ("max_relative_spread", "outlier_z"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise UserInputError(f"profiler setting {spec.name} must be a number > 0, not {value!r}")
                value = float(value)
            else:
                minimum = 1 if spec.name in ("rounds", "runs_per_round", "group_size") else 0
                if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                    raise UserInputError(f"profiler setting {spec.name} must be an integer >= {minimum}, "
                                         f"not {value!r}")
            values[spec.name] = value
        return cls(**values)


@dataclass
class _Round:
    """One timed block of a cell: its runs (ms) and the reference around it (ms, or None)."""

    runs_ms: np.ndarray
    reference_ms: float | None


@dataclass
class CellEstimate:
    """What the protocol concluded about one cell."""

    latency_ms: float
    spread_ms: float
    stats: dict[str, float]
    flagged: bool


def time_interleaved(timers: Sequence[Timer], reference: Timer | None,
                     protocol: MeasurementProtocol,
                     reference_ms: float | None = None) -> tuple[list[CellEstimate], list[float]]:
    """Time ``timers`` with ``protocol`` and estimate each one's latency.

    ``reference`` is timed around every cell when given (drift correction);
    ``reference_ms`` is the latency the reference stands for (default: the
    median of this session's reference blocks). Returns one estimate per
    timer, in order, and every reference block's value (its fastest run, ms).
    """
    rng = np.random.default_rng(protocol.seed)
    models = list(timers) + ([reference] if reference is not None else [])
    for timer in models:
        if protocol.warmup_runs:
            timer(protocol.warmup_runs)
    rounds: list[list[_Round]] = [[] for _ in timers]
    reference_blocks: list[float] = []

    def time_reference() -> float:
        block = float(np.min(reference(protocol.runs_per_round)))
        reference_blocks.append(block)
        return block

    def one_round(cells: Sequence[int]) -> None:
        before = time_reference() if reference is not None else None
        for cell in rng.permutation(np.asarray(cells)):
            runs = np.asarray(timers[cell](protocol.runs_per_round), dtype=float)
            after = time_reference() if reference is not None else None
            around = None if reference is None else (before + after) / 2
            rounds[cell].append(_Round(runs, around))
            before = after

    everyone = list(range(len(timers)))
    for _ in range(protocol.rounds):
        one_round(everyone)

    def estimates() -> list[CellEstimate]:
        scale = reference_ms if reference_ms is not None else (
            float(np.median(reference_blocks)) if reference_blocks else None)
        return [_estimate(cell_rounds, scale, protocol) for cell_rounds in rounds]

    results = estimates()
    for _ in range(protocol.extra_rounds):
        unsettled = [i for i, e in enumerate(results) if e.spread_ms > protocol.max_relative_spread * e.latency_ms]
        if not unsettled:
            break
        one_round(unsettled)
        results = estimates()
    for estimate in results:
        estimate.flagged = estimate.spread_ms > protocol.max_relative_spread * estimate.latency_ms
    return results, reference_blocks


def _estimate(cell_rounds: list[_Round], scale: float | None, protocol: MeasurementProtocol) -> CellEstimate:
    """Drift-correct, reject outlier rounds, summarise (all in ms)."""
    # factor that turns a round's raw runs into reference-corrected ones
    factors = np.array([1.0 if r.reference_ms is None or scale is None else scale / r.reference_ms
                        for r in cell_rounds])
    values = np.array([np.min(r.runs_ms) for r in cell_rounds]) * factors
    centre = float(np.median(values))
    mad = float(np.median(np.abs(values - centre))) * 1.4826
    # a floor of 2% keeps rounds within about 7% of the median from being called outliers
    z = np.abs(values - centre) / max(mad, 0.02 * centre, 1e-12)
    keep = z <= protocol.outlier_z
    if keep.sum() < math.ceil(len(values) / 2):  # never reject the majority
        keep = z <= np.sort(z)[math.ceil(len(values) / 2) - 1]
    kept = values[keep]
    latency_ms = float(np.median(kept))
    spread_ms = float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0
    corrected_runs = np.concatenate([r.runs_ms * f for r, f, k in zip(cell_rounds, factors, keep) if k])
    raw_runs = np.concatenate([r.runs_ms for r, k in zip(cell_rounds, keep) if k])
    stats = {
        "median_ms": float(np.median(corrected_runs)),
        "mean_ms": float(np.mean(corrected_runs)),
        "p10_ms": float(np.percentile(corrected_runs, 10)),
        "p90_ms": float(np.percentile(corrected_runs, 90)),
        "std_ms": float(np.std(corrected_runs)),
        "raw_median_ms": float(np.median(raw_runs)),
        "relative_spread": spread_ms / latency_ms if latency_ms > 0 else 0.0,
        "rounds": float(len(values)),
        "rounds_rejected": float(len(values) - len(kept)),
        "runs": float(len(corrected_runs)),
        "runs_per_round": float(protocol.runs_per_round),
        "warmup_runs": float(protocol.warmup_runs),
    }
    if scale is not None and any(r.reference_ms is not None for r in cell_rounds):
        stats["reference_ms"] = float(scale)
    return CellEstimate(latency_ms, spread_ms, stats, flagged=False)


# --------------------------------------------------------------------------- #
# Profilers that time exported ONNX models
# --------------------------------------------------------------------------- #
def reference_arch(space: str) -> Arch:
    """The fixed reference model of ``space`` for drift correction: the
    middle operation at every position (for nb201, every edge a 1x1 conv)."""
    return tuple(ops[len(ops) // 2] for ops in get_space(space).choices)


GRAPH_OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")


def check_runtime_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``threads``, ``batch_size`` and ``graph_optimization_level`` from
    ``settings`` (defaults 1, 1, ``all``), validated: the ONNX Runtime
    settings that change a latency and so key the store."""
    threads = settings.get("threads", 1)
    batch_size = settings.get("batch_size", 1)
    level = settings.get("graph_optimization_level", "all")
    for name, value in (("threads", threads), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"profiler setting {name} must be an integer >= 1, not {value!r}")
    if level not in GRAPH_OPTIMIZATION_LEVELS:
        raise UserInputError(f"profiler setting graph_optimization_level must be one of "
                             f"{', '.join(GRAPH_OPTIMIZATION_LEVELS)}, not {level!r}")
    return {"threads": threads, "batch_size": batch_size, "graph_optimization_level": level}


class InterleavedProfiler(Profiler):
    """A profiler that times exported ONNX models with :class:`MeasurementProtocol`.

    The models run in ONNX Runtime somewhere (this machine, a remote agent,
    a phone), under the settings of :func:`check_runtime_settings`.
    Subclasses say how an ONNX file becomes a :data:`Timer` (``load``).
    """

    def __init__(self, device: Device):
        super().__init__(device)
        self.runtime = check_runtime_settings(device.settings)
        self.protocol = MeasurementProtocol.from_settings(device.settings)
        #: latency (ms) the reference model stands for, per space; set from the store or the first group
        self.reference_ms: dict[str, float] = {}
        self._reference_timers: dict[str, Timer] = {}
        self._reference_blocks: dict[str, list[float]] = {}

    @property
    def settings(self) -> dict[str, Any]:
        """Runtime settings recorded with (and keying) every measurement; the
        protocol (rounds, runs) is recorded in each measurement's ``stats``."""
        return dict(self.runtime, drift_correction=self.protocol.drift_correction)

    @property
    def group_size(self) -> int:
        return self.protocol.group_size

    @abc.abstractmethod
    def load(self, onnx_path: Path) -> Timer:
        """Load an ONNX file for timing; an invalid model is a :class:`UserInputError`."""

    def _export_and_load(self, space: str, arch: Arch, folder: Path, name: str) -> Timer:
        from nas.export import export_arch

        return self.load(export_arch(space, arch, folder / f"{name}.onnx"))

    def measure(self, space: str, archs: Sequence[Arch]) -> list[LatencyMeasurement]:
        search_space = get_space(space)
        archs = [search_space.validate(a) for a in archs]
        if not archs:
            return []
        with tempfile.TemporaryDirectory(prefix="nas-profile-") as folder:
            timers = [self._export_and_load(space, arch, Path(folder), f"cell{i}") for i, arch in enumerate(archs)]
            reference = None
            if self.protocol.drift_correction:
                if space not in self._reference_timers:
                    self._reference_timers[space] = self._export_and_load(space, reference_arch(space),
                                                                          Path(folder), "reference")
                reference = self._reference_timers[space]
            estimates, blocks = time_interleaved(timers, reference, self.protocol, self.reference_ms.get(space))
        if reference is not None:
            self._reference_blocks.setdefault(space, []).extend(blocks)
            self.reference_ms.setdefault(space, float(np.median(blocks)))
        return [LatencyMeasurement(self.device.name, space, search_space.to_string(arch), e.latency_ms,
                                   spread_ms=e.spread_ms, settings=self.settings, stats=e.stats, flagged=e.flagged)
                for arch, e in zip(archs, estimates)]

    def reference_measurement(self, space: str) -> LatencyMeasurement | None:
        """The reference model's own measurement, once this profiler has timed it in ``space``."""
        blocks = self._reference_blocks.get(space)
        if not blocks or space not in self.reference_ms:
            return None
        blocks_ms = np.asarray(blocks)
        return LatencyMeasurement(
            self.device.name, space, get_space(space).to_string(reference_arch(space)), self.reference_ms[space],
            spread_ms=float(np.std(blocks_ms, ddof=1)) if len(blocks_ms) > 1 else 0.0, settings=self.settings,
            stats={"median_ms": float(np.median(blocks_ms)), "mean_ms": float(np.mean(blocks_ms)),
                   "p10_ms": float(np.percentile(blocks_ms, 10)), "p90_ms": float(np.percentile(blocks_ms, 90)),
                   "std_ms": float(np.std(blocks_ms)), "reference_blocks": float(len(blocks_ms)),
                   "is_reference": 1.0})


# --------------------------------------------------------------------------- #
# measure(): store-aware entry point
# --------------------------------------------------------------------------- #
def measure(device: str | Device, space: str, archs: Iterable[Arch | str], *, store: Any = None,
            progress: bool = False, refresh: bool = False) -> list[LatencyMeasurement]:
    """Latency of every architecture of ``space`` on ``device`` (milliseconds), in order.

    ``device`` is a catalog name or a :class:`nas.devices.Device`; ``archs``
    are tuples (or canonical strings). ``store`` is where measurements are
    looked up and saved: ``None`` the default store
    (:func:`nas.store.default_store_path`), a path, a
    :class:`nas.store.MeasurementStore`, or ``False`` for none. Stored
    measurements come back with ``source='stored'``; each new group of
    measurements is stored as soon as it finishes, so a killed run keeps
    them. With drift correction, latencies are on the scale of the reference
    latency stored in ``store`` (without a store, on this call's own scale).
    ``refresh=True`` measures again even what is stored. Replayed
    devices are free and never stored. A device that cannot be reached
    raises :class:`nas.errors.DeviceUnavailableError` saying what to do.
    """
    from nas.profilers import make_profiler  # the registry imports this module

    device = get_device(device) if isinstance(device, str) else device
    search_space = get_space(space)
    canonical = [search_space.to_string(search_space.from_string(a) if isinstance(a, str) else search_space.validate(a))
                 for a in archs]
    profiler = make_profiler(device)
    if profiler.kind in FREE_PROFILER_KINDS:
        store = False
    store = _open_store(store)
    settings = profiler.settings
    found: dict[str, LatencyMeasurement] = {}
    if store is not None and not refresh:
        for arch in dict.fromkeys(canonical):
            record = store.get(device.name, settings, space, arch)
            if record is not None:
                found[arch] = record
    missing = [arch for arch in dict.fromkeys(canonical) if arch not in found]
    if missing:
        profiler.check_available()
        reference_ms = _stored_reference_ms(profiler, store, device.name, space)
        if reference_ms is not None:
            profiler.reference_ms[space] = reference_ms
        group = max(1, int(getattr(profiler, "group_size", len(missing)) or len(missing)))
        done = 0
        for start in range(0, len(missing), group):
            chunk = missing[start:start + group]
            for record in profiler.measure(space, [search_space.from_string(a) for a in chunk]):
                if store is not None:
                    store.put(record)
                found[record.arch] = record
            done += len(chunk)
            if store is not None and reference_ms is None and isinstance(profiler, InterleavedProfiler):
                reference = profiler.reference_measurement(space)
                if reference is not None:
                    store.put(reference)
                    reference_ms = reference.latency_ms
            if progress:
                print(f"measured {done}/{len(missing)} on {device.name} "
                      f"({len(canonical) - len(missing)} already stored)", file=sys.stderr, flush=True)
    return [found[arch] for arch in canonical]


def _open_store(store: Any):
    from nas.store import MeasurementStore  # nas.store imports the profiler contract

    if store is False:
        return None
    if store is None:
        return MeasurementStore()
    if isinstance(store, MeasurementStore):
        return store
    return MeasurementStore(store)


def _stored_reference_ms(profiler: Profiler, store, device: str, space: str) -> float | None:
    if store is None or not isinstance(profiler, InterleavedProfiler) or not profiler.protocol.drift_correction:
        return None
    record = store.get(device, profiler.settings, space, get_space(space).to_string(reference_arch(space)))
    return record.latency_ms if record is not None else None
