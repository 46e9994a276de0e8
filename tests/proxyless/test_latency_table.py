import numpy as np
import pytest
import torch

from nas import benchmarks
from nas.errors import UserInputError
from nas.proxyless.latency_table import anchor_archs, build_lookup_table, fit_lookup_table
from nas.proxyless.pipeline import derive_within_budget, shrink_to_latency
from nas.search_space import get_space


@pytest.fixture(scope="module")
def raspi4_table():
    table, samples = build_lookup_table("raspi4")
    assert samples == 0  # replayed: no device time spent
    return table


def test_table_reproduces_recorded_latencies(raspi4_table):
    space = get_space("fbnet")
    assert raspi4_table.fit["r2"] > 0.99 and raspi4_table.fit["spearman"] > 0.99
    column = benchmarks.latency_table("fbnet").column("raspi4")
    for index in (0, 17, 4999):
        assert raspi4_table.arch_latency_ms(space.from_index(index)) == pytest.approx(column[index], rel=0.02)


def test_expected_latency_is_the_probability_weighted_sum(raspi4_table):
    arch = get_space("fbnet").sample(np.random.default_rng(0))
    onehot = torch.zeros(22, 9)
    for layer, op in enumerate(arch):
        onehot[layer, raspi4_table.candidates.index(op)] = 1
    assert float(raspi4_table.expected_latency_ms(onehot)) == pytest.approx(raspi4_table.arch_latency_ms(arch))
    uniform = torch.full((22, 9), 1 / 9, requires_grad=True)
    expected = raspi4_table.expected_latency_ms(uniform)
    expected.backward()
    assert torch.allclose(uniform.grad, torch.as_tensor(raspi4_table.latency_ms, dtype=torch.float32))


def test_measured_anchors_correct_a_predictor_that_shrinks_towards_the_mean(raspi4_table):
    space = get_space("fbnet")
    archs = list(space.measured_archs())
    truth = raspi4_table.archs_latency_ms(archs)
    # like a predictor fitted on uniform samples: right on average, too flat at the ends
    flat = truth.mean() + 0.6 * (truth - truth.mean())
    anchors = anchor_archs()
    anchor_truth = raspi4_table.archs_latency_ms(anchors)
    plain = fit_lookup_table("raspi4", archs, flat)
    pinned = fit_lookup_table("raspi4", archs, flat, measured=(anchors, anchor_truth))
    plain_error = np.abs(plain.archs_latency_ms(anchors) / anchor_truth - 1).mean()
    pinned_error = np.abs(pinned.archs_latency_ms(anchors) / anchor_truth - 1).mean()
    assert pinned_error < 0.5 * plain_error
    assert pinned.fit["n_measured_rows"] == len(anchors) == 12
    assert len(set(anchors)) == 12 and ("skip",) * 22 in anchors


def test_a_measurable_device_measures_references_and_anchors_once(raspi4_table):
    calls = []

    def device(archs):
        calls.append(list(archs))
        return list(0.5 * raspi4_table.archs_latency_ms(archs) + 0.2)

    table, samples = build_lookup_table("local-cpu", measure=device)
    assert len(calls) == 1 and samples == len(calls[0]) == 22
    assert table.fit["vs_measured"]["spearman"] > 0.95 and table.fit["n_measured"] == 22
    heavy, light = ("k5_e6",) * 22, ("skip",) * 22
    for arch in (heavy, light):
        assert table.arch_latency_ms(arch) == pytest.approx(0.5 * raspi4_table.arch_latency_ms(arch) + 0.2, rel=0.15)


def test_shrink_gives_up_the_least_probable_latency_first(raspi4_table):
    probs = np.full((22, 9), 0.02)
    probs[:, 7] = 0.84  # k5_e6 everywhere is most probable ...
    probs[0, 3] = 0.1   # ... and layer 0's k3_e6 is the runner-up
    heavy = raspi4_table.arch_latency_ms(("k5_e6",) * 22)
    picks = shrink_to_latency(probs, raspi4_table, heavy - 1e-6)
    assert raspi4_table.base_ms + raspi4_table.latency_ms[np.arange(22), picks].sum() <= heavy - 1e-6
    assert shrink_to_latency(probs, raspi4_table, heavy + 1) == [7] * 22
    assert shrink_to_latency(probs, raspi4_table, 0.01) is None


def test_derive_never_returns_an_architecture_measured_over_budget(raspi4_table):
    probs = np.full((22, 9), 1 / 9)
    probs[:, 7] += 0.5
    probs /= probs.sum(1, keepdims=True)
    budget = raspi4_table.arch_latency_ms(("k3_e3",) * 22)
    calls = []

    def slow_device(archs):  # the device runs 30% slower than the table says
        calls.append(archs[0])
        return [1.3 * raspi4_table.arch_latency_ms(archs[0])]

    found = derive_within_budget(probs, raspi4_table, budget, slow_device)
    assert found["measured_latency_ms"] <= budget
    assert len(found["trail"]) == len(calls) >= 2 and not found["trail"][0]["meets_budget"]
    with pytest.raises(UserInputError, match="no architecture met"):
        derive_within_budget(probs, raspi4_table, budget, lambda archs: [budget * 2], max_measurements=3)
