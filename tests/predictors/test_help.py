"""HELP and the meta-learning baselines, with a tiny meta-training budget."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from nas import predictors
from nas.predictors.evaluation import measurement_rows, table_archs, table_measurements
from nas.predictors.help import HelpPredictor, MAMLPredictor, MetaConfig, MetaSGDPredictor

TINY = MetaConfig(hidden=16, episodes=6, tasks_per_episode=3, query_size=20, validate_every=3, validation_archs=100)


@pytest.mark.parametrize("cls, space", [(HelpPredictor, "fbnet"), (MetaSGDPredictor, "fbnet"),
                                        (MAMLPredictor, "nb201")])
def test_meta_training_is_seeded_and_checkpoints_round_trip(tmp_path, cls, space):
    first = cls.meta_train(space, seed=3, config=TINY)
    again = cls.meta_train(space, seed=3, config=TINY)
    for key, value in first.params.items():
        torch.testing.assert_close(value, again.params[key])
    measurements = table_measurements(space, "fpga", measurement_rows(space))
    archs = list(table_archs(space)[:200])
    predicted = first.adapt(measurements).predict(archs)
    assert predicted.shape == (200,) and np.all(np.isfinite(predicted))
    first.save(tmp_path / "p.npz")
    loaded = predictors.load_predictor(tmp_path / "p.npz")
    np.testing.assert_allclose(loaded.predict(archs), predicted, rtol=1e-5)
    # adapting again starts from the meta-learned state, not from the last device
    np.testing.assert_allclose(loaded.adapt(measurements).predict(archs), predicted, rtol=1e-5)


def test_maml_keeps_its_inner_rate_and_meta_sgd_learns_one():
    maml = MAMLPredictor.meta_train("fbnet", seed=0, config=TINY)
    meta_sgd = MetaSGDPredictor.meta_train("fbnet", seed=0, config=TINY)
    assert all(torch.all(v == TINY.inner_lr) for v in maml.lrs.values())
    assert any(not torch.all(v == TINY.inner_lr) for v in meta_sgd.lrs.values())


def test_help_needs_the_reference_architectures():
    from nas.errors import UserInputError

    predictor = HelpPredictor("fbnet", TINY)
    measurements = table_measurements("fbnet", "fpga", measurement_rows("fbnet"))
    measurements.pop(next(iter(measurements)))
    with pytest.raises(UserInputError, match="reference"):
        predictor.adapt(measurements)


def test_shipped_help_checkpoint_ranks_a_meta_test_device_when_present():
    path = predictors.shipped_checkpoint_path("fbnet", "help")
    if not path.is_file():
        pytest.skip("no shipped HELP checkpoint")
    predictor = predictors.load_predictor(path)
    rows = measurement_rows("fbnet")
    predictor.adapt(table_measurements("fbnet", "eyeriss", rows))
    from nas import benchmarks
    held_out = np.setdiff1d(np.arange(5000), rows)
    archs = [table_archs("fbnet")[r] for r in held_out]
    rho = spearmanr(predictor.predict(archs), benchmarks.latency_table("fbnet").column("eyeriss")[held_out])[0]
    assert rho > 0.7
