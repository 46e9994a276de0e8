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


def test_bits_per_byte_is_the_mean_over_windows(slm_folder):
    from nas.quantization.language import decode_bits_per_byte, decode_window_bits

    data = np.random.default_rng(0).integers(0, 256, 2048).astype(np.uint8)
    windows = decode_window_bits(slm_folder / "decode.onnx", data, windows=4, context=8)
    assert windows.shape == (4,) and np.all(windows > 0)
    assert decode_bits_per_byte(slm_folder / "decode.onnx", data, 4, 8) == pytest.approx(float(windows.mean()))


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
    (["--block-size", "48"], "16, 32, 64, 128, 256"),
    (["--block-size", "512"], "16, 32, 64, 128, 256"),
])
def test_nas_quantize_on_a_language_model_refuses_bad_input(slm_folder, capsys, extra, message):
    assert main(["quantize", "--model", str(slm_folder), *extra]) == 2
    assert message in capsys.readouterr().err


def test_nas_search_quantize_on_slm_needs_out_and_a_bits_tolerance(tmp_path, capsys):
    base = ["search", "--space", "slm", "--device", "local-cpu", "--latency", "2ms", "--quantize"]
    assert main(base) == 2 and "add --out" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "o"), "--tolerance", "0.5pt"]) == 2
    assert "not understood" in capsys.readouterr().err


