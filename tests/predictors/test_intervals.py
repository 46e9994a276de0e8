"""The default predictor's interval: a device's held-out error scale times a
factor calibrated on many sample sets of calibration devices."""

import numpy as np
import pytest

from nas import benchmarks, predictors
from nas.predictors.evaluation import measurement_rows, table_codes
from nas.predictors.stacked import (CALIBRATION_DRAWS, StackedPredictor, calibration_factors,
                                    calibration_quantiles, calibration_sets)


def test_kept_quantiles_give_the_split_conformal_rank_of_the_pooled_factors():
    rng = np.random.default_rng(0)
    factors = calibration_factors(np.array([0.01, 0.1]), [np.abs(rng.normal(0, 0.01, 5000)),
                                                          np.abs(rng.normal(0, 0.2, 5000))])
    assert len(factors) == 10000 and factors[5000:].mean() > factors[:5000].mean()  # each set by its own scale
    kept = calibration_quantiles(factors)
    assert np.all(np.diff(kept) >= 0)
    predictor = predictors.load_default_predictor("nb201")
    predictor.calibration = np.sort(kept.astype(np.float64))
    predictor.log_scale = 0.1
    for coverage in (0.5, 0.9, 0.95):
        width = predictor.interval_halfwidth(coverage)
        assert np.quantile(factors, coverage) * 0.1 * (1 - 1e-6) <= width <= np.quantile(factors, coverage + 0.002) * 0.1  # float32


def test_calibration_sets_adapt_on_the_references_and_random_sets():
    space = "fbnet"
    codes = table_codes(space)
    reference = np.array(benchmarks.help_protocol(space).reference_indices)
    predictor = predictors.load_default_predictor(space)
    device = benchmarks.latency_table(space).column("titanx_32")
    scales, residuals = calibration_sets(codes, reference, [(predictor, device)], np.random.default_rng(0), draws=2)
    assert scales.shape == (3,) and len(residuals) == 3 and np.all(scales > 0)
    predictor.adapt_codes(codes[reference], device[reference])
    assert scales[0] == pytest.approx(predictor.log_scale)  # the first set is the reference architectures
    assert all(len(r) == 2000 and np.all(np.isfinite(r)) for r in residuals)


def test_calibration_devices_are_recorded_held_out_devices_and_devices_unlike_them():
    devices = StackedPredictor.calibration_devices("fbnet", 1.0)
    protocol = benchmarks.help_protocol("fbnet")
    recorded = len(protocol.meta_train_devices) + len(protocol.meta_valid_devices)
    assert len(devices) > recorded  # launch-overhead and power-of-FLOPs devices too
    table = benchmarks.latency_table("fbnet")
    test_columns = [table.column(d) for d in protocol.meta_test_devices]
    for predictor, latency in devices:
        assert predictor.temperature == 1.0
        assert not any(np.array_equal(latency, column) for column in test_columns)


@pytest.mark.parametrize("space", ["nb201", "fbnet"])
def test_shipped_calibration_rests_on_many_sample_sets(space):
    predictor = predictors.load_default_predictor(space)
    assert predictor.calibration is not None and len(predictor.calibration) >= 999
    # the 90 % factor of the held-out error scale: about 3 either way on the calibration devices
    assert 2.0 < predictor.calibration[int(np.ceil(len(predictor.calibration) * 0.9))] < 5.0
    assert CALIBRATION_DRAWS >= 20


@pytest.mark.parametrize("space", ["nb201", "fbnet"])
def test_interval_widens_on_a_device_its_samples_explain_poorly(space):
    predictor = predictors.load_default_predictor(space)
    rows = measurement_rows(space)
    clean = benchmarks.latency_table(space).column(benchmarks.help_protocol(space).meta_valid_devices[0])
    noisy = clean * np.exp(np.random.default_rng(3).normal(0, 0.3, len(clean)))
    widths = []
    for truth in (clean, noisy):
        predictor.adapt_codes(table_codes(space)[rows], truth[rows])
        widths.append(predictor.interval_halfwidth(0.9))
    assert widths[1] > 2 * widths[0]
