"""HELP and the meta-learning baselines, with a tiny meta-training budget."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from nas import benchmarks, predictors
from nas.errors import UserInputError
from nas.predictors import checkpoint
from nas.predictors.evaluation import measurement_rows, table_archs, table_codes, table_measurements
from nas.predictors.features import help_encoding
from nas.predictors.help import HelpPredictor, MAMLPredictor, MetaConfig, MetaSGDPredictor, paper_protocol
from nas.predictors.networks import HelpNet

TINY = MetaConfig(hidden=16, episodes=6, tasks_per_episode=3, query_size=20, validate_every=3, validation_archs=100)


@pytest.mark.parametrize("cls, space", [(HelpPredictor, "fbnet"), (HelpPredictor, "nb201"),
                                        (MetaSGDPredictor, "fbnet"), (MAMLPredictor, "nb201")])
def test_meta_training_is_seeded_and_checkpoints_round_trip(tmp_path, cls, space):
    first = cls.meta_train(space, seed=3, config=TINY, save_to=tmp_path / "best.npz")
    again = cls.meta_train(space, seed=3, config=TINY)
    for key, value in first.params.items():
        torch.testing.assert_close(value, again.params[key])
    assert [entry["episode"] for entry in first.training_log] == [3, 6]
    assert (tmp_path / "best.npz").is_file()
    measurements = table_measurements(space, "fpga", measurement_rows(space))
    archs = list(table_archs(space)[:200])
    predicted = first.adapt(measurements).predict(archs)
    assert predicted.shape == (200,) and np.all(np.isfinite(predicted))
    first.save(tmp_path / "p.npz")
    loaded = predictors.load_predictor(tmp_path / "p.npz")
    np.testing.assert_allclose(loaded.predict(archs), predicted, rtol=1e-5)
    # adapting again starts from the meta-learned state, not from the last device
    np.testing.assert_allclose(loaded.adapt(measurements).predict(archs), predicted, rtol=1e-5)


def test_maml_keeps_its_inner_rate_and_meta_sgd_learns_unclamped_ones():
    maml = MAMLPredictor.meta_train("fbnet", seed=0, config=TINY)
    meta_sgd = MetaSGDPredictor.meta_train("fbnet", seed=0, config=TINY)
    assert all(torch.all(v == TINY.inner_lr) for v in maml.lrs.values())
    assert any(not torch.all(v == TINY.inner_lr) for v in meta_sgd.lrs.values())


def test_nb201_graph_has_a_global_node_that_every_node_feeds():
    codes = table_codes("nb201")[:50]
    x = help_encoding("nb201", codes)
    assert x.shape == (50, 81 + 72)
    aggregation = x[:, :81].reshape(50, 9, 9)
    features = x[:, 81:].reshape(50, 9, 8)
    assert np.all(aggregation[:, 8, :] == 1)  # the global node sums over every node, itself included
    assert np.all(aggregation[:, np.arange(9), np.arange(9)] == 1)  # self-loops
    assert np.all(aggregation[:, 0, 1:] == 0)  # the input node has no sources
    assert np.all(features.sum(axis=2) == 1) and np.all(features[:, 8, 7] == 1)


def test_graph_convolution_sums_without_normalising():
    torch.manual_seed(0)
    net = HelpNet("nb201", hidden=4, hardware_embedding=False)
    h = torch.rand(9, 8)
    aggregation = torch.ones(9, 9)
    out = net.gc1(h, aggregation)
    torch.testing.assert_close(out[0], h.sum(dim=0) @ net.gc1.weight + net.gc1.bias)
    assert float(net.gc1.weight.detach().abs().max()) <= 0.05


def test_fbnet_code_factorises_kernel_and_expansion():
    from nas.search_space.fbnet import CANDIDATES

    codes = np.array([[CANDIDATES.index(op)] * 22 for op in ("k5_e6", "k3_e1_g2", "skip")])
    x = help_encoding("fbnet", codes)
    assert x.shape == (3, 132)
    np.testing.assert_array_equal(x[0, :6], [0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(x[1, :6], [1, 0, 0, 1, 0, 0])
    assert not x[2].any()


def test_help_needs_the_reference_architectures():
    predictor = HelpPredictor("fbnet", TINY)
    measurements = table_measurements("fbnet", "fpga", measurement_rows("fbnet"))
    measurements.pop(next(iter(measurements)))
    with pytest.raises(UserInputError, match="reference"):
        predictor.adapt(measurements)


def test_a_checkpoint_of_an_older_network_is_refused_with_a_way_forward(tmp_path):
    predictor = HelpPredictor("fbnet", TINY)
    meta, arrays = predictor.state()
    del meta["network"]
    checkpoint.write(tmp_path / "old.npz", {"method": "help", "space": "fbnet", **meta}, arrays)
    with pytest.raises(UserInputError, match="meta-train"):
        predictors.load_predictor(tmp_path / "old.npz")


def test_paper_protocol_scores_800_architectures_per_draw():
    predictor = HelpPredictor("nb201", TINY)
    scores = paper_protocol(predictor, draws=2, devices=["fpga"])
    assert list(scores) == ["fpga"] and len(scores["fpga"]) == 2
    assert all(-1 <= rho <= 1 for rho in scores["fpga"])


@pytest.mark.parametrize("space", ["nb201", "fbnet"])
def test_shipped_help_checkpoint_ranks_a_meta_test_device(space):
    path = predictors.shipped_checkpoint_path(space, "help")
    predictor = predictors.load_predictor(path)
    rows = measurement_rows(space)
    predictor.adapt(table_measurements(space, "eyeriss", rows))
    held_out = np.setdiff1d(np.arange(len(table_archs(space))), rows)[::7]
    archs = [table_archs(space)[r] for r in held_out]
    rho = spearmanr(predictor.predict(archs), benchmarks.latency_table(space).column("eyeriss")[held_out])[0]
    assert rho > 0.85
