import pytest

from nas.devices import get_device
from nas.errors import UserInputError
from nas.profilers import make_profiler, measure
from nas.quantization.layers import load_onnx
from nas.quantization.onnx_quant import integer_kernels
from nas.quantization.timing import int4_for_timing, int8_for_timing, precision_setting

RUNTIME = {"threads": 1, "batch_size": 1, "graph_optimization_level": "all"}


def test_the_precision_setting_is_checked():
    assert precision_setting({}) == "float32" and precision_setting({"precision": "int8"}) == "int8"
    with pytest.raises(UserInputError, match="precision must be one of float32, int8, int4"):
        make_profiler(get_device("local-cpu").with_settings(precision="float16"))


def test_a_model_for_int8_timing_runs_its_layers_as_integer_kernels(trained_onnx, tmp_path):
    path = int8_for_timing(trained_onnx, RUNTIME, out_path=tmp_path / "int8.onnx")
    ops = {node.op_type for node in load_onnx(path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    layers = [node.name for node in load_onnx(path).graph.node if node.op_type in ("Conv", "Gemm", "MatMul")]
    kernels = integer_kernels(path, layers)
    assert kernels and sum(op is not None for op in kernels.values()) >= len(kernels) - 1


def test_an_int8_device_times_int8_models_under_its_own_settings_key():
    arch = " ".join(["k3_e1"] + ["skip"] * 21)  # a small network: exported and quantized in seconds
    quick = dict(rounds=2, runs_per_round=3, warmup_runs=1, extra_rounds=0, drift_correction=False)
    device = get_device("local-cpu-int8").with_settings(**quick)
    [record] = measure(device, "fbnet", [arch], store=False)
    assert record.settings["precision"] == "int8" and record.latency_ms > 0
    [plain] = measure(get_device("local-cpu").with_settings(**quick), "fbnet", [arch], store=False)
    assert "precision" not in plain.settings  # float32 measurements keep the keys they always had


def test_int4_weight_only_matmuls_run_close_to_float_and_a_cnn_is_refused(trained_onnx, tmp_path):
    import numpy as np
    import onnxruntime as ort
    import torch
    from torch import nn

    from nas.export import export_module

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64)).eval()
    path = export_module(model, (4, 64), tmp_path / "mlp.onnx")
    int4 = int4_for_timing(path)
    assert sum(node.op_type == "MatMulNBits" for node in load_onnx(int4).graph.node) == 2
    x = np.random.default_rng(0).standard_normal((1, 4, 64)).astype(np.float32)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]  # noqa: E731
    reference = run(path)
    assert np.abs(run(int4) - reference).max() < 0.1 * np.abs(reference).max()
    with pytest.raises(UserInputError, match="use precision int8"):
        int4_for_timing(trained_onnx, tmp_path / "cnn.int4.onnx")
