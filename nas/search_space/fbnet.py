"""The layer-wise FBNet space as measured by HW-NAS-Bench (CIFAR-100 setting).

22 searchable layers in 7 stages, 9 candidate blocks each. 5,000 sampled
architectures have recorded latencies and keep their benchmark index.
"""

from __future__ import annotations

import functools
import re

import torch
from torch import nn

from nas import benchmarks
from nas.search_space import register_space
from nas.search_space.base import Arch, SearchSpace

CANDIDATES = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
STAGE_LAYERS = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STAGE_STRIDES = (1, 1, 2, 2, 1, 2, 1)
STEM_CHANNELS = 16
HEAD_CHANNELS = 1504
_BLOCK = re.compile(r"^k(\d)_e(\d)(?:_g(\d))?$")


def layer_shapes() -> list[tuple[int, int, int]]:
    """``(c_in, c_out, stride)`` of the 22 searchable layers."""
    shapes, c_in = [], STEM_CHANNELS
    for layers, c_out, stride in zip(STAGE_LAYERS, STAGE_CHANNELS, STAGE_STRIDES):
        for i in range(layers):
            shapes.append((c_in, c_out, stride if i == 0 else 1))
            c_in = c_out
    return shapes


def parse_candidate(name: str) -> tuple[int, int, int]:
    """``(kernel, expansion, groups)`` of an inverted-bottleneck candidate."""
    match = _BLOCK.match(name)
    if not match:
        raise ValueError(f"{name!r} is not an inverted-bottleneck candidate")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 1)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class InvertedBottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, expansion: int, groups: int):
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = [nn.Conv2d(c_in, hidden, 1, groups=groups, bias=False),
                                   nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        if groups > 1:
            layers.append(ChannelShuffle(groups))
        layers += [nn.Conv2d(hidden, hidden, kernel, stride=stride, padding=kernel // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                   nn.Conv2d(hidden, c_out, 1, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
        self.body = nn.Sequential(*layers)
        self.residual = c_in == c_out and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


def make_block(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    """One candidate block of the space."""
    if name == "skip":
        if c_in == c_out and stride == 1:
            return nn.Identity()
        return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                             nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
    return InvertedBottleneck(c_in, c_out, stride, *parse_candidate(name))


def make_stem() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, STEM_CHANNELS, 3, padding=1, bias=False),
                         nn.BatchNorm2d(STEM_CHANNELS), nn.ReLU(inplace=True))


def make_head(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(STAGE_CHANNELS[-1], HEAD_CHANNELS, 1, bias=False),
                         nn.BatchNorm2d(HEAD_CHANNELS), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(HEAD_CHANNELS, num_classes))


class FBNetNetwork(nn.Module):
    def __init__(self, arch: Arch, num_classes: int):
        super().__init__()
        self.stem = make_stem()
        self.layers = nn.Sequential(*(make_block(op, c_in, c_out, stride)
                                      for op, (c_in, c_out, stride) in zip(arch, layer_shapes())))
        self.head = make_head(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


def _block_cost(name: str, c_in: int, c_out: int, stride: int, resolution: int) -> tuple[int, int]:
    """(multiply-accumulates, parameters) of one block at ``resolution`` input."""
    out_res = resolution // stride
    if name == "skip":
        if c_in == c_out and stride == 1:
            return 0, 0
        return c_in * c_out * out_res ** 2, c_in * c_out + 2 * c_out
    kernel, expansion, groups = parse_candidate(name)
    hidden = c_in * expansion
    expand = (c_in // groups) * hidden
    depthwise = hidden * kernel * kernel
    project = (hidden // groups) * c_out
    macs = expand * resolution ** 2 + (depthwise + project) * out_res ** 2
    params = expand + depthwise + project + 2 * (hidden + hidden + c_out)
    return macs, params


@register_space("fbnet")
class FBNetSpace(SearchSpace):
    """22 layers x 9 candidates; the canonical string is the 22 names, space separated."""

    name = "fbnet"
    choices = tuple(CANDIDATES for _ in range(sum(STAGE_LAYERS)))
    input_shape = (3, 32, 32)
    num_classes = 100

    def to_string(self, arch: Arch) -> str:
        return " ".join(self.validate(arch))

    def _parse(self, text: str) -> Arch:
        return tuple(text.split())

    @functools.cached_property
    def _index(self) -> dict[Arch, int]:
        index: dict[Arch, int] = {}
        for i, s in enumerate(benchmarks.arch_strings("fbnet")):
            index.setdefault(self._parse(s), i)
        return index

    def index_of(self, arch: Arch) -> int:
        return self._index[self.validate(arch)]

    def from_index(self, index: int) -> Arch:
        strings = benchmarks.arch_strings("fbnet")
        if not 0 <= index < len(strings):
            raise IndexError(f"FBNet sample index {index} outside 0..{len(strings) - 1}")
        return self._parse(strings[index])

    def measured_archs(self) -> tuple[Arch, ...]:
        """The 5,000 sampled architectures with recorded latencies, in index order."""
        return tuple(self._parse(s) for s in benchmarks.arch_strings("fbnet"))

    def build(self, arch: Arch, num_classes: int | None = None) -> nn.Module:
        return FBNetNetwork(self.validate(arch), num_classes or self.num_classes)

    def _cost(self, arch: Arch) -> tuple[int, int]:
        arch = self.validate(arch)
        macs = 3 * STEM_CHANNELS * 9 * 32 * 32
        params = 3 * STEM_CHANNELS * 9 + 2 * STEM_CHANNELS
        resolution = 32
        for op, (c_in, c_out, stride) in zip(arch, layer_shapes()):
            block_macs, block_params = _block_cost(op, c_in, c_out, stride, resolution)
            macs, params, resolution = macs + block_macs, params + block_params, resolution // stride
        macs += STAGE_CHANNELS[-1] * HEAD_CHANNELS * resolution ** 2 + HEAD_CHANNELS * self.num_classes
        params += STAGE_CHANNELS[-1] * HEAD_CHANNELS + 2 * HEAD_CHANNELS + HEAD_CHANNELS * self.num_classes + self.num_classes
        return macs, params

    def flops(self, arch: Arch) -> int:
        """Multiply-accumulates at batch 1, 32x32 input, computed from the layer list."""
        return self._cost(arch)[0]

    def num_params(self, arch: Arch) -> int:
        """Trainable parameters, computed from the layer list (matches ``build``)."""
        return self._cost(arch)[1]
