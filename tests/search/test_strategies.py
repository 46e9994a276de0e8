"""Strategies: registry, and each one finds accurate architectures predicted safe."""

import pytest

from nas.errors import UserInputError
from nas.search import STRATEGIES, SearchStrategy, get_strategy, list_strategies, register_strategy

BUILTIN = ("evolution", "exhaustive", "nsga2", "random", "tpe")


def test_registry_lists_the_builtin_strategies():
    assert set(BUILTIN) <= set(list_strategies())
    for name in BUILTIN:
        assert isinstance(get_strategy(name), SearchStrategy)


def test_unknown_strategy_and_bad_options_are_user_errors():
    with pytest.raises(UserInputError, match="evolution"):
        get_strategy("evolutoin")
    with pytest.raises(UserInputError, match="num_evaluations"):
        get_strategy("evolution", num_evaluations=0)
    with pytest.raises(UserInputError, match="does not take"):
        get_strategy("random", population_size=3)
    with pytest.raises(UserInputError, match="tournament_size"):
        get_strategy("evolution", population_size=4, tournament_size=8)


def test_a_registered_strategy_is_offered(monkeypatch):
    monkeypatch.setitem(STRATEGIES, "first-sample", None)  # removed again after the test

    @register_strategy("first-sample")
    class FirstSample(SearchStrategy):
        def search(self, problem, progress=None):
            from nas.search import SearchResult
            import numpy as np

            arch = problem.search_space.sample(np.random.default_rng(self.seed))
            return SearchResult(self.name, problem.evaluate([arch]), problem.budget_ms)

    assert "first-sample" in list_strategies()
    assert get_strategy("first-sample", seed=1).name == "first-sample"


@pytest.mark.parametrize("name, evaluations", [("evolution", 400), ("random", 400), ("tpe", 60), ("nsga2", 60)])
def test_strategy_returns_safe_best_within_its_evaluation_budget(pixel2_problem, name, evaluations):
    calls = []
    result = get_strategy(name, seed=0, num_evaluations=evaluations).search(pixel2_problem, progress=calls.append)
    assert 0 < len(result.candidates) <= evaluations
    assert len({c.arch for c in result.candidates}) == len(result.candidates)
    assert sum(calls) >= len(result.candidates)
    best = result.best
    assert best is not None and best.high_ms <= 14.0
    assert all(c.accuracy <= best.accuracy for c in result.safe)


def test_exhaustive_finds_the_most_accurate_predicted_safe_cell(pixel2_problem):
    exhaustive = get_strategy("exhaustive").search(pixel2_problem)
    assert len(exhaustive.candidates) == 15625
    evolution = get_strategy("evolution", seed=1, num_evaluations=1500).search(pixel2_problem)
    random = get_strategy("random", seed=1, num_evaluations=300).search(pixel2_problem)
    assert exhaustive.best.accuracy >= evolution.best.accuracy >= random.best.accuracy - 0.5


def test_optuna_study_resumes_from_storage(pixel2_problem, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = get_strategy("tpe", seed=0, num_evaluations=15, storage=storage, study_name="s").search(pixel2_problem)
    assert first.info["trials"] == 15 and first.info["resumed_trials"] == 0
    again = get_strategy("tpe", seed=0, num_evaluations=25, storage=storage, study_name="s").search(pixel2_problem)
    assert again.info["trials"] == 25 and again.info["resumed_trials"] == 15
    pixel2_problem.budget_ms = 20.0
    with pytest.raises(UserInputError, match="another --study"):
        get_strategy("tpe", num_evaluations=30, storage=storage, study_name="s").search(pixel2_problem)


def test_study_name_without_storage_is_refused():
    with pytest.raises(UserInputError, match="--storage"):
        get_strategy("tpe", study_name="s")


def test_a_restricted_problem_draws_and_answers_only_listed_architectures(pixel2_predictor):
    import numpy as np

    from nas.search import SearchProblem, get_accuracy_estimator
    from nas.search_space import get_space

    space = get_space("nb201")
    listed = [space.from_index(i) for i in range(0, 15_625, 125)]
    problem = SearchProblem("nb201", 14.0, get_accuracy_estimator("nb201"), pixel2_predictor, archs=listed)
    rng = np.random.default_rng(0)
    assert list(problem.all_archs()) == listed
    for _ in range(20):
        arch = problem.sample(rng)
        child = problem.mutate(arch, rng)
        assert arch in listed and child in listed and child != arch
    outside = space.from_index(1)
    assert outside not in listed
    assert problem.evaluate([outside])[0].arch == problem.nearest(outside) in listed
    result = get_strategy("evolution", num_evaluations=60, population_size=16, tournament_size=4).search(problem)
    assert {c.arch for c in result.candidates} <= set(listed)
