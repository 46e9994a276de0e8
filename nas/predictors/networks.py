"""Latency networks, written to be called functionally
(``torch.func.functional_call``) on a parameter dict.

- :class:`HelpNet`: HELP's network (architecture encoder, hardware-embedding
  MLP, 3-layer head) and :class:`InferenceNet`, its hardware-conditioned
  initialisation; inputs from :func:`nas.predictors.features.help_encoding`.
- :class:`LatencyNet`: the BRP-NAS-style network of the scratch baselines.
  Input of one architecture is a flat float vector: for NB201 the normalised
  cell graph, ``[64 adjacency | 56 node features]`` (:func:`network_inputs`),
  read by a 4-layer graph convolution network with a mean readout; for FBNet
  the 22 x 9 one-hot layer code, read by a 2-layer MLP.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from nas.predictors.features import one_hot, table_rows
from nas.search_space import get_space

NUM_REFERENCE = 10


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


class GraphConvolution(nn.Module):
    """Directed sum aggregation: ``aggregation @ (h @ weight) + bias``, no
    degree normalisation (HELP's layer; weight is ``[in, out]``)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-0.05, 0.05))
        bound = out_features ** -0.5
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor, aggregation: torch.Tensor) -> torch.Tensor:
        return aggregation @ (h @ self.weight) + self.bias


class HelpNet(nn.Module):
    """HELP's latency network (Lee et al., NeurIPS 2021).

    Architecture encoder: for NB201, 4 graph convolutions over the cell's
    global-node graph (:func:`nas.predictors.features.help_encoding`), read
    out at the global node; for layer-wise spaces, a 2-layer MLP over the
    factorised layer code. Hardware encoder: a 2-layer MLP over the 10
    reference latencies min-max scaled to [0, 1]. Head: ``fc3``, ``fc4``
    (width of the concatenated features, 2 x hidden) and ``fc5`` to one
    normalised latency.
    """

    def __init__(self, space: str, hidden: int = 100, hardware_embedding: bool = True):
        super().__init__()
        self.space = space
        self.hardware_embedding = hardware_embedding
        if space == "nb201":
            for i, width in enumerate((8, hidden, hidden, hidden)):
                self.add_module(f"gc{i + 1}", GraphConvolution(width, hidden))
        else:
            self.fc1 = nn.Linear(help_input_size(space), hidden)
            self.fc2 = nn.Linear(hidden, hidden)
        features = hidden
        if hardware_embedding:
            self.fc_hw1 = nn.Linear(NUM_REFERENCE, hidden)
            self.fc_hw2 = nn.Linear(hidden, hidden)
            features = 2 * hidden
        self.fc3 = nn.Linear(features, features)
        self.fc4 = nn.Linear(features, features)
        self.fc5 = nn.Linear(features, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.space == "nb201":
            aggregation = x[..., :81].reshape(*x.shape[:-1], 9, 9)
            h = x[..., 81:].reshape(*x.shape[:-1], 9, 8)
            for i in range(1, 5):
                h = torch.relu(getattr(self, f"gc{i}")(h, aggregation))
            return h[..., -1, :]  # the global node
        return torch.relu(self.fc2(torch.relu(self.fc1(x))))

    def forward(self, x: torch.Tensor, hardware: torch.Tensor) -> torch.Tensor:
        """``x [n, input]``, ``hardware [10]`` scaled reference latencies -> ``[n]``."""
        h = self.encode(x)
        if self.hardware_embedding:
            e = torch.relu(self.fc_hw2(torch.relu(self.fc_hw1(hardware))))
            h = torch.cat([h, e.expand(h.shape[0], -1)], dim=-1)
        h = torch.relu(self.fc3(h))
        h = torch.relu(self.fc4(h))
        return self.fc5(h).squeeze(-1)


def help_input_size(space: str) -> int:
    from nas.predictors.features import FBNET_LAYER_CODE

    if space == "nb201":
        return 81 + 72
    if space == "fbnet":
        return FBNET_LAYER_CODE * len(get_space(space).choices)
    return get_space(space).encoding_size


#: HELP's modulated head layers, in order
MODULATED = ("fc3", "fc4", "fc5")


class InferenceNet(nn.Module):
    """HELP's hardware-conditioned initialisation: the hardware embedding
    gives a diagonal Gaussian over one multiplicative modulation per input
    column of each head layer's weight and one additive modulation of each
    head layer's bias (``2 * width * 3 + 3`` values)."""

    def __init__(self, width: int = 200):
        super().__init__()
        self.width = width
        self.size = 3 * width + 3
        self.fc1 = nn.Linear(NUM_REFERENCE, 10)
        self.fc2 = nn.Linear(10, 2 * self.size)

    def forward(self, hardware: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` of the modulations."""
        stats = self.fc2(torch.relu(self.fc1(hardware)))
        return stats[:self.size], torch.nn.functional.softplus(stats[self.size:])


def modulate(params: dict[str, torch.Tensor], z: torch.Tensor, width: int,
             scale: float = 0.01) -> dict[str, torch.Tensor]:
    """Head weights scaled by ``1 + scale * z_w`` per input column, biases
    shifted by ``scale * z_b``."""
    out = dict(params)
    for i, layer in enumerate(MODULATED):
        z_w = z[i * width:(i + 1) * width]
        out[f"{layer}.weight"] = params[f"{layer}.weight"] * (1 + scale * z_w)
        out[f"{layer}.bias"] = params[f"{layer}.bias"] + scale * z[3 * width + i]
    return out


def as_arrays(prefix: str, params: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v.detach().cpu().numpy() for k, v in params.items()}


def from_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    start = f"{prefix}/"
    return {k[len(start):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(start)}
