import pytest
import torch
import torch.nn.functional as F

from nas.proxyless.supernet import ProxylessSupernet

SKIP = 8
TRANSITIONS = [1, 5, 9, 13, 17, 21]  # 16->24, 24->32 /2, 32->64 /2, 64->112, 112->184 /2, 184->352


def _used_candidates(supernet):
    return [[k for k, block in enumerate(layer.candidates)
             if any(p.grad is not None for p in block.parameters())] for layer in supernet.layers]


def test_weight_step_runs_and_trains_only_the_sampled_path():
    torch.manual_seed(0)
    supernet = ProxylessSupernet(num_classes=10)
    arch = supernet.sample_single(torch.Generator().manual_seed(0))
    logits = supernet(torch.randn(4, 3, 8, 8))
    assert logits.shape == (4, 10)
    F.cross_entropy(logits, torch.arange(4)).backward()
    for layer, layer_used, name in zip(supernet.layers, _used_candidates(supernet), arch):
        sampled = supernet.candidate_names.index(name)
        # a stage transition also trains its shared shortcut (the skip projection)
        allowed = {sampled} if layer.shortcut is None else {sampled, layer.shortcut}
        assert set(layer_used) <= allowed
        if name != "skip":
            assert sampled in layer_used
    assert supernet.alpha.grad is None


def test_transition_shortcut_marks_exactly_the_width_or_stride_changes():
    supernet = ProxylessSupernet(num_classes=10)
    marked = [i for i, layer in enumerate(supernet.layers) if layer.shortcut is not None]
    assert marked == TRANSITIONS
    assert all(supernet.layers[i].shortcut == SKIP for i in marked)
    assert all(layer.shortcut is None for layer in ProxylessSupernet(num_classes=10, shortcut=False).layers)


@pytest.mark.parametrize("shortcut", [True, False])
def test_with_the_shortcut_every_path_starts_as_the_same_function(shortcut):
    torch.manual_seed(0)
    supernet = ProxylessSupernet(num_classes=10, shortcut=shortcut).train()
    x = torch.randn(8, 3, 8, 8)
    outputs = []
    for seed in range(3):
        supernet.sample_single(torch.Generator().manual_seed(seed))
        with torch.no_grad():
            outputs.append(supernet(x))
    same = all(torch.allclose(outputs[0], o, atol=1e-5) for o in outputs[1:])
    assert same is shortcut


def test_the_skip_path_of_a_transition_is_the_shortcut_alone():
    torch.manual_seed(0)
    supernet = ProxylessSupernet(num_classes=10)
    layer = supernet.layers[1]  # 16 -> 24
    x = torch.randn(2, 16, 8, 8)
    layer.active, layer.gates = [SKIP], None
    assert torch.equal(layer(x), layer.candidates[SKIP](x))
    with torch.no_grad():
        layer.candidates[2].body[-1].weight.fill_(1.0)
    layer.active = [2]
    assert torch.allclose(layer(x), layer.candidates[SKIP](x) + layer.candidates[2](x))


def test_two_path_estimator_matches_its_formula_and_keeps_unsampled_probabilities():
    torch.manual_seed(0)
    supernet = ProxylessSupernet(num_classes=10)
    with torch.no_grad():
        supernet.alpha.normal_()
    supernet.sample_two(torch.Generator().manual_seed(1))
    loss = F.cross_entropy(supernet(torch.randn(4, 3, 8, 8)), torch.arange(4))
    gate_grads = torch.autograd.grad(loss, supernet.gate_tensors())
    # the closed gate's path ran without a graph, yet its gradient is there
    assert all(bool(torch.all(g != 0)) for g in gate_grads)
    supernet.accumulate_arch_grad(gate_grads)
    pairs = [layer.active for layer in supernet.layers]
    row, pair = 3, pairs[3]
    p = torch.softmax(supernet.alpha[row, pair].detach(), 0)
    g = gate_grads[row]
    expected = torch.stack([sum(g[j] * p[j] * (float(i == j) - p[i]) for j in range(2)) for i in range(2)])
    assert torch.allclose(supernet.alpha.grad[row, pair], expected, atol=1e-6)
    untouched = [k for k in range(9) if k not in pair]
    assert torch.all(supernet.alpha.grad[row, untouched] == 0)

    before_probs = supernet.probs().detach().clone()
    before = supernet.alpha.detach().clone()
    with torch.no_grad():
        supernet.alpha -= 0.5 * supernet.alpha.grad
    supernet.rescale_sampled(before)
    after_probs = supernet.probs().detach()
    for layer, (i, j) in enumerate(pairs):
        others = [k for k in range(9) if k not in (i, j)]
        assert torch.allclose(after_probs[layer, others], before_probs[layer, others], atol=1e-6)


def test_fixed_arch_and_derive():
    supernet = ProxylessSupernet(num_classes=10)
    with torch.no_grad():
        supernet.alpha[:, 8] = 3.0
    assert supernet.derive() == ("skip",) * 22
    supernet.set_arch(("k3_e1",) * 22)
    assert supernet(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    supernet.set_all_paths()
    assert supernet(torch.randn(2, 3, 8, 8)).shape == (2, 10)
