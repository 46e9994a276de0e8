import numpy as np
import pytest
import torch
from PIL import Image

from nas.errors import UserInputError
from nas.proxyless.data import load_data


def test_digits_are_fixed_disjoint_32px_rgb_splits():
    first, second = load_data("digits"), load_data("digits")
    assert first.sizes() == {"train": 1078, "val": 359, "test": 360} and first.num_classes == 10
    image, label = first.train[0]
    assert image.shape == (3, 32, 32) and 0 <= int(label) < 10
    assert torch.equal(first.test.tensors[0], second.test.tensors[0])  # fixed split
    seen = [set(map(tuple, split.tensors[0].flatten(1)[:, ::7].numpy().round(4).tolist()))
            for split in (first.train, first.val, first.test)]
    assert len(seen[0] & seen[2]) < 5  # (a few digits are pixel-identical in the data itself)


@pytest.mark.parametrize("name, data_dir, message", [
    ("mnist", None, "unknown dataset"),
    ("cifar10", None, "needs --data-dir"),
    ("cifar10", "/nonexistent/cifar", "not a directory"),
    ("imagefolder", "/nonexistent/images", "not a directory"),
    ("digits", "/tmp", "takes no --data-dir"),
])
def test_bad_data_options_are_user_errors(name, data_dir, message):
    with pytest.raises(UserInputError, match=message):
        load_data(name, data_dir)


def test_malformed_directories_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="CIFAR-10"):
        load_data("cifar10", tmp_path)
    with pytest.raises(UserInputError, match="image folder"):
        load_data("imagefolder", tmp_path)


def test_imagefolder_reads_class_folders(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    data = load_data("imagefolder", tmp_path, resolution=16)
    assert data.num_classes == 2 and sum(data.sizes().values()) == 20
    image, label = data.train[0]
    assert image.shape == (3, 16, 16) and label in (0, 1)
