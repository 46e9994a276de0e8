"""The path-binarized supernet of the ``fbnet`` space (ProxylessNAS).

Every searchable layer is a :class:`MixedOp` holding the 9 candidate blocks;
``alpha[layer]`` gives it a categorical distribution over them. Binary gates
pick which paths run:

- ``sample_single``: one path per layer drawn from the distribution (weight
  updates; memory of one compact network),
- ``sample_two``: two distinct paths per layer, one of them active; the
  gates' gradients give the architecture gradient (BinaryConnect-style
  two-path estimator, :meth:`ProxylessSupernet.accumulate_arch_grad`); the
  inactive path runs without an autograd graph, so memory stays at one path,
- ``set_arch``: a fixed architecture (accuracy estimation with shared weights),
- ``set_all_paths``: every path, weighted by softmax(alpha) (DARTS-style;
  only for the memory comparison).

Stage transitions (the 6 layers that change width or stride) have no
identity to fall back on: each candidate replaces its input, and with 9
independently initialised candidates every sampled path hands the shared
layers after it unrelated features; trained that way the supernet stays at
chance on small data (``experiments/results/proxyless_supernet_learning.md``).
So, in the supernet only, a transition layer's ``skip`` candidate (its 1x1
projection) is a shortcut that every other candidate adds to, like the
identity of the residual layers, and every inverted-bottleneck candidate
starts with its last BatchNorm scale at 0: at initialisation all paths
compute the same function and the candidates learn residuals on top of it.
The derived architecture is built and retrained exactly as the space
defines it; only the weight-sharing proxy differs.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nas.search_space.fbnet import CANDIDATES, InvertedBottleneck, layer_shapes, make_block, make_head, make_stem


#: changes whenever trained supernet weights stop meaning the same thing (2: transition shortcut);
#: checkpoints and cached supernets record it, so an older one is never loaded by mistake
SUPERNET_FORMAT = 2


class MixedOp(nn.Module):
    """All candidates of one layer; the forward pass runs only the gated paths.

    ``shortcut`` (a stage transition with a ``skip`` candidate): path ``k``
    computes ``skip(x) + candidate_k(x)``, and the ``skip`` path ``skip(x)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, candidates: Sequence[str] = CANDIDATES,
                 shortcut: bool = True):
        super().__init__()
        self.candidates = nn.ModuleList(make_block(name, c_in, c_out, stride) for name in candidates)
        transition = c_in != c_out or stride != 1
        self.shortcut = list(candidates).index("skip") if shortcut and transition and "skip" in candidates else None
        if shortcut:
            for block in self.candidates:
                if isinstance(block, InvertedBottleneck):
                    nn.init.zeros_(block.body[-1].weight)  # starts as the identity / the shortcut alone
        self.active: list[int] = [0]
        self.gates: torch.Tensor | None = None  # weights of ``active`` paths; None = the single path

    def _path(self, k: int, x: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        if base is None:
            return self.candidates[k](x)
        return base if k == self.shortcut else base + self.candidates[k](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = None if self.shortcut is None else self.candidates[self.shortcut](x)
        if self.gates is None:
            return self._path(self.active[0], x, base)
        out = 0
        for gate, k in zip(self.gates, self.active):
            if gate.detach().item() == 0.0:
                # a closed binary gate: the path adds nothing to the output, and dL/dgate = <dL/dout, path(x)>
                # needs only its output, so it runs without a graph (memory of one path, as in the paper)
                with torch.no_grad():
                    path = self._path(k, x, None if base is None else base.detach())
            else:
                path = self._path(k, x, base)
            out = out + gate * path
        return out


class ProxylessSupernet(nn.Module):
    """Stem, 22 mixed layers and head of ``fbnet``, with architecture parameters ``alpha [22, 9]``.

    ``shortcut=False`` trains the candidates exactly as the space defines them
    (no transition shortcut, default initialisation): kept for the ablation.
    """

    def __init__(self, num_classes: int = 10, candidates: Sequence[str] = CANDIDATES, shortcut: bool = True):
        super().__init__()
        self.candidate_names = tuple(candidates)
        self.stem = make_stem()
        self.layers = nn.ModuleList(MixedOp(c_in, c_out, stride, candidates, shortcut)
                                    for c_in, c_out, stride in layer_shapes())
        self.head = make_head(num_classes)
        self.alpha = nn.Parameter(torch.zeros(len(self.layers), len(candidates)))
        self._pairs: list[tuple[int, int]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)

    # --- parameters ---------------------------------------------------------------
    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "alpha"]

    def probs(self) -> torch.Tensor:
        """Path probabilities ``[layers, candidates]``."""
        return torch.softmax(self.alpha, dim=-1)

    # --- path selection ---------------------------------------------------------------
    def sample_single(self, generator: torch.Generator | None = None) -> tuple[str, ...]:
        """Activate one path per layer, drawn from ``probs()``; returns the sampled architecture."""
        with torch.no_grad():
            picks = torch.multinomial(self.probs(), 1, generator=generator).squeeze(1).tolist()
        for layer, k in zip(self.layers, picks):
            layer.active, layer.gates = [k], None
        self._pairs = None
        return tuple(self.candidate_names[k] for k in picks)

    def sample_two(self, generator: torch.Generator | None = None) -> None:
        """Two distinct paths per layer, drawn from ``probs()``; one of them, drawn from the
        softmax of their two alphas, is active (gate 1), the other has gate 0. The gates
        are leaves that collect ``dL/dgate`` for :meth:`accumulate_arch_grad`."""
        with torch.no_grad():
            pairs = torch.multinomial(self.probs(), 2, replacement=False, generator=generator)
            pair_probs = torch.softmax(self.alpha.gather(1, pairs), dim=-1)
            chosen = torch.multinomial(pair_probs, 1, generator=generator).squeeze(1)
        self._pairs = [tuple(p) for p in pairs.tolist()]
        for layer, pair, c in zip(self.layers, self._pairs, chosen.tolist()):
            gates = torch.zeros(2)
            gates[c] = 1.0
            layer.active, layer.gates = list(pair), gates.requires_grad_(True)

    def gate_tensors(self) -> list[torch.Tensor]:
        return [layer.gates for layer in self.layers]

    def accumulate_arch_grad(self, gate_grads: Sequence[torch.Tensor]) -> None:
        """Add the two-path estimate ``dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)``
        (p over the two sampled paths) to ``alpha.grad``."""
        if self._pairs is None:
            raise RuntimeError("call sample_two() and a backward pass first")
        if self.alpha.grad is None:
            self.alpha.grad = torch.zeros_like(self.alpha)
        with torch.no_grad():
            for row, (pair, grad) in enumerate(zip(self._pairs, gate_grads)):
                index = torch.tensor(pair)
                p = torch.softmax(self.alpha[row, index], dim=-1)
                jacobian = torch.diag(p) - torch.outer(p, p)  # d p_j / d alpha_i, symmetric
                self.alpha.grad[row, index] += jacobian @ grad

    def rescale_sampled(self, alpha_before: torch.Tensor) -> None:
        """After an alpha step, shift the two sampled alphas of each layer so their total
        probability mass is unchanged: the unsampled paths' probabilities stay fixed."""
        if self._pairs is None:
            return
        with torch.no_grad():
            for row, pair in enumerate(self._pairs):
                index = torch.tensor(pair)
                offset = (torch.logsumexp(self.alpha[row, index], 0)
                          - torch.logsumexp(alpha_before[row, index], 0))
                self.alpha[row, index] -= offset

    def set_arch(self, arch: Sequence[str]) -> None:
        """Run exactly ``arch`` (candidate names, one per layer)."""
        for layer, name in zip(self.layers, arch):
            layer.active, layer.gates = [self.candidate_names.index(name)], None
        self._pairs = None

    def set_all_paths(self) -> None:
        """DARTS-style: every path runs, weighted by ``probs()`` (memory grows with the candidate count)."""
        probs = self.probs()
        for layer, row in zip(self.layers, probs):
            layer.active, layer.gates = list(range(len(self.candidate_names))), row
        self._pairs = None

    def derive(self) -> tuple[str, ...]:
        """The most probable candidate of every layer."""
        return tuple(self.candidate_names[k] for k in self.alpha.argmax(dim=-1).tolist())
