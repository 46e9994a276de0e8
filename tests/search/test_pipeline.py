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
from nas.search.accuracy import AccuracyEstimator
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


class FlopsAccuracy(AccuracyEstimator):
    """A cheap stand-in for fbnet's supernet estimator: more multiply-accumulates, more accurate."""

    space = "fbnet"
    description = "accuracy rising with FLOPs (test estimator)"
    num_classes = 100

    def __init__(self, cheap: bool = True, default_evaluations: int | None = None):
        self.cheap, self.default_evaluations = cheap, default_evaluations

    def estimate(self, archs):
        self.calls = getattr(self, "calls", []) + [len(archs)]
        space = get_space("fbnet")
        return np.array([20.0 + 10.0 * np.log10(space.flops(a)) for a in archs])


@pytest.fixture
def flops_fbnet(monkeypatch):
    from nas.search import accuracy

    monkeypatch.setitem(accuracy.ESTIMATORS, "fbnet", lambda **options: FlopsAccuracy())


@pytest.mark.parametrize("strategy, evaluations", [("evolution", 150), ("random", 150), ("tpe", 30), ("nsga2", 30)])
def test_a_replayed_device_searches_the_architectures_its_table_holds(flops_fbnet, strategy, evaluations):
    space = get_space("fbnet")
    recorded = set(space.measured_archs())
    references = {space.to_string(a) for a in reference_archs("fbnet")}
    outcome = search_under_budget("fbnet", "pixel2", "30ms", strategy=strategy, verify_max=5,
                                  strategy_options={"num_evaluations": evaluations})
    assert "5,000 fbnet architectures recorded for pixel2" in outcome.summary()
    # candidates come from the table, so the device can verify them: verification happens
    assert outcome.verification and all(space.from_string(v["arch"]) in recorded for v in outcome.verification)
    assert outcome.status == "verified" and outcome.measured_latency_ms <= 30
    assert outcome.arch not in references or "not an architecture the strategy found" in outcome.summary()
    assert outcome.to_dict()["found_by"] == ("reference_sample" if outcome.arch in references else "search")


def test_a_reference_sample_returned_as_the_result_is_labelled_as_one(recorded_ms, monkeypatch):
    from nas.search import accuracy

    space = get_space("nb201")
    references = {space.to_string(a) for a in reference_archs("nb201")}

    class ReferencesBest(accuracy.NB201TableAccuracy):
        def estimate(self, archs):  # the reference samples outrank every other cell
            return np.array([99.0 if space.to_string(a) in references else 1.0 for a in archs])

    monkeypatch.setitem(accuracy.ESTIMATORS, "nb201", lambda dataset="cifar100": ReferencesBest(dataset))
    outcome = search_under_budget("nb201", "pixel2", "14ms")
    assert outcome.arch in references and outcome.reference_sample
    assert outcome.to_dict()["found_by"] == "reference_sample"
    assert "reference samples measured on pixel2 before the search" in outcome.summary()


def test_the_fallback_to_a_reference_sample_after_over_budget_verifications_is_explained():
    from nas.search.pipeline import SearchOutcome

    over = {"arch": "x", "accuracy": 70.0, "predicted_latency_ms": 13.0, "predicted_high_ms": 13.9,
            "measured_latency_ms": 15.0, "spread_ms": 0.0, "meets_budget": False}
    outcome = SearchOutcome("nb201", "pixel2", 14.0, "cifar100", "exhaustive", 0, "verified", "|a|", 60.0, 12.0,
                            (11.0, 13.0), 0.9, 12.5, 12, 0, "10 replayed", "table", verification=[over, over],
                            reference_sample=True, samples_device="pixel2")
    assert "every verified candidate of the search (2) was over budget" in outcome.summary()
    assert "falls back to the most accurate reference sample" in outcome.summary()


def test_measurements_of_another_device_are_refused_and_unnamed_ones_recorded(tmp_path, recorded_ms):
    space = get_space("nb201")
    rows = [(space.to_string(a), recorded_ms("pixel3", a)) for a in reference_archs("nb201")]
    named = tmp_path / "pixel3.csv"
    named.write_text("arch,latency_ms,device\n" + "".join(f"{a},{ms},pixel3\n" for a, ms in rows))
    with pytest.raises(UserInputError, match="measurements of pixel3.*--device is pixel2"):
        search_under_budget("nb201", "pixel2", "14ms", measurements=named)
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text("arch,latency_ms\n" + "".join(f"{a},{ms}\n" for a, ms in rows))
    record = search_under_budget("nb201", "pixel2", "14ms", measurements=unnamed, verify_max=3).to_dict()
    assert "assumed" in record["reference_samples_device"] and record["verification_device"] == "pixel2"
    same = search_under_budget("nb201", "pixel3", "14ms", measurements=named, verify_max=3).to_dict()
    assert same["reference_samples_device"] == "pixel3" == same["verification_device"]


def test_result_records_the_class_count_and_a_chance_level_network_is_warned_about(tmp_path):
    from nas.search.pipeline import chance_level_warning

    outcome = search_under_budget("nb201", "pixel2", "14ms", dataset="cifar100", verify_max=2, out=tmp_path)
    assert json.loads((tmp_path / "result.json").read_text())["num_classes"] == 100 == outcome.num_classes
    assert outcome.warnings == []
    assert "near chance (10.0% for 10 classes)" in chance_level_warning(12.5, 10, "test accuracy")
    assert chance_level_warning(60.0, 10, "test accuracy") is None
    assert chance_level_warning(1.5, 100, "test accuracy") is not None


def test_progress_lines_reach_a_log_with_elapsed_time_and_eta():
    import io

    from nas.search.pipeline import ProgressLines

    log = io.StringIO()
    with ProgressLines(10, "searching (evolution)", stream=log, every=4) as lines:
        for _ in range(10):
            lines.update(1)
    printed = log.getvalue().splitlines()
    assert printed[0].startswith("searching (evolution): 4/10 architectures, ") and "ETA" in printed[0]
    assert printed[-1].startswith("searching (evolution): 10/10 architectures") and "elapsed" in printed[-1]


def test_a_costly_estimator_gets_its_default_count_and_is_announced(monkeypatch, capsys):
    from nas.search import accuracy

    estimator = FlopsAccuracy(cheap=False, default_evaluations=40)
    monkeypatch.setitem(accuracy.ESTIMATORS, "fbnet", lambda **options: estimator)
    outcome = search_under_budget("fbnet", "pixel2", "30ms", strategy="evolution", verify_max=2, progress=True)
    assert 40 <= outcome.num_evaluations <= 40 + 10  # + the reference samples
    # scored a round at a time, the first population too, so progress lines come as the scoring goes
    assert max(estimator.calls) <= 16
    err = capsys.readouterr().err
    assert "strategy evolution scores up to 40 architectures" in err and "ETA" in err
