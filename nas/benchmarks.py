"""Benchmark tables shipped inside the package (see ``nas/data/PROVENANCE.md``).

Everything is read from package files, never from the network, and cached
after the first load.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Sequence
from importlib import resources

import numpy as np

from nas.errors import UserInputError

SPACES_WITH_TABLES = ("nb201", "fbnet", "slm")
NB201_DATASETS = {"cifar10": "cifar10_acc", "cifar100": "cifar100_acc",
                  "imagenet16-120": "imagenet16_120_acc"}


def _data_file(*parts: str):
    return resources.files("nas").joinpath("data", *parts)


def _check_space(space: str) -> None:
    if space not in SPACES_WITH_TABLES:
        raise UserInputError(
            f"no benchmark tables for space {space!r}; spaces with tables: {', '.join(SPACES_WITH_TABLES)}")


@dataclass(frozen=True)
class LatencyTable:
    """Recorded latencies of one space: ``latency_ms[i, j]`` is the latency
    of architecture ``i`` (benchmark index) on ``devices[j]``."""

    space: str
    devices: tuple[str, ...]
    latency_ms: np.ndarray

    def column(self, device: str) -> np.ndarray:
        """Latency in milliseconds of every architecture on ``device``."""
        try:
            return self.latency_ms[:, self.devices.index(device)]
        except ValueError:
            raise UserInputError(
                f"the {self.space} latency table has no device {device!r}; "
                f"it has: {', '.join(self.devices)}") from None


@functools.lru_cache(maxsize=None)
def latency_table(space: str) -> LatencyTable:
    """Load the recorded latency table of ``space`` (``nb201`` or ``fbnet``)."""
    _check_space(space)
    with _data_file(space, "latency_ms.csv").open() as handle:
        header = handle.readline().strip().split(",")
        values = np.loadtxt(handle, delimiter=",", dtype=np.float64)
    order = np.argsort(values[:, 0])
    if not np.array_equal(values[order, 0], np.arange(len(values))):
        raise RuntimeError(f"{space} latency table is not indexed 0..N-1")
    table = values[order, 1:]
    table.setflags(write=False)
    return LatencyTable(space, tuple(header[1:]), table)


@functools.lru_cache(maxsize=None)
def arch_strings(space: str) -> tuple[str, ...]:
    """Canonical architecture strings of the benchmark, in index order."""
    _check_space(space)
    with _data_file(space, "archs.csv").open() as handle:
        rows = list(csv.reader(handle))
    return tuple(row[1] for row in rows[1:])


@functools.lru_cache(maxsize=None)
def nb201_accuracy(dataset: str) -> np.ndarray:
    """200-epoch test accuracy (percent) of every NB201 cell on ``dataset``."""
    if dataset not in NB201_DATASETS:
        raise UserInputError(
            f"unknown dataset {dataset!r}; allowed: {', '.join(NB201_DATASETS)}")
    with _data_file("nb201", "archs.csv").open() as handle:
        reader = csv.DictReader(handle)
        values = np.array([float(row[NB201_DATASETS[dataset]]) for row in reader])
    values.setflags(write=False)
    return values


@dataclass(frozen=True)
class HelpProtocol:
    """The HELP paper's device split and reference architectures for one space."""

    space: str
    reference_indices: tuple[int, ...]
    meta_train_devices: tuple[str, ...]
    meta_valid_devices: tuple[str, ...]
    meta_test_devices: tuple[str, ...]
    num_meta_train_samples: int
    num_samples: int


#: device splits in force instead of the shipped ones (see :func:`device_split`)
_SPLITS: dict[str, HelpProtocol] = {}


def help_protocol(space: str) -> HelpProtocol:
    """The HELP protocol (device split, 10 reference architectures) of ``space``."""
    return _SPLITS.get(space) or _shipped_protocol(space)


@contextlib.contextmanager
def device_split(space: str, meta_train: Sequence[str], meta_valid: Sequence[str], meta_test: Sequence[str]):
    """Within the block, ``help_protocol(space)`` splits the table's devices
    this way (same reference architectures): how leave-one-device-out
    evaluation meta-trains a predictor without the device it scores."""
    shipped = _shipped_protocol(space)
    _SPLITS[space] = dataclasses.replace(shipped, meta_train_devices=tuple(meta_train),
                                         meta_valid_devices=tuple(meta_valid), meta_test_devices=tuple(meta_test))
    try:
        yield _SPLITS[space]
    finally:
        del _SPLITS[space]


@functools.lru_cache(maxsize=None)
def _shipped_protocol(space: str) -> HelpProtocol:
    _check_space(space)
    raw = json.loads(_data_file("help_protocol.json").read_text())[space]
    return HelpProtocol(
        space=space,
        reference_indices=tuple(raw["reference_arch_indices"]),
        meta_train_devices=tuple(raw["meta_train_devices"]),
        meta_valid_devices=tuple(raw["meta_valid_devices"]),
        meta_test_devices=tuple(raw["meta_test_devices"]),
        num_meta_train_samples=int(raw["num_meta_train_sample"]),
        num_samples=int(raw["num_samples"]),
    )
