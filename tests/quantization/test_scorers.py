"""The second-order scorer on the digits CNN: its greedy increments are the
predicted loss change of adding a layer to the chosen set, its block
matrix averages the calibration batches, and cross-layer terms within
their batch-to-batch noise are shrunk away."""

import dataclasses

import numpy as np
import pytest
import torch

from nas.quantization.pipeline import Quantizer, sensitivity_problem
from nas.quantization.scorers import get_scorer, interlayer_order, second_order_terms, shrink_cross_terms


@pytest.fixture(scope="module")
def problem(tmp_path_factory, trained_onnx, digits):
    quantizer = Quantizer(trained_onnx, digits, tmp_path_factory.mktemp("scorers"))
    return sensitivity_problem(quantizer.recipe, quantizer.layers, digits.calibration)


def hessian_times(problem, vectors: dict[str, torch.Tensor], batch: int = 0) -> dict[str, torch.Tensor]:
    """``H v`` of the calibration loss by forward-over-reverse differentiation (not the scorer's route)."""
    names = problem.names
    weights = tuple(problem.weight(name).detach().clone() for name in names)

    def gradient(*params):
        return torch.func.grad(lambda p: problem.loss(dict(zip(names, p)), batch))(params)

    _, product = torch.func.jvp(gradient, weights, tuple(vectors.get(n, torch.zeros_like(w))
                                                         for n, w in zip(names, weights)))
    return dict(zip(names, product))


def test_each_increment_is_the_predicted_loss_change_of_adding_the_layer_to_those_chosen(problem):
    ordering = get_scorer("hessian_interlayer").order(problem)  # one calibration batch: the terms as estimated
    assert sorted(ordering.layers) == sorted(problem.names) and ordering.info["calibration_batches"] == 1
    delta = {name: problem.perturbation(name) for name in problem.names}
    for k, name in enumerate(ordering.layers):
        chosen = ordering.layers[:k]
        own = float((delta[name] * hessian_times(problem, {name: delta[name]})[name]).sum())
        cross = float((delta[name] * hessian_times(problem, {c: delta[c] for c in chosen})[name]).sum()) \
            if chosen else 0.0
        assert ordering.scores[name] == pytest.approx(0.5 * own + cross, rel=1e-3, abs=1e-7)
    # the increments add up to the predicted change of quantizing every layer, 1/2 dW^T H dW
    everything = hessian_times(problem, delta)
    total = 0.5 * sum(float((delta[n] * everything[n]).sum()) for n in problem.names)
    assert sum(ordering.scores.values()) == pytest.approx(total, rel=1e-3, abs=1e-7)


def test_the_block_matrix_averages_equal_calibration_batches(problem):
    images = len(problem.images)
    whole = dataclasses.replace(problem, max_images=images)
    halves = dataclasses.replace(problem, max_images=images // 2)
    assert whole.calibration_batches == 1 and halves.calibration_batches == 2
    first, block, spread = second_order_terms(whole)
    first_2, block_2, spread_2 = second_order_terms(halves)
    # the mean loss of two equal batches is the loss of both together: the same terms, now with a spread
    np.testing.assert_allclose(block_2, block, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(first_2, first, rtol=1e-3, atol=1e-7)
    assert not spread.any() and spread_2.shape == block.shape and spread_2.any()
    assert np.allclose(block_2, block_2.T)


def test_cross_terms_within_their_standard_error_are_dropped_and_clear_ones_kept():
    block = np.array([[2.0, 0.1, 0.3], [0.1, 2.2, -0.05], [0.3, -0.05, 1.0]])
    spread = np.array([[9.0, 0.2, 0.5], [0.2, 9.0, 0.0005], [0.5, 0.0005, 9.0]])
    shrunk = shrink_cross_terms(block, spread)
    assert np.array_equal(np.diag(shrunk), np.diag(block))  # the layers' own terms are left as they are
    assert shrunk[0, 1] == shrunk[1, 0] == 0.0 and shrunk[0, 2] == 0.0  # within one standard error of zero
    assert shrunk[1, 2] == pytest.approx(-0.05 * (1 - 1e-4))  # a hundred standard errors out: kept
    # c is cheapest alone (1/2 of 1.0); then a (1.0) before b (1.1 - 0.05): a's cross-term with c, 0.3, is noise;
    # as estimated it would have put b first (1.05 against 1.3)
    assert interlayer_order(["a", "b", "c"], block, spread)[0] == ["c", "a", "b"]
    assert interlayer_order(["a", "b", "c"], block)[0] == ["c", "b", "a"]


def test_with_several_batches_the_scorer_orders_on_the_shrunk_terms(problem):
    halves = dataclasses.replace(problem, max_images=len(problem.images) // 2)
    ordering = get_scorer("hessian_interlayer").order(halves)
    assert ordering.info["calibration_batches"] == 2 and ordering.info["cross_terms"] == "shrunk"
    assert ordering.info["hessian_vector_products"] == 2 * len(problem.names)
    block, spread = np.array(ordering.info["block"]), np.array(ordering.info["block_standard_error"])
    assert (ordering.layers, ordering.scores) == interlayer_order(halves.names, block, spread)
