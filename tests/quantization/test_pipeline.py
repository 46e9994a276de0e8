import json

import numpy as np
import pytest

from nas.errors import UserInputError
from nas.quantization.data import load_quantization_data
from nas.quantization.pipeline import Quantizer, quantize_model, resolve_model
from nas.quantization.scorers import HessianScorer, hutchinson_traces, list_scorers


@pytest.fixture(scope="module")
def quantizer(tmp_path_factory, trained_onnx, digits):
    return Quantizer(trained_onnx, digits, tmp_path_factory.mktemp("quantizer"))


@pytest.mark.parametrize("scorer", list_scorers())
def test_every_scorer_orders_every_layer_once(quantizer, scorer, monkeypatch):
    monkeypatch.setattr(HessianScorer, "max_probes", 8)
    ordering = quantizer.order(scorer, seed=1)
    assert sorted(ordering.layers) == sorted(quantizer.layers)
    assert set(ordering.scores) == set(quantizer.layers)


def test_random_orderings_are_seeded(quantizer):
    assert quantizer.order("random", 3).layers == quantizer.order("random", 3).layers


def test_quantize_writes_the_chosen_model_and_a_report_inside_the_tolerance(trained_onnx, tmp_path):
    result = quantize_model(trained_onnx, "digits", tolerance="1%", scorer="hessian_interlayer", out=tmp_path,
                            measure_latency=False)
    report = json.loads((tmp_path / "quantization.json").read_text())
    assert (tmp_path / "model_int8.onnx").is_file() and report["int8_layers"] == result.search.int8_layers
    assert report["search"]["num_evaluations"] <= report["max_evaluations"]
    assert result.accuracy["chosen_validation"] >= result.accuracy["float32_validation"] - 1.0
    assert all(report["integer_kernels"][name] for name in report["int8_layers"])
    assert set(report["machine"]) >= {"cpu", "isa"}


def test_a_search_folder_with_untrained_weights_is_refused(trained_onnx, tmp_path):
    (tmp_path / "model.onnx").write_bytes(trained_onnx.read_bytes())
    (tmp_path / "result.json").write_text(json.dumps({"weights": "freshly initialised (seed 0), not trained"}))
    with pytest.raises(UserInputError, match="never trained"):
        resolve_model(tmp_path)
    (tmp_path / "result.json").write_text(json.dumps({"weights": "trained by the search strategy"}))
    assert resolve_model(tmp_path)[0] == tmp_path / "model.onnx"


def test_data_that_does_not_fit_the_model_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="fashion-mnist"):
        load_quantization_data("fashion-mnist", tmp_path, input_shape=(3, 32, 32))
    with pytest.raises(UserInputError, match="digits"):
        load_quantization_data("digits", input_shape=(3, 20, 24))


def test_a_missing_fashion_mnist_folder_says_how_to_install_it(tmp_path):
    with pytest.raises(UserInputError, match="apt-get install dataset-fashion-mnist.*dpkg -L"):
        load_quantization_data("fashion-mnist", tmp_path / "absent")
    with pytest.raises(UserInputError, match="train-images-idx3-ubyte"):
        load_quantization_data("fashion-mnist", tmp_path)


def test_fashion_mnist_idx_files_are_read_into_fixed_splits(tmp_path):
    import gzip

    rng = np.random.default_rng(0)

    def idx(path, array):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))

    idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (5100, 28, 28)))
    idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 5100))
    idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 28, 28)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (30).to_bytes(4, "big") + bytes(30))
    data = load_quantization_data("fashion-mnist", tmp_path, input_shape=(3, 28, 28), calibration_size=16)
    assert data.sizes() == {"calibration": 16, "validation": 5000, "test": 30}
    assert data.test.images.shape == (30, 3, 28, 28) and data.test.labels.tolist() == [0] * 30


def test_hutchinson_traces_match_the_exact_hessian_trace_of_a_tiny_layer(quantizer):
    import torch

    from nas.quantization.pipeline import sensitivity_problem
    from nas.quantization.scorers import _SecondOrder

    problem = sensitivity_problem(quantizer.recipe, quantizer.layers[-1:], quantizer.data.calibration)
    second_order = _SecondOrder(problem)
    weight = second_order.params[0]
    exact = sum(float(second_order.hvp([torch.nn.functional.one_hot(torch.tensor(i), weight.numel())
                                         .reshape(weight.shape).float()])[0].reshape(-1)[i])
                for i in range(weight.numel()))
    estimate, probes = hutchinson_traces(problem, second_order, max_probes=400, tolerance=0.02)
    assert estimate[0] == pytest.approx(exact, rel=0.15) and 8 <= probes <= 400


def test_an_image_folder_is_read_as_the_search_reads_it(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    data = load_quantization_data("imagefolder", tmp_path, input_shape=(3, 8, 8), calibration_size=4)
    assert data.num_classes == 2 and len(data.calibration) == 4
    assert len(data.calibration) + len(data.validation) + len(data.test) <= 20
    assert data.test.images.shape[1:] == (3, 8, 8) and set(data.test.labels.tolist()) <= {0, 1}
    with pytest.raises(UserInputError, match="square RGB"):
        load_quantization_data("imagefolder", tmp_path, input_shape=(1, 8, 8))
