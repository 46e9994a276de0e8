import pytest
from torch.utils.data import Subset

from nas.proxyless.data import DataSplits, load_data


@pytest.fixture(scope="session")
def tiny_digits() -> DataSplits:
    """Real digits at their native 8x8, cut to a few batches so tests stay fast."""
    full = load_data("digits", resolution=8)
    return DataSplits("digits", Subset(full.train, range(96)), Subset(full.val, range(64)),
                      Subset(full.test, range(64)), full.num_classes, full.resolution)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The test machine is shared: one intra-op thread avoids oversubscribed OpenMP stalls."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
