"""ProxylessNAS inside ``nas search``: the strategy and the fbnet accuracy estimator."""

import copy
import json

import numpy as np
import pytest

from nas import benchmarks, predictors
from nas.errors import UserInputError
from nas.proxyless.integration import ProxylessStrategy, SupernetAccuracy
from nas.proxyless.supernet import ProxylessSupernet
from nas.search import SearchProblem, get_accuracy_estimator, list_strategies
from nas.search_space import get_space


def test_strategy_and_estimator_are_registered():
    assert "proxyless" in list_strategies()
    estimator = get_accuracy_estimator("fbnet", dataset="digits")
    assert isinstance(estimator, SupernetAccuracy)
    # NB201's dataset names do not apply to fbnet: refused with the names that do
    with pytest.raises(UserInputError, match="does not apply to fbnet.*digits"):
        get_accuracy_estimator("fbnet", dataset="cifar100")
    with pytest.raises(UserInputError, match="mnist"):
        get_accuracy_estimator("fbnet", data="mnist")


def test_supernet_accuracy_scores_architectures(tiny_digits):
    estimator = SupernetAccuracy(data=tiny_digits, supernet=ProxylessSupernet(10), calibration_batches=1)
    space = get_space("fbnet")
    archs = [space.sample(np.random.default_rng(i)) for i in range(2)]
    accuracy = estimator.estimate(archs + archs[:1])
    assert accuracy.shape == (3,) and np.all((0 <= accuracy) & (accuracy <= 100))
    assert accuracy[0] == accuracy[2]


def test_strategy_returns_candidates_under_the_predicted_budget(tiny_digits, monkeypatch, tmp_path):
    space = get_space("fbnet")
    column = benchmarks.latency_table("fbnet").column("raspi4")
    samples = {space.to_string(a): float(column[space.index_of(a)]) for a in predictors.reference_archs("fbnet")}
    predictor = copy.deepcopy(predictors.load_default_predictor("fbnet")).adapt(samples)
    monkeypatch.setattr("nas.proxyless.integration.load_data", lambda *a, **k: tiny_digits)
    strategy = ProxylessStrategy(epochs=1, fallbacks=2, checkpoint_dir=tmp_path)
    problem = SearchProblem("fbnet", 30.0, SupernetAccuracy(data=tiny_digits), predictor)
    result = strategy.search(problem)
    assert result.best is not None and result.best.safe_under(30.0)
    assert result.model is not None and 0 <= result.info["test_accuracy"] <= 100
    assert result.best.accuracy == result.info["val_accuracy"]  # ranked by its real, retrained accuracy
    assert (tmp_path / "checkpoint.pt").is_file()
    assert "searched ProxylessNAS supernet" in problem.accuracy.description  # no second supernet to train
    resumed = ProxylessStrategy(epochs=1, fallbacks=2, checkpoint_dir=tmp_path, resume=True).search(problem)
    assert [c.arch for c in resumed.candidates] == [c.arch for c in result.candidates]


def test_nas_search_returns_the_trained_network_and_its_test_accuracy(tiny_digits, monkeypatch, tmp_path):
    from nas.search import search_under_budget

    space = get_space("fbnet")
    column = benchmarks.latency_table("fbnet").column("raspi4")
    samples = {space.to_string(a): float(column[space.index_of(a)]) for a in predictors.reference_archs("fbnet")}
    monkeypatch.setattr("nas.proxyless.integration.load_data", lambda *a, **k: tiny_digits)
    outcome = search_under_budget("fbnet", "raspi4", "30ms", strategy="proxyless", measurements=samples,
                                  strategy_options=dict(epochs=1, fallbacks=2, checkpoint_dir=tmp_path / "ckpt"),
                                  out=tmp_path / "out")
    record = outcome.to_dict()
    # the returned network is the strategy's retrained one, never an untrained reference architecture
    assert outcome.model is not None and record["weights"] == "trained by the search strategy"
    assert 0 <= record["test_accuracy"] <= 100
    assert json.loads((tmp_path / "out" / "result.json").read_text())["test_accuracy"] == record["test_accuracy"]
    assert "test accuracy of the retrained network" in outcome.summary()
    # its accuracy is the retrained network's, and says so; a replayed device times nothing for the strategy
    assert record["accuracy_source"] == "validation accuracy of the network the strategy retrained"
    assert record["strategy_samples"] == 0 and "by the strategy" not in outcome.summary()
    # one supernet epoch on 96 images: a retrained network near chance is warned about
    near_chance = record["test_accuracy"] <= 19.0
    assert any("near chance" in w for w in record["warnings"]) == near_chance
    assert ("warning: the retrained network's test accuracy" in outcome.summary()) == near_chance


