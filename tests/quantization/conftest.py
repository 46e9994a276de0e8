"""A small CNN trained on the raw 8x8 digits in a few seconds, exported to ONNX."""

import pytest
import torch
from torch import nn

from nas.export import export_module
from nas.quantization.data import load_quantization_data


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10))


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models train and differentiate fastest on one thread on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits():
    return load_quantization_data("digits", calibration_size=64)


@pytest.fixture(scope="session")
def trained_onnx(tmp_path_factory, digits):
    torch.manual_seed(0)
    model = tiny_cnn()
    images, labels = torch.from_numpy(digits.train.images), torch.from_numpy(digits.train.labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(40):  # full-batch steps: seconds, and far above chance
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return export_module(model.eval(), (1, 8, 8), tmp_path_factory.mktemp("digits") / "model.onnx")