def _one_matmul_graph(weight: np.ndarray, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = weight.shape
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(weight.astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("block_size", [32, 128])
def test_simulated_4_bit_weights_equal_onnx_runtimes_dequantized_weights(slm_folder, tmp_path, block_size):
    import onnx

    from nas.quantization.language import build_int4, dequantized_int4_weights, matmul_weights
    from nas.quantization.simulate import quantize_int4_blockwise

    weights = matmul_weights(onnx.load(str(slm_folder / "decode.onnx")))
    quantized = dequantized_int4_weights(onnx.load(str(build_int4(slm_folder / "decode.onnx", list(weights),
                                                                  tmp_path / "all.onnx", block_size))))
    assert set(quantized) == set(weights)
    for name, weight in weights.items():
        simulated = quantize_int4_blockwise(torch.from_numpy(weight.copy()), block_size).numpy()
        assert np.array_equal(simulated, quantized[name]), name
    # the rounding and range rules: halves, a block whose largest magnitude is negative, a zero block, a ragged end
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((2 * block_size + 6, 6)).astype(np.float32)
    second = slice(block_size, 2 * block_size)
    weight[:block_size, 0] = 0
    weight[second, 1] = [8.0, 0.5, 1.5, 2.5, -0.5, -3.5, -7.5] + [0.0] * (block_size - 7)
    weight[second, 2] = -weight[second, 1]
    weight[0, 3], weight[1, 3] = -2.0, 2.0
    ort = dequantized_int4_weights(onnx.load(str(build_int4(_one_matmul_graph(weight, tmp_path / "one.onnx"), ["mm"],
                                                            tmp_path / "one4.onnx", block_size))))["mm"]
    assert np.array_equal(quantize_int4_blockwise(torch.from_numpy(weight), block_size).numpy(), ort)
    assert int4_error(weight, block_size) == pytest.approx(float(((ort - weight) ** 2).sum() / (weight ** 2).sum()),
                                                           rel=1e-6)


def test_coarser_blocks_round_coarser_and_the_scorers_follow_the_block_size(slm_folder):
    import onnx

    from nas.quantization.language import matmul_weights
    from nas.quantization.language_sensitivity import language_sensitivity_problem
    from nas.quantization.simulate import quantize_int4_blockwise

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((256, 16)).astype(np.float32)
    assert int4_error(weight, 16) < int4_error(weight, 32) < int4_error(weight, 128) < int4_error(weight, 256)
    data = rng.integers(0, 256, 4096).astype(np.uint8)
    problem = language_sensitivity_problem(None, slm_folder / "decode.onnx", data, windows=2, context=16,
                                           block_size=128)
    name, weight = next(iter(matmul_weights(onnx.load(str(slm_folder / "decode.onnx"))).items()))
    w = torch.from_numpy(weight.copy())
    assert torch.equal(problem.perturbation(name), quantize_int4_blockwise(w, 128) - w)
    with pytest.raises(UserInputError, match="16, 32, 64, 128, 256"):
        language_sensitivity_problem(None, slm_folder / "decode.onnx", data, windows=2, context=16, block_size=48)


def test_the_block_size_reaches_the_quantized_graph_and_the_report(slm_folder, tmp_path):
    import onnx
    from onnx import helper

    report = quantize_language_model(slm_folder, tolerance="0.05bpb", force=True, out=tmp_path, block_size=128,
                                     scorer="weight_error")
    assert report["block_size"] == 128
    sizes = {helper.get_attribute_value(a) for n in onnx.load(str(tmp_path / "decode_int4.onnx")).graph.node
             if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "block_size"}
    assert sizes == {128}


def test_the_language_model_loss_replaces_exactly_the_graphs_matmul_weights(slm_folder):
    from nas.quantization.language_sensitivity import language_sensitivity_problem
    from nas.search_space import get_space
    from nas.slm.corpus import load_corpus

    torch.manual_seed(0)  # the fixture's model, rebuilt with the same seed
    space = get_space("slm")
    model = space.build(space.from_string(ARCH)).eval()
    problem = language_sensitivity_problem(model, slm_folder / "decode.onnx", load_corpus().validation, windows=4,
                                           context=32)
    tokens = problem.tokens
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(tokens[:, :-1]).reshape(-1, 256), tokens[:, 1:].reshape(-1))
        assert float(problem.loss({})) == pytest.approx(float(expected), rel=1e-6)
        head = [name for name in problem.names if name in problem._heads]
        assert len(head) == 1  # the output head is its own MatMul, tied to the embedding in PyTorch
        assert float(problem.loss({head[0]: problem.weight(head[0])})) == pytest.approx(float(expected), rel=1e-6)
        everything = {name: problem.weight(name) + problem.perturbation(name) for name in problem.names}
        assert float(problem.loss(everything)) != pytest.approx(float(expected), rel=1e-6)
    assert problem.divergence([]) == pytest.approx(0, abs=1e-9) and problem.divergence(problem.names) > 0
    assert next(model.parameters()).requires_grad  # the caller's model is left as it was


@pytest.mark.parametrize("scorer", ["random", "weight_error", "hessian", "hessian_interlayer"])
def test_every_scorer_orders_a_language_models_layers(slm_folder, scorer):
    from nas.quantization.language_sensitivity import language_sensitivity_problem
    from nas.quantization.scorers import get_scorer
    from nas.search_space import get_space
    from nas.slm.corpus import load_corpus

    torch.manual_seed(0)
    space = get_space("slm")
    model = space.build(space.from_string(ARCH)).eval()
    problem = language_sensitivity_problem(model, slm_folder / "decode.onnx", load_corpus().validation, windows=2,
                                           context=16)
    scorer_instance = get_scorer(scorer)
    if scorer == "hessian":
        scorer_instance.max_probes = 8
    ordering = scorer_instance.order(problem)
    assert sorted(ordering.layers) == sorted(problem.names) and set(ordering.scores) == set(problem.names)
    if scorer == "hessian_interlayer":
        from nas.quantization.scorers import second_order_orders

        orders = second_order_orders(problem.names, np.array(ordering.info["first_order"]),
                                     np.array(ordering.info["block"]))
        assert orders["interlayer"] == ordering.layers and set(orders) == {
            "interlayer", "layerwise", "interlayer_with_gradient", "layerwise_with_gradient"}
        assert all(sorted(order) == sorted(problem.names) for order in orders.values())


def test_weights_that_are_not_the_graphs_are_refused(slm_folder):
    from nas.quantization.language_sensitivity import language_sensitivity_problem
    from nas.search_space import get_space
    from nas.slm.corpus import load_corpus

    torch.manual_seed(1)
    space = get_space("slm")
    with pytest.raises(UserInputError, match="do not belong to this graph"):
        language_sensitivity_problem(space.build(space.from_string(ARCH)), slm_folder / "decode.onnx",
                                     load_corpus().validation, windows=2, context=16)


def test_the_model_is_read_back_from_its_decode_graph(slm_folder):
    from nas.quantization.language_sensitivity import model_from_decode_graph
    from nas.search_space import get_space

    torch.manual_seed(0)
    space = get_space("slm")
    expected = space.build(space.from_string(ARCH)).state_dict()
    rebuilt = model_from_decode_graph(ARCH, slm_folder / "decode.onnx").state_dict()
    assert set(rebuilt) == set(expected) and all(torch.equal(rebuilt[k], expected[k]) for k in expected)
    with pytest.raises(UserInputError, match="not exported from the layout"):
        model_from_decode_graph("M2 F | A F | - @64", slm_folder / "decode.onnx")


def test_the_scorer_orders_a_search_folders_layers_and_is_recorded(slm_folder, tmp_path):
    report = quantize_language_model(slm_folder, tolerance="0.05bpb", force=True, out=tmp_path,
                                     scorer="hessian_interlayer")
    info = report["scorer_info"]  # the default calibration: four batches, cross-layer terms shrunk by their spread
    assert report["scorer"] == "hessian_interlayer" and info["calibration_batches"] == 4
    assert info["hessian_vector_products"] == 4 * len(report["order"]) and info["cross_terms"] == "shrunk"
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "decode.onnx").write_bytes((slm_folder / "decode.onnx").read_bytes())
    with pytest.raises(UserInputError, match="names no layout"):
        quantize_language_model(bare, tolerance="0.05bpb", force=True, out=tmp_path / "o", scorer="hessian")
    assert quantize_language_model(bare, tolerance="0.05bpb", force=True, out=tmp_path / "o",
                                   scorer="weight_error")["scorer"] == "weight_error"
