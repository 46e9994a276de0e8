"""Baselines that need no meta-training: FLOPs, parameter count, and a
latency network trained from scratch on the device's own samples (BRP-NAS
style: GCN for NB201, MLP for FBNet), at 10 or at 900 samples."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.func import functional_call

from nas.predictors.base import LatencyPredictor
from nas.predictors.features import flops_and_params, op_codes
from nas.predictors.networks import LatencyNet, as_arrays, from_arrays, network_inputs
from nas.predictors.registry import register_predictor
from nas.search_space import Arch


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
