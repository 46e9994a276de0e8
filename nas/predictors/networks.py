"""Latency networks of HELP and the BRP-NAS-style baselines, written to be
called functionally (``torch.func.functional_call``) on a parameter dict.

Input of one architecture is a flat float vector:

- NB201: the normalised cell graph, ``[64 adjacency | 56 node features]``
  (:func:`network_inputs`), read by a 4-layer graph convolution network
  with a mean readout over the nodes;
- FBNet: the 22 x 9 one-hot layer code, read by a 2-layer MLP.

The architecture feature is concatenated with the hardware feature (an MLP
over the 10 normalised reference latencies) and a 3-layer head outputs the
normalised latency. Without a hardware embedding the head reads the
architecture feature alone.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from nas.predictors.features import one_hot, op_codes, table_rows
from nas.search_space import get_space

NUM_REFERENCE = 10
HEAD_LAYERS = ("head1", "head2", "head3")


@functools.lru_cache(maxsize=None)
def _nb201_graphs() -> np.ndarray:
    """Flat normalised graph input of every NB201 cell, in table order."""
    from nas.predictors.evaluation import table_archs

    space = get_space("nb201")
    out = np.zeros((len(table_archs("nb201")), 120), dtype=np.float32)
    for row, arch in enumerate(table_archs("nb201")):
        adjacency, features = space.encode_graph(arch)
        # Kipf & Welling normalisation of the undirected graph with self-loops
        linked = adjacency + adjacency.T + np.eye(8, dtype=np.float32)
        scale = linked.sum(axis=1) ** -0.5
        out[row, :64] = (scale[:, None] * linked * scale[None, :]).ravel()
        out[row, 64:] = features.ravel()
    return out


def network_inputs(space: str, codes: np.ndarray) -> torch.Tensor:
    """``[n, input_size]`` float tensor of the architectures given by operation codes."""
    if space == "nb201":
        return torch.from_numpy(_nb201_graphs()[table_rows("nb201", codes)])
    return torch.from_numpy(one_hot(space, codes))


def input_size(space: str) -> int:
    return 120 if space == "nb201" else get_space(space).encoding_size


class LatencyNet(nn.Module):
    """Architecture encoder (+ hardware embedding) + 3-layer head."""

    def __init__(self, space: str, hidden: int = 100, hardware_embedding: bool = True):
        super().__init__()
        self.space = space
        self.hardware_embedding = hardware_embedding
        if space == "nb201":
            sizes = [7, hidden, hidden, hidden, hidden]
            for i in range(4):
                layer = nn.Linear(sizes[i], sizes[i + 1])
                self.add_module(f"gc{i}", layer)
        else:
            self.enc0 = nn.Linear(input_size(space), hidden)
            self.enc1 = nn.Linear(hidden, hidden)
        if hardware_embedding:
            self.hw0 = nn.Linear(NUM_REFERENCE, hidden)
            self.hw1 = nn.Linear(hidden, hidden)
        self.head1 = nn.Linear(hidden * (2 if hardware_embedding else 1), hidden)
        self.head2 = nn.Linear(hidden, hidden)
        self.head3 = nn.Linear(hidden, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.space == "nb201":
            adjacency = x[..., :64].reshape(*x.shape[:-1], 8, 8)
            h = x[..., 64:].reshape(*x.shape[:-1], 8, 7)
            for i in range(4):
                h = torch.relu(adjacency @ getattr(self, f"gc{i}")(h))
            return h.mean(dim=-2)
        return torch.relu(self.enc1(torch.relu(self.enc0(x))))

    def forward(self, x: torch.Tensor, hardware: torch.Tensor) -> torch.Tensor:
        """``x [n, input]``, ``hardware [10]`` normalised reference latencies -> ``[n]``."""
        h = self.encode(x)
        if self.hardware_embedding:
            e = torch.relu(self.hw1(torch.relu(self.hw0(hardware))))
            h = torch.cat([h, e.expand(h.shape[0], -1)], dim=-1)
        h = torch.relu(self.head1(h))
        h = torch.relu(self.head2(h))
        return self.head3(h).squeeze(-1)


class InferenceNet(nn.Module):
    """HELP's hardware-conditioned initialisation: maps the hardware
    embedding to a Gaussian over per-unit multiplicative (weight) and
    additive (bias) modulations of the head layers."""

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.sizes = [hidden, hidden, 1]
        self.body = nn.Linear(NUM_REFERENCE, hidden)
        self.mean = nn.Linear(hidden, 2 * sum(self.sizes))
        self.log_var = nn.Linear(hidden, 2 * sum(self.sizes))
        for layer in (self.mean, self.log_var):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.log_var.bias.fill_(-6.0)

    def forward(self, hardware: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.body(hardware))
        return self.mean(h), self.log_var(h)


def modulate(params: dict[str, torch.Tensor], z: torch.Tensor, sizes: list[int]) -> dict[str, torch.Tensor]:
    """Head weights scaled by ``1 + z_w`` per output unit, biases shifted by ``z_b``."""
    out = dict(params)
    offset = 0
    for layer, size in zip(HEAD_LAYERS, sizes):
        z_w, z_b = z[offset:offset + size], z[offset + size:offset + 2 * size]
        offset += 2 * size
        out[f"{layer}.weight"] = params[f"{layer}.weight"] * (1 + z_w)[:, None]
        out[f"{layer}.bias"] = params[f"{layer}.bias"] + z_b
    return out


def as_arrays(prefix: str, params: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v.detach().cpu().numpy() for k, v in params.items()}


def from_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    start = f"{prefix}/"
    return {k[len(start):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(start)}
