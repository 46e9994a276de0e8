"""Why the path-binarized fbnet supernet needs its transition shortcut: an
ablation of which layers get a randomly sampled path in the weight step.

Same weight step as :class:`nas.proxyless.ProxylessSearch` (one path per
layer, SGD Nesterov momentum 0.9, weight decay 4e-5, batch 32, 8x8 digits),
100 steps per setting, seed 0. "residual layers" are the 16 layers with
c_in == c_out and stride 1 (their candidates add to an identity shortcut);
the other 6 (stage transitions 16->24->32->64->112->184->352) replace their
input. A layer not sampled runs ``k3_e3``. ``zero-init`` sets the last
BatchNorm gamma of every residual candidate to 0, so all residual
candidates start as the identity. ``shortcut`` is the supernet's default
(:class:`nas.proxyless.supernet.MixedOp`): zero-init of every candidate, and
at the 6 transitions each candidate adds to the layer's ``skip`` projection;
the other rows build the supernet with ``shortcut=False``.

    nice .venv/bin/python experiments/proxyless_supernet_learning.py
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nas.proxyless import load_data
from nas.proxyless.supernet import ProxylessSupernet
from nas.search_space.fbnet import InvertedBottleneck, layer_shapes
from results_file import write_keeping_reading  # beside this script

RESULTS = Path(__file__).resolve().parent / "results" / "proxyless_supernet_learning.md"
FIXED = "k3_e3"
TRANSITIONS = [i for i, (c_in, c_out, stride) in enumerate(layer_shapes()) if c_in != c_out or stride != 1]
SETTINGS = [  # (name, sampled layers, candidate subset or None = all 9, zero-init or "shortcut", steps)
    ("one fixed path (k3_e3 everywhere)", "none", None, False, 100),
    ("all 22 layers, 9 candidates, no shortcut", "all", None, False, 100),
    ("all 22 layers, 9 candidates, zero-init", "all", None, True, 100),
    ("all 22 layers, only k3_e3 / k5_e3", "all", ("k3_e3", "k5_e3"), False, 100),
    ("16 residual layers only, 9 candidates, zero-init", "residual", None, True, 100),
    ("6 transition layers only, 9 candidates, zero-init", "transition", None, True, 100),
    ("6 transition layers only, 9 candidates, shortcut", "transition", None, "shortcut", 100),
    ("all 22 layers, 9 candidates, shortcut (the supernet's default)", "all", None, "shortcut", 100),
    ("one fixed path (k3_e3 everywhere), 300 steps", "none", None, False, 300),
    ("all 22 layers, 9 candidates, shortcut, 300 steps", "all", None, "shortcut", 300),
]
BATCH, LR = 32, 0.02


def pick(net: ProxylessSupernet, which: str, subset, generator: torch.Generator) -> None:
    fixed = net.candidate_names.index(FIXED)
    allowed = [net.candidate_names.index(n) for n in subset] if subset else list(range(len(net.candidate_names)))
    for i, layer in enumerate(net.layers):
        sampled = {"all": True, "none": False, "transition": i in TRANSITIONS, "residual": i not in TRANSITIONS}[which]
        k = allowed[int(torch.randint(len(allowed), (1,), generator=generator))] if sampled else fixed
        layer.active, layer.gates = [k], None


def run(which: str, subset, zero_init, steps: int, data) -> dict[str, float]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = ProxylessSupernet(data.num_classes, shortcut=zero_init == "shortcut")
    if zero_init is True:
        for module in net.modules():
            if isinstance(module, InvertedBottleneck) and module.residual:
                torch.nn.init.zeros_(module.body[-1].weight)
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=4e-5)
    losses, step, start = [], 0, time.perf_counter()
    net.train()
    while step < steps:
        for images, labels in data.loader("train", BATCH, shuffle=True, seed=step):
            pick(net, which, subset, generator)
            loss = F.cross_entropy(net(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
            step += 1
            if step == steps:
                break
    # accuracy of 10 paths drawn the same way, BatchNorm on batch statistics (paths share no running stats)
    images, labels = next(iter(data.loader("val", 512)))
    probe = torch.Generator().manual_seed(123)
    with torch.no_grad():
        accs = []
        for _ in range(10):
            pick(net, which, subset, probe)
            accs.append(100.0 * float((net(images).argmax(1) == labels).float().mean()))
    return {"first": sum(losses[:25]) / 25, "last": sum(losses[-25:]) / 25, "steps": steps,
            "acc": sum(accs) / len(accs), "s": time.perf_counter() - start}


def main() -> None:
    torch.set_num_threads(1)
    data = load_data("digits", resolution=8)
    rows = []
    for name, which, subset, zero_init, steps in SETTINGS:
        r = run(which, subset, zero_init, steps, data)
        print(f"{name}: loss {r['first']:.2f} -> {r['last']:.2f}, val acc {r['acc']:.1f}% ({r['s']:.0f} s)", flush=True)
        rows.append(f"| {name} | {r['first']:.2f} | {r['last']:.2f} | {r['acc']:.1f} |")
    table = "\n".join([
        "# Why the fbnet supernet needs its transition shortcut (weight-step ablation)", "",
        "`experiments/proxyless_supernet_learning.py`: " + __doc__.split("\n\n")[1].replace("\n", " "), "",
        f"Chance: loss ln 10 = {math.log(10):.2f}, accuracy 10%. Loss = mean training cross-entropy of the first "
        "and the last 25 steps; val acc = mean over 10 paths drawn like the training paths, 512 val images.", "",
        "| setting | loss first 25 steps | loss last 25 | val acc % |", "| --- | --- | --- | --- |", *rows, "", ""])
    write_keeping_reading(RESULTS, table)
    print(table)


if __name__ == "__main__":
    main()
