"""The adb profiler, with stand-in ``adb`` executables written as real files."""

import os
import stat

import pytest

from nas.devices import get_device
from nas.errors import DeviceUnavailableError
from nas.profilers import make_profiler
from nas.search_space import get_space

PHONE = """#!/bin/sh
# stand-in adb: one authorized phone with the benchmark binary on it
[ "$1" = "-s" ] && shift 2
case "$1" in
  devices) printf 'List of devices attached\\n28141FDH2000XZ\\tdevice\\n\\n' ;;
  push) echo "$2: 1 file pushed" ;;
  shell) case "$2" in
           test*) echo present ;;
           *) echo "Session creation time cost: 0.01 s"; echo "Average inference time cost: 4.60 ms"; echo "Min Latency: 0.00425 s"; echo "P50 Latency: 0.0045 s" ;;
         esac ;;
esac
"""


def fake_adb(folder, script):
    path = folder / "adb"
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def listing(lines):
    body = "\\n".join(lines)
    return f"#!/bin/sh\nprintf 'List of devices attached\\n{body}\\n'\n"


def test_without_adb_the_message_says_to_install_platform_tools(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeviceUnavailableError, match="platform-tools") as error:
        make_profiler("pixel7").check_available()
    assert "--measurements" in str(error.value) and "nas devices list" in str(error.value)


@pytest.mark.parametrize("devices, expected", [([], "no phone is connected"),
                                               (["28141FDH2000XZ\\tunauthorized"], "not authorized")])
def test_without_a_ready_phone_the_message_says_to_connect_and_authorize(monkeypatch, tmp_path, devices, expected):
    fake_adb(tmp_path, listing(devices))
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(DeviceUnavailableError, match=expected) as error:
        make_profiler("pixel7").check_available()
    assert "USB debugging" in str(error.value)


def test_a_missing_benchmark_binary_says_how_to_push_it(tmp_path):
    adb = fake_adb(tmp_path, PHONE.replace("echo present", "echo missing"))
    with pytest.raises(DeviceUnavailableError, match="adb push onnxruntime_perf_test"):
        make_profiler(get_device("pixel7").with_settings(adb=str(adb))).check_available()


def test_a_connected_phone_is_timed_through_the_benchmark_binary(tmp_path):
    adb = fake_adb(tmp_path, PHONE)
    device = get_device("pixel7").with_settings(adb=str(adb), rounds=2, runs_per_round=1, warmup_runs=0,
                                                extra_rounds=0, drift_correction=False)
    profiler = make_profiler(device)
    profiler.check_available()
    (record,) = profiler.measure("nb201", [get_space("nb201").from_index(3)])
    assert record.latency_ms == pytest.approx(4.5) and record.device == "pixel7"  # the median run, not the fastest
    assert record.settings == {"threads": 1, "batch_size": 1, "graph_optimization_level": "all",
                               "drift_correction": False}
