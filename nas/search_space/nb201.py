"""NAS-Bench-201: 15,625 cells, each 6 edges over 5 operations.

Network (as in the benchmark): 3x3 conv stem (16 channels) + BN; three stages
of 5 cells at 16, 32 and 64 channels joined by residual reduction blocks;
BN, ReLU, global pooling and a linear classifier.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from nas import benchmarks
from nas.search_space import register_space
from nas.search_space.base import Arch, SearchSpace

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (target node, source node) of each edge, in canonical-string order
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
STAGE_CHANNELS = (16, 32, 64)
CELLS_PER_STAGE = 5
DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet16-120": 120}


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


def make_op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NB201 operation {name!r}")


class Cell(nn.Module):
    def __init__(self, arch: Arch, channels: int):
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, channels) for op in arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for target in (1, 2, 3):
            nodes.append(sum(self.edges[e](nodes[src])
                             for e, (dst, src) in enumerate(EDGES) if dst == target))
        return nodes[3]


class ReductionBlock(nn.Module):
    """Residual block that halves the resolution and doubles the channels."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2),
                                      nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class NB201Network(nn.Module):
    def __init__(self, arch: Arch, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, STAGE_CHANNELS[0], 3, padding=1, bias=False),
                                   nn.BatchNorm2d(STAGE_CHANNELS[0])]
        for stage, channels in enumerate(STAGE_CHANNELS):
            if stage > 0:
                layers.append(ReductionBlock(STAGE_CHANNELS[stage - 1], channels))
            layers.extend(Cell(arch, channels) for _ in range(CELLS_PER_STAGE))
        layers += [nn.BatchNorm2d(STAGE_CHANNELS[-1]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(STAGE_CHANNELS[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_space("nb201")
class NB201Space(SearchSpace):
    """The NAS-Bench-201 cell space in the benchmark's index order."""

    name = "nb201"
    choices = tuple(OPS for _ in EDGES)
    input_shape = (3, 32, 32)
    num_classes = 10

    def to_string(self, arch: Arch) -> str:
        arch = self.validate(arch)
        groups = []
        for target in (1, 2, 3):
            groups.append("|" + "|".join(f"{arch[e]}~{src}" for e, (dst, src) in enumerate(EDGES)
                                         if dst == target) + "|")
        return "+".join(groups)

    def _parse(self, text: str) -> Arch:
        groups = text.split("+")
        if len(groups) != 3:
            raise ValueError("expected three '+'-separated node groups like |op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
        ops = []
        for target, group in enumerate(groups, start=1):
            if not (group.startswith("|") and group.endswith("|")):
                raise ValueError(f"node group {group!r} must start and end with '|'")
            items = group[1:-1].split("|")
            if len(items) != target:
                raise ValueError(f"node {target} needs {target} incoming edges, got {len(items)}")
            for src, item in enumerate(items):
                op, _, source = item.partition("~")
                if source != str(src):
                    raise ValueError(f"edge {item!r} should come from node {src}")
                ops.append(op)
        return tuple(ops)

    @functools.cached_property
    def _index(self) -> dict[Arch, int]:
        return {self._parse(s): i for i, s in enumerate(benchmarks.arch_strings("nb201"))}

    @functools.cached_property
    def _archs(self) -> tuple[Arch, ...]:
        return tuple(self._parse(s) for s in benchmarks.arch_strings("nb201"))

    def index_of(self, arch: Arch) -> int:
        return self._index[self.validate(arch)]

    def from_index(self, index: int) -> Arch:
        if not 0 <= index < len(self._archs):
            raise IndexError(f"NB201 index {index} outside 0..{len(self._archs) - 1}")
        return self._archs[index]

    def all_archs(self) -> tuple[Arch, ...]:
        """Every architecture, in benchmark index order."""
        return self._archs

    def encode_graph(self, arch: Arch) -> tuple[np.ndarray, np.ndarray]:
        """Operation-on-node graph of the cell, as read by graph encoders.

        Nodes: input, the 6 edge operations, output. Returns the adjacency
        ``[8, 8]`` (row = source) and one-hot node features ``[8, 7]`` over
        ``input``, the 5 operations and ``output``.
        """
        arch = self.validate(arch)
        adjacency = np.zeros((8, 8), dtype=np.float32)
        features = np.zeros((8, 7), dtype=np.float32)
        features[0, 0] = 1.0
        features[7, 6] = 1.0
        for e, op in enumerate(arch):
            features[1 + e, 1 + OPS.index(op)] = 1.0
        for e, (dst, src) in enumerate(EDGES):
            # an edge's input is the graph input (node 0) or the edges entering its source node
            feeders = [0] if src == 0 else [1 + f for f, (d, _) in enumerate(EDGES) if d == src]
            for f in feeders:
                adjacency[f, 1 + e] = 1.0
        for e, (dst, _) in enumerate(EDGES):
            if dst == 3:
                adjacency[1 + e, 7] = 1.0
        return adjacency, features

    def build(self, arch: Arch, num_classes: int | None = None) -> nn.Module:
        return NB201Network(self.validate(arch), num_classes or self.num_classes)

    def flops(self, arch: Arch) -> int:
        """Multiply-accumulates at batch 1, 32x32 input, computed from the layer list."""
        arch = self.validate(arch)
        total = 3 * 16 * 9 * 32 * 32  # stem
        resolution = 32
        for stage, c in enumerate(STAGE_CHANNELS):
            if stage > 0:
                c_in, resolution = STAGE_CHANNELS[stage - 1], resolution // 2
                hw = resolution * resolution
                total += hw * c * (c_in * 9 + c * 9 + c_in)  # conv_a, conv_b, shortcut 1x1
            hw = resolution * resolution
            per_cell = sum({"nor_conv_1x1": c * c, "nor_conv_3x3": c * c * 9}.get(op, 0) for op in arch)
            total += CELLS_PER_STAGE * hw * per_cell
        return total + STAGE_CHANNELS[-1] * self.num_classes

    def num_params(self, arch: Arch) -> int:
        """Trainable parameters, computed from the layer list (matches ``build``)."""
        arch = self.validate(arch)
        total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
        for stage, c in enumerate(STAGE_CHANNELS):
            if stage > 0:
                c_in = STAGE_CHANNELS[stage - 1]
                total += c_in * c * 9 + 2 * c + c * c * 9 + 2 * c + c_in * c
            per_cell = sum({"nor_conv_1x1": c * c + 2 * c, "nor_conv_3x3": c * c * 9 + 2 * c}.get(op, 0)
                           for op in arch)
            total += CELLS_PER_STAGE * per_cell
        return total + 2 * 64 + 64 * self.num_classes + self.num_classes
