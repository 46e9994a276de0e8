"""Image data for supernet training and retraining, never downloaded.

``digits`` (default) is scikit-learn's bundled handwritten-digits set, resized
to the space's 32x32 input with 3 channels; ``cifar10`` and ``imagefolder``
read a local copy through torchvision. Every dataset comes as three fixed
splits: ``train`` (weights), ``val`` (architecture parameters, model
selection) and ``test`` (reported accuracy only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from nas.errors import UserInputError

DATASETS = ("digits", "cifar10", "imagefolder")
#: the split is part of the dataset's definition, independent of the search seed
SPLIT_SEED = 0
_MEAN, _STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@dataclass
class DataSplits:
    """Train / val / test splits of one dataset, images ``[3, resolution, resolution]``."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    resolution: int

    def loader(self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A single-process loader over ``split`` (``train``, ``val`` or ``test``)."""
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(getattr(self, split), batch_size=batch_size, shuffle=shuffle,
                          generator=generator, num_workers=0, drop_last=False)

    def sizes(self) -> dict[str, int]:
        return {split: len(getattr(self, split)) for split in ("train", "val", "test")}


def load_data(name: str = "digits", data_dir: str | os.PathLike | None = None, *,
              resolution: int = 32) -> DataSplits:
    """Load dataset ``name`` as fixed train/val/test splits at ``resolution`` pixels.

    ``cifar10`` needs ``data_dir`` holding the extracted ``cifar-10-batches-py``
    folder; ``imagefolder`` needs ``data_dir`` with one sub-folder per class
    (or ``train/`` [``val/``, ``test/``] folders of class sub-folders).
    """
    if name not in DATASETS:
        raise UserInputError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if not isinstance(resolution, int) or resolution < 8:
        raise UserInputError(f"resolution must be an integer of at least 8 pixels, got {resolution!r}")
    if name == "digits":
        if data_dir is not None:
            raise UserInputError("--data digits is bundled with scikit-learn and takes no --data-dir")
        return _digits(resolution)
    if data_dir is None:
        raise UserInputError(f"--data {name} needs --data-dir pointing at a local copy (nothing is downloaded)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise UserInputError(f"--data-dir {str(root)!r} is not a directory")
    return _cifar10(root, resolution) if name == "cifar10" else _imagefolder(root, resolution)


def _fixed_split(n: int, fractions: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_train, n_val = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


def _digits(resolution: int) -> DataSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    images = ((images - _MEAN[0]) / _STD[0]).repeat(1, 3, 1, 1).contiguous()
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train, val, test = _fixed_split(len(labels), (0.6, 0.2))
    take = lambda idx: TensorDataset(images[idx], labels[idx])  # noqa: E731
    return DataSplits("digits", take(train), take(val), take(test), 10, resolution)


def _transform(resolution: int):
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((resolution, resolution)), transforms.ToTensor(),
                               transforms.Normalize(_MEAN, _STD)])


def _cifar10(root: Path, resolution: int) -> DataSplits:
    from torchvision.datasets import CIFAR10

    try:
        train_full = CIFAR10(str(root), train=True, download=False, transform=_transform(resolution))
        test = CIFAR10(str(root), train=False, download=False, transform=_transform(resolution))
    except (RuntimeError, OSError, ValueError) as error:
        raise UserInputError(
            f"--data-dir {str(root)!r} does not hold a readable CIFAR-10 copy ({error}); it needs the "
            "extracted 'cifar-10-batches-py' folder (data_batch_1..5, test_batch)") from None
    train, val, _ = _fixed_split(len(train_full), (0.9, 0.1))
    return DataSplits("cifar10", Subset(train_full, train.tolist()), Subset(train_full, val.tolist()),
                      test, 10, resolution)


def _imagefolder(root: Path, resolution: int) -> DataSplits:
    from torchvision.datasets import ImageFolder

    def folder(path: Path) -> ImageFolder:
        try:
            return ImageFolder(str(path), transform=_transform(resolution))
        except (FileNotFoundError, OSError) as error:
            raise UserInputError(
                f"--data-dir {str(path)!r} is not an image folder ({error}); it needs one sub-folder "
                "per class holding images, or train/ (val/, test/) folders laid out that way") from None

    if (root / "train").is_dir():
        train_full = folder(root / "train")
        classes = train_full.classes
        for split in ("val", "test"):
            if (root / split).is_dir() and folder(root / split).classes != classes:
                raise UserInputError(f"{root / split} has classes different from {root / 'train'}")
        if (root / "val").is_dir() and (root / "test").is_dir():
            return DataSplits("imagefolder", train_full, folder(root / "val"), folder(root / "test"),
                              len(classes), resolution)
        held_out = folder(root / "test") if (root / "test").is_dir() else None
        fractions = (0.85, 0.15) if held_out is not None else (0.7, 0.15)
        train, val, test = _fixed_split(len(train_full), fractions)
        test_set = held_out if held_out is not None else Subset(train_full, test.tolist())
        return DataSplits("imagefolder", Subset(train_full, train.tolist()), Subset(train_full, val.tolist()),
                          test_set, len(classes), resolution)
    full = folder(root)
    if len(full) < 3 or len(full.classes) < 2:
        raise UserInputError(f"--data-dir {str(root)!r} holds {len(full)} images in {len(full.classes)} "
                             "classes; at least 2 classes and 3 images are needed")
    train, val, test = _fixed_split(len(full), (0.7, 0.15))
    return DataSplits("imagefolder", Subset(full, train.tolist()), Subset(full, val.tolist()),
                      Subset(full, test.tolist()), len(full.classes), resolution)
