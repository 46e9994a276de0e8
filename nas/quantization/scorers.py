"""Sensitivity scorers: each orders a model's quantizable layers from the
one least hurt by the low precision (int8 for image classifiers, 4-bit
weight-only MatMul for language models) to the one most hurt.

The contract is one method, :meth:`SensitivityScorer.order`, returning an
:class:`Ordering`; the search (:mod:`nas.quantization.bisection`) only
reads the order. Scorers are found by name in :data:`SCORERS`:

- ``random``: a seeded random order (the baseline every scorer must beat);
- ``weight_error``: relative squared quantization error of the weights,
  ``||Q(W_i) - W_i||^2 / ||W_i||^2``;
- ``hessian`` (HAWQ-V2): ``Tr(H_i) / n_i * ||Q(W_i) - W_i||^2`` with
  ``Tr(H_i)`` of the loss Hessian block of layer ``i`` estimated by
  Hutchinson's method (Rademacher probes until every layer's estimate
  settles);
- ``hessian_interlayer`` (default): the second-order loss change of
  quantizing a SET of layers, including the cross-layer Hessian blocks
  that layer-wise scores drop, ``dL(S) = 1/2 sum_{i,j in S} dW_i^T H_ij
  dW_j`` (the first-order term ``g.dW`` left out, as HAWQ does: at a
  trained minimum it is calibration noise), built exactly from one
  Hessian-vector product per layer and calibration batch (``H dW_j``
  gives column ``j`` of the block matrix ``M_ij = dW_i^T H_ij dW_j``,
  averaged over the problem's calibration batches); the order is built
  the way the curve is read, one prefix at a time: each next layer ``i``
  is the one whose addition to the chosen set ``S`` raises ``dL`` least,
  ``1/2 dW_i^T H_ii dW_i + dW_i^T sum_{j in S} H_ij dW_j``, so layers
  whose errors cancel go together and layers whose errors compound are
  kept apart. Each cross-layer term is shrunk toward zero by its standard
  error over the calibration batches (``M_ij max(0, 1 - se_ij^2 /
  M_ij^2)``): on a language model most of them are smaller than their
  own batch-to-batch spread, and an order built on that noise is worse
  than the layer-wise one;
- ``measured_greedy``: the same greedy order, but each increment is
  measured: the simulated model's KL divergence from the float model on
  the calibration images (no labels needed) with the chosen layers plus
  the candidate quantized, activations included.
"""

from __future__ import annotations

import abc
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nas.quantization.graph import OnnxGraph
from nas.quantization.layers import QuantizableLayer
from nas.quantization.simulate import QuantizationSimulator
from nas.registry import Registry


@dataclass
class Ordering:
    """Layers from least to most sensitive, with each layer's score and how it was computed."""

    scorer: str
    layers: list[str]
    scores: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


class SensitivityProblem(abc.ABC):
    """What a scorer may read: the quantizable layers (``names``), each
    layer's float weight and its low-precision perturbation, and the
    calibration loss as a differentiable function of the layers' weights.

    Image classifiers (:class:`ImageSensitivityProblem`, int8 as ONNX Runtime
    quantizes it) and language models
    (:class:`nas.quantization.language_sensitivity.LanguageSensitivityProblem`,
    4-bit weight-only MatMul) implement it."""

    progress: bool = False

    @property
    @abc.abstractmethod
    def names(self) -> list[str]:
        """The quantizable layers, named as in the exported graph, in graph order."""

    @abc.abstractmethod
    def weight(self, name: str) -> torch.Tensor:
        """Layer ``name``'s float weight (the tensor its perturbation is added to)."""

    @abc.abstractmethod
    def perturbation(self, name: str) -> torch.Tensor:
        """``Q(W) - W`` of layer ``name`` under the low precision (the weight's shape)."""

    @property
    def calibration_batches(self) -> int:
        """How many batches the calibration data is split into (each one double backward's worth)."""
        return 1

    @abc.abstractmethod
    def loss(self, weights: dict[str, torch.Tensor], batch: int = 0) -> torch.Tensor:
        """Calibration loss (nats) on calibration batch ``batch`` with the layers named in ``weights``
        replaced by those tensors (the rest float); differentiable twice in them."""

    @abc.abstractmethod
    def divergence(self, layers: Sequence[str]) -> float:
        """KL divergence (nats) of the simulated model with ``layers`` in low precision from the float
        model on the calibration data; no labels needed."""

    def log(self, message: str) -> None:
        if self.progress:
            print(message, file=sys.stderr, flush=True)


