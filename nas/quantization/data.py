"""Labelled images for quantization, never downloaded.

Three fixed splits per dataset: ``calibration`` (activation ranges, and the
batch the sensitivity scorers read), ``validation`` (every accuracy decision
of the search) and ``test`` (the reported accuracy, never seen by the
search). Images are float32 arrays ``[n, C, H, W]`` shaped for the model.

- ``digits``: scikit-learn's bundled handwritten digits, prepared exactly as
  :func:`nas.proxyless.data.load_data` prepares them for training (so a
  model trained by ``nas search`` sees the same pixels), at the model's
  resolution; a model with input ``[1, 8, 8]`` gets the raw 8x8 images.
- ``fashion-mnist``: the original IDX files (Debian package
  ``dataset-fashion-mnist``), 28x28 grey images scaled to [0, 1] then
  normalised with mean 0.5 and standard deviation 0.25; the 10,000 official
  test images are the test split, the validation split is 5,000 images held
  out of the 60,000 training images, and the calibration images come from
  the remaining training images.
- ``cifar10``, ``imagefolder``: the data ``nas search --strategy proxyless``
  trains on, read with :func:`nas.proxyless.data.load_data` at the model's
  resolution (the same pixels and splits the search used); the calibration
  images are a fixed random sample of its training split.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.errors import UserInputError

DATASETS = ("digits", "fashion-mnist", "cifar10", "imagefolder")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
#: where ``apt-get install dataset-fashion-mnist`` puts the IDX files (``dpkg -L dataset-fashion-mnist``)
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
#: the split is part of the dataset's definition, not of any search seed
SPLIT_SEED = 0
FASHION_MNIST_VALIDATION = 5000
DEFAULT_CALIBRATION_SIZE = 256
_MEAN, _STD = 0.5, 0.25


@dataclass
class LabelledImages:
    """Images ``[n, C, H, W]`` float32 and their integer labels ``[n]``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int):
        """``(images, labels)`` in order, ``batch_size`` at a time."""
        for start in range(0, len(self), batch_size):
            yield self.images[start:start + batch_size], self.labels[start:start + batch_size]


@dataclass
class QuantizationData:
    """The fixed splits of one dataset, shaped for one model input.

    ``train`` holds the training images left after the other splits are
    taken (for training a model to quantize; quantization itself never reads
    them).
    """

    name: str
    calibration: LabelledImages
    validation: LabelledImages
    test: LabelledImages
    num_classes: int
    train: LabelledImages | None = None

    def sizes(self) -> dict[str, int]:
        return {split: len(getattr(self, split)) for split in ("calibration", "validation", "test")}


def fashion_mnist_help(where: Path | str) -> str:
    """How to get Fashion-MNIST, for messages about a missing or malformed copy."""
    return (f"install it with 'apt-get install {FASHION_MNIST_PACKAGE}' (run 'apt-get update' first); "
            f"'dpkg -L {FASHION_MNIST_PACKAGE}' lists where it puts the files (usually {FASHION_MNIST_DIR}), "
            f"and --data-dir names that folder; it needs {', '.join(sorted(FASHION_MNIST_FILES.values()))} "
            f"(each may be .gz), not {str(where)!r}")


def load_quantization_data(name: str, data_dir: str | os.PathLike | None = None, *,
                           input_shape: tuple[int, int, int] | None = None,
                           calibration_size: int = DEFAULT_CALIBRATION_SIZE) -> QuantizationData:
    """Dataset ``name`` as calibration / validation / test splits for a model
    whose input is ``[batch, *input_shape]`` (``(C, H, W)``; ``None``: the
    dataset's own shape, ``(1, 8, 8)`` for digits and ``(1, 28, 28)`` for
    Fashion-MNIST).

    Data that does not fit the model (not an image input, another
    resolution, a channel count other than 1 or 3) raises
    :class:`UserInputError` naming both shapes.
    """
    if name not in DATASETS:
        raise UserInputError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if not isinstance(calibration_size, int) or calibration_size < 1:
        raise UserInputError(f"calibration size must be an integer >= 1, not {calibration_size!r}")
    if input_shape is not None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[0] not in (1, 3):
            raise UserInputError(f"the model takes inputs of shape [batch, {', '.join(map(str, input_shape))}]; "
                                 f"--data {name} gives images [batch, C, H, W] with C 1 or 3: pass an image "
                                 f"classifier, or data of the model's own kind")
    if name == "digits":
        if data_dir is not None:
            raise UserInputError("--data digits is bundled with scikit-learn and takes no --data-dir")
        return _digits(input_shape or (1, 8, 8), calibration_size)
    if name in ("cifar10", "imagefolder"):
        return _training_data(name, data_dir, input_shape or (3, 32, 32), calibration_size)
    return _fashion_mnist(Path(data_dir).expanduser() if data_dir is not None else FASHION_MNIST_DIR,
                          input_shape or (1, 28, 28), calibration_size)


