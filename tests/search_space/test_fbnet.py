import numpy as np
import pytest

from nas import benchmarks
from nas.errors import UserInputError
from nas.search_space import count_macs, get_space

SPACE = get_space("fbnet")


def test_samples_keep_their_index_and_string():
    strings = benchmarks.arch_strings("fbnet")
    assert len(strings) == 5_000
    for index in (0, 1, 2, 4_999):
        arch = SPACE.from_index(index)
        assert SPACE.to_string(arch) == strings[index]
        assert SPACE.from_string(strings[index]) == arch
        assert SPACE.decode(SPACE.encode(arch)) == arch
    assert SPACE.num_archs == 9 ** 22


def test_all_skip_parameter_count_by_hand():
    # stem conv+BN; skip layers become 1x1 conv+BN where channels change (6 of them); head
    stem = 3 * 16 * 9 + 32
    changes = [(16, 24), (24, 32), (32, 64), (64, 112), (112, 184), (184, 352)]
    projections = sum(c_in * c_out + 2 * c_out for c_in, c_out in changes)
    head = 352 * 1504 + 2 * 1504 + 1504 * 100 + 100
    arch = ("skip",) * 22
    model = SPACE.build(arch)
    assert sum(p.numel() for p in model.parameters()) == stem + projections + head == SPACE.num_params(arch)


def test_k3_e1_g2_block_parameters_by_hand():
    # first layer 16->16, stride 1: grouped 1x1 (16/2*16), depthwise 3x3 (16*9), grouped 1x1 (16/2*16), 3 BNs
    from nas.search_space.fbnet import make_block
    block = make_block("k3_e1_g2", 16, 16, 1)
    assert sum(p.numel() for p in block.parameters()) == 8 * 16 + 16 * 9 + 8 * 16 + 2 * (16 + 16 + 16)


def test_k5_e6_block_parameters_by_hand():
    from nas.search_space.fbnet import make_block
    block = make_block("k5_e6", 24, 32, 2)
    hidden = 24 * 6
    assert sum(p.numel() for p in block.parameters()) == (
        24 * hidden + hidden * 25 + hidden * 32 + 2 * (hidden + hidden + 32))


def test_analytic_costs_match_the_built_network():
    rng = np.random.default_rng(0)
    for _ in range(3):
        arch = SPACE.sample(rng)
        model = SPACE.build(arch)
        assert SPACE.num_params(arch) == sum(p.numel() for p in model.parameters())
        assert SPACE.flops(arch) == count_macs(model, SPACE.input_shape)


def test_wrong_candidate_names_are_user_errors():
    with pytest.raises(UserInputError, match="k7_e6"):
        SPACE.from_string(" ".join(["k7_e6"] + ["skip"] * 21))
    with pytest.raises(UserInputError, match="expected 22"):
        SPACE.from_string("skip skip")
