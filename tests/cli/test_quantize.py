import json

import pytest

from nas.cli import main


@pytest.fixture
def model_file(tmp_path):
    from torch import nn

    from nas.export import export_module

    return export_module(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)), (1, 8, 8),
                         tmp_path / "model.onnx")


@pytest.mark.parametrize("extra, message", [
    (["--tolerance", "-1%"], "negative"),
    (["--tolerance", "lots"], "not understood"),
    (["--precision", "int16"], "would not pay"),
    (["--device", "pixel2"], "local-cpu"),
])
def test_bad_input_exits_2_with_a_message(model_file, capsys, extra, message):
    assert main(["quantize", "--model", str(model_file), "--data", "digits", *extra]) == 2
    assert message in capsys.readouterr().err


def test_missing_model_and_data_folder_exit_2(tmp_path, capsys):
    from torch import nn

    from nas.export import export_module

    fashion = export_module(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 28, 28), tmp_path / "f.onnx")
    assert main(["quantize", "--model", str(tmp_path / "none.onnx"), "--data", "digits"]) == 2
    assert main(["quantize", "--model", str(fashion), "--data", "fashion-mnist", "--data-dir",
                 str(tmp_path / "absent")]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_a_model_without_quantizable_layers_exits_2(tmp_path, capsys):
    from torch import nn

    from nas.export import export_module

    path = export_module(nn.Sequential(nn.Flatten(), nn.Softmax(dim=1)), (1, 8, 8), tmp_path / "m.onnx")
    assert main(["quantize", "--model", str(path), "--data", "digits"]) == 2
    assert "quantizable layer" in capsys.readouterr().err


def test_quantize_a_model_file_and_report_json(model_file, tmp_path, capsys):
    code = main(["quantize", "--model", str(model_file), "--data", "digits", "--tolerance", "100pt",
                 "--scorer", "weight_error", "--out", str(tmp_path / "out"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["search"]["k"] == report["num_layers"] == 2  # any accuracy is inside 100 points
    assert set(report["latency_ms"]) == {"float32", "all_int8", "chosen"}
    assert (tmp_path / "out" / "model_int8.onnx").is_file()


def test_a_slow_precision_runs_when_forced(model_file, tmp_path, capsys):
    code = main(["quantize", "--model", str(model_file), "--data", "digits", "--precision", "int16", "--force",
                 "--tolerance", "100pt", "--no-latency", "--out", str(tmp_path), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["precision"] == "int16"
