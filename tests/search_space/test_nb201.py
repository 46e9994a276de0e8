import numpy as np
import pytest

from nas import benchmarks
from nas.errors import UserInputError
from nas.search_space import get_space

SPACE = get_space("nb201")
CONV3 = 16 * 16 * 9 + 2 * 16  # a 16-channel ReLU-conv3x3-BN edge


def test_every_index_round_trips_through_string_and_encoding():
    strings = benchmarks.arch_strings("nb201")
    assert SPACE.num_archs == len(strings) == 15_625
    for index, text in enumerate(strings):
        arch = SPACE.from_string(text)
        assert SPACE.to_string(arch) == text
        assert SPACE.index_of(arch) == index
        assert SPACE.decode(SPACE.encode(arch)) == arch


def _params_by_hand(ops):
    """Parameters of the NB201 network computed from its layer list."""
    def conv_bn(c_in, c_out, k):
        return c_in * c_out * k * k + 2 * c_out
    total = conv_bn(3, 16, 3)
    for stage, c in enumerate((16, 32, 64)):
        if stage:
            c_in = c // 2
            total += conv_bn(c_in, c, 3) + conv_bn(c, c, 3) + c_in * c  # reduction + 1x1 shortcut
        for op in ops:
            total += 5 * {"nor_conv_3x3": conv_bn(c, c, 3), "nor_conv_1x1": conv_bn(c, c, 1)}.get(op, 0)
    return total + 2 * 64 + 64 * 10 + 10


@pytest.mark.parametrize("ops", [
    ("none",) * 6,
    ("nor_conv_3x3",) * 6,
    ("nor_conv_1x1", "skip_connect", "avg_pool_3x3", "nor_conv_3x3", "none", "nor_conv_1x1"),
])
def test_parameter_count_matches_the_layer_list(ops):
    model = SPACE.build(ops)
    counted = sum(p.numel() for p in model.parameters())
    assert counted == _params_by_hand(ops) == SPACE.num_params(ops)


def test_all_none_network_has_the_fixed_parameters_only():
    # stem 464, reductions 14,464 + 57,600, head BN 128, classifier 650
    assert SPACE.num_params(("none",) * 6) == 464 + 14_464 + 57_600 + 128 + 650


def test_flops_agree_with_counting_hooks():
    from nas.search_space import count_macs
    rng = np.random.default_rng(0)
    for _ in range(3):
        arch = SPACE.sample(rng)
        assert SPACE.flops(arch) == count_macs(SPACE.build(arch), SPACE.input_shape)


def test_variation_stays_in_the_space():
    rng = np.random.default_rng(1)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    mutated = SPACE.mutate(a, rng)
    assert sum(x != y for x, y in zip(a, mutated)) == 1
    child = SPACE.crossover(a, b, rng)
    assert all(c in (x, y) for c, x, y in zip(child, a, b))
    SPACE.validate(child)


def test_graph_encoding_links_input_to_output():
    adjacency, features = SPACE.encode_graph(SPACE.from_index(0))
    assert adjacency.shape == (8, 8) and features.shape == (8, 7)
    assert features.sum(axis=1).tolist() == [1.0] * 8
    reach = np.linalg.matrix_power(adjacency + np.eye(8), 8)
    assert reach[0, 7] > 0


@pytest.mark.parametrize("text", ["", "|nor_conv_3x3~0|", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                  "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"])
def test_malformed_strings_are_user_errors(text):
    with pytest.raises(UserInputError, match="not a nb201 architecture"):
        SPACE.from_string(text)
