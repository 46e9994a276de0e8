"""HELP (NeurIPS 2021) and the meta-learning baselines MAML and Meta-SGD.

A device is a task. Its 10 reference architectures are both the few-shot
support set and, as latencies normalised per device, the hardware
embedding. Meta-training samples episodes of several meta-train devices;
each task adapts with a few inner gradient steps on its support set (Meta-SGD:
a learnable learning rate per parameter entry; MAML: one fixed rate), and the
query loss on other architectures of the same device updates the shared
initialisation. HELP adds the hardware embedding to the network and a
hardware-conditioned initialisation: an inference network maps the
embedding to a Gaussian over modulations of the head (trained with a KL
term to a standard normal), so each device starts adapting from its own
initialisation. Written with ``torch.func``: parameters are plain dicts, the
inner loop is ``grad``, and the tasks of an episode run under ``vmap``.

Latencies are z-scored per device with the mean and standard deviation of
its reference latencies; predictions are mapped back to milliseconds.
Meta-valid devices select the checkpoint; meta-test devices are never read.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.func import functional_call, grad, vmap

from nas import benchmarks
from nas.errors import UserInputError
from nas.predictors.base import LatencyPredictor
from nas.predictors.features import op_codes
from nas.predictors.networks import InferenceNet, LatencyNet, as_arrays, from_arrays, modulate, network_inputs
from nas.predictors.registry import register_predictor
from nas.search_space import Arch


@dataclass
class MetaConfig:
    """Meta-training settings (HELP's defaults, sized for a 2-core CPU)."""

    hidden: int = 100
    inner_steps: int = 2
    inner_lr: float = 0.01
    meta_lr: float = 1e-3
    episodes: int = 1000
    tasks_per_episode: int = 8
    query_size: int = 100
    kl_weight: float = 0.01
    validate_every: int = 100
    validation_archs: int = 2000
    threads: int = 1


class MetaLearnedPredictor(LatencyPredictor):
    """Meta-learned latency network; subclasses pick the HELP ingredients."""

    hardware_embedding = True
    learned_lr = True
    conditioned_init = True

    def __init__(self, space: str, config: MetaConfig | None = None, seed: int = 0):
        super().__init__(space)
        self.config = config or MetaConfig()
        self.seed = seed
        torch.manual_seed(seed)
        self.net = LatencyNet(space, self.config.hidden, self.hardware_embedding)
        self.params = {k: v.detach().clone() for k, v in self.net.named_parameters()}
        self.lrs = {k: torch.full_like(v, self.config.inner_lr) for k, v in self.params.items()}
        self.infer = InferenceNet(self.config.hidden) if self.conditioned_init else None
        self.infer_params = ({k: v.detach().clone() for k, v in self.infer.named_parameters()}
                             if self.infer else {})
        self.reference = np.array(benchmarks.help_protocol(space).reference_indices)
        self._reference_codes = None
        self.adapted: dict[str, torch.Tensor] | None = None
        self.hardware: torch.Tensor | None = None
        self.stats: tuple[float, float] | None = None

    # --- the task, functionally -------------------------------------------------------
    def _initial(self, params, infer_params, hardware, noise):
        """Initial parameters for one device and the KL term of its modulation."""
        if not self.conditioned_init:
            return params, torch.zeros(())
        mean, log_var = functional_call(self.infer, infer_params, (hardware,))
        z = mean + torch.exp(0.5 * log_var) * noise
        kl = 0.5 * torch.sum(torch.exp(log_var) + mean ** 2 - 1.0 - log_var)
        return modulate(params, z, self.infer.sizes), kl

    def _support_loss(self, params, x, y, hardware):
        return torch.mean((functional_call(self.net, params, (x, hardware)) - y) ** 2)

    def _inner_loop(self, params, lrs, x, y, hardware):
        for _ in range(self.config.inner_steps):
            grads = grad(self._support_loss)(params, x, y, hardware)
            params = {k: params[k] - lrs[k] * grads[k] for k in params}
        return params

    def _task(self, params, lrs, infer_params, x_s, y_s, hardware, x_q, y_q, noise):
        start, kl = self._initial(params, infer_params, hardware, noise)
        fast = self._inner_loop(start, lrs, x_s, y_s, hardware)
        query = torch.mean((functional_call(self.net, fast, (x_q, hardware)) - y_q) ** 2)
        return query, kl

    @property
    def _noise_size(self) -> int:
        return 2 * sum(self.infer.sizes) if self.infer else 1

    # --- meta-training ------------------------------------------------------------------
    @classmethod
    def meta_train(cls, space: str, seed: int = 0, log=None, config: MetaConfig | None = None):
        """Seeded meta-training on the meta-train devices; the meta-valid
        devices pick the best checkpoint (mean Spearman after adapting)."""
        from nas.predictors.evaluation import table_codes

        log = log or (lambda message: None)
        config = config or MetaConfig()
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            predictor = cls(space, config, seed)
            predictor._meta_train(table_codes(space), log)
        finally:
            torch.set_num_threads(threads)
        return predictor

    def _meta_train(self, codes: np.ndarray, log) -> None:
        config = self.config
        protocol = benchmarks.help_protocol(self.space)
        table = benchmarks.latency_table(self.space)
        rng = np.random.default_rng(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        inputs = network_inputs(self.space, codes)
        others = np.setdiff1d(np.arange(len(codes)), self.reference)
        devices = protocol.meta_train_devices
        # each meta-train device: its reference latencies and its training sample
        # (HELP drops the lowest and highest 10 % of a device's training latencies)
        support_ms, query_rows = [], []
        for device in devices:
            column = table.column(device)
            rows = rng.choice(others, protocol.num_meta_train_samples, replace=False)
            low, high = np.quantile(column[rows], [0.1, 0.9])
            query_rows.append(rows[(column[rows] >= low) & (column[rows] <= high)])
            support_ms.append(column[self.reference])
        x_s = inputs[self.reference]
        trainable = {"params": self.params, "infer": self.infer_params}
        if self.learned_lr:
            trainable["lrs"] = self.lrs
        leaves = [t for group in trainable.values() for t in group.values()]
        for t in leaves:
            t.requires_grad_(True)
        optimizer = torch.optim.Adam(leaves, lr=config.meta_lr)
        task_batch = vmap(self._task, in_dims=(None, None, None, None, 0, 0, 0, 0, 0), randomness="different")
        valid_devices = protocol.meta_valid_devices
        valid_rows = rng.choice(others, min(config.validation_archs, len(others)), replace=False)
        best = (-np.inf, None, 0)
        started = time.perf_counter()
        for episode in range(1, config.episodes + 1):
            chosen = rng.choice(len(devices), min(config.tasks_per_episode, len(devices)), replace=False)
            y_s, x_q, y_q = [], [], []
            for d in chosen:
                mean, std = support_ms[d].mean(), support_ms[d].std() + 1e-9
                rows = rng.choice(query_rows[d], config.query_size, replace=False)
                y_s.append((support_ms[d] - mean) / std)
                x_q.append(inputs[rows])
                y_q.append((table.column(devices[d])[rows] - mean) / std)
            y_s = torch.tensor(np.array(y_s), dtype=torch.float32)
            noise = torch.randn(len(chosen), self._noise_size, generator=generator)
            query, kl = task_batch(self.params, self.lrs, self.infer_params, x_s, y_s, y_s,
                                   torch.stack(x_q), torch.tensor(np.array(y_q), dtype=torch.float32), noise)
            loss = query.mean() + config.kl_weight * kl.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if self.learned_lr:
                with torch.no_grad():
                    for v in self.lrs.values():
                        v.clamp_(min=0.0)
            if episode % config.validate_every == 0 or episode == config.episodes:
                rho = float(np.mean([self._spearman_on(codes, valid_rows, table.column(d)) for d in valid_devices]))
                log(f"{self.name} {self.space} episode {episode}: query loss {query.mean().item():.4f}, "
                    f"meta-valid Spearman {rho:.4f} ({time.perf_counter() - started:.0f} s)")
                if rho > best[0]:
                    best = (rho, self._snapshot(), episode)
        self._restore(best[1])
        self.meta_train_s = time.perf_counter() - started
        log(f"kept episode {best[2]} (meta-valid Spearman {best[0]:.4f})")

    def _spearman_on(self, codes, rows, column) -> float:
        self.adapt_codes(codes[self.reference], column[self.reference])
        return float(spearmanr(self.predict_codes(codes[rows]), column[rows])[0])

    def _snapshot(self):
        return [{k: v.detach().clone() for k, v in group.items()}
                for group in (self.params, self.lrs, self.infer_params)]

    def _restore(self, snapshot) -> None:
        self.params, self.lrs, self.infer_params = snapshot

    # --- contract -----------------------------------------------------------------------
    def adapt(self, measurements: Mapping[str, float]) -> "MetaLearnedPredictor":
        archs, latency_ms = self._parse_measurements(measurements)
        codes = op_codes(self.space, archs)
        reference_codes = op_codes(self.space, [self.search_space.from_index(i) for i in self.reference])
        position = {tuple(row): i for i, row in enumerate(codes.tolist())}
        missing = [self.search_space.to_string(self.search_space.from_index(i))
                   for i, row in zip(self.reference, reference_codes.tolist()) if tuple(row) not in position]
        if missing:
            raise UserInputError(f"the {self.name} predictor needs the 10 reference architectures as its "
                                 f"hardware embedding; missing: {missing[0]!r}")
        reference_ms = latency_ms[[position[tuple(row)] for row in reference_codes.tolist()]]
        return self.adapt_codes(codes, latency_ms, reference_ms)

    def adapt_codes(self, codes: np.ndarray, latency_ms: np.ndarray,
                    reference_ms: np.ndarray | None = None) -> "MetaLearnedPredictor":
        """Adapt on operation codes; ``reference_ms`` defaults to the first 10 latencies."""
        reference_ms = latency_ms[:len(self.reference)] if reference_ms is None else reference_ms
        mean, std = float(np.mean(reference_ms)), float(np.std(reference_ms) + 1e-9)
        hardware = torch.tensor((reference_ms - mean) / std, dtype=torch.float32)
        x = network_inputs(self.space, codes)
        y = torch.tensor((latency_ms - mean) / std, dtype=torch.float32)
        params = {k: v.detach() for k, v in self.params.items()}
        lrs = {k: v.detach() for k, v in self.lrs.items()}
        infer = {k: v.detach() for k, v in self.infer_params.items()}
        start, _ = self._initial(params, infer, hardware, torch.zeros(self._noise_size))
        self.adapted = {k: v.detach() for k, v in self._inner_loop(start, lrs, x, y, hardware).items()}
        self.hardware, self.stats = hardware, (mean, std)
        return self

    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        if self.adapted is None:
            raise RuntimeError("call adapt() before predict()")
        with torch.no_grad():
            out = functional_call(self.net, self.adapted, (network_inputs(self.space, codes), self.hardware))
        mean, std = self.stats
        return np.maximum(out.double().numpy() * std + mean, 1e-3)

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.predict_codes(op_codes(self.space, archs))

    # --- checkpoints --------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"config": asdict(self.config), "seed": self.seed}
        arrays = {**as_arrays("params", self.params), **as_arrays("lrs", self.lrs),
                  **as_arrays("infer", self.infer_params)}
        if self.adapted is not None:
            arrays.update(as_arrays("adapted", self.adapted), hardware=self.hardware.numpy())
            meta["stats"] = list(self.stats)
        return meta, arrays

    @classmethod
    def from_state(cls, space, meta, arrays):
        known = {f.name for f in fields(MetaConfig)}
        predictor = cls(space, MetaConfig(**{k: v for k, v in meta["config"].items() if k in known}), meta["seed"])
        predictor.params, predictor.lrs = from_arrays("params", arrays), from_arrays("lrs", arrays)
        predictor.infer_params = from_arrays("infer", arrays)
        if "stats" in meta:
            predictor.adapted = from_arrays("adapted", arrays)
            predictor.hardware = torch.from_numpy(np.array(arrays["hardware"]))
            predictor.stats = tuple(meta["stats"])
        return predictor


@register_predictor("help")
class HelpPredictor(MetaLearnedPredictor):
    """HELP: hardware embedding, Meta-SGD inner loop, hardware-conditioned initialisation."""


@register_predictor("meta-sgd")
class MetaSGDPredictor(MetaLearnedPredictor):
    """Meta-SGD without the hardware embedding (learnable per-parameter inner rates)."""

    hardware_embedding = False
    conditioned_init = False


@register_predictor("maml")
class MAMLPredictor(MetaLearnedPredictor):
    """MAML without the hardware embedding (one fixed inner learning rate)."""

    hardware_embedding = False
    learned_lr = False
    conditioned_init = False
