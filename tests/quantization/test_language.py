import json

import numpy as np
import pytest
import torch

from nas.cli import main
from nas.errors import UserInputError
from nas.quantization import language
from nas.quantization.language import BitsTolerance, int4_error, quantize_language_model

ARCH = "A F | M2 F | - @64"


@pytest.fixture(scope="module")
def slm_folder(tmp_path_factory):
    """What 'nas search --space slm --out' writes, for a tiny (untrained) model."""
    from nas.search_space import get_space
    from nas.search_space.slm.graphs import export_decode

    torch.manual_seed(0)
    space = get_space("slm")
    folder = tmp_path_factory.mktemp("slm")
    export_decode(space.build(space.from_string(ARCH)).eval(), folder / "decode.onnx")
    (folder / "result.json").write_text(json.dumps({"arch": ARCH, "context": 64}))
    return folder


def test_bits_per_byte_tolerances():
    assert BitsTolerance.parse("0.05bpb").ceiling(2.0) == pytest.approx(2.05)
    assert BitsTolerance.parse("2%").ceiling(2.0) == pytest.approx(2.04)
    for text, message in (("-0.1bpb", "negative"), ("lots", "not understood")):
        with pytest.raises(UserInputError, match=message):
            BitsTolerance.parse(text)


def test_exactly_the_chosen_layers_become_4_bit(slm_folder, tmp_path):
    import onnx

    from nas.quantization.language import build_int4, matmul_weights

    names = list(matmul_weights(onnx.load(str(slm_folder / "decode.onnx"))))
    path = build_int4(slm_folder / "decode.onnx", names[:2], tmp_path / "two.onnx")
    quantized = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"]
    assert len(quantized) == 2 and len(names) > 2


def test_the_4_bit_error_of_a_weight():
    rng = np.random.default_rng(0)
    assert int4_error(np.zeros((64, 8))) == 0
    assert 0 < int4_error(rng.standard_normal((64, 8))) < 0.05


def test_a_language_model_is_quantized_inside_the_tolerance(slm_folder, tmp_path):
    report = quantize_language_model(slm_folder, tolerance="0.05bpb", force=True, out=tmp_path)
    assert (tmp_path / "decode_int4.onnx").is_file() and (tmp_path / "quantization.json").is_file()
    assert report["accuracy_evaluations"] <= report["max_evaluations"]
    assert report["validation_bpb"]["chosen"] <= report["validation_bpb"]["ceiling"] + 1e-9
    assert set(report["int4_layers"]) <= set(report["order"]) and report["decode_ms"]["chosen"] > 0
    quantized = sum(n.op_type == "MatMulNBits" for n in __import__("onnx").load(str(tmp_path / "decode_int4.onnx")).graph.node)
    assert quantized == len(report["int4_layers"])


def test_the_search_folder_records_float_and_quantized_bits_per_byte_and_latency(slm_folder):
    quantize_language_model(slm_folder, tolerance="2%", force=True)
    block = json.loads((slm_folder / "result.json").read_text())["quantization"]
    assert block["quantized"]["validation_bpb"] <= block["float32"]["validation_bpb"] * 1.02 + 1e-9
    assert block["float32"]["decode_ms"] > 0 and block["quantized"]["decode_ms"] > 0
    assert (slm_folder / block["quantized_model"]).is_file()


def test_int4_that_does_not_run_faster_is_refused_unless_forced(slm_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(language, "time_decode_steps",
                        lambda paths, context, device: {name: 2.0 if name != "float32" else 1.0 for name in paths})
    with pytest.raises(UserInputError, match="does not run faster.*--force"):
        quantize_language_model(slm_folder, tolerance="0.05bpb", out=tmp_path)
    assert quantize_language_model(slm_folder, tolerance="0.05bpb", out=tmp_path, force=True)["forced"]


@pytest.mark.parametrize("extra, message", [
    (["--precision", "int8"], "weight-only MatMul"),
    (["--data", "digits"], "leave --data out"),
    (["--tolerance", "lots"], "not understood"),
])
def test_nas_quantize_on_a_language_model_refuses_bad_input(slm_folder, capsys, extra, message):
    assert main(["quantize", "--model", str(slm_folder), *extra]) == 2
    assert message in capsys.readouterr().err


def test_nas_search_quantize_on_slm_needs_out_and_a_bits_tolerance(tmp_path, capsys):
    base = ["search", "--space", "slm", "--device", "local-cpu", "--latency", "2ms", "--quantize"]
    assert main(base) == 2 and "add --out" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "o"), "--tolerance", "0.5pt"]) == 2
    assert "not understood" in capsys.readouterr().err
