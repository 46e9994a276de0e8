"""Sensitivity of an ``slm`` language model to 4-bit weight-only MatMul.

The scorers of :mod:`nas.quantization.scorers` need the loss as a
differentiable function of exactly the weights ONNX Runtime quantizes. For
a language model those are the constant 2-D MatMul weights of the exported
decode graph (``MatMulNBits`` replaces them); the loss is the PyTorch
model's next-byte cross-entropy on calibration windows of the corpus, which
the decode graph computes token by token and PyTorch computes in one
parallel pass.

Each MatMul of the graph is tied to the PyTorch parameter whose transpose
it holds, value for value (a graph whose weights are not the model's is a
user error). The output head multiplies by the transposed embedding, one
tensor in PyTorch but its own MatMul in the graph: quantizing the head must
not touch the embedding lookup, so the head's logits are computed here from
the final norm's output with the head's own weight.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import UserInputError
from nas.quantization.scorers import SensitivityProblem
from nas.quantization.simulate import quantize_int4_blockwise
from nas.quantization.timing import INT4_BLOCK_SIZE, int4_block_size

#: calibration windows and bytes predicted in each: 8,192 bytes, four batches, so that hessian_interlayer can tell
#: its cross-layer terms from their batch-to-batch noise (on 2,048 bytes and one batch its order was worse)
CALIBRATION_WINDOWS, CALIBRATION_CONTEXT = 64, 128
#: windows per calibration batch (one Hessian-vector product is a double backward over a batch; hessian's
#: Hutchinson probes read the first batch)
BATCH_WINDOWS = 16


def calibration_windows(data: np.ndarray, windows: int = CALIBRATION_WINDOWS, context: int = CALIBRATION_CONTEXT,
                        seed: int = 0) -> torch.Tensor:
    """``windows`` seeded random windows of ``context + 1`` bytes of ``data`` (``[windows, context + 1]``,
    int64): each predicts its last ``context`` bytes."""
    if len(data) < context + 2:
        raise UserInputError(f"calibration text of {len(data)} bytes is shorter than one window ({context + 1})")
    starts = np.random.default_rng(seed).integers(0, len(data) - context - 1, windows)
    return torch.from_numpy(np.stack([data[s:s + context + 1] for s in starts]).astype(np.int64))


def matmul_parameters(model: nn.Module, weights: dict[str, np.ndarray]) -> dict[str, str]:
    """MatMul node name -> name of the parameter of ``model`` whose transpose the node's weight
    ``[K, N]`` equals exactly; a node matched by none is a user error."""
    params = dict(model.named_parameters())
    found = {}
    for node, weight in weights.items():
        target = torch.from_numpy(np.ascontiguousarray(weight.T))
        match = next((name for name, p in params.items() if p.shape == target.shape and torch.equal(p.detach(),
                                                                                                    target)), None)
        if match is None:
            raise UserInputError(f"the decode graph's MatMul {node!r} ({weight.shape[0]}x{weight.shape[1]}) holds no "
                                 f"weight of the PyTorch model: the weights do not belong to this graph")
        found[node] = match
    return found


@dataclass
class LanguageSensitivityProblem(SensitivityProblem):
    """An ``slm`` language model's MatMul layers under 4-bit weight-only quantization.

    ``model`` is the float :class:`nas.search_space.slm.model.SmallLanguageModel`
    (not modified; ``None`` for scorers that read the weights alone), ``weights``
    the decode graph's MatMul weights ``[K, N]`` by node name
    (:func:`nas.quantization.language.matmul_weights`),
    ``tokens`` the calibration windows ``[B, T + 1]``, split into batches of
    ``batch_windows`` for the loss."""

    model: nn.Module | None
    weights: dict[str, np.ndarray]
    tokens: torch.Tensor
    progress: bool = False
    block_size: int = INT4_BLOCK_SIZE
    batch_windows: int = BATCH_WINDOWS
    _parameters: dict[str, str] = field(init=False, repr=False)
    _float: dict[str, torch.Tensor] = field(init=False, repr=False)
    _heads: set[str] = field(init=False, repr=False)
    _reference: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self._float = {node: torch.from_numpy(np.array(w, dtype=np.float32)) for node, w in self.weights.items()}
        self._parameters, self._heads = {}, set()
        if self.model is None:
            return
        # a private copy without gradients of its own: only the layers' weights are differentiated
        self.model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self._parameters = matmul_parameters(self.model, self.weights)
        embeddings = {f"{prefix}.weight".lstrip(".") for prefix, module in self.model.named_modules()
                      if isinstance(module, nn.Embedding)}
        self._heads = {node for node, param in self._parameters.items() if param in embeddings}

    @property
    def names(self) -> list[str]:
        return list(self.weights)

    def weight(self, name):
        return self._float[name]

    def perturbation(self, name):
        return quantize_int4_blockwise(self._float[name], self.block_size) - self._float[name]

    @property
    def calibration_batches(self):
        return max(1, -(-len(self.tokens) // self.batch_windows))

    def _windows(self, batch: int | None) -> torch.Tensor:
        if batch is None:
            return self.tokens
        return self.tokens[batch * self.batch_windows:(batch + 1) * self.batch_windows]

    def logits(self, weights: dict[str, torch.Tensor], batch: int | None = None) -> torch.Tensor:
        """Logits ``[B, T, 256]`` of the calibration windows (of batch ``batch``; all of them with
        ``None``) with the layers in ``weights`` (node name -> ``[K, N]``) replaced."""
        if self.model is None:
            raise UserInputError("this scorer runs the language model: its PyTorch weights are needed")
        replaced = {self._parameters[node]: w.t() for node, w in weights.items() if node not in self._heads}
        heads = [w for node, w in weights.items() if node in self._heads]
        normed: list[torch.Tensor] = []
        hook = self.model.final_norm.register_forward_hook(lambda module, args, out: normed.append(out)) \
            if heads else None
        try:
            logits = torch.func.functional_call(self.model, replaced, (self._windows(batch)[:, :-1],))
        finally:
            if hook is not None:
                hook.remove()
        return normed[0] @ heads[0] if heads else logits

    def loss(self, weights, batch=0):
        logits = self.logits(weights, batch)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self._windows(batch)[:, 1:].reshape(-1))

    @torch.no_grad()
    def divergence(self, layers: Sequence[str]) -> float:
        if self._reference is None:
            self._reference = F.log_softmax(self.logits({}), dim=-1).flatten(0, 1)
        quantized = {name: self._float[name] + self.perturbation(name) for name in layers}
        log_probs = F.log_softmax(self.logits(quantized), dim=-1).flatten(0, 1)
        return float(F.kl_div(log_probs, self._reference, log_target=True, reduction="batchmean"))


def model_from_decode_graph(arch: str, decode_path: str | os.PathLike) -> nn.Module:
    """The ``slm`` model ``arch`` with the weights of its exported decode graph (a search folder keeps
    only its graphs). Which tensor holds which parameter is read off a decode graph exported here
    from the same layout with distinct random values in every parameter: each parameter is the
    tensor equal to it (as it is, transposed or reshaped) there, and the trained graph's tensor
    entering the same node at the same input holds its trained value. A graph that is not this
    layout's, or a parameter the exporter folded away, is a user error."""
    import tempfile

    import onnx
    from onnx import numpy_helper

    from nas.search_space import get_space
    from nas.search_space.slm.graphs import export_decode

    space = get_space("slm")
    model = space.build(space.from_string(arch)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    with tempfile.TemporaryDirectory(prefix="nas-slm-weights-") as tmp:
        reference = onnx.load(str(export_decode(model, Path(tmp) / "decode.onnx")))
    graph = onnx.load(str(decode_path)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # equal tensors merged by the exporter reach their other uses through Identity
        if node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
    # tensors are told apart by where they enter the graph (node names are the modules'): the exporter numbers
    # unnamed tensors differently from one export to the next and merges equal ones (untrained norms)
    feeding = {(node.name, i): name for node in graph.node for i, name in enumerate(node.input) if name in constants}
    reference_values = {t.name: numpy_helper.to_array(t) for t in reference.graph.initializer}
    marked: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # reference tensor -> (its value, the trained value)
    for node in reference.graph.node:
        for i, name in enumerate(node.input):
            if name in marked or name not in reference_values:
                continue
            if (node.name, i) not in feeding:
                raise UserInputError(f"{decode_path} was not exported from the layout {arch!r}: its node "
                                     f"{node.name!r} takes no weight at input {i}")
            marked[name] = (reference_values[name], constants[feeding[node.name, i]])
    state = {}
    for name, param in model.named_parameters():
        value = param.detach().numpy()
        for marker, trained in marked.values():
            if marker.size != value.size or trained.shape != marker.shape:
                continue
            if marker.shape == value.shape and np.array_equal(marker, value):
                state[name] = trained
            elif marker.ndim == 2 and marker.shape == value.T.shape and np.array_equal(marker, value.T):
                state[name] = trained.T
            elif np.array_equal(marker.reshape(-1), value.reshape(-1)):
                state[name] = trained.reshape(value.shape)
            else:
                continue
            break
        else:
            raise UserInputError(f"the decode graph {decode_path} holds no tensor for {name} of {arch!r}: its "
                                 f"weights cannot be read back; score with weight_error or random")
    model.load_state_dict({name: torch.from_numpy(np.array(value, dtype=np.float32)) for name, value in state.items()})
    return model


def language_sensitivity_problem(model: nn.Module | None, decode_path: str | os.PathLike, data: np.ndarray, *,
                                 windows: int = CALIBRATION_WINDOWS, context: int = CALIBRATION_CONTEXT,
                                 seed: int = 0, progress: bool = False,
                                 block_size: int = INT4_BLOCK_SIZE) -> LanguageSensitivityProblem:
    """The scorers' view of ``model`` and its exported decode graph, calibrated on ``windows`` seeded
    windows of ``data`` (corpus bytes), each layer perturbed by 4-bit rounding in blocks of
    ``block_size`` weights."""
    import onnx

    from nas.quantization.language import matmul_weights

    weights = matmul_weights(onnx.load(str(decode_path)))
    if not weights:
        raise UserInputError(f"{decode_path} has no MatMul with a constant weight: nothing to quantize")
    return LanguageSensitivityProblem(model, weights, calibration_windows(data, windows, context, seed),
                                      progress=progress, block_size=int4_block_size(block_size))


__all__ = ["LanguageSensitivityProblem", "calibration_windows", "language_sensitivity_problem", "matmul_parameters",
           "model_from_decode_graph"]
