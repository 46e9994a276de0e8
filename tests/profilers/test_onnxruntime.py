"""The local ONNX Runtime profiler, on real exported models."""

import numpy as np
import pytest

from nas.devices import get_device
from nas.errors import UserInputError
from nas.export import export_arch
from nas.profilers import make_profiler
from nas.profilers.onnxruntime import OnnxRuntimeModel, OnnxRuntimeProfiler
from nas.search_space import get_space

TINY = dict(warmup_runs=1, rounds=2, runs_per_round=3, extra_rounds=0)


@pytest.fixture(scope="module")
def cell_onnx(tmp_path_factory):
    return export_arch("nb201", get_space("nb201").from_index(100), tmp_path_factory.mktemp("onnx") / "cell.onnx")


def test_a_model_times_the_requested_number_of_runs_in_milliseconds(cell_onnx):
    model = OnnxRuntimeModel(cell_onnx, threads=1, batch_size=2, graph_optimization_level="basic")
    times = model(4)
    assert times.shape == (4,) and np.all(times > 0)


def test_an_invalid_model_is_a_clear_error(tmp_path):
    garbage = tmp_path / "broken.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    with pytest.raises(UserInputError, match="not an ONNX model"):
        OnnxRuntimeModel(garbage)
    with pytest.raises(UserInputError, match="no ONNX model"):
        OnnxRuntimeModel(tmp_path / "missing.onnx")


@pytest.mark.parametrize("setting, value, allowed", [("threads", 0, ">= 1"), ("batch_size", "4", ">= 1"),
                                                     ("graph_optimization_level", "max", "disabled, basic")])
def test_bad_settings_name_the_setting_and_what_is_allowed(setting, value, allowed):
    with pytest.raises(UserInputError, match=f"{setting}.*{allowed}"):
        make_profiler(get_device("local-cpu").with_settings(**{setting: value}))


def test_measurements_carry_settings_statistics_and_spread():
    device = get_device("local-cpu").with_settings(threads=2, graph_optimization_level="extended", **TINY)
    profiler = make_profiler(device)
    assert isinstance(profiler, OnnxRuntimeProfiler)
    space = get_space("nb201")
    archs = [space.from_index(0), space.from_index(15624)]
    records = profiler.measure("nb201", archs)
    assert [r.arch for r in records] == [space.to_string(a) for a in archs]
    for record in records:
        assert record.settings == {"threads": 2, "batch_size": 1, "graph_optimization_level": "extended",
                                   "drift_correction": True}
        stats = record.stats
        assert stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]
        assert stats["mean_ms"] > 0 and stats["std_ms"] >= 0 and record.spread_ms >= 0
        assert stats["rounds"] == 2 and stats["runs_per_round"] == 3 and stats["warmup_runs"] == 1
        assert stats["reference_median_ms"] > 0 and record.latency_ms > 0
        assert record.raw_median_ms > 0 and record.raw_spread_ms >= 0


def test_without_drift_correction_no_reference_is_timed():
    device = get_device("local-cpu").with_settings(drift_correction=False, batch_size=3, **TINY)
    profiler = make_profiler(device)
    (record,) = profiler.measure("nb201", [get_space("nb201").from_index(42)])
    assert record.settings["drift_correction"] is False and record.settings["batch_size"] == 3
    assert "reference_median_ms" not in record.stats
    assert record.raw_median_ms > 0
