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
