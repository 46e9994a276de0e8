"""The device's reference level: one scale per device and settings, shared by stores and processes."""

import subprocess
import sys

import numpy as np
import pytest

from nas.errors import UserInputError
from nas.profilers import MeasurementProtocol
from nas.profilers.levels import ReferenceLevels, level_of, this_host
from nas.profilers.protocol import time_interleaved


def test_the_level_is_the_median_block_and_its_spread_the_slow_moments():
    level = level_of([1.0] * 8 + [1.5, 2.0])
    assert level.level_ms == 1.0 and level.blocks == 10
    assert level.relative_spread == pytest.approx(np.percentile([1.0] * 8 + [1.5, 2.0], 90) - 1.0)
    assert level_of([2.0, 2.0]).relative_spread == 0.0


def test_the_spread_is_judged_over_seconds_not_single_blocks():
    # one block in ten is slow (a hiccup), but no second is: a user timing the model for a second sees no
    # slowdown, so the spread stays small; a whole slow second widens it
    blocks = [1.0] * 9 + [2.0]
    times = [i * 0.3 for i in range(60)]
    hiccups = level_of(blocks * 6, times)
    assert hiccups.level_ms == 1.0 and hiccups.relative_spread == 0.0
    assert level_of(blocks * 6).relative_spread > 0.0  # without times every block is judged alone
    slow_second = [1.0] * 50 + [1.5] * 10
    assert level_of(slow_second, times).relative_spread == pytest.approx(0.5, abs=0.01)


def test_processes_share_one_level_per_key(tmp_path):
    path = tmp_path / "levels.db"
    with ReferenceLevels(path) as levels:
        levels.add("dev|a", [1.0, 1.0])
    script = ("import sys; from nas.profilers.levels import ReferenceLevels\n"
              "with ReferenceLevels(sys.argv[1]) as levels: levels.add('dev|a', [3.0, 3.0, 3.0])")
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    with ReferenceLevels(path) as levels:
        assert levels.level("dev|a").level_ms == 3.0 and levels.level("dev|a").blocks == 5
        assert levels.level("dev|b") is None


def test_an_unwritable_level_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserInputError, match="NAS_LEVELS"):
        ReferenceLevels(blocker / "levels.db")


def test_this_host_names_the_processor_steadily():
    assert this_host() == this_host() and len(this_host()) == 16


def test_cells_go_on_the_devices_level_and_their_spread_widens_by_its():
    protocol = MeasurementProtocol(warmup_runs=0, rounds=3, runs_per_round=2, extra_rounds=0, seed=0)
    seen = []

    def levels(blocks, times):
        assert len(times) == len(blocks) and times == sorted(times)
        seen.extend(blocks)
        return level_of([2.0] * 9 + [3.0])  # the device usually times the reference at 2 ms

    cells = [lambda n: np.full(n, 3.0), lambda n: np.full(n, 6.0)]  # reference at 1 ms now: 3x and 6x
    estimates = time_interleaved(cells, lambda n: np.full(n, 1.0), protocol, levels=levels)
    assert [e.latency_ms for e in estimates] == pytest.approx([6.0, 12.0])
    assert [e.raw_median_ms for e in estimates] == pytest.approx([3.0, 6.0])
    assert seen and set(seen) == {1.0}  # every reference block is handed over once
    spread = level_of([2.0] * 9 + [3.0]).relative_spread
    assert estimates[0].stats["cell_spread_ms"] == 0.0 and estimates[0].spread_ms == pytest.approx(6.0 * spread)
    assert estimates[0].stats["reference_level_ms"] == 2.0 and estimates[0].stats["reference_median_ms"] == 1.0
    assert not any(e.flagged for e in estimates)  # the level's spread never asks for more rounds


def test_devices_show_prints_the_reference_level(tmp_path, monkeypatch, capsys):
    from nas.cli import main
    from nas.devices import get_device
    from nas.profilers import make_profiler

    monkeypatch.setenv("NAS_STORE", str(tmp_path / "m.db"))
    key = make_profiler(get_device("local-cpu")).level_key("nb201")
    with ReferenceLevels() as levels:  # $NAS_LEVELS: this test's own file
        levels.add(key, [0.8] * 9 + [1.2])
    assert main(["devices", "show", "local-cpu"]) == 0
    shown = capsys.readouterr().out
    assert "nb201: reference model 0.800 ms (median of 10 blocks), slow moments +5 %" in shown  # 90th percentile 0.84 ms


def test_the_level_follows_the_latest_window_and_old_blocks_are_dropped(tmp_path, monkeypatch):
    from nas.profilers import levels as module

    monkeypatch.setattr(module, "WINDOW_BLOCKS", 4)
    monkeypatch.setattr(module, "KEEP_BLOCKS", 6)
    with ReferenceLevels(tmp_path / "levels.db") as levels:
        levels.add("k", [1.0] * 5)
        levels.add("k", [2.0] * 4)  # the device became slower for good
        assert levels.level("k").level_ms == 2.0
        assert levels._connection.execute("SELECT COUNT(*) FROM reference_blocks").fetchone()[0] == 6


def test_a_record_stored_before_levels_were_shared_is_put_on_the_level_too():
    from nas.profilers import LatencyMeasurement
    from nas.profilers.levels import Level
    from nas.profilers.protocol import on_current_level

    old = LatencyMeasurement("local-cpu", "nb201", "|a|", 3.0, spread_ms=0.03,
                             stats={"reference_median_ms": 1.5, "median_ms": 3.0})
    now = on_current_level(old, Level(1.0, 0.5, 100))
    assert now.latency_ms == pytest.approx(2.0) and now.stats["median_ms"] == pytest.approx(2.0)
    assert now.spread_ms == pytest.approx(float(np.hypot(0.02, 1.0)))  # its rounds' spread and the slow moments
    raw = LatencyMeasurement("local-cpu", "nb201", "|a|", 3.0, spread_ms=0.03)  # no reference: as measured
    assert on_current_level(raw, Level(1.0, 0.5, 100)) == raw
