"""The measuring protocol and ``measure()``: drift correction, outlier
rounds, flagging, and reuse of stored measurements."""

from dataclasses import replace

import numpy as np
import pytest

from nas.devices import Device, get_device
from nas.errors import DeviceUnavailableError, UserInputError
from nas.profilers import PROFILERS, InterleavedProfiler, MeasurementProtocol, measure
from nas.profilers.protocol import reference_arch, time_interleaved
from nas.search_space import get_space
from nas.store import MeasurementStore

TINY = dict(warmup_runs=1, rounds=2, runs_per_round=2, extra_rounds=0, max_relative_spread=10.0)


class DriftingMachine:
    """A machine whose speed changes with every model run: ``slowdown(step)``
    multiplies each model's true latency (ms)."""

    def __init__(self, slowdown):
        self.step, self.slowdown = 0, slowdown

    def model(self, latency_ms):
        def time_runs(runs):
            times = []
            for _ in range(runs):
                times.append(latency_ms * self.slowdown(self.step))
                self.step += 1
            return np.array(times)
        return time_runs


def test_the_latency_is_the_median_of_the_runs_not_the_fastest():
    runs = np.array([1.0, 2.0, 2.0, 2.1, 9.0])  # fastest 1.0, median 2.0
    for reference in (None, lambda n: np.full(n, 0.5)):
        protocol = MeasurementProtocol(warmup_runs=0, rounds=4, runs_per_round=5, extra_rounds=0,
                                       max_relative_spread=10.0, drift_correction=reference is not None)
        (estimate,) = time_interleaved([lambda n: runs[:n].copy()], reference, protocol)
        assert estimate.latency_ms == 2.0 and estimate.stats["median_ms"] == 2.0
        assert estimate.raw_median_ms == 2.0 and estimate.raw_spread_ms == 0.0


def test_drift_correction_steadies_the_ranking_without_moving_the_level():
    # the machine gets 3x slower over the session, linearly
    machine = DriftingMachine(lambda step: 1.0 + step / 200)
    truth = [1.0, 2.0, 4.0]
    protocol = MeasurementProtocol(warmup_runs=0, rounds=5, runs_per_round=3, extra_rounds=0, group_size=15, seed=0)
    corrected = time_interleaved([machine.model(t) for t in truth], machine.model(1.0), protocol)
    ratios = [e.latency_ms / t for e, t in zip(corrected, truth)]
    assert max(ratios) / min(ratios) == pytest.approx(1.0, abs=0.03)
    for estimate in corrected:
        # the level is the machine's while the cell was timed: its own median run, not a stored scale
        assert estimate.latency_ms == pytest.approx(estimate.raw_median_ms, rel=0.05)
        assert estimate.stats["reference_median_ms"] > 1.2 and min(ratios) > 1.2

    machine = DriftingMachine(lambda step: 1.0 + step / 200)
    raw = time_interleaved([machine.model(t) for t in truth], None,
                           MeasurementProtocol(warmup_runs=0, rounds=5, runs_per_round=3, extra_rounds=0,
                                               drift_correction=False, seed=0))
    assert "reference_median_ms" not in raw[0].stats
    assert all(e.latency_ms == e.raw_median_ms for e in raw)


def test_each_cell_is_handed_back_the_moment_its_rounds_are_done():
    events = []

    class Cells:  # loads a cell when the protocol reads it, as the profilers do
        def __len__(self):
            return 6

        def __getitem__(self, index):
            events.append(("load", index))
            return lambda runs: np.full(runs, 1.0 + index)

    protocol = MeasurementProtocol(warmup_runs=0, rounds=3, runs_per_round=2, extra_rounds=0, group_size=3,
                                   drift_correction=False, seed=0)
    estimates = time_interleaved(Cells(), None, protocol, on_done=lambda i, e: events.append(("done", i)))
    assert [e.latency_ms for e in estimates] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert sorted(i for kind, i in events if kind == "done") == list(range(6))
    # finished cells come back while later ones have not even been loaded, so an interruption keeps them
    assert events.index(("done", 0)) < events.index(("load", 5))
    loaded = done = most_in_rotation = 0
    for kind, _ in events:
        loaded, done = loaded + (kind == "load"), done + (kind == "done")
        most_in_rotation = max(most_in_rotation, loaded - done)
    assert most_in_rotation <= 3


def test_an_outlier_round_is_rejected_and_counted():
    # one round of the session runs 5x slower for the cell only (another process took the core)
    calls = {"n": 0}

    def cell(runs):
        calls["n"] += 1
        return np.full(runs, 10.0 if calls["n"] == 3 else 2.0)

    protocol = MeasurementProtocol(warmup_runs=0, rounds=6, runs_per_round=2, extra_rounds=0, drift_correction=False)
    (estimate,) = time_interleaved([cell], None, protocol)
    assert estimate.latency_ms == 2.0
    assert estimate.stats["rounds_rejected"] == 1
    assert estimate.spread_ms == 0.0
    assert estimate.raw_spread_ms > 0  # the raw rounds keep the slow one
    assert not estimate.flagged


