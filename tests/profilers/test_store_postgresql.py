"""The measurement store shared by several writers, in SQLite and on a real
PostgreSQL server: nothing is lost, and no architecture is measured twice at once."""

import collections
import threading
import time

import pytest

from nas.devices import Device
from nas.errors import UserInputError
from nas.profilers import PROFILERS, measure
from nas.profilers.base import LatencyMeasurement, Profiler
from nas.profilers.store import MeasurementStore
from nas.search_space import get_space

SETTINGS = {"threads": 1}


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "m.db")
    server = request.getfixturevalue("postgres")
    return server.create_database(f"store_{request.node.name.split('[')[0][-40:]}_{time.monotonic_ns()}")


def record(arch, latency_ms=3.0, device="lab", **extra):
    return LatencyMeasurement(device, "nb201", arch, latency_ms, spread_ms=0.1, settings=dict(SETTINGS),
                              stats={"p90_ms": latency_ms + 1}, **extra)


def test_round_trip_and_replace(location):
    store = MeasurementStore(location)
    store.put(record("a", raw_median_ms=3.1, raw_spread_ms=0.2))
    store.put(record("a", latency_ms=4.0))
    store.put_latencies("other", SETTINGS, "nb201", {"b": 12.5})
    assert store.get("lab", SETTINGS, "nb201", "a").latency_ms == 4.0
    assert store.get("lab", {"threads": 2}, "nb201", "a") is None
    assert len(store) == 2 and [m.arch for m in MeasurementStore(location).all(device="other")] == ["b"]


def test_concurrent_writers_lose_nothing(location):
    def write(worker):
        store = MeasurementStore(location)
        for i in range(15):
            store.put(record(f"w{worker}-{i}"))
        store.close()

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert len(MeasurementStore(location)) == 60


class CountingProfiler(Profiler):
    """A device that takes 0.1 s per architecture and counts what it was asked to measure."""

    measured: collections.Counter = collections.Counter()
    lock = threading.Lock()

    def measure(self, space, archs, on_measured=None):
        records = []
        for arch in archs:
            time.sleep(0.1)
            name = get_space(space).to_string(arch)
            with self.lock:
                self.measured[name] += 1
            records.append(LatencyMeasurement(self.device.name, space, name, 1.0 + len(name) / 100,
                                              settings=self.settings))
            if on_measured is not None:
                on_measured(records[-1])
        return records


def test_processes_sharing_a_store_never_measure_one_architecture_twice(location, monkeypatch):
    monkeypatch.setitem(PROFILERS, "counting", CountingProfiler)
    CountingProfiler.measured.clear()
    device = Device("bench", "", "cpu", "counting", dict(SETTINGS))
    space = get_space("nb201")
    archs = [space.from_index(i) for i in range(30, 38)]
    results = {}

    def worker(number):
        order = archs[number:] + archs[:number]  # each starts somewhere else
        records = measure(device, "nb201", order, store=MeasurementStore(location))
        results[number] = {r.arch: r.latency_ms for r in records}

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    names = {space.to_string(a) for a in archs}
    assert set(CountingProfiler.measured) == names and set(CountingProfiler.measured.values()) == {1}
    assert sorted(results) == [0, 1, 2] and results[0] == results[1] == results[2]
    assert len(MeasurementStore(location).all("bench")) == 8


def test_a_claim_of_a_killed_process_lapses(location, monkeypatch):
    import nas.profilers.store as store_module

    monkeypatch.setattr(store_module, "CLAIM_TTL_S", 0.5)
    dead, alive = MeasurementStore(location), MeasurementStore(location)
    assert dead.claim("lab", SETTINGS, "nb201", ["a", "b"]) == ["a", "b"]
    assert alive.claim("lab", SETTINGS, "nb201", ["a", "b", "c"]) == ["c"]
    time.sleep(0.6)
    assert alive.claim("lab", SETTINGS, "nb201", ["a", "b"]) == ["a", "b"]


def test_a_bad_store_location_says_which_and_how_to_start_one(tmp_path):
    with pytest.raises(UserInputError, match="cannot reach the PostgreSQL measurement store.*pg_ctl"):
        MeasurementStore("postgresql+psycopg://nas:secret@127.0.0.1:1/nas")
    with pytest.raises(UserInputError) as error:
        MeasurementStore("postgresql://nas:secret@127.0.0.1:1/nas")
    assert "secret" not in str(error.value)
    with pytest.raises(UserInputError, match="not a measurement store location"):
        MeasurementStore("mysql://nas@localhost/nas")
    assert MeasurementStore(f"sqlite:///{tmp_path / 's.db'}").path == tmp_path / "s.db"


def test_nas_search_refuses_an_unreachable_store_before_any_work(capsys):
    from nas.cli import main

    assert main(["search", "--device", "pixel2", "--latency", "14ms",
                 "--store", "postgresql+psycopg://nas@127.0.0.1:1/nas"]) == 2
    message = capsys.readouterr().err
    assert "--store" in message and "cannot reach" in message and "Traceback" not in message
