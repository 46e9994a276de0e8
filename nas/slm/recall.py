"""Multi-query associative recall: a synthetic task on which attention and
recurrent token mixers differ (after the MQAR task of Arora et al., 2023).

A sequence lists ``num_pairs`` key-value pairs, then asks ``num_queries``
of the keys again; after each asked key the model must produce that key's
value::

    k1 v1 k2 v2 ... kN vN   q1 a1 q2 a2 ... qM aM      (a_i = value of key q_i)

Keys are distinct bytes from 0-127 and values bytes from 128-255, so a
position's role is never ambiguous. Only the answers are scored. A model
that learned nothing scores about 1/128; one that only learned to repeat a
value of the sequence, about 1/num_pairs.

:func:`recall_accuracy` trains a fresh copy of the architecture on the task
for a fixed number of steps and reports accuracy on held-out sequences.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nas.errors import UserInputError

KEY_RANGE = (0, 128)
VALUE_RANGE = (128, 256)


@dataclass(frozen=True)
class RecallTask:
    """Shape of the task and of its training run."""

    num_pairs: int = 8
    num_queries: int = 8
    #: 120 steps of 16 sequences left every mixer near chance; 400 of 32 separate them
    #: (a 4-layer DeltaNet stack at width 64 then answers most queries, attention and Mamba2 few)
    train_steps: int = 400
    batch_size: int = 32
    learning_rate: float = 3e-3
    test_sequences: int = 256
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.num_pairs <= KEY_RANGE[1] - KEY_RANGE[0]:
            raise UserInputError(f"recall num_pairs={self.num_pairs!r} is invalid; allowed: 1 to 128")
        for name in ("num_queries", "train_steps", "batch_size", "test_sequences"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserInputError(f"recall {name}={value!r} is invalid; allowed: a whole number >= 1")

    @property
    def length(self) -> int:
        """Tokens per sequence."""
        return 2 * (self.num_pairs + self.num_queries)


@dataclass
class RecallResult:
    accuracy: float  # share of answers right on the held-out sequences (0-1)
    train_steps: int
    wall_s: float

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "train_steps": self.train_steps, "wall_s": round(self.wall_s, 2)}


def recall_batch(task: RecallTask, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [batch, length], targets [batch, length])``; targets are -100
    except at each asked key, where they hold the value the model must produce next."""
    tokens = np.empty((batch_size, task.length), dtype=np.int64)
    targets = np.full((batch_size, task.length), -100, dtype=np.int64)
    for row in range(batch_size):
        keys = rng.choice(np.arange(*KEY_RANGE), size=task.num_pairs, replace=False)
        values = rng.integers(*VALUE_RANGE, size=task.num_pairs)
        tokens[row, 0:2 * task.num_pairs:2] = keys
        tokens[row, 1:2 * task.num_pairs:2] = values
        asked = rng.integers(0, task.num_pairs, size=task.num_queries)
        start = 2 * task.num_pairs
        tokens[row, start::2] = keys[asked]
        tokens[row, start + 1::2] = values[asked]
        targets[row, start::2] = values[asked]
    return torch.from_numpy(tokens), torch.from_numpy(targets)


@torch.no_grad()
def score_recall(model: nn.Module, task: RecallTask) -> float:
    """Share of answers ``model`` gets right on the task's held-out sequences."""
    rng = np.random.default_rng(task.seed + 1_000_003)  # never the training stream
    tokens, targets = recall_batch(task, task.test_sequences, rng)
    model.eval()
    right = total = 0
    for i in range(0, len(tokens), 64):
        logits = model(tokens[i:i + 64])
        asked = targets[i:i + 64] != -100
        right += int((logits.argmax(-1)[asked] == targets[i:i + 64][asked]).sum())
        total += int(asked.sum())
    return right / total


def recall_accuracy(build: Callable[[], nn.Module], task: RecallTask = RecallTask(),
                    progress: Callable[[int, int, float], None] | None = None) -> RecallResult:
    """Train a fresh model from ``build()`` on the task and score it on held-out sequences."""
    started = time.perf_counter()
    torch.manual_seed(task.seed)
    model = build()
    rng = np.random.default_rng(task.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=task.learning_rate, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=task.learning_rate,
                                                    total_steps=task.train_steps, pct_start=0.1)
    model.train()
    for step in range(task.train_steps):
        tokens, targets = recall_batch(task, task.batch_size, rng)
        logits = model(tokens)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if progress and ((step + 1) % max(1, task.train_steps // 5) == 0):
            progress(step + 1, task.train_steps, float(loss.detach()))
    return RecallResult(score_recall(model, task), task.train_steps, time.perf_counter() - started)
