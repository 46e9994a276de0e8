"""Supernet training: alternating weight and architecture updates with a latency loss.

Weights learn on ``train`` batches with one sampled path per layer; the
architecture parameters learn on ``val`` batches with the two-path estimator
and the latency term, so the architecture is chosen on data the weights did
not fit. A checkpoint after every epoch makes the search resumable.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from nas.errors import UserInputError
from nas.proxyless.data import DataSplits
from nas.proxyless.latency_table import LatencyLookupTable
from nas.proxyless.supernet import SUPERNET_FORMAT, ProxylessSupernet
from nas.proxyless.train import cosine_lr

LATENCY_LOSSES = ("hinge", "mul", "add")


@dataclass
class SearchConfig:
    """Supernet-training settings.

    ``latency_loss``: ``mul`` is CE * (E[LAT]/T)^beta, ``add`` is
    CE + lambda_per_ms * E[LAT] (both from the ProxylessNAS paper); ``hinge``
    (default) is CE * max(1, E[LAT]/T)^beta, MnasNet's hard-constraint
    exponent (0 under the target; Tan et al., CVPR 2019) on the ``mul`` form.
    ``mul`` and ``add`` push latency down at any level, so once the supernet
    fits its data (small CE) they trade accuracy for latency far below the
    budget; ``hinge`` leaves the budget to be used.
    """

    epochs: int = 6
    warmup_epochs: int = 1
    batch_size: int = 64
    weight_lr: float = 0.02
    weight_decay: float = 4e-5
    arch_lr: float = 0.05
    latency_loss: str = "hinge"
    beta: float = 0.6
    lambda_per_ms: float = 0.1
    seed: int = 0

    @classmethod
    def for_epochs(cls, epochs: int, **options) -> "SearchConfig":
        """Settings for ``epochs`` in all, the first third of them weight-only warm-up."""
        return cls(epochs=epochs, warmup_epochs=epochs // 3 if isinstance(epochs, int) else 0, **options)

    def validate(self) -> "SearchConfig":
        if self.latency_loss not in LATENCY_LOSSES:
            raise UserInputError(f"latency_loss {self.latency_loss!r} is not one of {', '.join(LATENCY_LOSSES)}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise UserInputError(f"epochs must be a positive integer, got {self.epochs!r}")
        # warmup_epochs == epochs trains weights only (uniform paths), as the accuracy estimator does
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise UserInputError(f"warmup_epochs must be in 0..epochs ({self.epochs}), got {self.warmup_epochs!r}")
        if self.batch_size < 1:
            raise UserInputError(f"batch_size must be at least 1, got {self.batch_size!r}")
        for name in ("weight_lr", "arch_lr", "beta", "lambda_per_ms"):
            if not getattr(self, name) >= 0:
                raise UserInputError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        return self


def latency_loss(ce: torch.Tensor, expected_ms: torch.Tensor, target_ms: float, config: SearchConfig) -> torch.Tensor:
    """The latency-aware losses of :class:`SearchConfig`."""
    if config.latency_loss == "hinge":
        return ce * torch.clamp(expected_ms / target_ms, min=1.0) ** config.beta
    if config.latency_loss == "mul":
        return ce * (expected_ms / target_ms) ** config.beta
    return ce + config.lambda_per_ms * expected_ms


def check_supernet_format(identity: dict[str, Any], path: Path, what: str) -> None:
    """Refuse a checkpoint written for another supernet format."""
    found = identity.get("supernet_format", 1)
    if found != SUPERNET_FORMAT:
        raise UserInputError(f"{what}: the checkpoint at {path} holds a format-{found} supernet, this version "
                             f"trains format {SUPERNET_FORMAT} (different weights); start a new search with a "
                             "new --out directory (or without --resume)")


class ProxylessSearch:
    """One supernet search towards ``target_ms`` on a lookup table's device."""

    CHECKPOINT = "checkpoint.pt"

    def __init__(self, data: DataSplits, table: LatencyLookupTable, target_ms: float,
                 config: SearchConfig | None = None, checkpoint_dir: str | os.PathLike | None = None):
        self.data, self.table, self.target_ms = data, table, float(target_ms)
        self.config = (config or SearchConfig()).validate()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        torch.manual_seed(self.config.seed)
        self.supernet = ProxylessSupernet(data.num_classes)
        self.weight_optimizer = torch.optim.SGD(self.supernet.weight_parameters(), lr=self.config.weight_lr,
                                                momentum=0.9, nesterov=True,
                                                weight_decay=self.config.weight_decay)
        self.arch_optimizer = torch.optim.Adam([self.supernet.alpha], lr=self.config.arch_lr,
                                               betas=(0.0, 0.999), eps=1e-8)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.wall_s = 0.0

    # --- checkpoints ---------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.checkpoint_dir / self.CHECKPOINT if self.checkpoint_dir else None

    def _identity(self) -> dict[str, Any]:
        return {"supernet_format": SUPERNET_FORMAT, "device": self.table.device, "target_ms": self.target_ms,
                "data": self.data.name,
                "resolution": self.data.resolution, "config": dataclasses.asdict(self.config)}

    def save(self) -> None:
        if self.checkpoint_path is None:
            return
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        state = {"identity": self._identity(), "epoch": self.epoch, "history": self.history,
                 "wall_s": self.wall_s, "supernet": self.supernet.state_dict(),
                 "weight_optimizer": self.weight_optimizer.state_dict(),
                 "arch_optimizer": self.arch_optimizer.state_dict(),
                 "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                 "table": self.table.to_dict()}
        partial = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, partial)
        os.replace(partial, self.checkpoint_path)  # a crash mid-write keeps the previous checkpoint

    def resume(self) -> None:
        """Continue from the checkpoint in ``checkpoint_dir`` (same device, budget, data and settings)."""
        path = self.checkpoint_path
        if path is None or not path.is_file():
            raise UserInputError(f"--resume: no checkpoint at {path or '(no --out directory)'}; "
                                 "run once without --resume and with --out to create one")
        state = torch.load(path, weights_only=False)
        stored, current = state["identity"], self._identity()
        check_supernet_format(stored, path, "--resume")
        stored_config = dict(stored["config"], epochs=None)
        if {**stored, "config": stored_config} != {**current, "config": dict(current["config"], epochs=None)}:
            raise UserInputError(f"--resume: the checkpoint at {path} belongs to a different search "
                                 f"({stored}); use the same device, --latency, --data and settings, "
                                 "or a new --out directory")
        self.supernet.load_state_dict(state["supernet"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.history, self.wall_s = state["epoch"], state["history"], state["wall_s"]

    # --- training --------------------------------------------------------------------
    def expected_latency_ms(self) -> float:
        with torch.no_grad():
            return float(self.table.expected_latency_ms(self.supernet.probs()))

    def _weight_step(self, images: torch.Tensor, labels: torch.Tensor, lr: float) -> float:
        self.supernet.train()
        self.supernet.sample_single(self.generator)
        for group in self.weight_optimizer.param_groups:
            group["lr"] = lr
        loss = F.cross_entropy(self.supernet(images), labels)
        self.weight_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.weight_optimizer.step()
        return float(loss.detach())

    def _arch_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        self.supernet.train()
        self.supernet.sample_two(self.generator)
        ce = F.cross_entropy(self.supernet(images), labels)
        loss = latency_loss(ce, self.table.expected_latency_ms(self.supernet.probs()), self.target_ms, self.config)
        gates = self.supernet.gate_tensors()
        # only the gates and alpha need gradients: the weights stay untouched here
        grads = torch.autograd.grad(loss, gates + [self.supernet.alpha])
        self.arch_optimizer.zero_grad(set_to_none=True)
        self.supernet.alpha.grad = grads[-1].clone()
        self.supernet.accumulate_arch_grad(grads[:-1])
        before = self.supernet.alpha.detach().clone()
        self.arch_optimizer.step()
        self.supernet.rescale_sampled(before)
        return float(loss.detach())

    def run(self, progress: Callable[[str], None] | None = None) -> ProxylessSupernet:
        """Train until ``config.epochs`` (continuing from ``self.epoch``); checkpoint each epoch."""
        say = progress or (lambda _message: None)
        config = self.config
        steps_per_epoch = len(self.data.loader("train", config.batch_size))
        total_steps = config.epochs * steps_per_epoch
        while self.epoch < config.epochs:
            start = time.perf_counter()
            searching = self.epoch >= config.warmup_epochs
            val = iter(self.data.loader("val", config.batch_size, shuffle=True, seed=config.seed + 1 + self.epoch))
            weight_losses, arch_losses = [], []
            # a fresh, epoch-seeded order keeps a resumed run on the same batches
            train = self.data.loader("train", config.batch_size, shuffle=True, seed=config.seed + 1000 + self.epoch)
            for i, (images, labels) in enumerate(train):
                lr = cosine_lr(config.weight_lr, self.epoch * steps_per_epoch + i, total_steps)
                weight_losses.append(self._weight_step(images, labels, lr))
                if searching:
                    batch = next(val, None)
                    if batch is None:
                        val = iter(self.data.loader("val", config.batch_size, shuffle=True,
                                                    seed=config.seed + 7 + i))
                        batch = next(val)
                    arch_losses.append(self._arch_step(*batch))
            self.epoch += 1
            self.wall_s += time.perf_counter() - start
            record = {"epoch": self.epoch, "weight_loss": sum(weight_losses) / len(weight_losses),
                      "arch_loss": sum(arch_losses) / len(arch_losses) if arch_losses else float("nan"),
                      "expected_latency_ms": self.expected_latency_ms(),
                      "derived_latency_ms": self.table.arch_latency_ms(self.supernet.derive()),
                      "wall_s": self.wall_s}
            self.history.append(record)
            self.save()
            say(f"supernet epoch {self.epoch}/{config.epochs}{'' if searching else ' (warm-up)'}: "
                f"loss {record['weight_loss']:.3f}, E[latency] {record['expected_latency_ms']:.2f} ms, "
                f"derived {record['derived_latency_ms']:.2f} ms (target {self.target_ms:g} ms)")
        return self.supernet
