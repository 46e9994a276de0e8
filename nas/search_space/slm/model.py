"""The byte-level language model an ``slm`` architecture builds.

``tokens [B, T]`` (int64 bytes) -> embedding -> pre-norm residual layers
(each ``x + layer(RMSNorm(x))``, a layer being a token mixer or a SwiGLU FFN)
-> RMSNorm -> logits ``[B, T, 256]`` (output projection tied to the embedding).

Decoding keeps every mixer's state explicitly: :meth:`SmallLanguageModel.prefill`
turns a prompt into logits and states, :meth:`SmallLanguageModel.step` takes
one token per sequence, the states and the token's position, and returns the
next logits and the new states. States are a flat list of tensors, in layer
order (see :meth:`SmallLanguageModel.state_names`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nas.search_space.slm.operators import Attention, DeltaNet, Mamba2, RMSNorm, SwiGLU

VOCAB = 256
#: tokens seen by a sliding-window attention layer (the newest included)
WINDOW = 256
#: SwiGLU hidden size, as a multiple of the width
FFN_EXPANSION = 3
MIXERS = ("A", "SWA", "M2", "D", "GD")
FFN = "F"
LAYER_NAMES = {"A": "full attention", "SWA": f"sliding-window attention (window {WINDOW})", "M2": "Mamba2",
               "D": "DeltaNet", "GD": "Gated DeltaNet", "F": "SwiGLU FFN"}


def make_layer(name: str, width: int) -> nn.Module:
    """One layer of the stack: a mixer (``MIXERS``) or the FFN ``F``."""
    if name == "A":
        return Attention(width)
    if name == "SWA":
        return Attention(width, window=WINDOW)
    if name == "M2":
        return Mamba2(width)
    if name == "D":
        return DeltaNet(width)
    if name == "GD":
        return DeltaNet(width, gated=True)
    if name == FFN:
        return SwiGLU(width, FFN_EXPANSION * width)
    raise ValueError(f"unknown layer {name!r}; layers are {', '.join(MIXERS + (FFN,))}")


class SmallLanguageModel(nn.Module):
    """Byte-level language model over a flat ``layers`` list at ``width``."""

    def __init__(self, layers: Sequence[str], width: int):
        super().__init__()
        self.layer_names = tuple(layers)
        self.width = width
        self.embed = nn.Embedding(VOCAB, width)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.norms = nn.ModuleList(RMSNorm(width) for _ in self.layer_names)
        self.layers = nn.ModuleList(make_layer(name, width) for name in self.layer_names)
        self.final_norm = RMSNorm(width)

    @property
    def mixer_indices(self) -> list[int]:
        return [i for i, name in enumerate(self.layer_names) if name != FFN]

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.final_norm(h) @ self.embed.weight.t()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, T]`` -> logits ``[B, T, 256]`` (every position predicts the next byte)."""
        return self.prefill(tokens, all_logits=True)[0]

    def prefill(self, tokens: torch.Tensor, all_logits: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run a prompt ``[B, T]`` from the empty state: logits of the last
        position ``[B, 256]`` (every position with ``all_logits``) and the
        states after it (the input of :meth:`step` at position ``T``)."""
        h = self.embed(tokens)
        states: list[torch.Tensor] = []
        for norm, layer, name in zip(self.norms, self.layers, self.layer_names):
            if name == FFN:
                h = h + layer(norm(h))
            else:
                out, state = layer(norm(h))
                h = h + out
                states.extend(state)
        return self._logits(h if all_logits else h[:, -1]), states

    def step(self, tokens: torch.Tensor, states: Sequence[torch.Tensor],
             position: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One decoding step: ``tokens [B]`` at ``position [1]`` (int64, the
        number of tokens before it) -> logits ``[B, 256]`` and the new states."""
        h = self.embed(tokens)
        new_states: list[torch.Tensor] = []
        cursor = 0
        for norm, layer, name in zip(self.norms, self.layers, self.layer_names):
            if name == FFN:
                h = h + layer(norm(h))
            else:
                out, state = layer.step(norm(h), list(states[cursor:cursor + 2]), position)
                cursor += 2
                h = h + out
                new_states.extend(state)
        return self._logits(h), new_states

    def state_names(self) -> list[str]:
        """Names of the flat state list, e.g. ``l0_A_key``, ``l0_A_value``, ``l2_M2_conv``."""
        names = []
        for i in self.mixer_indices:
            kind = self.layer_names[i]
            parts = ("key", "value") if kind in ("A", "SWA") else ("conv", "ssm" if kind == "M2" else "delta")
            names.extend(f"l{i}_{kind}_{part}" for part in parts)
        return names

    def state_shapes(self, batch: int = 1, context: int = 0) -> list[tuple[int, ...]]:
        """Shape of each state after ``context`` tokens (full attention caches grow with it)."""
        shapes: list[tuple[int, ...]] = []
        for i in self.mixer_indices:
            shapes.extend(self.layers[i].state_shapes(batch, context))
        return shapes

    def empty_states(self, batch: int = 1) -> list[torch.Tensor]:
        """The states before the first token (zeros; full attention caches of length 0)."""
        return [torch.zeros(shape) for shape in self.state_shapes(batch, 0)]

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
        """Greedy continuation of ``prompt [B, T]`` by ``new_tokens`` bytes (``[B, new_tokens]``)."""
        logits, states = self.prefill(prompt)
        out = []
        position = prompt.shape[1]
        for _ in range(new_tokens):
            token = logits.argmax(-1)
            out.append(token)
            logits, states = self.step(token, states, torch.tensor([position]))
            position += 1
        return torch.stack(out, dim=1)
