"""The contract every search space keeps.

An architecture is a tuple of operation names, one per searchable choice;
its canonical string is what users type and what stores key on.
"""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nas.errors import UserInputError

Arch = tuple[str, ...]


class SearchSpace(abc.ABC):
    """A discrete space of architectures with a fixed number of choices.

    Subclasses set ``name``, ``choices`` (the allowed operation names per
    position) and implement string conversion, ``build`` and ``flops``.
    """

    name: str = ""
    #: allowed operations, one tuple per searchable position
    choices: tuple[tuple[str, ...], ...] = ()
    #: input tensor shape without the batch dimension
    input_shape: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10

    # --- size -----------------------------------------------------------
    @property
    def num_archs(self) -> int | None:
        """Number of architectures in the space (``None`` if unbounded)."""
        return int(np.prod([len(c) for c in self.choices], dtype=object))

    # --- sampling and variation ---------------------------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture."""
        return tuple(ops[rng.integers(len(ops))] for ops in self.choices)

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change one position to a different operation."""
        arch = self.validate(arch)
        position = int(rng.integers(len(self.choices)))
        alternatives = [op for op in self.choices[position] if op != arch[position]]
        mutated = list(arch)
        mutated[position] = alternatives[rng.integers(len(alternatives))]
        return tuple(mutated)

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Uniform crossover: each position from ``a`` or ``b`` at random."""
        a, b = self.validate(a), self.validate(b)
        take_a = rng.random(len(a)) < 0.5
        return tuple(x if keep else y for x, y, keep in zip(a, b, take_a))

    # --- canonical form -------------------------------------------------------
    @abc.abstractmethod
    def to_string(self, arch: Arch) -> str:
        """Canonical string of ``arch``."""

    @abc.abstractmethod
    def _parse(self, text: str) -> Arch:
        """Parse a canonical string; raise ``ValueError`` when malformed."""

    def from_string(self, text: str) -> Arch:
        """Parse a canonical string, with a user-facing error when it is wrong."""
        try:
            return self.validate(self._parse(text.strip()))
        except (ValueError, IndexError) as error:
            raise UserInputError(
                f"{text!r} is not a {self.name} architecture: {error}. "
                f"Example of a valid one: {self.to_string(self.default_arch())!r}") from None

    def validate(self, arch: Sequence[str]) -> Arch:
        """Return ``arch`` as a tuple, raising ``ValueError`` if it does not belong to the space."""
        arch = tuple(arch)
        if len(arch) != len(self.choices):
            raise ValueError(f"expected {len(self.choices)} operations, got {len(arch)}")
        for position, (op, allowed) in enumerate(zip(arch, self.choices)):
            if op not in allowed:
                raise ValueError(f"operation {op!r} at position {position} is not one of {', '.join(allowed)}")
        return arch

    def default_arch(self) -> Arch:
        """A fixed, valid architecture (used in examples and demos)."""
        return tuple(ops[0] for ops in self.choices)

    # --- benchmark index (spaces backed by a table) -------------------------------
    def index_of(self, arch: Arch) -> int:
        """Benchmark index of ``arch``; ``KeyError`` when the space has none."""
        raise KeyError(f"space {self.name!r} has no architecture index")

    def from_index(self, index: int) -> Arch:
        raise KeyError(f"space {self.name!r} has no architecture index")

    # --- features for predictors -----------------------------------------------
    def encode(self, arch: Arch) -> np.ndarray:
        """One-hot code of every position, concatenated (float32)."""
        arch = self.validate(arch)
        parts = []
        for op, allowed in zip(arch, self.choices):
            onehot = np.zeros(len(allowed), dtype=np.float32)
            onehot[allowed.index(op)] = 1.0
            parts.append(onehot)
        return np.concatenate(parts)

    def decode(self, code: np.ndarray) -> Arch:
        """Inverse of :meth:`encode`: the operation with the largest entry per position."""
        code = np.asarray(code).reshape(-1)
        if code.size != self.encoding_size:
            raise ValueError(f"expected an encoding of length {self.encoding_size}, got {code.size}")
        arch, start = [], 0
        for allowed in self.choices:
            arch.append(allowed[int(np.argmax(code[start:start + len(allowed)]))])
            start += len(allowed)
        return tuple(arch)

    def encode_many(self, archs: Sequence[Arch]) -> np.ndarray:
        """``encode`` for many architectures, stacked into ``[n, features]``."""
        return np.stack([self.encode(a) for a in archs]) if archs else np.zeros((0, self.encoding_size), np.float32)

    @property
    def encoding_size(self) -> int:
        return sum(len(c) for c in self.choices)

    # --- networks ----------------------------------------------------------------
    @abc.abstractmethod
    def build(self, arch: Arch, num_classes: int | None = None) -> nn.Module:
        """A freshly initialised ``torch.nn.Module`` for ``arch``."""

    def flops(self, arch: Arch) -> int:
        """Multiply-accumulates of one forward pass at batch 1 (conv and linear
        layers), the convention NAS papers report as FLOPs."""
        return count_macs(self.build(arch), self.input_shape)

    def num_params(self, arch: Arch) -> int:
        """Trainable parameter count of ``build(arch)``."""
        return sum(p.numel() for p in self.build(arch).parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Count conv and linear multiply-accumulates of one batch-1 forward pass."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for handle in handles:
        handle.remove()
    return int(total)
