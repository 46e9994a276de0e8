"""Measuring truthfully on a noisy device, and ``measure()``: the one
function that turns architectures into stored latency measurements.

What is measured is what a user timing the exported model with plain ONNX
Runtime on the device would get: the median of per-run timings (see
:data:`nas.profilers.base.LATENCY_STATISTIC`). Shared machines and phones
wander in speed, so every profiler that runs exported ONNX models
(:class:`InterleavedProfiler`: local ONNX Runtime, the remote agent, adb)
follows one protocol to make that median steady and rankable:

1. cells are exported to ONNX and loaded as they enter a rotation of at
   most ``group_size`` cells; each is warmed up, then timed in rounds of
   ``runs_per_round`` runs, the rotation in a fresh random order every
   round, so slow phases of the machine hit all cells alike;
2. cells enter the rotation a few at a time, so they finish at different
   moments, and each is handed back (and stored) the moment its own rounds
   are done: an interrupted run keeps every finished cell;
3. with drift correction, a fixed reference model is timed right before and
   after every cell; each run of a round is divided by the mean of the
   reference blocks around it (each block summarised by its median run), so
   a slowdown that hits cell and reference alike cancels out, and multiplied
   by the device's reference level (:mod:`nas.profilers.levels`): the median
   of the latest reference blocks ever timed on the device under the same
   settings, kept per user and shared by every store and process. The
   device's speed can swing by a third within minutes; the level is its
   typical speed, and a cell's spread is widened by how much slower its slow
   moments are. :func:`measure` hands every latency back on the level of
   the moment, so one cell reads the same from any store;
4. rounds whose median is far from the others (robust z-score) are
   rejected; the latency is the median of the kept (corrected) runs, the
   spread the standard deviation of the kept rounds' medians (then widened
   by the level's). The raw median of every run and the spread of the raw
   rounds are kept next to it;
5. cells whose relative spread is above ``max_relative_spread`` after
   ``rounds`` rounds get extra rounds, up to ``extra_rounds``, and are then
   stored ``flagged=True``;
6. with drift correction, a round timed while the machine ran slow (the
   slower reference block around it more than ``slow_tolerance`` slower than the lower
   quartile of its latest blocks) is set aside and replaced by an extra
   round: in a slow moment (a virtual machine's slow mode, another process
   taking the core) cell and reference do not slow down by the same factor,
   so their ratio is not the one a steady machine repeats. When too few
   steady rounds come within ``rounds + extra_rounds``, every round is used.
"""

from __future__ import annotations

