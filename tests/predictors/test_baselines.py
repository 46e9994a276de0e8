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
