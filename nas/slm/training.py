"""Short language-model training runs: the accuracy proxy of the `slm` search.

A candidate is trained for a fixed token budget (AdamW, linear warm-up then a
cosine decay to 10% of the peak rate, gradient clipping) on random windows of
the corpus's train split, then scored by its **validation bits per byte**:
the mean cross-entropy of next-byte prediction on fixed windows of the
validation split, in bits. Every candidate sees the same windows in the same
order (seeded), so differences come from the architecture.

The model is any ``torch.nn.Module`` mapping ``tokens`` (LongTensor
``[batch, time]``) to logits ``[batch, time, 256]``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nas.errors import UserInputError
from nas.slm.corpus import VOCAB_SIZE


@dataclass(frozen=True)
class TrainingConfig:
    """One short training run. ``tokens`` is the fixed budget every candidate gets."""

    tokens: int = 40_960
    #: small batches buy more optimizer steps for the same tokens; at 8 x 128 the 40 steps of the default
    #: budget ended in the first fast descent and ranked layouts unlike a 4x longer run (Spearman 0.78)
    batch_size: int = 4
    context: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.1
    warmup_share: float = 0.05
    min_lr_share: float = 0.1
    clip_norm: float = 1.0
    #: validation bytes scored (fixed windows spread over the split); 0 scores none
    eval_bytes: int = 32_768
    seed: int = 0

    def __post_init__(self):
        for name in ("tokens", "batch_size", "context"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserInputError(f"training option {name}={value!r} is invalid; allowed: a whole number >= 1")
        if self.tokens < self.batch_size * self.context:
            raise UserInputError(f"training budget of {self.tokens} tokens is less than one batch "
                                 f"({self.batch_size} x {self.context}); raise tokens")

    @property
    def steps(self) -> int:
        """Optimizer steps the token budget buys."""
        return self.tokens // (self.batch_size * self.context)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingRun:
    """What one run did. Losses in bits per byte."""

    steps: int
    tokens: int
    val_bpb: float
    final_train_bpb: float
    wall_s: float
    #: (step, mean train bits per byte over the last stretch), a few points along the run
    curve: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "tokens": self.tokens, "val_bpb": self.val_bpb,
                "final_train_bpb": self.final_train_bpb, "wall_s": round(self.wall_s, 2),
                "curve": [list(point) for point in self.curve]}


def random_windows(data: np.ndarray, batch_size: int, length: int, rng: np.random.Generator) -> torch.Tensor:
    """``batch_size`` random windows of ``length`` bytes (LongTensor ``[batch, length]``)."""
    if len(data) <= length:
        raise UserInputError(f"text of {len(data)} bytes is too short for windows of {length}")
    starts = rng.integers(0, len(data) - length, size=batch_size)
    return torch.from_numpy(np.stack([data[s:s + length] for s in starts]).astype(np.int64))


def cosine_schedule(step: int, steps: int, warmup_share: float, min_share: float) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``min_share``."""
    warmup = max(1, int(round(steps * warmup_share)))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_share + (1 - min_share) * 0.5 * (1 + math.cos(math.pi * progress))


def next_byte_loss(model: nn.Module, window: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of predicting each byte of ``window`` from the ones before it."""
    logits = model(window[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB_SIZE).float(), window[:, 1:].reshape(-1))


@torch.no_grad()
def bits_per_byte(model: nn.Module, data: np.ndarray, *, context: int = 128, max_bytes: int = 32_768,
                  batch_size: int = 16) -> float:
    """Mean bits per byte of ``model`` on ``data``: windows of ``context + 1``
    bytes spread evenly over the text, covering about ``max_bytes`` predictions."""
    windows = max(1, min(max_bytes // context, (len(data) - 1) // (context + 1)))
    starts = np.linspace(0, len(data) - context - 1, windows).astype(np.int64)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, windows, batch_size):
        chunk = starts[i:i + batch_size]
        batch = torch.from_numpy(np.stack([data[s:s + context + 1] for s in chunk]).astype(np.int64))
        loss = next_byte_loss(model, batch)
        total += float(loss) * len(chunk)
        count += len(chunk)
    model.train(was_training)
    return total / count / math.log(2)


def train_language_model(model: nn.Module, train: np.ndarray, validation: np.ndarray | None,
                         config: TrainingConfig = TrainingConfig(),
                         progress: Callable[[int, int, float], None] | None = None) -> TrainingRun:
    """Train ``model`` in place for ``config.tokens`` tokens and score it on ``validation``.

    ``progress(step, steps, train_bpb)`` is called every few steps.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    steps = config.steps
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim < 2 or "embed" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=config.learning_rate, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_schedule(s, steps, config.warmup_share, config.min_lr_share))
    model.train()
    curve: list[tuple[int, float]] = []
    recent: list[float] = []
    report_every = max(1, steps // 10)
    for step in range(steps):
        window = random_windows(train, config.batch_size, config.context + 1, rng)
        loss = next_byte_loss(model, window)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach()) / math.log(2)
        if not math.isfinite(value):
            raise FloatingPointError(f"training diverged at step {step} (loss {value})")
        recent.append(value)
        if (step + 1) % report_every == 0 or step + 1 == steps:
            curve.append((step + 1, float(np.mean(recent))))
            recent = []
            if progress:
                progress(step + 1, steps, curve[-1][1])
    val_bpb = bits_per_byte(model, validation, context=config.context, max_bytes=config.eval_bytes) \
        if validation is not None and config.eval_bytes > 0 else float("nan")
    model.eval()
    return TrainingRun(steps=steps, tokens=steps * config.batch_size * config.context, val_bpb=val_bpb,
                       final_train_bpb=curve[-1][1] if curve else float("nan"),
                       wall_s=time.perf_counter() - started, curve=curve)