@dataclass
class ImageSensitivityProblem(SensitivityProblem):
    """An image classifier: the float graph, the simulator of ONNX Runtime's
    int8 quantization, and a labelled calibration batch."""

    graph: OnnxGraph
    simulator: QuantizationSimulator
    layers: list[QuantizableLayer]
    images: torch.Tensor
    labels: torch.Tensor
    progress: bool = False
    #: calibration images per batch of the loss (each Hessian-vector product is a double backward over them)
    max_images: int = 128
    _reference: torch.Tensor | None = field(default=None, init=False, repr=False)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def _initializer(self, name: str) -> str:
        return self.simulator.layers[name].weight

    def weight(self, name):
        return self.simulator.weights[self._initializer(name)]

    def perturbation(self, name):
        return self.simulator.perturbation(name)

    @property
    def calibration_batches(self):
        return max(1, math.ceil(len(self.images) / self.max_images))

    def loss(self, weights, batch=0):
        replaced = {self._initializer(name): value for name, value in weights.items()}
        rows = slice(batch * self.max_images, (batch + 1) * self.max_images)
        logits = self.graph(self.images[rows], replaced)
        return F.cross_entropy(logits, self.labels[rows])

    @torch.no_grad()
    def divergence(self, layers):
        images = self.images[:self.max_images]
        if self._reference is None:
            self._reference = F.log_softmax(self.graph(images), dim=1)
        logits = self.graph(images, self.simulator.weights_for(layers), self.simulator.activation_hook(layers))
        return float(F.kl_div(F.log_softmax(logits, dim=1), self._reference, log_target=True, reduction="batchmean"))


SCORERS: Registry = Registry("sensitivity scorer", name_attribute="name")
DEFAULT_SCORER = "hessian_interlayer"


class SensitivityScorer(abc.ABC):
    """Orders layers by how much the low precision hurts them; ``needs_graph`` says whether
    the scorer runs the model in PyTorch (Hessians, simulation)."""

    name: str = ""
    needs_graph: bool = True

    def __init__(self, seed: int = 0):
        self.seed = seed

    @abc.abstractmethod
    def order(self, problem: SensitivityProblem) -> Ordering:
        """The problem's layers, least sensitive first."""

    def _sorted(self, problem: SensitivityProblem, scores: dict[str, float], **info) -> Ordering:
        position = {name: i for i, name in enumerate(problem.names)}
        layers = sorted(problem.names, key=lambda name: (scores[name], position[name]))
        return Ordering(self.name, layers, scores, info)


def get_scorer(name: str, seed: int = 0) -> SensitivityScorer:
    """The scorer registered as ``name``."""
    return SCORERS.lookup(name)(seed=seed)


def list_scorers() -> list[str]:
    return SCORERS.names()


@SCORERS.register("random")
class RandomScorer(SensitivityScorer):
    needs_graph = False

    def order(self, problem):
        rng = np.random.default_rng(self.seed)
        ranks = rng.permutation(len(problem.names))
        return self._sorted(problem, {name: float(r) for name, r in zip(problem.names, ranks)}, seed=self.seed)


@SCORERS.register("weight_error")
class WeightErrorScorer(SensitivityScorer):
    needs_graph = False

    def order(self, problem):
        scores = {name: float(problem.perturbation(name).pow(2).sum()
                              / problem.weight(name).pow(2).sum().clamp(min=1e-30)) for name in problem.names}
        return self._sorted(problem, scores)


