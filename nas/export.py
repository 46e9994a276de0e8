"""ONNX export of search-space architectures."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from nas.search_space import Arch, get_space

#: ONNX opset of every exported model
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_module(model: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike) -> Path:
    """Export ``model`` to ONNX at ``path``.

    The graph has one input ``input`` of shape ``[batch, *input_shape]``
    (float32, batch dimension dynamic) and one output ``logits`` of shape
    ``[batch, num_classes]``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.zeros(1, *input_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          dynamo=False)
    return path


def export_arch(space: str, arch: Arch | str, path: str | os.PathLike, *,
                model: nn.Module | None = None, seed: int = 0, num_classes: int | None = None) -> Path:
    """Export an architecture of ``space`` to ONNX.

    ``arch`` is a tuple or canonical string. Without ``model`` the network is
    freshly initialised from ``seed`` (weights are not trained) with a
    classifier of ``num_classes`` outputs (default: the space's, e.g. 10 for nb201).
    """
    search_space = get_space(space)
    arch = search_space.from_string(arch) if isinstance(arch, str) else search_space.validate(arch)
    if space == "slm":
        return export_slm(arch, path, model=model, seed=seed, prefill=False)[0]
    if model is None:
        torch.manual_seed(seed)
        model = search_space.build(arch, num_classes=num_classes)
    return export_module(model, search_space.input_shape, path)


def prefill_path(decode_path: str | os.PathLike) -> Path:
    """Where the prefill graph of an slm decode graph ``X.onnx`` goes: ``X.prefill.onnx``."""
    path = Path(decode_path)
    return path.with_name(f"{path.stem}.prefill.onnx")


def export_slm(arch: Arch | str, path: str | os.PathLike, *, model: nn.Module | None = None, seed: int = 0,
               prompt_length: int = 512, prefill: bool = True) -> list[Path]:
    """Export an ``slm`` architecture: the one-token decode graph at ``path``
    and (``prefill``) the prefill graph for ``prompt_length``-token prompts at
    :func:`prefill_path` (see :mod:`nas.search_space.slm.graphs` for their inputs and outputs)."""
    from nas.errors import UserInputError
    from nas.search_space.slm.graphs import export_decode, export_prefill

    search_space = get_space("slm")
    arch = search_space.from_string(arch) if isinstance(arch, str) else search_space.validate(arch)
    if isinstance(prompt_length, bool) or not isinstance(prompt_length, int) or prompt_length < 1:
        raise UserInputError(f"the prompt length must be a positive integer, not {prompt_length!r}")
    if model is None:
        torch.manual_seed(seed)
        model = search_space.build(arch)
    model = model.eval()
    metadata = {"nas.slm.arch": search_space.to_string(arch)}
    paths = [export_decode(model, path, metadata)]
    if prefill:
        paths.append(export_prefill(model, prefill_path(path), prompt_length, metadata))
    return paths
