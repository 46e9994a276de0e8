"""The SQLite measurement store."""

import csv
import sqlite3

import pytest

from nas.errors import UserInputError
from nas.profilers.base import LatencyMeasurement
from nas.store import CSV_COLUMNS, MeasurementStore, default_store_path, write_csv

SETTINGS = {"threads": 1, "batch_size": 1}
ARCH = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"


def record(arch=ARCH, latency_ms=3.0, settings=SETTINGS, device="local-cpu", space="nb201", **extra):
    return LatencyMeasurement(device, space, arch, latency_ms, spread_ms=0.1, settings=dict(settings),
                              stats={"median_ms": latency_ms, "p90_ms": latency_ms + 1}, **extra)


def test_put_then_get_round_trips_with_source_stored(tmp_path):
    store = MeasurementStore(tmp_path / "m.db")
    store.put(record(flagged=True))
    found = store.get("local-cpu", SETTINGS, "nb201", ARCH)
    assert found == record(flagged=True, source="stored")
    assert store.get("local-cpu", {"threads": 2, "batch_size": 1}, "nb201", ARCH) is None
    assert store.get("pixel7", SETTINGS, "nb201", ARCH) is None
    assert store.get("local-cpu", SETTINGS, "fbnet", ARCH) is None


def test_settings_key_ignores_dict_order_and_put_replaces(tmp_path):
    store = MeasurementStore(tmp_path / "m.db")
    store.put(record(latency_ms=3.0))
    store.put(record(latency_ms=4.0, settings={"batch_size": 1, "threads": 1}))
    assert len(store) == 1
    assert store.get("local-cpu", {"batch_size": 1, "threads": 1}, "nb201", ARCH).latency_ms == 4.0


def test_every_put_is_committed_at_once(tmp_path):
    path = tmp_path / "m.db"
    MeasurementStore(path).put(record())  # never closed, as in a killed process
    rows = sqlite3.connect(path).execute("SELECT arch, latency_ms FROM measurements").fetchall()
    assert rows == [(ARCH, 3.0)]


def test_all_filters_by_device_and_space(tmp_path):
    store = MeasurementStore(tmp_path / "m.db")
    store.put(record())
    store.put(record(device="pixel7"))
    store.put(record(space="fbnet", arch=" ".join(["skip"] * 22)))
    assert len(store.all()) == 3
    assert [m.device for m in store.all(device="pixel7")] == ["pixel7"]
    assert [m.space for m in store.all(space="fbnet")] == ["fbnet"]
    assert store.all(device="pixel7", space="fbnet") == []


def test_default_path_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_STORE", str(tmp_path / "elsewhere.db"))
    assert default_store_path() == tmp_path / "elsewhere.db"
    MeasurementStore().put(record())
    assert (tmp_path / "elsewhere.db").exists()
    monkeypatch.delenv("NAS_STORE")
    assert default_store_path().name == "measurements.db"


def test_an_unusable_path_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserInputError, match="measurement store"):
        MeasurementStore(tmp_path / "file" / "m.db")


def test_two_stores_on_one_file_see_each_others_measurements(tmp_path):
    first, second = MeasurementStore(tmp_path / "m.db"), MeasurementStore(tmp_path / "m.db")
    first.put(record())
    assert second.get("local-cpu", SETTINGS, "nb201", ARCH) is not None


def test_put_latencies_records_imported_measurements(tmp_path):
    store = MeasurementStore(tmp_path / "m.db")
    store.put_latencies("pixel7", SETTINGS, "nb201", {ARCH: 12.5})
    (found,) = store.all()
    assert (found.device, found.latency_ms, found.settings) == ("pixel7", 12.5, SETTINGS)


def test_write_csv_has_arch_and_latency_first(tmp_path):
    path = write_csv(tmp_path / "out" / "m.csv", [record()])
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == CSV_COLUMNS and CSV_COLUMNS[:2] == ("arch", "latency_ms")
    assert rows[0]["arch"] == ARCH and float(rows[0]["latency_ms"]) == 3.0 and rows[0]["p90_ms"] == "4"
