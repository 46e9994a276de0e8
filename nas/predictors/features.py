"""Fast, vectorised views of architectures that predictors read: operation
codes, benchmark row, analytic FLOPs / parameters, and the latencies the
meta-train devices recorded (or would record) for any architecture.

Everything here is numpy over integer codes so that predictors reach tens of
thousands of architectures per second.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from nas import benchmarks
from nas.errors import UserInputError
from nas.search_space import Arch, get_space


@functools.lru_cache(maxsize=None)
def _op_lookup(space: str) -> tuple[dict[str, int], ...]:
    return tuple({op: k for k, op in enumerate(ops)} for ops in get_space(space).choices)


def op_codes(space: str, archs: Sequence[Arch | str]) -> np.ndarray:
    """``[n, positions]`` integer code of each position's operation.

    Accepts tuples of the space or canonical strings; an architecture that
    does not belong to the space is a :class:`UserInputError`.
    """
    lookup = _op_lookup(space)
    search_space = get_space(space)
    rows = []
    for arch in archs:
        if isinstance(arch, str):
            arch = search_space.from_string(arch)
        try:
            if len(arch) != len(lookup):
                raise KeyError(arch)
            rows.append([table[op] for table, op in zip(lookup, arch)])
        except (KeyError, TypeError):
            try:
                search_space.validate(arch)
                problem = "unknown operation"
            except (ValueError, TypeError) as error:
                problem = str(error)
            raise UserInputError(f"{arch!r} is not a {space} architecture: {problem}") from None
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), len(lookup))


def one_hot(space: str, codes: np.ndarray) -> np.ndarray:
    """``[n, sum of choices]`` float32 one-hot code (same layout as ``SearchSpace.encode``)."""
    sizes = [len(c) for c in get_space(space).choices]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.zeros((len(codes), sum(sizes)), dtype=np.float32)
    if len(codes):
        out[np.arange(len(codes))[:, None], codes + offsets] = 1.0
    return out


@functools.lru_cache(maxsize=None)
def _table_index(space: str) -> dict[tuple[int, ...], int]:
    codes = op_codes(space, [get_space(space)._parse(s) for s in benchmarks.arch_strings(space)])
    index: dict[tuple[int, ...], int] = {}
    for i, row in enumerate(map(tuple, codes.tolist())):
        index.setdefault(row, i)
    return index


def table_rows(space: str, codes: np.ndarray) -> np.ndarray:
    """Benchmark row of each architecture, ``-1`` where the table has none."""
    index = _table_index(space)
    return np.fromiter((index.get(row, -1) for row in map(tuple, codes.tolist())), dtype=np.int64,
                       count=len(codes))


@functools.lru_cache(maxsize=None)
def _additive_costs(space: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-(position, operation) FLOPs and parameter tables; both are exactly
    additive over positions in the two spaces (checked in the tests)."""
    search_space = get_space(space)
    base = search_space.default_arch()
    base_cost = np.array([search_space.flops(base), search_space.num_params(base)], dtype=np.float64)
    sizes = [len(c) for c in search_space.choices]
    table = np.zeros((2, len(sizes), max(sizes)))
    for position, ops in enumerate(search_space.choices):
        for k, op in enumerate(ops):
            arch = list(base)
            arch[position] = op
            cost = np.array([search_space.flops(tuple(arch)), search_space.num_params(tuple(arch))])
            table[:, position, k] = cost - base_cost
    constant = base_cost
    return table, constant


def flops_and_params(space: str, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Analytic multiply-accumulates and parameter counts of each architecture."""
    table, constant = _additive_costs(space)
    positions = np.arange(codes.shape[1])
    flops = constant[0] + table[0][positions, codes].sum(axis=1)
    params = constant[1] + table[1][positions, codes].sum(axis=1)
    return flops, params


class SourceLatencies:
    """Latency in ms of any architecture on a fixed set of source devices.

    Recorded values where the benchmark table has the architecture; elsewhere
    (FBNet archs outside the 5,000 samples) an additive per-layer latency
    model fitted on the table, i.e. a multi-output latency regressor.
    """

    def __init__(self, space: str, devices: Sequence[str], coefficients: np.ndarray | None = None,
                 ridge: float = 1e-2):
        self.space = space
        self.devices = tuple(devices)
        table = benchmarks.latency_table(space)
        self._columns = np.stack([table.column(d) for d in self.devices], axis=1)
        if coefficients is None:
            codes = op_codes(space, [get_space(space)._parse(s) for s in benchmarks.arch_strings(space)])
            design = np.concatenate([one_hot(space, codes), np.ones((len(codes), 1), np.float32)], axis=1)
            design = design.astype(np.float64)
            gram = design.T @ design + ridge * np.eye(design.shape[1])
            coefficients = np.linalg.solve(gram, design.T @ self._columns)
        self.coefficients = np.asarray(coefficients, dtype=np.float64)

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        """``[n, devices]`` latency in ms."""
        rows = table_rows(self.space, codes)
        out = np.empty((len(codes), len(self.devices)))
        known = rows >= 0
        out[known] = self._columns[rows[known]]
        if not known.all():
            design = one_hot(self.space, codes[~known]).astype(np.float64)
            out[~known] = design @ self.coefficients[:-1] + self.coefficients[-1]
            out[~known] = np.maximum(out[~known], 1e-3)
        return out