import abc
import collections
import math
import sys
import tempfile
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from nas.devices import Device, get_device
from nas.errors import UserInputError
from nas.profilers.base import LatencyMeasurement, Profiler, settings_key
from nas.profilers.levels import Level, ReferenceLevels, this_host
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
    """How cells are timed (see the module docstring).

    Parameters (all settable in a device's ``profiler.settings``):
    ``warmup_runs`` untimed runs per model before its first round;
    ``rounds`` interleaved rounds per cell; ``runs_per_round`` timed runs
    of a model per round; ``drift_correction`` time the reference model
    around each cell; ``max_relative_spread`` the spread (standard
    deviation of the kept rounds over the latency) above which a cell is
    repeated and then flagged; ``extra_rounds`` at most this many extra
    rounds for such cells; ``outlier_z`` rounds whose robust z-score
    exceeds it are rejected; ``group_size`` cells in the rotation at once;
    ``seed`` of the round order (``None``: fresh each time);
    ``slow_tolerance`` a round is set aside as timed in a slow moment when
    a reference block around it ran more than this fraction slower than the
    lower quartile of the latest :data:`SLOW_WINDOW_BLOCKS` reference blocks.
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
    slow_tolerance: float = 0.25

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
            elif spec.name in ("max_relative_spread", "outlier_z", "slow_tolerance"):
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


#: a slow moment is judged against the reference's lower quartile over this many of its latest blocks
SLOW_WINDOW_BLOCKS = 200


@dataclass
class _Round:
    """One timed block of a cell: its runs (ms), the reference around it (ms, or None), and whether
    the machine ran at its usual speed around it."""

    runs_ms: np.ndarray
    reference_ms: float | None
    steady: bool = True


def _steady(reference_blocks: list[float], slower_ms: float | None, tolerance: float) -> bool:
    """Whether a round was timed at the machine's usual speed: the slower of the reference blocks
    around it (``slower_ms``) within ``tolerance`` of the lower quartile of the latest blocks."""
    if slower_ms is None:
        return True
    usual = float(np.percentile(reference_blocks[-SLOW_WINDOW_BLOCKS:], 25))
    return slower_ms <= usual * (1.0 + tolerance)


@dataclass
class CellEstimate:
    """What the protocol concluded about one cell (all in ms)."""

    latency_ms: float
    spread_ms: float
    raw_median_ms: float
    raw_spread_ms: float
    stats: dict[str, float]
    flagged: bool


def time_interleaved(timers: Sequence[Timer], reference: Timer | None, protocol: MeasurementProtocol, *,
                     on_done: Callable[[int, CellEstimate], None] | None = None,
                     levels: Callable[[list[float], list[float]], Level] | None = None) -> list[CellEstimate]:
    """Time ``timers`` with ``protocol`` and estimate each one's latency.

    ``timers[i]`` is read once, when cell ``i`` enters the rotation (so a
    lazy sequence loads models only then); ``reference`` is timed around
    every cell when given (drift correction). ``levels``, when given with a
    reference, is the device's scale (:mod:`nas.profilers.levels`): called
    with the reference blocks (ms) timed since its last call and their times
    (``time.time()`` seconds), it returns the
    device's :class:`~nas.profilers.levels.Level`, and each cell's ratio to
    the reference is put on that level, its spread widened by the level's;
    without it a cell is put on the reference's median during its own
    rounds. ``on_done(i, estimate)`` is called the moment cell ``i`` is
    final. Returns one estimate per timer, in order.
    """
    rng = np.random.default_rng(protocol.seed)
    if reference is not None and protocol.warmup_runs:
        reference(protocol.warmup_runs)
    waiting = collections.deque(range(len(timers)))
    active: dict[int, Timer] = {}
    rounds: dict[int, list[_Round]] = {}
    results: list[CellEstimate | None] = [None] * len(timers)
    reference_blocks: list[float] = []  # every reference block so far, each summarised by its median run (ms)
    first_block: dict[int, int] = {}  # the first reference block of each cell's time in the rotation
    reference_times: list[float] = []  # when each was timed (time.time() seconds)
    logged = 0  # reference blocks handed to ``levels`` so far
    # a few cells enter per round, so that cells finish (and are stored) one after another
    entering = max(1, math.ceil(protocol.group_size / protocol.rounds))
    last_round = protocol.rounds + protocol.extra_rounds

    def time_reference() -> float | None:
        if reference is None:
            return None
        reference_blocks.append(float(np.median(reference(protocol.runs_per_round))))
        reference_times.append(time.time())
        return reference_blocks[-1]

    while waiting or active:
        for _ in range(min(entering, protocol.group_size - len(active), len(waiting))):
            cell = waiting.popleft()
            active[cell] = timers[cell]
            if protocol.warmup_runs:
                active[cell](protocol.warmup_runs)
            rounds[cell], first_block[cell] = [], len(reference_blocks)
        before = time_reference()
        for cell in rng.permutation(np.fromiter(active, dtype=int)).tolist():
            runs = np.asarray(active[cell](protocol.runs_per_round), dtype=float)
            after = time_reference()
            around, slower = (None, None) if after is None else ((before + after) / 2, max(before, after))
            rounds[cell].append(_Round(runs, around, _steady(reference_blocks, slower, protocol.slow_tolerance)))
            before = after
            steady_rounds = sum(r.steady for r in rounds[cell])
            if len(rounds[cell]) < protocol.rounds or (steady_rounds < protocol.rounds
                                                       and len(rounds[cell]) < last_round):
                continue
            # the reference's level while this cell was in the rotation
            local = float(np.median(reference_blocks[first_block[cell]:])) if reference is not None else None
            device_level = None
            if local is not None and levels is not None:
                device_level = levels(reference_blocks[logged:], reference_times[logged:])
                logged = len(reference_blocks)
            estimate = _estimate(rounds[cell], local if device_level is None else device_level.level_ms, protocol)
            unsettled = estimate.spread_ms > protocol.max_relative_spread * estimate.latency_ms
            if unsettled and len(rounds[cell]) < last_round:
                continue
            estimate.flagged = unsettled
            if local is not None:
                estimate.stats["reference_median_ms"] = local
            if device_level is not None:
                _on_level(estimate, device_level)
            results[cell] = estimate
            del active[cell], rounds[cell], first_block[cell]
            if on_done is not None:
                on_done(cell, estimate)
    return results  # type: ignore[return-value]


def _estimate(all_rounds: list[_Round], level: float | None, protocol: MeasurementProtocol) -> CellEstimate:
    """Set aside rounds timed in slow moments (when enough steady ones remain), drift-correct to the
    reference ``level`` (ms; ``None``: no correction), reject outlier rounds, summarise (all in ms)."""
    steady = [r for r in all_rounds if r.steady]
    cell_rounds = steady if len(steady) >= math.ceil(protocol.rounds / 2) else all_rounds
    raw_medians = np.array([np.median(r.runs_ms) for r in cell_rounds])
    factors = np.array([1.0 if level is None else level / r.reference_ms for r in cell_rounds])
    values = raw_medians * factors
    centre = float(np.median(values))
    mad = float(np.median(np.abs(values - centre))) * 1.4826
    # a floor of 2% keeps rounds within about 7% of the median from being called outliers
    z = np.abs(values - centre) / max(mad, 0.02 * centre, 1e-12)
    keep = z <= protocol.outlier_z
    if keep.sum() < math.ceil(len(values) / 2):  # never reject the majority
        keep = z <= np.sort(z)[math.ceil(len(values) / 2) - 1]
    kept_runs = np.concatenate([r.runs_ms * f for r, f, k in zip(cell_rounds, factors, keep) if k])
    all_raw_runs = np.concatenate([r.runs_ms for r in all_rounds])
    every_raw_median = np.array([np.median(r.runs_ms) for r in all_rounds])
    latency_ms = float(np.median(kept_runs))
    spread_ms = float(np.std(values[keep], ddof=1)) if keep.sum() > 1 else 0.0
    stats = {
        "median_ms": latency_ms,
        "mean_ms": float(np.mean(kept_runs)),
        "p10_ms": float(np.percentile(kept_runs, 10)),
        "p90_ms": float(np.percentile(kept_runs, 90)),
        "std_ms": float(np.std(kept_runs)),
        "relative_spread": spread_ms / latency_ms if latency_ms > 0 else 0.0,
        "rounds": float(len(all_rounds)),
        "rounds_rejected": float(len(values) - keep.sum()),
        "rounds_slow": float(len(all_rounds) - len(cell_rounds)),
        "runs": float(len(kept_runs)),
        "runs_per_round": float(protocol.runs_per_round),
        "warmup_runs": float(protocol.warmup_runs),
    }
    return CellEstimate(latency_ms, spread_ms, raw_median_ms=float(np.median(all_raw_runs)),
                        raw_spread_ms=float(np.std(every_raw_median, ddof=1)) if len(all_rounds) > 1 else 0.0,
                        stats=stats, flagged=False)


def _on_level(estimate: CellEstimate, level: Level) -> None:
    """Record the device level ``estimate`` was put on; widen its spread by the level's."""
    estimate.stats.update(reference_level_ms=level.level_ms, level_relative_spread=level.relative_spread,
                          level_blocks=float(level.blocks), cell_spread_ms=estimate.spread_ms)
    estimate.spread_ms = _combined_spread(estimate.spread_ms, estimate.latency_ms, level.relative_spread)
    estimate.stats["relative_spread"] = estimate.spread_ms / estimate.latency_ms if estimate.latency_ms > 0 else 0.0


