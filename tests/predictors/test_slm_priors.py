"""What the predictors know of an slm decode step's cost: structural priors, runtime node counts,
and the default predictor on a device run by them."""

import numpy as np
from scipy.stats import spearmanr

from nas import benchmarks, predictors
from nas.predictors.baselines import structural_priors
from nas.predictors.evaluation import measurement_rows, table_codes
from nas.predictors.features import SLM_COSTS, SLM_GRAPH_NODES, SLM_RUNTIME_NODES, op_codes, slm_costs
from nas.search_space import get_space

SPACE = get_space("slm")


def test_priors_count_what_they_say():
    archs = [SPACE.from_string(s) for s in ("A F | M2 | - @64", "D F F D F F | GD | SWA A @128")]
    priors = structural_priors("slm", op_codes("slm", archs))
    assert priors["layers"].tolist() == [3, 9] and priors["mixers"].tolist() == [2, 5]
    assert priors["attention_layers"].tolist() == [1, 2]
    nodes = SLM_RUNTIME_NODES
    assert priors["operators"].tolist() == [SLM_GRAPH_NODES + nodes["A"] + nodes["F"] + nodes["M2"],
                                            SLM_GRAPH_NODES + 2 * nodes["D"] + 4 * nodes["F"] + nodes["GD"]
                                            + nodes["SWA"] + nodes["A"]]
    # one full-attention layer at width 64: 2 heads share 1 KV head of 32 (keys and values)
    assert priors["cache_per_token"].tolist() == [64, 2 * 2 * 32]
    assert priors["params"].tolist() == [SPACE.num_params(a) for a in archs]
    assert np.all(priors["memory_traffic"] > priors["params"])
    costs = dict(zip(SLM_COSTS, slm_costs(op_codes("slm", archs)).T))
    np.testing.assert_allclose(costs["mixer_macs"] + costs["ffn_macs"] + 256 * costs["width"], costs["dense_macs"])


def test_node_counts_are_those_of_the_optimised_decode_graph(tmp_path):
    import onnx
    import onnxruntime as ort
    import torch

    from nas.search_space.slm.graphs import export_decode

    arch = SPACE.from_string("A F | M2 F D F | GD SWA @64")
    torch.manual_seed(0)
    path = export_decode(SPACE.build(arch).eval(), tmp_path / "step.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    counted = len(onnx.load(str(tmp_path / "optimised.onnx"), load_external_data=False).graph.node)
    predicted = structural_priors("slm", op_codes("slm", [arch]))["operators"][0]
    # attention layers share a few position nodes, so the sum is exact only up to them
    assert abs(predicted - counted) <= 0.02 * counted


def test_default_predictor_ranks_a_launch_bound_device_as_its_node_count_does():
    # a runtime whose decode step is launch overhead: no recorded setting is run by the node count
    # alone, and the predictor must find it from its 10 samples
    rng = np.random.default_rng(5)
    codes = table_codes("slm")
    count = structural_priors("slm", codes)["operators"]
    truth = (0.2 + 0.004 * count) * np.exp(rng.normal(0, 0.001, len(count)))
    rows = measurement_rows("slm")
    held_out = np.setdiff1d(np.arange(len(truth)), rows)
    predictor = predictors.load_default_predictor("slm")
    strings = benchmarks.arch_strings("slm")
    predictor.adapt({strings[r]: float(truth[r]) for r in rows})
    rho = spearmanr(predictor.predict_codes(codes[held_out]), truth[held_out])[0]
    assert rho >= spearmanr(count[held_out], truth[held_out])[0] - 0.02


def test_source_devices_hold_for_layouts_outside_the_table():
    """The search asks about layouts and widths the 200 recorded architectures never had: the source
    devices' latencies for them come from the decode step's costs, not from one value per gene,
    so a narrow, deep layout is priced like the recorded ones of its size (not at ~0 ms)."""
    from nas.predictors.features import SourceLatencies

    protocol = benchmarks.help_protocol("slm")
    source = SourceLatencies("slm", protocol.meta_train_devices)
    recorded = op_codes("slm", [SPACE.from_string(s) for s in benchmarks.arch_strings("slm")])
    table = source(recorded)
    assert np.all(source.coefficients >= 0)
    # the cost model, asked about the recorded architectures as if unknown, ranks them as recorded
    estimate = np.maximum(source._design(recorded) @ source.coefficients, 1e-3)
    for k in range(len(protocol.meta_train_devices)):
        assert spearmanr(estimate[:, k], table[:, k])[0] > 0.85
    narrow = op_codes("slm", [SPACE.from_string("D F F M2 F F M2 F F | GD F D F D F D F | - @64")])
    fastest = np.min(table, axis=0)
    assert np.all(source(narrow)[0] > 0.3 * fastest)
