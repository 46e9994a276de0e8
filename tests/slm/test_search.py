"""``nas search --space slm``: refusals, the evolution's mutations, and a
tiny search measured for real on this machine with its outputs and resume."""

import json

import numpy as np
import pytest

from nas.cli import main
from nas.search_space import get_space
from nas.slm.search import CandidateRecord, SlmSearchConfig, _evolve, check_context, parse_layout


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_STORE", str(tmp_path / "measurements.db"))


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "2.5", ""])
def test_context_must_be_a_positive_whole_number(bad, capsys):
    assert main(["search", "--space", "slm", "--device", "local-cpu", "--latency", "3ms", "--context", bad]) == 2
    assert "positive whole number" in capsys.readouterr().err
    assert check_context(" 64 ") == 64


def test_unknown_operator_and_layouts_over_the_cap_exit_2(capsys):
    assert main(["search", "--space", "slm", "--device", "local-cpu", "--latency", "3ms",
                 "--arch", "D F X2 F | A F | -"]) == 2
    assert "unknown operator 'X2'" in capsys.readouterr().err
    too_long = " ".join(["D", "F", "F"] * 8)  # 24 operators in the first stage alone
    assert main(["search", "--space", "slm", "--device", "local-cpu", "--latency", "3ms",
                 "--arch", f"{too_long} | A F | -"]) == 2
    assert "over the cap of 24" in capsys.readouterr().err


def test_slm_options_are_refused_with_other_spaces_and_other_strategies(capsys):
    assert main(["search", "--space", "nb201", "--device", "pixel2", "--latency", "14ms", "--context", "64"]) == 2
    assert "--context applies to --space slm" in capsys.readouterr().err
    assert main(["search", "--space", "slm", "--device", "local-cpu", "--latency", "3ms",
                 "--strategy", "random"]) == 2
    assert "aging evolution" in capsys.readouterr().err


def test_a_layout_may_carry_a_width_which_the_budget_replaces():
    space = get_space("slm")
    assert space.layout(parse_layout("D F M2 F | A F M2 F | - @256")) == "D F M2 F | A F M2 F | -"


def test_evolution_children_differ_from_a_population_member_by_one_mutation():
    space = get_space("slm")
    config = SlmSearchConfig(num_candidates=10, population_size=4, tournament_size=2, seed=3)
    seen = []

    def evaluate(layout):
        key = space.layout(layout)
        seen.append(layout)
        # a made-up loss: fewer layers is better; layouts with attention get no width
        loss = len(space.layers(layout)) / 10
        feasible = "A" not in space.layers(layout)
        return CandidateRecord(key, key + " @64" if feasible else None, 64 if feasible else None,
                               1.0, 0.9, 1.1, loss if feasible else None)

    _evolve(evaluate, lambda layout: "A" not in space.layers(layout), config)
    first = seen[:4]
    assert all("A" not in space.layers(a) for a in first)  # the first members are predicted feasible
    trained = {space.layout(a) for a in seen if "A" not in space.layers(a)}
    assert len(trained) == 10
    for child in seen[4:]:
        assert any(_one_factor_apart(space, child, parent) for parent in seen[:seen.index(child)])
    again = []
    _evolve(lambda layout: again.append(layout) or evaluate(layout), lambda l: "A" not in space.layers(l), config)
    assert again[:len(seen)] == seen[:len(again)]


def _one_factor_apart(space, a, b) -> bool:
    """Genes differ in one stage only, and within it in one factor (the two
    mixer slots count as one factor when a ratio change brings in a mixer)."""
    stages = [s for s in range(3) if a[5 * s:5 * s + 5] != b[5 * s:5 * s + 5]]
    return len(stages) == 1 and a[-1] == b[-1]