def test_a_measurable_device_pins_the_strategys_table_with_anchors(tiny_digits, monkeypatch, tmp_path):
    from nas.proxyless.latency_table import anchor_archs, build_lookup_table

    space = get_space("fbnet")
    truth = build_lookup_table("raspi4")[0]  # stands in for a device that can time any architecture
    samples = {space.to_string(a): truth.arch_latency_ms(a) for a in predictors.reference_archs("fbnet")}
    predictor = copy.deepcopy(predictors.load_default_predictor("fbnet")).adapt(samples)
    timed = []

    def device(archs):
        timed.extend(archs)
        return [truth.arch_latency_ms(a) for a in archs]

    monkeypatch.setattr("nas.proxyless.integration.load_data", lambda *a, **k: tiny_digits)
    problem = SearchProblem("fbnet", 30.0, SupernetAccuracy(data=tiny_digits), predictor,
                            samples=samples, measure=device)
    result = ProxylessStrategy(epochs=1, fallbacks=1, checkpoint_dir=tmp_path, latency_loss="mul").search(problem)
    assert timed == anchor_archs()
    fit = result.info["latency_table"]
    assert "plus 22 measured architectures" in fit["source"] and fit["n_measured_rows"] == 22
    assert fit["vs_measured"]["spearman"] > 0.95
    with pytest.raises(UserInputError, match="latency-loss"):
        ProxylessStrategy(latency_loss="square")


def test_shared_forward_passes_score_exactly_like_one_network_at_a_time(tiny_digits):
    import torch

    from nas.proxyless.integration import recalibrate_batchnorm, shared_weight_accuracy
    from nas.proxyless.train import accuracy_percent

    torch.manual_seed(0)
    supernet = ProxylessSupernet(10)
    for module in supernet.modules():  # paths that differ (a fresh supernet starts with all paths alike)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    space = get_space("fbnet")
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(3)]
    archs += [space.mutate(archs[0], rng), archs[0][:11] + archs[1][11:]]  # shared prefixes
    calibration = [images for images, _ in tiny_digits.loader("train", 32)][:2]
    images = torch.cat([x for x, _ in tiny_digits.loader("val", 64)])
    labels = torch.cat([y for _, y in tiny_digits.loader("val", 64)])
    together = shared_weight_accuracy(supernet, archs, calibration, images, labels, rows=32)
    alone = []
    for arch in archs:
        supernet.set_arch(arch)
        recalibrate_batchnorm(supernet, [(x, None) for x in calibration], len(calibration))
        alone.append(accuracy_percent(supernet, tiny_digits.loader("val", 32)))
    # the same kernels on differently sized batches: at most one image's prediction may tip
    assert np.allclose(together, alone, atol=100 / len(images) + 1e-9)


def test_first_use_training_is_announced_with_its_estimated_time(tiny_digits, monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_CACHE", str(tmp_path))
    estimator = SupernetAccuracy(data=tiny_digits, epochs=1)
    said = estimator.announce()
    assert "training the fbnet accuracy supernet first (1 epoch)" in said
    assert "min on this machine" in said and str(tmp_path) in said
    assert estimator.cheap is False and estimator.default_evaluations <= 300
    lines = []
    estimator.report = lines.append
    estimator.estimate([get_space("fbnet").default_arch()])
    assert lines and lines[-1].startswith("fbnet accuracy supernet: epoch 1/1")
    assert SupernetAccuracy(data=tiny_digits, epochs=1).announce() is None  # trained and kept: nothing to wait for
