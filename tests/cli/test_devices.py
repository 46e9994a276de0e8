import subprocess
import sys

from nas import benchmarks
from nas.cli import main
from nas.devices import get_device, list_devices


def test_catalog_covers_every_table_column_and_the_real_devices():
    names = {d.name for d in list_devices()}
    for space in ("nb201", "fbnet"):
        assert set(benchmarks.latency_table(space).devices) <= names
    assert {"local-cpu", "pixel7"} <= names
    assert get_device("pixel7").hardware["soc"] == "Google Tensor G2"
    assert get_device("local-cpu").profiler_kind == "onnxruntime"
    assert get_device("pixel2").profiler_kind == "replay"


def test_devices_list_prints_a_table(capsys):
    assert main(["devices", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["name", "category", "profiler"]
    assert "pixel7" in out and "raspi4" in out


def test_devices_show(capsys):
    assert main(["devices", "show", "pixel7"]) == 0
    assert "Tensor G2" in capsys.readouterr().out


def test_unknown_device_exits_2_and_suggests_close_names():
    result = subprocess.run([sys.executable, "-m", "nas", "devices", "show", "pixel8"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown device 'pixel8'" in result.stderr
    assert "pixel7" in result.stderr


# --------------------------------------------------------------------------- #
# Your own devices
# --------------------------------------------------------------------------- #
import csv  # noqa: E402

import pytest  # noqa: E402

from nas.search_space import get_space  # noqa: E402
from nas.store import MeasurementStore  # noqa: E402


@pytest.fixture
def own_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_DEVICES", str(tmp_path / "devices"))
    monkeypatch.setenv("NAS_STORE", str(tmp_path / "measurements.db"))
    return tmp_path


def test_devices_add_writes_a_checked_file(own_folders, capsys):
    assert main(["devices", "add", "bench-pi", "--profiler", "remote", "--url", "http://127.0.0.1:9",
                 "--description", "Raspberry Pi 5", "--space", "nb201"]) == 0
    printed = capsys.readouterr().out
    assert "does not answer now" in printed and "bench-pi.yaml" in printed
    assert get_device("bench-pi").settings["url"] == "http://127.0.0.1:9"
    assert main(["devices", "add", "bench-pi", "--profiler", "remote", "--url", "http://127.0.0.1:9"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["devices", "add", "other", "--profiler", "remote", "--url", "ftp://x"]) == 2
    assert "url" in capsys.readouterr().err
    assert main(["devices", "add", "other", "--profiler", "warp-drive"]) == 2
    assert "allowed: adb" in capsys.readouterr().err
    assert main(["devices", "add", "cpu2", "--profiler", "onnxruntime", "--threads", "2",
                 "--set", "rounds=4"]) == 0
    assert get_device("cpu2").settings == {"threads": 2, "rounds": 4}
    assert main(["devices", "add", "cpu3", "--profiler", "onnxruntime", "--set", "rounds=-1"]) == 2
    assert "rounds" in capsys.readouterr().err


def test_devices_list_names_a_malformed_file_and_still_lists_the_rest(own_folders, capsys):
    folder = own_folders / "devices"
    folder.mkdir()
    (folder / "broken.yaml").write_text("name: broken\nprofiler:\n  kind: remote\n  setings: {}\n")
    assert main(["devices", "list"]) == 2
    captured = capsys.readouterr()
    assert "pixel7" in captured.out and "broken.yaml:4: field 'profiler.setings'" in captured.err


def test_a_device_outside_the_catalog_is_searched_on_its_measurements_and_stored(own_folders, capsys):
    space = get_space("nb201")
    from nas import benchmarks
    from nas.predictors import reference_archs

    column = benchmarks.latency_table("nb201").column("pixel2")
    path = own_folders / "m.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "latency_ms"])
        for arch in reference_archs("nb201"):
            writer.writerow([space.to_string(arch), float(column[space.index_of(arch)])])
    assert main(["search", "--device", "my-board", "--latency", "14ms", "--measurements", str(path),
                 "--json"]) == 0
    import json

    record = json.loads(capsys.readouterr().out)
    assert record["device"] == "my-board" and record["status"] == "predicted"
    low, high = record["predicted_interval_ms"]
    assert low <= record["predicted_latency_ms"] <= high <= 14 and record["measured_latency_ms"] is None
    stored = MeasurementStore(own_folders / "measurements.db").all("my-board", "nb201")
    assert len(stored) == 10
    assert main(["devices", "show", "my-board"]) == 0
    out = capsys.readouterr().out
    assert "not in the catalog" in out and "nb201: 10 measurements, all 10 reference architectures there" in out
    assert main(["search", "--device", "my-board", "--latency", "14ms"]) == 2
    assert "nas devices add my-board" in capsys.readouterr().err