def test_a_cell_whose_rounds_keep_disagreeing_is_repeated_then_flagged():
    calls = {"n": 0}

    def wild(runs):  # rounds spread evenly over 1..4 ms: no single round is an outlier
        calls["n"] += 1
        return np.full(runs, 1.0 + calls["n"] % 4)

    steady = lambda runs: np.full(runs, 2.0)  # noqa: E731
    protocol = MeasurementProtocol(warmup_runs=0, rounds=3, runs_per_round=1, extra_rounds=4,
                                   max_relative_spread=0.05, drift_correction=False)
    wild_estimate, steady_estimate = time_interleaved([wild, steady], None, protocol)
    assert wild_estimate.flagged and wild_estimate.stats["rounds"] == 7
    assert not steady_estimate.flagged and steady_estimate.stats["rounds"] == 3
    assert wild_estimate.spread_ms > 0


def test_rounds_timed_in_a_slow_moment_are_set_aside_and_replaced():
    # models run in turn: reference, cell, reference, cell, ...; a slow moment (steps 6 to 8: the
    # cell's third round, the reference after it, the cell's fourth round) slows the reference 1.5x
    # but the cell 1.8x. Their ratio then is not the steady one, so those rounds are replaced
    calls = {"n": 0}

    def slow_now():
        calls["n"] += 1
        return 6 <= calls["n"] <= 8

    def cell(runs):
        return np.full(runs, 2.0 * (1.8 if slow_now() else 1.0))

    def reference(runs):
        return np.full(runs, 1.0 * (1.5 if slow_now() else 1.0))

    protocol = MeasurementProtocol(warmup_runs=0, rounds=6, runs_per_round=2, extra_rounds=4, outlier_z=100.0,
                                   max_relative_spread=10.0)
    (estimate,) = time_interleaved([cell], reference, protocol)
    assert estimate.stats["rounds"] == 8 and estimate.stats["rounds_slow"] == 2
    assert estimate.latency_ms == pytest.approx(2.0) and estimate.spread_ms == pytest.approx(0.0)
    assert estimate.raw_spread_ms > 0  # the raw rounds keep the slow ones

    # with no extra rounds to spare, the steady majority still decides
    calls["n"] = 0
    (estimate,) = time_interleaved([cell], reference, replace(protocol, extra_rounds=0))
    assert estimate.stats["rounds"] == 6 and estimate.stats["rounds_slow"] == 2
    assert estimate.latency_ms == pytest.approx(2.0)

    # a machine slow for good is measured as it is, not waited on forever
    always_slow = MeasurementProtocol(warmup_runs=0, rounds=3, runs_per_round=1, extra_rounds=2,
                                      max_relative_spread=10.0, slow_tolerance=0.25)
    speeds = iter([1.0] + [2.0] * 100)
    (estimate,) = time_interleaved([lambda runs: np.full(runs, 4.0)],
                                   lambda runs: np.full(runs, next(speeds)), always_slow)
    assert estimate.stats["rounds"] <= 5 and estimate.latency_ms > 0


def test_protocol_settings_are_validated_with_the_setting_named():
    with pytest.raises(UserInputError, match="rounds"):
        MeasurementProtocol.from_settings({"rounds": 0})
    with pytest.raises(UserInputError, match="slow_tolerance"):
        MeasurementProtocol.from_settings({"slow_tolerance": 0})
    with pytest.raises(UserInputError, match="drift_correction"):
        MeasurementProtocol.from_settings({"drift_correction": "yes"})
    assert MeasurementProtocol.from_settings({"rounds": 3, "other": 1}).rounds == 3


def test_reference_arch_is_a_valid_fixed_architecture():
    space = get_space("nb201")
    assert space.validate(reference_arch("nb201")) == reference_arch("nb201")
    assert set(reference_arch("nb201")) == {"nor_conv_1x1"}


@pytest.fixture(scope="module")
def tiny_local_cpu():
    return get_device("local-cpu").with_settings(**TINY, group_size=2)


def test_measure_stores_as_it_goes_and_reuses_stored_measurements(tmp_path, tiny_local_cpu):
    space = get_space("nb201")
    archs = [space.from_index(i) for i in (1, 2, 3)]
    store = MeasurementStore(tmp_path / "m.db")
    first = measure(tiny_local_cpu, "nb201", archs[:2], store=store)
    assert [m.source for m in first] == ["measured", "measured"]
    assert all(m.latency_ms > 0 and m.settings["threads"] == 1 for m in first)
    assert all(m.raw_median_ms > 0 and m.raw_spread_ms >= 0 for m in first)
    assert len(store) == 2  # the cells only: no reference row holds a scale

    second = measure(tiny_local_cpu, "nb201", archs + [archs[0]], store=store)
    assert [m.source for m in second] == ["stored", "stored", "measured", "stored"]
    assert second[0].raw_median_ms == first[0].raw_median_ms
    # stored once, then put on the device's level of the moment: the ratio to that level is what is kept
    ratio = [m.latency_ms / m.stats["reference_level_ms"] for m in (first[0], second[0])]
    assert ratio[0] == pytest.approx(ratio[1], rel=1e-9)
    assert {m.arch for m in store.all(device="local-cpu", space="nb201")} >= {m.arch for m in second}


