"""The measurement store in SQLite (see test_store_postgresql.py for PostgreSQL)."""

import csv
import json
import sqlite3

import pytest

from nas.errors import UserInputError
from nas.profilers.base import LatencyMeasurement
from nas.profilers.store import CSV_COLUMNS, SCHEMA_VERSION, MeasurementStore, default_store_path, write_csv

SETTINGS = {"threads": 1, "batch_size": 1}
ARCH = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"


def record(arch=ARCH, latency_ms=3.0, settings=SETTINGS, device="local-cpu", space="nb201", **extra):
    return LatencyMeasurement(device, space, arch, latency_ms, spread_ms=0.1, settings=dict(settings),
                              stats={"median_ms": latency_ms, "p90_ms": latency_ms + 1}, **extra)


def test_put_then_get_round_trips_with_source_stored(tmp_path):
    store = MeasurementStore(tmp_path / "m.db")
    store.put(record(flagged=True, raw_median_ms=3.1, raw_spread_ms=0.2))
    found = store.get("local-cpu", SETTINGS, "nb201", ARCH)
    assert found == record(flagged=True, source="stored", raw_median_ms=3.1, raw_spread_ms=0.2)
    assert store.get("local-cpu", SETTINGS, "nb201", ARCH).raw_median_ms == 3.1
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


LAYOUT_1 = """CREATE TABLE measurements (device TEXT NOT NULL, settings_key TEXT NOT NULL, space TEXT NOT NULL,
    arch TEXT NOT NULL, latency_ms REAL NOT NULL, spread_ms REAL NOT NULL, settings TEXT NOT NULL,
    stats TEXT NOT NULL, flagged INTEGER NOT NULL, origin TEXT NOT NULL, measured_at REAL NOT NULL,
    PRIMARY KEY (device, settings_key, space, arch))"""
REFERENCE = "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|"


def test_a_layout_1_store_is_moved_to_raw_medians_and_loses_its_reference_scale(tmp_path, capsys):
    path, key = tmp_path / "old.db", '{"batch_size":1,"threads":1}'
    old = sqlite3.connect(path)
    old.execute(LAYOUT_1)
    rows = [  # a cell on the once-per-store reference scale, the reference row holding that scale, an import
        (ARCH, 1.93, 0.0965, {"median_ms": 1.9, "reference_ms": 1.1, "raw_median_ms": 2.07, "rounds": 6.0}, "measured"),
        (REFERENCE, 1.1, 0.01, {"median_ms": 1.1, "is_reference": 1.0}, "measured"),
        ("other", 12.5, 0.0, {}, "imported"),
    ]
    old.executemany("INSERT INTO measurements VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [("local-cpu", key, "nb201", arch, ms, spread, key, json.dumps(stats), 0, origin, 1.0)
                     for arch, ms, spread, stats, origin in rows])
    old.commit()
    old.close()

    store = MeasurementStore(path)
    moved = store.get("local-cpu", SETTINGS, "nb201", ARCH)
    assert moved.latency_ms == moved.raw_median_ms == 2.07
    assert moved.spread_ms == pytest.approx(0.0965 * 2.07 / 1.93)  # the relative spread is kept
    assert "reference_ms" not in moved.stats and moved.stats["rounds"] == 6.0
    assert store.get("local-cpu", SETTINGS, "nb201", REFERENCE) is None
    imported = store.get("local-cpu", SETTINGS, "nb201", "other")
    assert imported.latency_ms == 12.5 and imported.raw_median_ms is None
    assert "layout 2" in capsys.readouterr().err
    assert len(MeasurementStore(path)) == 2  # opening again changes nothing


def test_a_store_of_a_newer_layout_is_refused_saying_what_to_do(tmp_path):
    path = tmp_path / "new.db"
    sqlite3.connect(path).execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(UserInputError, match="newer nas.*Upgrade nas, or pass another --store"):
        MeasurementStore(path)


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


def test_write_csv_has_arch_and_latency_first_and_the_raw_timing(tmp_path):
    path = write_csv(tmp_path / "out" / "m.csv", [record(raw_median_ms=3.2, raw_spread_ms=0.3), record(arch="x")])
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == CSV_COLUMNS and CSV_COLUMNS[:2] == ("arch", "latency_ms")
    assert rows[0]["arch"] == ARCH and float(rows[0]["latency_ms"]) == 3.0 and rows[0]["p90_ms"] == "4"
    assert (rows[0]["raw_median_ms"], rows[0]["raw_spread_ms"]) == ("3.2", "0.3")
    assert rows[1]["raw_median_ms"] == ""  # no raw timing behind an imported latency