class _SecondOrder:
    """Gradient and Hessian-vector products of the calibration loss on one
    calibration batch with respect to the layers' weights (one forward and
    backward, kept for every product)."""

    def __init__(self, problem: SensitivityProblem, batch: int = 0):
        self.problem = problem
        self.names = problem.names
        self.params = [problem.weight(name).detach().clone().requires_grad_(True) for name in self.names]
        loss = problem.loss(dict(zip(self.names, self.params)), batch)
        self.grads = torch.autograd.grad(loss, self.params, create_graph=True)

    def hvp(self, vectors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(torch.autograd.grad(self.grads, self.params, grad_outputs=list(vectors), retain_graph=True))


def hutchinson_traces(problem: SensitivityProblem, second_order: _SecondOrder | None = None, *, seed: int = 0,
                      min_probes: int = 8, max_probes: int = 64, tolerance: float = 0.1) -> tuple[np.ndarray, int]:
    """Per-layer Hessian traces by Hutchinson's estimator ``E[v^T H v]``.

    One Rademacher probe over all layers at once gives every layer's
    ``v_i^T (H v)_i`` (cross-layer terms average out). Probes continue until
    each layer's standard error is below ``tolerance`` times its estimate
    (or ``max_probes``). The loss is the first calibration batch's. Returns
    the traces and the probes used.
    """
    second_order = second_order or _SecondOrder(problem)
    generator = torch.Generator().manual_seed(seed)
    samples: list[np.ndarray] = []
    while len(samples) < max_probes:
        probes = [torch.randint(0, 2, p.shape, generator=generator).to(p.dtype) * 2 - 1 for p in second_order.params]
        products = second_order.hvp(probes)
        samples.append(np.array([float((v * hv).sum()) for v, hv in zip(probes, products)]))
        if len(samples) >= min_probes:
            values = np.array(samples)
            mean = values.mean(axis=0)
            error = values.std(axis=0, ddof=1) / math.sqrt(len(values))
            if np.all(error <= tolerance * np.maximum(np.abs(mean), 1e-12)):
                break
    return np.array(samples).mean(axis=0), len(samples)


@SCORERS.register("hessian")
class HessianScorer(SensitivityScorer):
    #: most Rademacher probes of the trace estimate
    max_probes = 64

    def order(self, problem):
        traces, probes = hutchinson_traces(problem, seed=self.seed, max_probes=self.max_probes)
        scores = {}
        for name, trace in zip(problem.names, traces):
            delta = problem.perturbation(name)
            scores[name] = float(trace / delta.numel() * delta.pow(2).sum())
        problem.log(f"hessian: {probes} Hutchinson probes")
        return self._sorted(problem, scores, probes=probes)


def greedy_order(names: Sequence[str], increment) -> tuple[list[str], dict[str, float]]:
    """Greedy order: repeatedly add the layer whose ``increment(chosen, candidate)`` is smallest."""
    chosen: list[str] = []
    scores: dict[str, float] = {}
    left = list(names)
    while left:
        values = [increment(chosen, name) for name in left]
        best = int(np.argmin(values))
        name = left.pop(best)
        chosen.append(name)
        scores[name] = float(values[best])
    return chosen, scores


def second_order_orders(names: Sequence[str], first: np.ndarray, block: np.ndarray) -> dict[str, list[str]]:
    """Orders of ``names`` from the first-order terms ``first[i] = g_i.dW_i`` and the symmetric block
    matrix ``block[i, j] = dW_i^T H_ij dW_j``: ``interlayer`` (greedy on the quadratic change of the
    chosen set, cross-layer blocks included), ``layerwise`` (its diagonal alone), and both again
    ``..._with_gradient`` (the first-order terms added)."""
    index = {name: i for i, name in enumerate(names)}
    orders = {}
    for gradient in (False, True):
        linear = first if gradient else np.zeros_like(first)

        def increment(chosen, name, linear=linear):
            i = index[name]
            return linear[i] + 0.5 * block[i, i] + sum(block[i, index[c]] for c in chosen)

        suffix = "_with_gradient" if gradient else ""
        orders["interlayer" + suffix] = greedy_order(names, increment)[0]
        orders["layerwise" + suffix] = sorted(names, key=lambda name: (increment([], name), index[name]))
    return orders


def second_order_terms(problem: SensitivityProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first-order terms ``g_i.dW_i`` and the symmetric block matrix ``dW_i^T H_ij dW_j`` of the
    problem's layers (nats), each the mean over the calibration batches, and the block matrix's
    standard error over them (zeros with one batch): one Hessian-vector product per layer and batch."""
    deltas = [problem.perturbation(name) for name in problem.names]
    n, batches = len(deltas), problem.calibration_batches
    firsts, blocks = np.zeros((batches, n)), np.zeros((batches, n, n))
    for b in range(batches):  # one batch's graph at a time: memory of one batch, not of all of them
        second_order = _SecondOrder(problem, b)
        firsts[b] = [float((g.detach() * d).sum()) for g, d in zip(second_order.grads, deltas)]
        for j in range(n):
            vectors = [d if k == j else torch.zeros_like(d) for k, d in enumerate(deltas)]
            products = second_order.hvp(vectors)
            blocks[b, :, j] = [float((d * hv).sum()) for d, hv in zip(deltas, products)]
        del second_order
    blocks = (blocks + blocks.transpose(0, 2, 1)) / 2
    spread = blocks.std(axis=0, ddof=1) / math.sqrt(batches) if batches > 1 else np.zeros((n, n))
    return firsts.mean(axis=0), blocks.mean(axis=0), spread


def shrink_cross_terms(block: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """``block`` with each cross-layer term (off the diagonal) multiplied by ``max(0, 1 - se^2 / m^2)``,
    ``se`` its standard error (``spread``): a term within one standard error of zero is dropped, one
    far outside it kept (the positive-part James-Stein factor of a single noisy estimate)."""
    block, spread = np.asarray(block, dtype=float), np.asarray(spread, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(block != 0, np.clip(1 - spread ** 2 / block ** 2, 0, 1), 0.0)
    np.fill_diagonal(factor, 1.0)
    return block * factor


def interlayer_order(names: Sequence[str], block: np.ndarray, spread: np.ndarray | None = None
                     ) -> tuple[list[str], dict[str, float]]:
    """The greedy order on the quadratic loss change of the chosen set, from the block matrix and its
    standard error (cross-layer terms shrunk by it; ``None``: as they are), and each layer's increment."""
    block = shrink_cross_terms(block, spread) if spread is not None else np.asarray(block, dtype=float)
    index = {name: i for i, name in enumerate(names)}
    return greedy_order(names, lambda chosen, name: 0.5 * block[index[name], index[name]] + sum(
        block[index[name], index[c]] for c in chosen))


@SCORERS.register("hessian_interlayer")
class HessianInterlayerScorer(SensitivityScorer):
    def order(self, problem):
        first, block, spread = second_order_terms(problem)
        n, batches = len(problem.names), problem.calibration_batches
        # the first-order term is left out: the float model sits near a minimum of the loss it was trained on, and
        # g.dW on a few thousand calibration samples is mostly their noise (with it, the order lost to `hessian`);
        # with one batch there is no spread to shrink by, and the cross-layer terms are taken as they are
        layers, scores = interlayer_order(problem.names, block, spread if batches > 1 else None)
        problem.log(f"hessian_interlayer: {n * batches} Hessian-vector products ({batches} calibration batches) for "
                    f"the {n}x{n} cross-layer block matrix")
        return Ordering(self.name, layers, scores, {"hessian_vector_products": n * batches,
                                                    "calibration_batches": batches, "first_order": first.tolist(),
                                                    "block": block.tolist(), "block_standard_error": spread.tolist(),
                                                    "cross_terms": "shrunk" if batches > 1 else "as estimated"})


@SCORERS.register("measured_greedy")
class MeasuredGreedyScorer(SensitivityScorer):
    def order(self, problem):
        state = {"base": 0.0, "chosen": 0}

        def increment(chosen, name):
            if len(chosen) != state["chosen"]:  # a layer was added: the new baseline
                state["base"], state["chosen"] = problem.divergence(chosen), len(chosen)
            return problem.divergence(chosen + [name]) - state["base"]

        layers, scores = greedy_order(problem.names, increment)
        evaluations = len(layers) * (len(layers) + 1) // 2
        problem.log(f"measured_greedy: {evaluations} simulated evaluations")
        return Ordering(self.name, layers, scores, {"simulated_evaluations": evaluations})


__all__ = ["DEFAULT_SCORER", "ImageSensitivityProblem", "Ordering", "SCORERS", "SensitivityProblem",
           "SensitivityScorer", "get_scorer", "greedy_order", "hutchinson_traces", "interlayer_order", "list_scorers",
           "second_order_orders", "second_order_terms", "shrink_cross_terms"]