def _digits(input_shape: tuple[int, int, int], calibration_size: int) -> QuantizationData:
    channels, height, width = input_shape
    if (channels, height, width) == (1, 8, 8):  # the raw digits
        from sklearn.datasets import load_digits

        from nas.proxyless.data import _fixed_split

        bunch = load_digits()
        images = ((bunch.images.astype(np.float32) / 16.0 - _MEAN) / _STD)[:, None]
        labels = bunch.target.astype(np.int64)
        train, val, test = _fixed_split(len(labels), (0.6, 0.2))
        splits = {"train": (images[train], labels[train]), "val": (images[val], labels[val]),
                  "test": (images[test], labels[test])}
    else:
        if height != width or height < 8 or channels != 3:
            raise UserInputError(f"the model takes images [batch, {channels}, {height}, {width}]; --data digits "
                                 f"fits [batch, 1, 8, 8] or square RGB [batch, 3, R, R] with R >= 8 (as "
                                 f"'nas search' trains on it)")
        from nas.proxyless.data import load_data

        data = load_data("digits", resolution=height)
        splits = {split: (getattr(data, split).tensors[0].numpy(), getattr(data, split).tensors[1].numpy())
                  for split in ("train", "val", "test")}
    train_images, train_labels = splits["train"]
    calibration = _take(train_images, train_labels, calibration_size)
    return QuantizationData("digits", calibration, LabelledImages(*_as_arrays(*splits["val"])),
                            LabelledImages(*_as_arrays(*splits["test"])), 10,
                            train=LabelledImages(*_as_arrays(train_images, train_labels)))


def _fashion_mnist(root: Path, input_shape: tuple[int, int, int], calibration_size: int) -> QuantizationData:
    channels, height, width = input_shape
    if (height, width) != (28, 28):
        raise UserInputError(f"the model takes images [batch, {channels}, {height}, {width}]; --data "
                             f"fashion-mnist gives [batch, 1, 28, 28] (grey, repeated for 3 channels): "
                             f"quantize a model trained on 28x28 images")
    if not root.is_dir():
        raise UserInputError(f"no Fashion-MNIST folder at {str(root)!r}: " + fashion_mnist_help(root))
    arrays = {key: _read_idx(root, stem) for key, stem in FASHION_MNIST_FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]) or arrays[f"{split}_images"].shape[1:] \
                != (28, 28):
            raise UserInputError(f"{root}: the {split} images and labels do not match (28x28 images, one label "
                                 f"each): " + fashion_mnist_help(root))

    def prepare(images: np.ndarray) -> np.ndarray:
        scaled = ((images.astype(np.float32) / 255.0 - _MEAN) / _STD)[:, None]
        return np.ascontiguousarray(np.repeat(scaled, channels, axis=1))

    order = np.random.default_rng(SPLIT_SEED).permutation(len(arrays["train_labels"]))
    val, train = order[:FASHION_MNIST_VALIDATION], order[FASHION_MNIST_VALIDATION:]
    train_images = prepare(arrays["train_images"][train])
    train_labels = arrays["train_labels"][train].astype(np.int64)
    return QuantizationData(
        "fashion-mnist", _take(train_images, train_labels, calibration_size),
        LabelledImages(prepare(arrays["train_images"][val]), arrays["train_labels"][val].astype(np.int64)),
        LabelledImages(prepare(arrays["test_images"]), arrays["test_labels"].astype(np.int64)), 10,
        train=LabelledImages(train_images, train_labels))


def _training_data(name: str, data_dir, input_shape: tuple[int, int, int],
                   calibration_size: int) -> QuantizationData:
    """A dataset of :func:`nas.proxyless.data.load_data` as quantization splits (no training split kept)."""
    channels, height, width = input_shape
    if channels != 3 or height != width:
        raise UserInputError(f"the model takes images [batch, {channels}, {height}, {width}]; --data {name} gives "
                             f"square RGB images [batch, 3, R, R] (as 'nas search' trains on it)")
    from nas.proxyless.data import load_data

    splits = load_data(name, data_dir, resolution=height)
    sample = np.random.default_rng(SPLIT_SEED).permutation(len(splits.train))[:calibration_size]

    def arrays(dataset) -> LabelledImages:
        pairs = [dataset[int(i)] for i in range(len(dataset))]
        return LabelledImages(*_as_arrays(np.stack([np.asarray(x) for x, _ in pairs]), [int(y) for _, y in pairs]))

    from torch.utils.data import Subset

    return QuantizationData(name, arrays(Subset(splits.train, sample.tolist())), arrays(splits.val),
                            arrays(splits.test), splits.num_classes)


def _read_idx(root: Path, stem: str) -> np.ndarray:
    """One IDX file (plain or gzipped) as an array of its declared shape."""
    for path in (root / stem, root / f"{stem}.gz"):
        if path.is_file():
            break
    else:
        raise UserInputError(f"{str(root)!r} has no {stem}(.gz): " + fashion_mnist_help(root))
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        dims = raw[3]
        shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
        return data.reshape(shape)
    except (OSError, ValueError, EOFError, IndexError) as error:
        raise UserInputError(f"{path} is not a readable IDX file ({error}): " + fashion_mnist_help(root)) from None


def _take(images: np.ndarray, labels: np.ndarray, size: int) -> LabelledImages:
    """The first ``size`` images of an already shuffled split."""
    return LabelledImages(*_as_arrays(images[:size], labels[:size]))


def _as_arrays(images, labels) -> tuple[np.ndarray, np.ndarray]:
    return np.ascontiguousarray(images, dtype=np.float32), np.asarray(labels, dtype=np.int64)
