"""``nas profile``: measuring, skipping what is stored, surviving a kill."""

import csv
import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from nas.cli import main
from nas.search_space import get_space

TINY = ["--rounds", "2", "--runs-per-round", "2", "--warmup-runs", "1"]


def profile(tmp_path, *extra):
    return main(["profile", "--device", "local-cpu", "--space", "nb201", "--store", str(tmp_path / "m.db"),
                 *TINY, *extra])


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_profile_writes_csv_and_a_table_then_skips_what_is_stored(tmp_path, capsys):
    assert profile(tmp_path, "--num", "2", "--seed", "3", "--out", str(tmp_path / "a.csv")) == 0
    first = read_rows(tmp_path / "a.csv")
    assert list(first[0])[:2] == ["arch", "latency_ms"]
    assert [r["source"] for r in first] == ["measured", "measured"]
    printed = capsys.readouterr().out
    assert "latency_ms" in printed and first[0]["arch"] in printed

    assert profile(tmp_path, "--num", "3", "--seed", "3", "--out", str(tmp_path / "b.csv")) == 0
    second = read_rows(tmp_path / "b.csv")
    assert [r["source"] for r in second] == ["stored", "stored", "measured"]
    # the stored cells come back as timed, on the device's reference level of the moment (which the third
    # cell's reference blocks moved): their raw medians are the stored ones, their ratio to each other kept
    assert [r["raw_median_ms"] for r in second[:2]] == [r["raw_median_ms"] for r in first]
    ratio = [float(rows[0]["latency_ms"]) / float(rows[1]["latency_ms"]) for rows in (first, second)]
    assert ratio[0] == pytest.approx(ratio[1], rel=1e-4)  # 6 decimals in the CSV


def test_archs_file_lists_canonical_strings(tmp_path):
    space = get_space("nb201")
    wanted = [space.to_string(space.from_index(i)) for i in (9, 99)]
    (tmp_path / "archs.txt").write_text("# two cells\n" + "\n".join(wanted) + "\n")
    assert profile(tmp_path, "--archs", str(tmp_path / "archs.txt"), "--no-drift-correction",
                   "--out", str(tmp_path / "o.csv")) == 0
    assert [r["arch"] for r in read_rows(tmp_path / "o.csv")] == wanted


def test_bad_archs_file_and_bad_num_exit_2(tmp_path, capsys):
    (tmp_path / "archs.txt").write_text("|not_an_op~0|\n")
    assert profile(tmp_path, "--archs", str(tmp_path / "archs.txt")) == 2
    assert profile(tmp_path, "--num", "0") == 2
    assert "--num" in capsys.readouterr().err


@pytest.mark.parametrize("adb, advice", [(None, "platform-tools"), ("no phone", "USB debugging")])
def test_pixel7_without_adb_or_phone_exits_2_saying_what_to_do(tmp_path, monkeypatch, capsys, adb, advice):
    if adb:  # an adb that lists no phone
        (tmp_path / "adb").write_text("#!/bin/sh\nprintf 'List of devices attached\\n\\n'\n")
        (tmp_path / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    code = main(["profile", "--device", "pixel7", "--space", "nb201", "--num", "2", "--store", str(tmp_path / "m.db")])
    error = capsys.readouterr().err
    assert code == 2
    assert advice in error and "--measurements" in error and "nas devices list" in error


def test_pixel7_measurements_file_is_stored_and_needs_no_phone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    space = get_space("nb201")
    archs = [space.to_string(space.from_index(i)) for i in (1, 2)]
    (tmp_path / "phone.csv").write_text("arch,latency_ms\n" + "".join(f"{a},{10 + i}\n" for i, a in enumerate(archs)))
    args = ["profile", "--device", "pixel7", "--space", "nb201", "--store", str(tmp_path / "m.db")]
    assert main([*args, "--measurements", str(tmp_path / "phone.csv"), "--out", str(tmp_path / "o.csv")]) == 0
    assert [float(r["latency_ms"]) for r in read_rows(tmp_path / "o.csv")] == [10.0, 11.0]
    (tmp_path / "archs.txt").write_text(archs[1] + "\n")
    assert main([*args, "--archs", str(tmp_path / "archs.txt")]) == 0  # stored: no phone needed


def stored_cells(db):
    if not db.exists():
        return 0
    try:
        return sqlite3.connect(db, timeout=5).execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0


def test_an_interrupted_run_keeps_the_cells_finished_mid_group(tmp_path):
    db = tmp_path / "m.db"
    # one group of 6 cells in 3 rounds: two enter per round, so the first two finish two rounds before the last
    command = [sys.executable, "-m", "nas", "profile", "--device", "local-cpu", "--space", "nb201", "--num", "6",
               "--seed", "2", "--store", str(db), "--group-size", "6", "--rounds", "3", "--runs-per-round", "10",
               "--warmup-runs", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600  # generous: a heavily shared machine is slow to export and time
        while stored_cells(db) < 1 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, error = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == 130 and "Traceback" not in error and "interrupted" in error
    rows = sqlite3.connect(db).execute("SELECT latency_ms, raw_median_ms, stats FROM measurements").fetchall()
    assert 1 <= len(rows) < 6
    assert all(latency > 0 and raw > 0 and json.loads(stats)["rounds"] >= 3 for latency, raw, stats in rows)


def test_a_killed_run_keeps_every_finished_measurement(tmp_path):
    db = tmp_path / "m.db"
    command = [sys.executable, "-m", "nas", "profile", "--device", "local-cpu", "--space", "nb201", "--num", "30",
               "--seed", "1", "--store", str(db), "--group-size", "1", *TINY]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while stored_cells(db) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    kept = stored_cells(db)
    assert 2 <= kept < 30
    rows = sqlite3.connect(db).execute("SELECT latency_ms, spread_ms FROM measurements").fetchall()
    assert all(latency > 0 and spread >= 0 for latency, spread in rows)

    # the same seed samples the same first cells: both were finished before the kill, so nothing is measured
    assert main(["profile", "--device", "local-cpu", "--space", "nb201", "--num", "2", "--seed", "1",
                 "--store", str(db), *TINY, "--out", str(tmp_path / "o.csv")]) == 0
    sources = [r["source"] for r in read_rows(tmp_path / "o.csv")]
    assert sources == ["stored", "stored"]
