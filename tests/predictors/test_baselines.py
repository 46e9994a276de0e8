import numpy as np
from scipy.stats import spearmanr

from nas import benchmarks, predictors
from nas.predictors.evaluation import evaluate, measurement_rows, summary, table_archs, table_measurements


def test_flops_baseline_ranks_by_flops():
    predictor = predictors.create_predictor("flops", "nb201")
    predictor.adapt(table_measurements("nb201", "eyeriss", measurement_rows("nb201")))
    archs = list(table_archs("nb201")[:300])
    flops = [predictor.search_space.flops(a) for a in archs]
    assert spearmanr(predictor.predict(archs), flops)[0] > 0.999


def test_scratch_network_learns_from_samples():
    predictor = predictors.create_predictor("scratch-10", "fbnet", steps=30)
    scores = evaluate(lambda: predictor, "fbnet", devices=["eyeriss"])
    assert np.isfinite(scores[0].spearman)
    assert predictors.create_predictor("scratch-900", "fbnet").num_samples == 900
    assert len(measurement_rows("fbnet", 900, seed=0)) == 900


def test_evaluation_summary_has_the_metrics():
    result = summary(evaluate(lambda: predictors.load_default_predictor("fbnet"), "fbnet"))
    assert {"mean_spearman", "mean_kendall", "mean_mape", "mean_within_10", "mean_coverage_90"} <= set(result)
    assert [d["device"] for d in result["devices"]] == list(benchmarks.help_protocol("fbnet").meta_test_devices)
    assert result["mean_spearman"] > 0.9


def test_structural_priors_count_what_they_say():
    from nas.predictors.baselines import structural_priors
    from nas.predictors.features import op_codes
    from nas.search_space import get_space

    nb201 = get_space("nb201")
    cells = [("none",) * 6, ("nor_conv_3x3",) * 6, ("skip_connect",) * 3 + ("avg_pool_3x3",) * 3]
    priors = structural_priors("nb201", op_codes("nb201", cells))
    assert priors["layers"].tolist() == [0, 6, 6] and priors["non_skip_layers"].tolist() == [0, 6, 3]
    assert priors["convs"].tolist() == [0, 6, 0] and priors["operators"][1] > priors["operators"][2]
    assert priors["flops"].tolist() == [float(nb201.flops(c)) for c in cells]
    fbnet = get_space("fbnet")
    skips, blocks = ("skip",) * 22, ("k3_e6",) * 22
    priors = structural_priors("fbnet", op_codes("fbnet", [skips, blocks]))
    assert priors["non_skip_layers"].tolist() == [0, 22]
    assert priors["memory_traffic"][1] > priors["memory_traffic"][0] and priors["operators"][1] > priors["operators"][0]
    assert priors["params"][1] == float(fbnet.num_params(blocks))


def test_heldout_devices_are_scored_on_what_they_measured():
    from nas.predictors.evaluation import evaluate_heldout, heldout_table

    table = heldout_table("nb201")
    assert table is not None and "cpu-torch-eager" in table.devices
    assert not set(table.devices) & set(benchmarks.latency_table("nb201").devices)  # never a recorded device
    scores = evaluate_heldout(lambda: predictors.TransferPredictor("nb201"), "nb201", devices=["cpu-torch-eager"])
    assert len(scores) == 1 and np.isfinite(scores[0].spearman)
