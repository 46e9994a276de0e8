import numpy as np
import pytest
import torch

from nas.errors import UserInputError
from nas.search_space import get_space
from nas.search_space.slm.space import MAX_OPERATORS, WIDTHS

SPACE = get_space("slm")
PAPER_LIKE = "D F M2 F | A F M2 F | D F M2 F @128"


def test_canonical_string_round_trips():
    arch = SPACE.from_string(PAPER_LIKE)
    assert SPACE.to_string(arch) == PAPER_LIKE
    assert arch == SPACE.default_arch()
    assert SPACE.layers(arch) == "D F M2 F A F M2 F D F M2 F".split()
    ratio = SPACE.from_string("A M2 M2 M2 A M2 M2 M2 | GD F F | - @64")
    assert SPACE.stages(ratio)[0] == ("A", "M2", "1:3", "0", "2")
    assert SPACE.stages(ratio)[2][4] == "0"
    assert SPACE.to_string(ratio) == "A M2 M2 M2 A M2 M2 M2 | GD F F | - @64"
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = SPACE.sample(rng)
        assert SPACE.from_string(SPACE.to_string(arch)) == arch
        assert len(SPACE.layers(arch)) <= MAX_OPERATORS


@pytest.mark.parametrize("text, message", [
    ("D F X F | A F | - @128", "unknown operator 'X'"),
    ("D F M2 F | A F | - @100", "ladder"),
    ("D F M2 F | A F @128", "3 stages"),
    ("D F M2 | A F | - @128", "same number"),
    ("A M2 D | A | - @128", "ratio"),
    ("A F F M2 F F M2 F F M2 F F | A F F M2 F F M2 F F M2 F F | A @128", "over the cap"),
    ("D F | - | A @128", "only the last stage"),
])
def test_bad_strings_are_user_errors_that_say_what_is_allowed(text, message):
    with pytest.raises(UserInputError, match=message):
        SPACE.from_string(text)


def test_mutation_changes_exactly_one_factor_of_one_stage_and_keeps_the_width():
    rng = np.random.default_rng(1)
    arch = SPACE.default_arch()
    for _ in range(200):
        child = SPACE.mutate(arch, rng)
        assert child != arch and child[-1] == arch[-1]
        changed = [s for s in range(3) if SPACE.stages(child)[s] != SPACE.stages(arch)[s]]
        if len(changed) > 1:  # the cap dropped blocks from the last stage(s) after a change earlier
            assert len(SPACE.layers(child)) > MAX_OPERATORS - 12
            assert all(int(SPACE.stages(child)[s][4]) < int(SPACE.stages(arch)[s][4]) for s in changed[1:])
        before, after = SPACE.stages(arch)[changed[0]], SPACE.stages(child)[changed[0]]
        if after[4] == "0":  # emptied: by the block mutation or by the cap
            assert int(before[4]) == 1 or len(SPACE.layers(child)) > MAX_OPERATORS - 12
        elif before[4] == "0":  # refilled with one block
            assert after[4] == "1"
        elif before[:4] == after[:4]:
            assert abs(int(before[4]) - int(after[4])) == 1 or len(SPACE.layers(child)) > MAX_OPERATORS - 12
        else:  # one factor of the block type: the mixer, the second mixer, the ratio (with its mixer), the FFNs
            factors = [before[0] != after[0], before[1:3] != after[1:3], before[3] != after[3]]
            assert sum(factors) == 1 or (before[0] != after[0] and after[1] == "-")
        arch = child


def test_the_cap_drops_blocks_from_the_last_stage_first():
    genes = ("A", "M2", "1:3", "2", "1", "D", "-", "1:1", "0", "3", "M2", "-", "1:1", "1", "8", "64")
    arch = SPACE.normalize(genes)
    assert len(SPACE.layers(arch)) == 23  # 12 + 3 + 4 x 2; a fifth M2 F block would make 25
    assert SPACE.stages(arch)[0][4] == "1" and SPACE.stages(arch)[1][4] == "3"
    assert SPACE.stages(arch)[2] == ("M2", "-", "1:1", "1", "4")


def test_crossover_takes_whole_stages_from_the_parents():
    rng = np.random.default_rng(2)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    for _ in range(20):
        child = SPACE.crossover(a, b, rng)
        SPACE.validate(child)
        assert child[-1] == a[-1]


def test_model_interface_and_decode_states():
    arch = SPACE.from_string("SWA F M2 F | GD D | A @64")
    torch.manual_seed(0)
    model = SPACE.build(arch)
    assert sum(p.numel() for p in model.parameters()) == SPACE.num_params(arch)
    tokens = torch.randint(0, 256, (2, 19))
    with torch.no_grad():
        logits = model(tokens)
        assert logits.shape == (2, 19, 256)
        last, states = model.prefill(tokens[:, :11])
        assert torch.allclose(last, logits[:, 10], atol=1e-4)
        assert len(states) == len(model.state_names()) == 2 * 5
        assert [tuple(s.shape) for s in states] == model.state_shapes(2, 11)
        for t in range(11, 19):
            step_logits, states = model.step(tokens[:, t], states, torch.tensor([t]))
            assert torch.allclose(step_logits, logits[:, t], atol=1e-4)
        assert model.generate(tokens[:, :5], 3).shape == (2, 3)


def test_parameters_and_flops_grow_with_width_and_attention_flops_with_context():
    arch = SPACE.from_string("A F | M2 F | - @64")
    counts = [SPACE.num_params(SPACE.with_width(arch, w)) for w in WIDTHS]
    assert counts == sorted(counts)
    for w in (64, 256):
        wide = SPACE.with_width(arch, w)
        assert SPACE.num_params(wide) == sum(p.numel() for p in SPACE.build(wide).parameters())
    assert SPACE.flops(arch, context_length=2048) > SPACE.flops(arch, context_length=128)
    recurrent = SPACE.from_string("D F | M2 F | - @64")
    assert SPACE.flops(recurrent, context_length=2048) == SPACE.flops(recurrent, context_length=128)


def test_layer_wise_encoding():
    arch = SPACE.from_string(PAPER_LIKE)
    code = SPACE.encode(arch)
    assert code.shape == (SPACE.encoding_size,) and code.sum() == 12 + 1
    slots = code[:MAX_OPERATORS * 6].reshape(MAX_OPERATORS, 6)
    assert slots[:12].sum(axis=1).tolist() == [1.0] * 12 and slots[12:].sum() == 0
    assert SPACE.num_archs > 10 ** 8
