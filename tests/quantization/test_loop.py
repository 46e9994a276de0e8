import json

import pytest

from nas.cli import main
from nas.errors import UserInputError
from nas.quantization.loop import check_search_quantizable, quantize_search_result


@pytest.fixture
def search_folder(tmp_path, trained_onnx):
    """What 'nas search --out' writes for a network the strategy trained."""
    (tmp_path / "model.onnx").write_bytes(trained_onnx.read_bytes())
    (tmp_path / "result.json").write_text(json.dumps({"arch": "tiny", "weights": "trained by the search strategy"}))
    (tmp_path / "summary.txt").write_text("search: tiny\n")
    return tmp_path


def test_the_search_result_gains_float_and_quantized_accuracy_and_latency(search_folder):
    result = quantize_search_result(search_folder, data="digits", device="local-cpu", tolerance="1%")
    record = json.loads((search_folder / "result.json").read_text())
    block = record["quantization"]
    assert record["arch"] == "tiny"  # the search's own record is kept
    assert (search_folder / block["quantized_model"]).is_file() and (search_folder / block["report"]).is_file()
    for model in ("float32", "quantized"):
        assert 0 <= block[model]["test_accuracy"] <= 100 and block[model]["latency_ms"] > 0
    assert block["quantized"]["validation_accuracy"] >= block["float32"]["validation_accuracy"] - 1.0
    assert block["latency_device"] == "local-cpu" and block["latency_not_measured"] is None
    assert block["int8_layers"] == len(result.search.int8_layers) <= block["quantizable_layers"]
    assert "quantize:" in (search_folder / "summary.txt").read_text()


def test_a_device_this_machine_cannot_time_is_quantized_and_says_why_no_latency(search_folder):
    quantize_search_result(search_folder, data="digits", device="pixel2", tolerance="1%")
    block = json.loads((search_folder / "result.json").read_text())["quantization"]
    assert block["float32"]["latency_ms"] is None and "replay" in block["latency_not_measured"]


def test_untrained_weights_are_refused(search_folder):
    (search_folder / "result.json").write_text(json.dumps({"weights": "freshly initialised (seed 0), not trained"}))
    with pytest.raises(UserInputError, match="never trained"):
        quantize_search_result(search_folder, data="digits")


def test_the_up_front_check(tmp_path):
    with pytest.raises(UserInputError, match="only ranks architectures"):
        check_search_quantizable("evolution", False, tmp_path, "1%")
    with pytest.raises(UserInputError, match="--out"):
        check_search_quantizable("proxyless", True, None, "1%")
    with pytest.raises(UserInputError, match="negative"):
        check_search_quantizable("proxyless", True, tmp_path, "-1%")
    assert check_search_quantizable("proxyless", True, tmp_path, "0.5pt").value == 0.5


@pytest.mark.parametrize("extra, message", [
    (["--strategy", "evolution", "--out", "OUT"], "only ranks architectures"),
    (["--strategy", "proxyless"], "add --out"),
    (["--strategy", "proxyless", "--out", "OUT", "--tolerance", "lots"], "not understood"),
])
def test_nas_search_quantize_refuses_before_searching(tmp_path, capsys, extra, message):
    extra = [str(tmp_path / "out") if e == "OUT" else e for e in extra]
    assert main(["search", "--space", "fbnet", "--device", "raspi4", "--latency", "30ms", "--quantize", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

