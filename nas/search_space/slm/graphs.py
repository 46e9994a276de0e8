"""ONNX graphs of an ``slm`` model: one decode step and one prefill.

Decode step (what decode latency times)::

    inputs : token [batch] int64, position [1] int64, one input per state
    outputs: logits [batch, 256] float32, one ``present_<state>`` output per state

States are named as :meth:`SmallLanguageModel.state_names`; a full-attention
key or value cache has a dynamic length ``past`` (``past + 1`` on output);
all other states keep their shape. The batch dimension is dynamic.

Prefill::

    inputs : tokens [batch, prompt_length] int64
    outputs: logits [batch, 256] (of the last prompt token), ``present_<state>`` per state

The prefill graph holds the chunked forms unrolled for one prompt length,
which is fixed at export (recorded in the graph's metadata); its states feed
the decode graph at ``position = prompt_length``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from nas.search_space.slm.model import SmallLanguageModel

#: ONNX opset of the slm graphs
OPSET = 17
#: cache length of the example states used while tracing (any positive value)
_TRACE_PAST = 3


class DecodeStep(nn.Module):
    def __init__(self, model: SmallLanguageModel):
        super().__init__()
        self.model = model

    def forward(self, token, position, *states):
        logits, new_states = self.model.step(token, list(states), position)
        return (logits, *new_states)


class Prefill(nn.Module):
    def __init__(self, model: SmallLanguageModel):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        logits, states = self.model.prefill(tokens)
        return (logits, *states)


def _growing(model: SmallLanguageModel) -> list[bool]:
    """Which states are full-attention caches (their length grows)."""
    return [name.split("_")[1] == "A" for name in model.state_names()]


def _export(module, example, path, input_names, output_names, dynamic_axes, metadata) -> Path:
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, str(path), opset_version=OPSET, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, dynamo=False,
                          custom_opsets={"com.microsoft": 1})
    graph = onnx.load(str(path))
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=str(value))
    onnx.save(graph, str(path))
    return path


def export_decode(model: SmallLanguageModel, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write the one-token decode graph of ``model`` to ``path``."""
    names = model.state_names()
    states = [torch.zeros(shape) for shape in model.state_shapes(1, _TRACE_PAST)]
    axes: dict[str, dict[int, str]] = {"token": {0: "batch"}, "logits": {0: "batch"}}
    for name, growing in zip(names, _growing(model)):
        axes[name] = {0: "batch", **({2: "past"} if growing else {})}
        axes[f"present_{name}"] = {0: "batch", **({2: "present"} if growing else {})}
    example = (torch.zeros(1, dtype=torch.long), torch.tensor([_TRACE_PAST]), *states)
    return _export(DecodeStep(model), example, path, ["token", "position", *names],
                   ["logits", *(f"present_{n}" for n in names)], axes,
                   {"nas.slm.graph": "decode", **(metadata or {})})


def export_prefill(model: SmallLanguageModel, path: str | os.PathLike, prompt_length: int,
                   metadata: dict | None = None) -> Path:
    """Write the prefill graph of ``model`` for prompts of ``prompt_length`` tokens to ``path``."""
    if prompt_length < 1:
        raise ValueError(f"prompt_length must be a positive integer, not {prompt_length}")
    names = model.state_names()
    axes: dict[str, dict[int, str]] = {"tokens": {0: "batch"}, "logits": {0: "batch"}}
    for name in names:
        axes[f"present_{name}"] = {0: "batch"}
    example = (torch.zeros(1, prompt_length, dtype=torch.long),)
    return _export(Prefill(model), example, path, ["tokens"], ["logits", *(f"present_{n}" for n in names)], axes,
                   {"nas.slm.graph": "prefill", "nas.slm.prompt_length": prompt_length, **(metadata or {})})
