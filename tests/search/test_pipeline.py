"""search_under_budget: the whole flow, on replayed and really measured devices."""

import json

import numpy as np
import onnxruntime
import pytest

from nas import benchmarks
from nas.devices import get_device
from nas.errors import DeviceUnavailableError, UserInputError
from nas.predictors import reference_archs
from nas.search import search_under_budget
from nas.search_space import get_space


def test_pixel2_result_is_measured_and_meets_the_budget(recorded_ms):
    outcome = search_under_budget("nb201", "pixel2", "14ms", dataset="cifar100")
    space = get_space("nb201")
    assert outcome.status == "verified"
    assert outcome.measured_latency_ms == recorded_ms("pixel2", space.from_string(outcome.arch)) <= 14.0
    assert outcome.accuracy == benchmarks.nb201_accuracy("cifar100")[space.index_of(space.from_string(outcome.arch))]
    assert outcome.device_samples == 10 + len(outcome.verification) <= 20
    # better than HELP's published 69.7% under this budget
    assert outcome.accuracy > 69.7
    lo, hi = outcome.predicted_interval_ms
    assert lo <= outcome.predicted_latency_ms <= hi


def test_out_dir_holds_a_runnable_model_and_the_result(tmp_path):
    outcome = search_under_budget("nb201", "fpga", 5, dataset="cifar10", strategy="evolution", seed=3,
                                  strategy_options={"num_evaluations": 500}, verify_max=3, out=tmp_path)
    record = json.loads((tmp_path / "result.json").read_text())
    for key in ("space", "arch", "device", "budget_ms", "predicted_latency_ms", "measured_latency_ms", "accuracy",
                "device_samples", "strategy", "seed", "versions"):
        assert key in record
    assert record["arch"] == outcome.arch and record["strategy"] == "evolution" and record["seed"] == 3
    assert record["device_samples"] <= 13 and record["measured_latency_ms"] <= 5
    assert "torch" in record["versions"] and "onnxruntime" in record["versions"]
    summary = (tmp_path / "summary.txt").read_text()
    assert "freshly initialised" in summary and outcome.arch in summary
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    logits = session.run(None, {"input": np.zeros((2, 3, 32, 32), np.float32)})[0]
    assert logits.shape == (2, 10)


def test_only_given_measurements_give_a_prediction_with_its_interval(recorded_ms):
    space = get_space("nb201")
    given = {space.to_string(a): recorded_ms("pixel3", a) for a in reference_archs("nb201")}
    outcome = search_under_budget("nb201", "pixel7", "20ms", measurements=given)
    assert outcome.status == "predicted" and outcome.measured_latency_ms is None
    low, high = outcome.predicted_interval_ms
    assert high <= 20.0 and low < outcome.predicted_latency_ms < high
    assert outcome.device_samples == 10 and "PREDICTION" in outcome.summary()


def test_unreachable_phone_without_measurements_lists_ways_forward():
    with pytest.raises(DeviceUnavailableError) as caught:
        search_under_budget("nb201", "pixel7", "20ms")
    message = str(caught.value)
    assert "--measurements" in message and "adb" in message and "nas devices list" in message


def test_budget_no_cell_meets_says_so_and_shows_the_fastest():
    outcome = search_under_budget("nb201", "pixel2", "3ms", verify_max=4)
    assert outcome.status == "over_budget" and outcome.arch is None
    assert len(outcome.verification) <= 4 and outcome.fastest["measured_latency_ms"] >= 4.0
    assert "no measured architecture meets" in outcome.summary()


def test_bad_inputs_are_refused_before_measuring():
    with pytest.raises(UserInputError, match="latency budget"):
        search_under_budget("nb201", "pixel2", "fast")
    with pytest.raises(UserInputError, match="--verify"):
        search_under_budget("nb201", "pixel2", "14ms", verify_max=-1)
    with pytest.raises(UserInputError, match="unknown device"):
        search_under_budget("nb201", "pixel22", "14ms")


def test_local_cpu_search_measures_for_real_and_reuses_the_store(tmp_path):
    device = get_device("local-cpu").with_settings(rounds=1, runs_per_round=2, warmup_runs=1,
                                                   drift_correction=False, group_size=10)
    store = tmp_path / "m.db"
    outcome = search_under_budget("nb201", device, "1000ms", verify_max=1, store=store)
    assert outcome.status == "verified" and outcome.measured_latency_ms <= 1000
    assert outcome.device_samples == 10 + len(outcome.verification) and outcome.samples_reused == 0
    again = search_under_budget("nb201", device, "1000ms", verify_max=0, store=store)
    assert again.samples_reused == again.device_samples == 10
