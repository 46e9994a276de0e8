"""``nas search`` on the command line: outputs, exit codes, refusals, Ctrl-C."""

import json

import pytest

from nas.cli import main
from nas.search import accuracy


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_STORE", str(tmp_path / "measurements.db"))


def test_json_prints_one_object_with_the_promised_fields(capsys):
    assert main(["search", "--space", "nb201", "--device", "pixel2", "--latency", "14ms",
                 "--dataset", "cifar100", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["measured_latency_ms"] <= 14 and record["accuracy"] > 69.7
    assert record["device_samples"] <= 20 and record["arch"].startswith("|")
    assert record["predicted_latency_ms"] > 0


def test_summary_counts_every_device_measurement_and_out_dir(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--device", "eyeriss", "--latency", "7ms", "--strategy", "evolution",
                 "--evaluations", "600", "--seed", "1", "--verify", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "result.json").read_text())
    assert f"target-device measurements: {record['device_samples']}" in printed
    assert printed.count("verification ") == len(record["verification"]) <= 4
    assert "freshly initialised" in printed and (out / "model.onnx").stat().st_size > 0


def test_pixel7_without_a_phone_exits_2_with_ways_forward(capsys):
    assert main(["search", "--device", "pixel7", "--latency", "20ms"]) == 2
    message = capsys.readouterr().err
    assert "--measurements" in message and "adb" in message and "nas devices list" in message


def test_space_without_accuracy_estimator_exits_2(monkeypatch, capsys):
    monkeypatch.delitem(accuracy.ESTIMATORS, "fbnet", raising=False)
    assert main(["search", "--space", "fbnet", "--device", "pixel2", "--latency", "20ms"]) == 2
    assert "no accuracy estimator yet" in capsys.readouterr().err


def test_study_options_need_a_strategy_that_shares_studies(capsys, tmp_path):
    assert main(["search", "--device", "pixel2", "--latency", "14ms", "--strategy", "exhaustive",
                 "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert "--strategy" in capsys.readouterr().err


def test_optuna_search_resumes_from_its_study(tmp_path, capsys):
    args = ["search", "--device", "fpga", "--latency", "5ms", "--strategy", "tpe", "--verify", "2", "--json",
            "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study", "fpga5"]
    assert main(args + ["--evaluations", "12"]) == 0
    capsys.readouterr()
    assert main(args + ["--evaluations", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["measured_latency_ms"] <= 5


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("nas.search.search_under_budget", interrupted)
    assert main(["search", "--device", "pixel2", "--latency", "14ms"]) == 130
    assert "run the same command again" in capsys.readouterr().err


def test_a_dataset_fbnet_cannot_use_is_refused_with_the_allowed_ones(capsys):
    assert main(["search", "--space", "fbnet", "--device", "pixel2", "--latency", "30ms",
                 "--dataset", "cifar100"]) == 2
    message = capsys.readouterr().err
    assert "--dataset cifar100 does not apply to fbnet" in message and "digits" in message


def test_progress_lines_are_printed_when_stderr_is_not_a_terminal(capsys):
    assert main(["search", "--device", "pixel2", "--latency", "14ms", "--strategy", "evolution",
                 "--evaluations", "300", "--verify", "2"]) == 0
    err = capsys.readouterr().err
    assert "searching (evolution): 300/300 architectures" in err and "elapsed" in err
