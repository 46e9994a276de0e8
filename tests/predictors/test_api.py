"""The API other parts of the project call: default predictor, checkpoints."""

import numpy as np
import pytest

from nas import benchmarks, predictors
from nas.errors import UserInputError
from nas.predictors.features import flops_and_params, op_codes
from nas.search_space import get_space


def _reference_measurements(space, device):
    search_space = get_space(space)
    column = benchmarks.latency_table(space).column(device)
    return {search_space.to_string(a): float(column[search_space.index_of(a)])
            for a in predictors.reference_archs(space)}


@pytest.mark.parametrize("space, device", [("nb201", "pixel2"), ("fbnet", "raspi4")])
def test_default_predictor_adapts_and_predicts_any_arch(space, device):
    predictor = predictors.load_default_predictor(space).adapt(_reference_measurements(space, device))
    rng = np.random.default_rng(0)
    archs = [get_space(space).sample(rng) for _ in range(300)]
    predicted, low, high = predictor.predict_interval(archs, coverage=0.9)
    assert predicted.shape == (300,) and np.all(np.isfinite(predicted)) and np.all(predicted > 0)
    assert np.all(low <= predicted) and np.all(predicted <= high)


def test_saved_adapted_predictor_predicts_the_same(tmp_path):
    predictor = predictors.load_default_predictor("nb201").adapt(_reference_measurements("nb201", "fpga"))
    predictor.save(tmp_path / "adapted.npz")
    again = predictors.load_predictor(tmp_path / "adapted.npz")
    archs = get_space("nb201").all_archs()[:50]
    np.testing.assert_allclose(again.predict(archs), predictor.predict(archs))


def test_loading_a_non_checkpoint_is_user_error(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_text("hello")
    with pytest.raises(UserInputError):
        predictors.load_predictor(path)
    with pytest.raises(UserInputError):
        predictors.load_predictor(tmp_path / "missing.ckpt")


@pytest.mark.parametrize("space", ["nb201", "fbnet"])
def test_vectorised_flops_and_params_match_the_space(space):
    search_space = get_space(space)
    rng = np.random.default_rng(1)
    archs = [search_space.sample(rng) for _ in range(50)]
    flops, params = flops_and_params(space, op_codes(space, archs))
    assert list(flops) == [search_space.flops(a) for a in archs]
    assert list(params) == [search_space.num_params(a) for a in archs]


def test_foreign_arch_is_user_error():
    with pytest.raises(UserInputError):
        op_codes("nb201", [("nor_conv_3x3",) * 5])
