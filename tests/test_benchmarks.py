import numpy as np
import pytest

from nas import benchmarks
from nas.errors import UserInputError


def test_tables_have_the_documented_shape():
    nb201 = benchmarks.latency_table("nb201")
    assert nb201.latency_ms.shape == (15_625, 24)
    assert benchmarks.latency_table("fbnet").latency_ms.shape == (5_000, 24)
    assert np.all(np.isfinite(nb201.latency_ms))
    # row 0 of the shipped CSV
    assert nb201.column("pixel2")[0] == 9.0


def test_accuracy_and_protocol():
    acc = benchmarks.nb201_accuracy("cifar100")
    assert acc.shape == (15_625,) and 0 < acc.max() < 100
    protocol = benchmarks.help_protocol("nb201")
    assert len(protocol.reference_indices) == 10
    assert "pixel2" in protocol.meta_test_devices
    assert not set(protocol.meta_train_devices) & set(protocol.meta_test_devices)


def test_unknown_names_are_user_errors():
    with pytest.raises(UserInputError, match="allowed"):
        benchmarks.nb201_accuracy("mnist")
    with pytest.raises(UserInputError, match="no device"):
        benchmarks.latency_table("nb201").column("pixel9")
