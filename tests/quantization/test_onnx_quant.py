import numpy as np
import onnx
import pytest
import torch
from torch import nn

from nas.errors import UserInputError
from nas.export import export_module
from nas.quantization.graph import OnnxGraph
from nas.quantization.layers import quantizable_layers
from nas.quantization.onnx_quant import (QuantizationRecipe, dequantized_weights, integer_kernels, nodes_to_quantize,
                                         prepare_model)
from nas.quantization.simulate import QuantizationSimulator, activation_qparams


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, trained_onnx, digits):
    work = tmp_path_factory.mktemp("recipe")
    prepared = prepare_model(trained_onnx, work / "prepared.onnx")
    return QuantizationRecipe.calibrate(prepared, digits.calibration.images, work)


def test_layers_are_conv_and_gemm_with_batch_norm_folded(recipe):
    ops = [layer.op_type for layer in recipe.layers]
    assert ops == ["Conv", "Conv", "Conv", "Gemm", "Gemm"]
    prepared = onnx.load(str(recipe.prepared))
    assert not any(node.op_type == "BatchNormalization" for node in prepared.graph.node)


def test_every_layer_of_the_all_int8_model_runs_as_an_integer_kernel(recipe):
    kernels = integer_kernels(recipe.calibration_cache.parent / "all_int8.onnx", recipe.layer_names)
    assert set(kernels.values()) == {"QLinearConv", "QGemm"}


def test_a_subset_model_has_exactly_those_layers_in_int8(recipe, tmp_path):
    chosen = [recipe.layer_names[1], recipe.layer_names[3]]
    kernels = integer_kernels(recipe.build(chosen, tmp_path / "mixed.onnx"), recipe.layer_names)
    assert {name for name, op in kernels.items() if op} == set(chosen)
    assert recipe.build([], tmp_path / "float.onnx").is_file()
    with pytest.raises(UserInputError, match="not quantizable"):
        recipe.build(["no-such-layer"], tmp_path / "bad.onnx")


def test_calibration_is_reused_not_repeated(recipe, tmp_path):
    before = recipe.calibration_cache.stat().st_mtime_ns
    recipe.build(recipe.layer_names[:2], tmp_path / "again.onnx")
    assert recipe.calibration_cache.stat().st_mtime_ns == before


def test_simulated_weights_equal_onnx_runtime_dequantized_weights(recipe):
    graph = OnnxGraph(onnx.load(str(recipe.prepared)))
    simulator = QuantizationSimulator(recipe.layers, graph.weights, recipe.activation_ranges())
    quantized = onnx.load(str(recipe.calibration_cache.parent / "all_int8.onnx"))
    for layer in recipe.layers:
        np.testing.assert_array_equal(simulator.quantized_weight(layer.name).numpy(),
                                      dequantized_weights(quantized, layer))


def test_simulated_activation_parameters_equal_onnx_runtime_ones(recipe):
    quantized = onnx.load(str(recipe.calibration_cache.parent / "all_int8.onnx"))
    values = {t.name: onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer}
    ranges = recipe.activation_ranges()
    checked = 0
    for node in quantized.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in ranges:
            scale, zero_point = activation_qparams(*ranges[node.input[0]])
            assert scale == float(values[node.input[1]]) and zero_point == int(values[node.input[2]])
            checked += 1
    assert checked >= 4


def test_the_graph_runs_in_pytorch_as_in_onnx_runtime(recipe, digits):
    import onnxruntime as ort

    graph = OnnxGraph(onnx.load(str(recipe.prepared)))
    session = ort.InferenceSession(str(recipe.prepared), providers=["CPUExecutionProvider"])
    images = digits.validation.images[:16]
    expected = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(graph(torch.from_numpy(images)).detach().numpy(), expected, atol=1e-4)


def test_a_residual_add_between_int8_layers_is_quantized_but_not_beside_a_float_one(tmp_path):
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return torch.relu(self.a(x)) + self.b(x)

    prepared = prepare_model(export_module(Residual(), (2, 4, 4), tmp_path / "r.onnx"), tmp_path / "p.onnx")
    model = onnx.load(str(prepared))
    layers = quantizable_layers(model)
    add = next(n.name for n in model.graph.node if n.op_type == "Add")
    assert add in nodes_to_quantize(model, layers, [layer.name for layer in layers])
    assert add not in nodes_to_quantize(model, layers, [layers[0].name])


def test_a_model_without_quantizable_layers_is_refused(tmp_path, digits):
    prepared = prepare_model(export_module(nn.Sequential(nn.Flatten(), nn.ReLU()), (1, 8, 8), tmp_path / "m.onnx"),
                             tmp_path / "p.onnx")
    with pytest.raises(UserInputError, match="no quantizable layer"):
        QuantizationRecipe.calibrate(prepared, digits.calibration.images, tmp_path)
