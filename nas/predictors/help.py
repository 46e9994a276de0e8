"""HELP (NeurIPS 2021) and the meta-learning baselines MAML and Meta-SGD.

A device is a task. Its 10 reference architectures, as latencies min-max
scaled per device, are the hardware embedding. Meta-training follows the
published method: each episode draws 8 meta-train devices; each adapts
with 2 inner gradient steps (Meta-SGD: a learnable learning rate per
parameter entry, starting at 1e-3; MAML: one fixed rate) on 10 random
architectures of its training pool, and the loss on 200 other pool
architectures updates the shared initialisation (Adam, 1e-4, 2,000 episodes
for NB201, 4,000 for FBNet). HELP adds the hardware embedding to the
network and a hardware-conditioned initialisation: an inference network
maps the embedding to a Gaussian over modulations of the head (scaled by
0.01, KL term to a standard normal). The meta-valid devices pick the
checkpoint; meta-test devices are never read. Written with ``torch.func``:
parameters are plain dicts, the inner loop is ``grad``, and the tasks of an
episode run under ``vmap``.

Training targets are a device's latencies min-max scaled to [0.05, 0.95]
over its training pool (the fastest and slowest 10 % dropped, as HELP
does); on a new device the scale comes from the few-shot measurements and
predictions are mapped back to milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.func import functional_call, grad, vmap

from nas import benchmarks
from nas.errors import UserInputError
from nas.predictors.base import LatencyPredictor
from nas.predictors.features import help_encoding, op_codes
from nas.predictors.networks import HelpNet, InferenceNet, as_arrays, from_arrays, modulate
from nas.predictors.registry import register_predictor
from nas.search_space import Arch

#: HELP's meta-training length per space (episodes); other spaces use the NB201 one
EPISODES = {"nb201": 2000, "fbnet": 4000}
#: checkpoint format of this network (older HELP checkpoints hold another network)
NETWORK = "help-2021"
#: share of a device's latencies dropped at each end of its training pool
TRIM = 0.1
#: normalised targets span [LOW, 1 - LOW] of the scaling range
LOW = 0.05


def trimmed(rows: np.ndarray, column: np.ndarray) -> np.ndarray:
    """``rows`` without the fastest and slowest 10 % on ``column`` (HELP's outlier cut)."""
    order = rows[np.argsort(column[rows], kind="stable")]
    return order[int(len(rows) * TRIM):int(len(rows) * (1 - TRIM))]


def _range(latency_ms: np.ndarray) -> tuple[float, float]:
    low = float(np.min(latency_ms))
    return low, max(float(np.max(latency_ms)) - low, 1e-9 * max(abs(low), 1.0))


@dataclass
class MetaConfig:
    """Meta-training settings (HELP's published ones by default)."""

    hidden: int = 100
    inner_steps: int = 2
    inner_lr: float = 1e-3
    meta_lr: float = 1e-4
    #: None: HELP's length for the space (``EPISODES``)
    episodes: int | None = None
    tasks_per_episode: int = 8
    support_size: int = 10
    query_size: int = 200
    kl_weight: float = 0.1
    z_scale: float = 0.01
    validate_every: int = 50
    validation_archs: int = 1000
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
        self.net = HelpNet(space, self.config.hidden, self.hardware_embedding)
        self.params = {k: v.detach().clone() for k, v in self.net.named_parameters()}
        self.lrs = {k: torch.full_like(v, self.config.inner_lr) for k, v in self.params.items()}
        self.infer = InferenceNet(self.net.fc5.in_features) if self.conditioned_init else None
        self.infer_params = ({k: v.detach().clone() for k, v in self.infer.named_parameters()}
                             if self.infer else {})
        self.reference = np.array(benchmarks.help_protocol(space).reference_indices)
        self.adapted: dict[str, torch.Tensor] | None = None
        self.hardware: torch.Tensor | None = None
        self.stats: tuple[float, float] | None = None
        self.training_log: list[dict[str, float]] = []

    # --- the task, functionally -------------------------------------------------------
    def _initial(self, params, infer_params, hardware, noise):
        """Initial parameters for one device and the KL term of its modulation."""
        if not self.conditioned_init:
            return params, torch.zeros(())
        mean, std = functional_call(self.infer, infer_params, (hardware,))
        z = mean + std * noise
        kl = torch.sum(0.5 * (std ** 2 + mean ** 2 - 1.0) - torch.log(std))
        return modulate(params, z, self.infer.width, self.config.z_scale), kl

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
        return self.infer.size if self.infer else 1

    # --- meta-training ------------------------------------------------------------------
    @classmethod
    def meta_train(cls, space: str, seed: int = 0, log: Callable[[str], None] | None = None,
                   config: MetaConfig | None = None, save_to=None) -> "MetaLearnedPredictor":
        """Seeded meta-training on the meta-train devices; the meta-valid
        devices pick the best checkpoint. ``save_to`` (a path) receives the
        best checkpoint so far each time it improves."""
        log = log or (lambda message: None)
        config = config or MetaConfig()
        threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            predictor = cls(space, config, seed)
            predictor._meta_train(log, save_to)
        finally:
            torch.set_num_threads(threads)
        return predictor

    def _hardware(self, reference_ms: np.ndarray) -> torch.Tensor:
        low, span = _range(reference_ms)
        return torch.tensor((reference_ms - low) / span, dtype=torch.float32)

    def _meta_train(self, log, save_to) -> None:
        from nas.predictors.evaluation import table_codes

        config = self.config
        episodes = config.episodes or EPISODES.get(self.space, EPISODES["nb201"])
        protocol = benchmarks.help_protocol(self.space)
        table = benchmarks.latency_table(self.space)
        codes = table_codes(self.space)
        rng = np.random.default_rng(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        inputs = torch.from_numpy(help_encoding(self.space, codes))
        pool = np.arange(min(protocol.num_meta_train_samples, len(codes)))
        devices = protocol.meta_train_devices
        # per meta-train device: its trimmed training pool, targets scaled on that pool, embedding
        pools, targets, hardware = [], [], []
        for device in devices:
            column = table.column(device)
            rows = trimmed(pool, column)
            low, span = _range(column[rows])
            pools.append(rows)
            targets.append(torch.tensor((column - low) / span * (1 - 2 * LOW) + LOW, dtype=torch.float32))
            hardware.append(self._hardware(column[self.reference]))
        trainable = {"params": self.params, "infer": self.infer_params}
        if self.learned_lr:
            trainable["lrs"] = self.lrs
        leaves = [t for group in trainable.values() for t in group.values()]
        for t in leaves:
            t.requires_grad_(True)
        optimizer = torch.optim.Adam(leaves, lr=config.meta_lr)
        task_batch = vmap(self._task, in_dims=(None, None, None, 0, 0, 0, 0, 0, 0), randomness="different")
        validation = self._validation_tasks(codes, pool, rng)
        best = (-np.inf, None, 0)
        started = time.perf_counter()
        size = config.support_size + config.query_size
        for episode in range(1, episodes + 1):
            chosen = rng.choice(len(devices), min(config.tasks_per_episode, len(devices)), replace=False)
            rows = np.stack([rng.choice(pools[d], size, replace=False) for d in chosen])
            support, query = rows[:, :config.support_size], rows[:, config.support_size:]
            y = torch.stack([targets[d][r] for d, r in zip(chosen, rows)])
            noise = torch.randn(len(chosen), self._noise_size, generator=generator)
            losses, kl = task_batch(self.params, self.lrs, self.infer_params,
                                    inputs[support], y[:, :config.support_size],
                                    torch.stack([hardware[d] for d in chosen]),
                                    inputs[query], y[:, config.support_size:], noise)
            loss = losses.mean() + config.kl_weight * kl.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if episode % config.validate_every == 0 or episode == episodes:
                rho = self._validate(codes, validation)
                elapsed = time.perf_counter() - started
                self.training_log.append({"episode": episode, "query_loss": round(losses.mean().item(), 5),
                                          "meta_valid_spearman": round(rho, 5), "seconds": round(elapsed, 1)})
                log(f"{self.name} {self.space} seed {self.seed} episode {episode}/{episodes}: query loss "
                    f"{losses.mean().item():.4f}, meta-valid Spearman {rho:.4f} ({elapsed:.0f} s)")
                if rho > best[0]:
                    best = (rho, self._snapshot(), episode)
                    if save_to is not None:
                        self._save_snapshot(save_to, best[1])
        self._restore(best[1])
        self.meta_train_s = time.perf_counter() - started
        self.kept_episode = best[2]
        log(f"kept episode {best[2]} (meta-valid Spearman {best[0]:.4f})")

    def _validation_tasks(self, codes, pool, rng):
        """Per meta-valid device: 10 pool architectures drawn once (HELP's
        validation support), and the architectures scored (outside the pool)."""
        protocol = benchmarks.help_protocol(self.space)
        table = benchmarks.latency_table(self.space)
        others = np.setdiff1d(np.arange(len(codes)), np.concatenate([pool, self.reference]))
        scored = rng.choice(others, min(self.config.validation_archs, len(others)), replace=False)
        tasks = []
        for device in protocol.meta_valid_devices:
            column = table.column(device)
            support = rng.choice(trimmed(pool, column), self.config.support_size, replace=False)
            tasks.append((column, support, scored))
        return tasks

    def _validate(self, codes, tasks) -> float:
        """Mean meta-valid Spearman over both ways of adapting: on the 10
        references, and on 10 random architectures with the references as
        embedding only."""
        rhos = []
        for column, support, scored in tasks:
            reference_ms = column[self.reference]
            for rows in (self.reference, support):
                self.adapt_codes(codes[rows], column[rows], reference_ms)
                rhos.append(spearmanr(self.predict_codes(codes[scored]), column[scored])[0])
        self.adapted = None
        return float(np.mean(rhos))

    def _snapshot(self):
        return [{k: v.detach().clone() for k, v in group.items()}
                for group in (self.params, self.lrs, self.infer_params)]

    def _restore(self, snapshot) -> None:
        self.params, self.lrs, self.infer_params = snapshot

    def _save_snapshot(self, path, snapshot) -> None:
        live = [self.params, self.lrs, self.infer_params]
        self._restore(snapshot)
        try:
            self.save(path)
        finally:
            self._restore(live)

    # --- contract -----------------------------------------------------------------------
    def adapt(self, measurements: Mapping[str, float]) -> "MetaLearnedPredictor":
        """Adapt on every measurement given; the 10 reference architectures
        among them are also the hardware embedding."""
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
        """Adapt on operation codes and their latencies; ``reference_ms``, the
        reference architectures' latencies (the hardware embedding), defaults
        to the first 10 latencies."""
        latency_ms = np.asarray(latency_ms, dtype=np.float64)
        reference_ms = latency_ms[:len(self.reference)] if reference_ms is None else np.asarray(reference_ms)
        low, span = _range(latency_ms)
        hardware = self._hardware(reference_ms)
        x = torch.from_numpy(help_encoding(self.space, codes))
        y = torch.tensor((latency_ms - low) / span * (1 - 2 * LOW) + LOW, dtype=torch.float32)
        params = {k: v.detach() for k, v in self.params.items()}
        lrs = {k: v.detach() for k, v in self.lrs.items()}
        infer = {k: v.detach() for k, v in self.infer_params.items()}
        start, _ = self._initial(params, infer, hardware, torch.zeros(self._noise_size))
        self.adapted = {k: v.detach() for k, v in self._inner_loop(start, lrs, x, y, hardware).items()}
        self.hardware, self.stats = hardware, (low, span)
        return self

    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        if self.adapted is None:
            raise RuntimeError("call adapt() before predict()")
        with torch.no_grad():
            out = functional_call(self.net, self.adapted, (torch.from_numpy(help_encoding(self.space, codes)),
                                                            self.hardware))
        low, span = self.stats
        return np.maximum(low + (out.double().numpy() - LOW) / (1 - 2 * LOW) * span, 1e-3)

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.predict_codes(op_codes(self.space, archs))

    # --- checkpoints --------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"config": asdict(self.config), "seed": self.seed, "network": NETWORK,
                "training_log": self.training_log}
        arrays = {**as_arrays("params", self.params), **as_arrays("lrs", self.lrs),
                  **as_arrays("infer", self.infer_params)}
        if self.adapted is not None:
            arrays.update(as_arrays("adapted", self.adapted), hardware=self.hardware.numpy())
            meta["stats"] = list(self.stats)
        return meta, arrays

    @classmethod
    def from_state(cls, space, meta, arrays):
        if meta.get("network") != NETWORK:
            raise UserInputError(f"this {meta.get('method', cls.name)} checkpoint holds an older latency network; "
                                 f"meta-train a new one with 'nas predictor meta-train --space {space} "
                                 f"--method {cls.name} --out FILE'")
        known = {f.name for f in fields(MetaConfig)}
        predictor = cls(space, MetaConfig(**{k: v for k, v in meta["config"].items() if k in known}), meta["seed"])
        predictor.params, predictor.lrs = from_arrays("params", arrays), from_arrays("lrs", arrays)
        predictor.infer_params = from_arrays("infer", arrays)
        predictor.training_log = list(meta.get("training_log", []))
        if "stats" in meta:
            predictor.adapted = from_arrays("adapted", arrays)
            predictor.hardware = torch.from_numpy(np.array(arrays["hardware"]))
            predictor.stats = tuple(meta["stats"])
        return predictor


def paper_protocol(predictor: MetaLearnedPredictor, draws: int = 5, seed: int = 0,
                   devices: Sequence[str] | None = None) -> dict[str, list[float]]:
    """Spearman per meta-test device on the HELP paper's protocol, one value per draw.

    Test set: the 1,000 architectures after the meta-training pool (NB201
    indices 900-1,899; FBNet 4,000-4,999) without the device's fastest and
    slowest 10 % (800 left). Each draw adapts on 10 random architectures of
    the device's trimmed pool, the references serving only as embedding.
    """
    from nas.predictors.evaluation import table_codes

    space = predictor.space
    protocol = benchmarks.help_protocol(space)
    table = benchmarks.latency_table(space)
    codes = table_codes(space)
    size = min(protocol.num_meta_train_samples, len(codes) - 1000)
    pool, test = np.arange(size), np.arange(size, size + 1000)
    rng = np.random.default_rng(seed)
    out = {}
    for device in devices or protocol.meta_test_devices:
        column = table.column(device)
        rows, scored = trimmed(pool, column), trimmed(test, column)
        out[device] = []
        for _ in range(draws):
            support = rng.choice(rows, 10, replace=False)
            predictor.adapt_codes(codes[support], column[support], column[predictor.reference])
            out[device].append(float(spearmanr(predictor.predict_codes(codes[scored]), column[scored])[0]))
    return out


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