class SimulatedProfiler(InterleavedProfiler):
    """A device without noise whose speed a test sets: a cell takes 1 ms per convolution
    (plus 1 ms) times ``speed``; nothing is exported."""

    speed = 1.0

    def check_available(self):
        pass

    def load(self, onnx_path):
        raise AssertionError("the simulated device loads no ONNX files")

    def _export_and_load(self, space, arch, folder, name):
        true_ms = 1.0 + sum("conv" in op for op in arch)
        return lambda runs: np.full(runs, true_ms * SimulatedProfiler.speed)


@pytest.fixture
def simulated(monkeypatch):
    monkeypatch.setitem(PROFILERS, "simulated", SimulatedProfiler)
    monkeypatch.setattr(SimulatedProfiler, "kind", "simulated")
    monkeypatch.setattr(SimulatedProfiler, "speed", 1.0)
    return Device("simulated", "a noiseless simulated device", "cpu", "simulated", dict(TINY))


def test_every_store_and_process_reads_a_latency_on_the_devices_one_level(tmp_path, simulated):
    space = get_space("nb201")
    early, late = space.from_index(1), space.from_index(2)  # 4 ms and 3 ms at speed 1
    (first,) = measure(simulated, "nb201", [early], store=tmp_path / "a.db")
    assert first.latency_ms == pytest.approx(4.0) and first.stats["level_relative_spread"] == 0.0
    SimulatedProfiler.speed = 1.5  # the machine is slower for a while
    measure(simulated, "nb201", [late], store=tmp_path / "a.db")
    measure(simulated, "nb201", [late], store=tmp_path / "b.db")
    SimulatedProfiler.speed = 1.0
    in_b = measure(simulated, "nb201", [early, late], store=tmp_path / "b.db")
    in_a = measure(simulated, "nb201", [early, late], store=tmp_path / "a.db")
    assert [m.source for m in in_a] == ["stored", "stored"] and [m.source for m in in_b] == ["measured", "stored"]
    for a, b in zip(in_a, in_b):  # one value per cell, whichever store holds it and whenever it was timed
        assert a.latency_ms == pytest.approx(b.latency_ms, rel=1e-9)
        assert a.spread_ms == pytest.approx(b.spread_ms, rel=1e-9)
    # the ratio between cells is the truth's; the level is the device's typical speed over every block
    assert in_a[0].latency_ms / in_a[1].latency_ms == pytest.approx(4.0 / 3.0, rel=1e-9)
    assert 4.0 <= in_a[0].latency_ms <= 6.0
    # its slow moments widen the spread: a user timing the model then finds it up to that much slower
    assert in_a[0].stats["level_relative_spread"] > 0.1
    assert in_a[0].latency_ms + in_a[0].spread_ms >= 0.9 * 6.0
    assert in_a[0].raw_median_ms == pytest.approx(4.0) and in_b[0].raw_median_ms == pytest.approx(4.0)


def test_the_level_belongs_to_the_device_settings_and_host(tmp_path, simulated):
    space = get_space("nb201")
    measure(simulated, "nb201", [space.from_index(1)], store=False)
    SimulatedProfiler.speed = 2.0
    (other_settings,) = measure(simulated.with_settings(batch_size=2), "nb201", [space.from_index(1)], store=False)
    assert other_settings.latency_ms == pytest.approx(8.0)  # nothing borrowed from batch size 1's level


def test_store_false_neither_reads_nor_writes(tmp_path, tiny_local_cpu, monkeypatch):
    monkeypatch.setenv("NAS_STORE", str(tmp_path / "default.db"))
    arch = get_space("nb201").from_index(5)
    (record,) = measure(tiny_local_cpu, "nb201", [arch], store=False)
    assert record.source == "measured"
    assert not (tmp_path / "default.db").exists()


def test_replayed_devices_are_not_stored(tmp_path):
    store = MeasurementStore(tmp_path / "m.db")
    (record,) = measure("pixel3", "nb201", [get_space("nb201").from_index(7)], store=store)
    assert record.source == "replayed" and record.latency_ms > 0
    assert len(store) == 0


def test_an_unreachable_device_raises_before_anything_is_measured(tmp_path):
    remote = Device("lab-phone", "a phone behind an agent", "phone", "remote", {"url": "http://127.0.0.1:9"})
    with pytest.raises(DeviceUnavailableError, match="nas agent serve"):
        measure(remote, "nb201", [get_space("nb201").from_index(0)], store=MeasurementStore(tmp_path / "m.db"))
