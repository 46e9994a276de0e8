"""Train a stand-alone ``fbnet`` architecture from scratch and measure its accuracy.

The derived architecture and the random baselines of the benchmark go
through the same function, so "trained the same way" holds by construction.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas.proxyless.data import DataSplits
from nas.search_space import get_space


@dataclass
class TrainResult:
    model: nn.Module
    val_accuracy: float
    test_accuracy: float
    epochs: int
    wall_s: float


def accuracy_percent(model: nn.Module, loader) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, in percent (eval mode)."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += int((model(images).argmax(1) == labels).sum())
            total += len(labels)
    return 100.0 * correct / max(total, 1)


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def train_architecture(arch: Sequence[str], data: DataSplits, *, epochs: int = 3, batch_size: int = 64,
                       lr: float = 0.02, weight_decay: float = 4e-5, seed: int = 0,
                       progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``arch`` of ``fbnet`` from a fresh initialisation on ``data.train``
    (SGD, Nesterov momentum, cosine schedule) and report val/test accuracy (percent)."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = get_space("fbnet").build(tuple(arch), data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay)
    loader = data.loader("train", batch_size, shuffle=True, seed=seed)
    total, step = epochs * len(loader), 0
    for epoch in range(epochs):
        model.train()
        for images, labels in loader:
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(lr, step, total)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if progress:
            progress(f"retrain epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}")
    val = accuracy_percent(model, data.loader("val", 256))
    test = accuracy_percent(model, data.loader("test", 256))
    return TrainResult(model.eval(), val, test, epochs, time.perf_counter() - start)
