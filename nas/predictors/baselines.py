"""Baselines that need no meta-training: structural priors (FLOPs,
parameter count, layer and operator counts, memory traffic), and a latency
network trained from scratch on the device's own samples (BRP-NAS style:
GCN for NB201, MLP for FBNet), at 10 or at 900 samples."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.func import functional_call

from nas.predictors.base import LatencyPredictor
from nas.predictors.features import cost_features, flops_and_params, op_codes
from nas.predictors.networks import LatencyNet, as_arrays, from_arrays, network_inputs
from nas.predictors.registry import register_predictor
from nas.search_space import Arch


#: per NB201 operation (none, skip, 1x1 conv, 3x3 conv, 3x3 avg pool): kernels it runs
#: unfused (ReLU, conv, BatchNorm for a conv) and feature maps it reads and writes
_NB201_OPERATORS = np.array([1.0, 0.0, 3.0, 3.0, 1.0])
_NB201_TRAFFIC = np.array([2.0, 1.0, 6.0, 6.0, 2.0])


def structural_priors(space: str, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Hardware-independent cost of each architecture, by name, one value per row of ``codes``.

    ``flops`` (multiply-accumulates), ``params``, ``layers`` (positions not
    ``none`` / not an identity ``skip``), ``non_skip_layers`` (convolutions and
    pools), ``convs`` (convolution layers), ``operators`` (kernels an
    unfused runtime launches: what per-operator overhead pays for) and
    ``memory_traffic`` (feature-map elements read and written, in units of
    one cell's map for NB201).

    ``slm`` (one decode step): ``layers``, ``mixers``, ``operators`` (nodes
    ONNX Runtime runs, see :data:`nas.predictors.features.SLM_RUNTIME_NODES`),
    ``attention_layers`` (full and sliding-window), ``cache_per_token``
    (full-attention cache elements per cached token), ``state_elements``
    (every state a step reads, caches at 512 tokens) and ``memory_traffic``
    (parameters plus those states).
    """
    flops, params = flops_and_params(space, codes)
    priors = {"flops": flops, "params": params}
    if space == "nb201":
        priors.update(layers=(codes != 0).sum(axis=1), non_skip_layers=(codes >= 2).sum(axis=1),
                      convs=((codes == 2) | (codes == 3)).sum(axis=1),
                      operators=_NB201_OPERATORS[codes].sum(axis=1), memory_traffic=_NB201_TRAFFIC[codes].sum(axis=1))
    elif space == "fbnet":
        from nas.search_space.fbnet import CANDIDATES, layer_shapes

        skip = CANDIDATES.index("skip")
        shapes = layer_shapes()
        identity = np.array([c_in == c_out and stride == 1 for c_in, c_out, stride in shapes])
        grouped = np.array(["_g2" in op for op in CANDIDATES])
        cost = cost_features(space, codes)
        blocks = codes != skip
        # a block runs 3 convs, 3 BatchNorms, 2 ReLUs (+ a shuffle when grouped, + the residual
        # add when shapes match); a projecting skip runs conv, BatchNorm, ReLU
        operators = (8 * blocks + 3 * grouped[codes] + (blocks & identity) + 3 * (~blocks & ~identity)).sum(axis=1)
        priors.update(layers=(blocks | ~identity).sum(axis=1), non_skip_layers=blocks.sum(axis=1),
                      convs=cost[:, 4], operators=operators, memory_traffic=cost[:, 2])
    elif space == "slm":
        from nas.predictors.features import SLM_COSTS, slm_costs
        from nas.search_space.slm.space import DEFAULT_CONTEXT

        cost = dict(zip(SLM_COSTS, slm_costs(codes).T))
        # a decode step reads every weight once and every state, the caches at the default context
        states = cost["state_elements"] + DEFAULT_CONTEXT * cost["cache_per_token"]
        priors.update(layers=cost["layers"], mixers=cost["layers"] - cost["F"], operators=cost["operators"],
                      attention_layers=cost["A"] + cost["SWA"], cache_per_token=cost["cache_per_token"],
                      state_elements=states, memory_traffic=cost["params"] + states)
    return {name: np.asarray(value, dtype=np.float64) for name, value in priors.items()}