def _combined_spread(cell_spread_ms: float, latency_ms: float, level_relative_spread: float) -> float:
    """A cell's own spread and its level's (ms), added in quadrature."""
    return float(math.hypot(cell_spread_ms, latency_ms * level_relative_spread))


_SCALED_STATS = ("median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "cell_spread_ms")


def on_current_level(record: LatencyMeasurement, level: Level | None) -> LatencyMeasurement:
    """``record`` put on the device's current ``level`` (a record measured on an earlier one is
    rescaled by the ratio of the two levels; its cell spread with it). A drift-corrected record
    stored before levels were shared was put on the reference's median around it, and is rescaled
    from that. Records without a reference, and ``level=None``, come back unchanged."""
    then = record.stats.get("reference_level_ms") or record.stats.get("reference_median_ms")
    if level is None or not then or then <= 0:
        return record
    factor = level.level_ms / then
    stats = dict(record.stats)
    for name in _SCALED_STATS:
        if name in stats:
            stats[name] = stats[name] * factor
    latency_ms = record.latency_ms * factor
    cell_spread_ms = stats.get("cell_spread_ms", record.spread_ms * factor)
    spread_ms = _combined_spread(cell_spread_ms, latency_ms, level.relative_spread)
    stats.update(reference_level_ms=level.level_ms, level_relative_spread=level.relative_spread,
                 level_blocks=float(level.blocks), relative_spread=spread_ms / latency_ms if latency_ms > 0 else 0.0)
    return replace(record, latency_ms=latency_ms, spread_ms=spread_ms, stats=stats)


# --------------------------------------------------------------------------- #
# Profilers that time exported ONNX models
# --------------------------------------------------------------------------- #
def reference_arch(space: str) -> Arch:
    """The fixed reference model of ``space`` for drift correction: the
    space's own choice (``drift_reference_arch``) where it makes one, else the
    middle operation at every position (for nb201, every edge a 1x1 conv)."""
    search_space = get_space(space)
    if hasattr(search_space, "drift_reference_arch"):
        return search_space.drift_reference_arch()
    return tuple(ops[len(ops) // 2] for ops in search_space.choices)


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
        # precision: int8 / int4 times every model quantized so (nas.quantization.timing)
        self.precision = device.settings.get("precision", "float32")
        if self.precision != "float32":
            from nas.quantization.timing import precision_setting

            precision_setting(device.settings)

    @property
    def settings(self) -> dict[str, Any]:
        """Runtime settings recorded with (and keying) every measurement; the
        protocol (rounds, runs) is recorded in each measurement's ``stats``."""
        return dict(self.runtime, drift_correction=self.protocol.drift_correction,
                    **({"precision": self.precision} if self.precision != "float32" else {}))

    def settings_for(self, space: str) -> dict[str, Any]:
        """:attr:`settings` plus what the space's latency depends on (for
        ``slm``: ``context_length`` and ``phase``, the device's values or the
        space's defaults), validated by the space."""
        search_space = get_space(space)
        if not hasattr(search_space, "latency_settings"):
            return self.settings
        return dict(self.settings, **search_space.latency_settings(self.device.settings))

    @property
    def group_size(self) -> int:
        return self.protocol.group_size

    #: where the device's reference level is kept (:mod:`nas.profilers.levels`); ``None``: the default file
    levels_path: str | None = None

    def host(self) -> str:
        """What, besides the device's name, the reference level belongs to: empty for a device
        reached from here (a phone, an agent); this processor for one that runs here."""
        return ""

    def level_key(self, space: str) -> str:
        """The key of this device's reference level for ``space``: device, settings, space, reference
        model and :meth:`host`."""
        return "|".join((self.device.name, settings_key(self.settings_for(space)), space,
                         get_space(space).to_string(reference_arch(space)), self.host()))

    def current_level(self, space: str) -> Level | None:
        """The device's reference level for ``space`` now (``None`` without drift correction or blocks)."""
        if not self.protocol.drift_correction:
            return None
        with ReferenceLevels(self.levels_path) as levels:
            return levels.level(self.level_key(space))

    def load_sequence_model(self, onnx_path: Path, settings: dict[str, Any]) -> Timer:
        """Load a sequence model's step or prefill graph (inputs: tokens and states) for timing."""
        raise UserInputError(f"device {self.device.name!r} ({self.kind} profiler) times single-input models only; "
                             f"measure sequence models on an onnxruntime device such as local-cpu")

    @abc.abstractmethod
    def load(self, onnx_path: Path) -> Timer:
        """Load an ONNX file for timing; an invalid model is a :class:`UserInputError`."""

    def _export_and_load(self, space: str, arch: Arch, folder: Path, name: str) -> Timer:
        from nas.export import export_arch

        search_space = get_space(space)
        if hasattr(search_space, "latency_settings"):
            settings = self.settings_for(space)
            path = search_space.export_for_latency(arch, folder / f"{name}.onnx", settings)
            load = lambda path: self.load_sequence_model(path, settings)  # noqa: E731
        else:
            path, load = export_arch(space, arch, folder / f"{name}.onnx"), self.load
        if self.precision != "float32":
            from nas.quantization.timing import model_for_timing

            float_path = path
            path = model_for_timing(float_path, self.precision, self.runtime, settings.get("context_length") if
                                    hasattr(search_space, "latency_settings") else None)
            float_path.unlink(missing_ok=True)
        try:
            return load(path)
        finally:
            path.unlink(missing_ok=True)  # loaded (or uploaded, or pushed): the file is not needed again

    def measure(self, space: str, archs: Sequence[Arch],
                on_measured: Callable[[LatencyMeasurement], None] | None = None) -> list[LatencyMeasurement]:
        search_space = get_space(space)
        archs = [search_space.validate(a) for a in archs]
        if not archs:
            return []
        records: list[LatencyMeasurement | None] = [None] * len(archs)
        with tempfile.TemporaryDirectory(prefix="nas-profile-") as folder:
            cells = _LoadOnRead(lambda i: self._export_and_load(space, archs[i], Path(folder), f"cell{i}"),
                                len(archs))
            reference = None
            if self.protocol.drift_correction:
                reference = self._export_and_load(space, reference_arch(space), Path(folder), "reference")

            def done(index: int, estimate: CellEstimate) -> None:
                records[index] = LatencyMeasurement(
                    self.device.name, space, search_space.to_string(archs[index]), estimate.latency_ms,
                    spread_ms=estimate.spread_ms, settings=self.settings_for(space), stats=estimate.stats,
                    flagged=estimate.flagged, raw_median_ms=estimate.raw_median_ms,
                    raw_spread_ms=estimate.raw_spread_ms)
                if on_measured is not None:
                    on_measured(records[index])

            if reference is None:
                time_interleaved(cells, reference, self.protocol, on_done=done)
            else:
                key = self.level_key(space)
                with ReferenceLevels(self.levels_path) as log:
                    def level(blocks_ms: list[float], times_s: list[float]) -> Level:
                        log.add(key, blocks_ms, times_s)
                        return log.level(key)

                    time_interleaved(cells, reference, self.protocol, on_done=done, levels=level)
        return records  # type: ignore[return-value]


class _LoadOnRead:
    """A sequence of timers that loads item ``i`` (``load(i)``) each time it is read."""

    def __init__(self, load: Callable[[int], Timer], length: int):
        self._load, self._length = load, length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        return self._load(index)


# --------------------------------------------------------------------------- #
# measure(): store-aware entry point
# --------------------------------------------------------------------------- #
def measure(device: str | Device, space: str, archs: Iterable[Arch | str], *, store: Any = None,
            progress: bool = False, refresh: bool = False) -> list[LatencyMeasurement]:
    """Latency of every architecture of ``space`` on ``device`` (milliseconds), in order.

    ``device`` is a catalog name or a :class:`nas.devices.Device`; ``archs``
    are tuples (or canonical strings). ``store`` is where measurements are
    looked up and saved: ``None`` the default store
    (:func:`nas.profilers.store.default_store_location`), a path or URL, a
    :class:`nas.profilers.store.MeasurementStore`, or ``False`` for none. Stored
    measurements come back with ``source='stored'``; each new measurement
    is stored the moment its own rounds are done, so an interrupted or
    killed run keeps every finished cell. Latencies are medians of per-run
    timings (:data:`nas.profilers.base.LATENCY_STATISTIC`), all on the
    device's reference level of the moment (:mod:`nas.profilers.levels`),
    stored or new, whichever store holds them. ``refresh=True`` measures again even what is
    stored. Replayed devices are free and never stored. A device that
    cannot be reached raises :class:`nas.errors.DeviceUnavailableError`
    saying what to do.
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
    settings = profiler.settings_for(space) if hasattr(profiler, "settings_for") else profiler.settings
    found: dict[str, LatencyMeasurement] = {}
    if store is not None and not refresh:
        for arch in dict.fromkeys(canonical):
            record = store.get(device.name, settings, space, arch)
            if record is not None:
                found[arch] = record
    missing = [arch for arch in dict.fromkeys(canonical) if arch not in found]
    if missing:
        profiler.check_available()

        already = len(found)

        def keep(record: LatencyMeasurement) -> None:
            if store is not None:
                store.put(record)
            found[record.arch] = record
            if progress:
                print(f"measured {len(found) - already}/{len(missing)} on {device.name} ({already} already "
                      f"stored)", file=sys.stderr, flush=True)

        def measure_some(strings: list[str]) -> None:
            archs_to_measure = [search_space.from_string(a) for a in strings]
            if profiler.kind in FREE_PROFILER_KINDS:
                for record in profiler.measure(space, archs_to_measure):
                    keep(record)
            else:
                profiler.measure(space, archs_to_measure, on_measured=keep)

        if store is None:
            measure_some(missing)
        else:  # processes sharing the store never measure one architecture at once
            from nas.profilers.store import measure_claimed

            def waiting(count: int) -> None:
                if progress:
                    print(f"waiting for another process measuring {count} of these architectures on "
                          f"{device.name}", file=sys.stderr, flush=True)

            measure_claimed(store, device.name, settings, space, missing, measure_some, refresh=refresh,
                            on_wait=waiting)
            for arch in missing:  # measured by another process meanwhile
                if arch not in found:
                    found[arch] = store.get(device.name, settings, space, arch)
    # every latency comes back on the device's one current level, whenever and wherever it was measured
    level = profiler.current_level(space) if isinstance(profiler, InterleavedProfiler) else None
    return [on_current_level(found[arch], level) for arch in canonical]


def _open_store(store: Any):
    from nas.profilers.store import open_store  # the store imports the profiler contract

    return open_store(store)
