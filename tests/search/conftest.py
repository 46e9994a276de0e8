import pytest

from nas import benchmarks
from nas.predictors import TransferPredictor, reference_archs
from nas.search import SearchProblem, get_accuracy_estimator
from nas.search.calibration import CalibratedPredictor
from nas.search_space import get_space


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_STORE", str(tmp_path / "measurements.db"))


def recorded_ms(device, arch):
    """Recorded latency of an nb201 arch on a replay device (ms)."""
    space = get_space("nb201")
    return float(benchmarks.latency_table("nb201").column(device)[space.index_of(arch)])


@pytest.fixture(name="recorded_ms")
def recorded_ms_fixture():
    return recorded_ms


@pytest.fixture(scope="session")
def pixel2_predictor():
    """Transfer predictor calibrated on pixel2's 10 replayed reference archs."""
    space = get_space("nb201")
    samples = {space.to_string(a): recorded_ms("pixel2", a) for a in reference_archs("nb201")}
    return CalibratedPredictor(TransferPredictor("nb201")).adapt(samples)


@pytest.fixture
def pixel2_problem(pixel2_predictor):
    return SearchProblem("nb201", 14.0, get_accuracy_estimator("nb201", dataset="cifar100"), pixel2_predictor)