class ProxyPredictor(LatencyPredictor):
    """Latency as an affine function of an analytic proxy, fitted on the samples."""

    proxy_index = 0

    def __init__(self, space: str):
        super().__init__(space)
        self.coefficients: np.ndarray | None = None

    def _proxy(self, codes: np.ndarray) -> np.ndarray:
        return flops_and_params(self.space, codes)[self.proxy_index] / 1e6

    def adapt(self, measurements: Mapping[str, float]) -> "ProxyPredictor":
        archs, latency_ms = self._parse_measurements(measurements)
        proxy = self._proxy(op_codes(self.space, archs))
        design = np.stack([proxy, np.ones_like(proxy)], axis=1)
        self.coefficients = np.linalg.lstsq(design, latency_ms, rcond=None)[0]
        if self.coefficients[0] <= 0:  # keep the proxy's order; the fit only sets the scale
            self.coefficients = np.array([latency_ms.mean() / max(proxy.mean(), 1e-12), 0.0])
        return self

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        if self.coefficients is None:
            raise RuntimeError("call adapt() before predict()")
        return np.maximum(self._proxy(op_codes(self.space, archs)) * self.coefficients[0] + self.coefficients[1], 1e-3)

    def state(self):
        return {}, ({} if self.coefficients is None else {"coefficients": self.coefficients})

    @classmethod
    def from_state(cls, space, meta, arrays):
        predictor = cls(space)
        predictor.coefficients = arrays.get("coefficients")
        return predictor


@register_predictor("flops")
class FlopsPredictor(ProxyPredictor):
    """Latency proportional to multiply-accumulates."""

    proxy_index = 0


@register_predictor("params")
class ParamsPredictor(ProxyPredictor):
    """Latency proportional to the parameter count."""

    proxy_index = 1


@register_predictor("scratch-10")
class ScratchPredictor(LatencyPredictor):
    """GCN (NB201) / MLP (FBNet) trained from a seeded random start on the
    device's samples only (Adam, full batch, z-scored latency)."""

    num_samples = 10

    def __init__(self, space: str, seed: int = 0, hidden: int = 100, steps: int = 300, lr: float = 1e-3):
        super().__init__(space)
        self.seed, self.hidden, self.steps, self.lr = seed, hidden, steps, lr
        self.net = LatencyNet(space, hidden, hardware_embedding=False)
        self.params: dict[str, torch.Tensor] | None = None
        self.stats: tuple[float, float] | None = None

    def adapt(self, measurements: Mapping[str, float]) -> "ScratchPredictor":
        archs, latency_ms = self._parse_measurements(measurements)
        torch.manual_seed(self.seed)
        net = LatencyNet(self.space, self.hidden, hardware_embedding=False)
        mean, std = float(latency_ms.mean()), float(latency_ms.std() + 1e-9)
        x = network_inputs(self.space, op_codes(self.space, archs))
        y = torch.tensor((latency_ms - mean) / std, dtype=torch.float32)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr)
        empty = torch.zeros(0)
        for _ in range(self.steps):
            optimizer.zero_grad()
            loss = torch.mean((net(x, empty) - y) ** 2)
            loss.backward()
            optimizer.step()
        self.params = {k: v.detach() for k, v in net.named_parameters()}
        self.stats = (mean, std)
        return self

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        if self.params is None:
            raise RuntimeError("call adapt() before predict()")
        with torch.no_grad():
            out = functional_call(self.net, self.params,
                                  (network_inputs(self.space, op_codes(self.space, archs)), torch.zeros(0)))
        return np.maximum(out.double().numpy() * self.stats[1] + self.stats[0], 1e-3)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"seed": self.seed, "hidden": self.hidden, "steps": self.steps, "lr": self.lr}
        if self.params is None:
            return meta, {}
        return {**meta, "stats": list(self.stats)}, as_arrays("params", self.params)

    @classmethod
    def from_state(cls, space, meta, arrays):
        predictor = cls(space, meta["seed"], meta["hidden"], meta["steps"], meta["lr"])
        if "stats" in meta:
            predictor.params, predictor.stats = from_arrays("params", arrays), tuple(meta["stats"])
        return predictor


@register_predictor("scratch-900")
class Scratch900Predictor(ScratchPredictor):
    """The from-scratch network with 900 device samples (BRP-NAS's setting in HELP's table)."""

    num_samples = 900

    def __init__(self, space: str, seed: int = 0, hidden: int = 100, steps: int = 200, lr: float = 2e-3):
        super().__init__(space, seed, hidden, steps, lr)
