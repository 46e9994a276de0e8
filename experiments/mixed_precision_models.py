"""The CNNs of the mixed-precision benchmark and how they are trained.

A ResNet-style network (basic residual blocks, batch norm, 16-32-64
channels) and a MobileNetV2-style network (inverted residual blocks with
depthwise convolutions and ReLU6), both for 28x28 grey Fashion-MNIST images.
Trained here for a few epochs with SGD and a cosine schedule; the trained
model is exported to ONNX (opset 17) next to its training record.

    nice -n 19 .venv/bin/python experiments/mixed_precision_models.py --work DIR

With ``--device cuda`` the networks train on a GPU and only their weights
(``NAME.pt``, ``NAME.json``) are written; a later run on the CPU machine
without ``--device`` exports the ONNX models from those weights with this
machine's exporter, so the benchmark reads models exported like every other.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.export import export_module  # noqa: E402
from nas.quantization.data import load_quantization_data  # noqa: E402


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def resnet(num_classes: int = 10, widths=(16, 32, 64), blocks: int = 2) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    c_in = widths[0]
    for stage, width in enumerate(widths):
        for block in range(blocks):
            layers.append(BasicBlock(c_in, width, 2 if stage > 0 and block == 0 else 1))
            c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def mobilenet_v2(num_classes: int = 10) -> nn.Module:
    # (expansion, channels, blocks, first stride), MobileNetV2's table scaled down for 28x28 inputs
    settings = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2)]
    layers: list[nn.Module] = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()]
    c_in = 16
    for expand, channels, blocks, stride in settings:
        for block in range(blocks):
            layers.append(InvertedResidual(c_in, channels, stride if block == 0 else 1, expand))
            c_in = channels
    layers += [nn.Conv2d(c_in, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes)]
    return nn.Sequential(*layers)


MODELS = {"resnet": resnet, "mobilenetv2": mobilenet_v2}


def train(name: str, data, epochs: int, seed: int = 0, batch_size: int = 128, lr: float = 0.1,
          train_images: int | None = None, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Train model ``name`` on the first ``train_images`` of ``data.train`` (all: ``None``) on torch
    ``device``; returns it (on the CPU) and a record (validation and test accuracy, %)."""
    torch.manual_seed(seed)
    model = MODELS[name]().to(device)
    images = torch.from_numpy(data.train.images[:train_images]).to(device)
    labels = torch.from_numpy(data.train.labels[:train_images]).to(device)
    steps = epochs * math.ceil(len(labels) / batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for i in range(0, len(labels), batch_size):
            batch = order[i:i + batch_size].to(device)
            x = images[batch]
            # random horizontal flips and 2-pixel shifts
            flip = (torch.rand(len(batch), generator=generator) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
            x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
            loss = nn.functional.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
            if (i // batch_size) % 50 == 0:
                print(f"{name} epoch {epoch + 1} step {i // batch_size} loss {float(loss.detach()):.3f} "
                      f"({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
        val = accuracy(model.cpu(), data.validation)
        model.to(device)
        print(f"{name} epoch {epoch + 1}/{epochs}: train loss {total / len(labels):.4f}, validation accuracy "
              f"{val:.2f}% ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    model = model.cpu()
    record = {"model": name, "epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr,
              "validation_accuracy": accuracy(model, data.validation), "test_accuracy": accuracy(model, data.test),
              "train_images": len(labels), "wall_s": round(time.time() - start, 1), "device": str(device)}
    return model.eval(), record


def train_language_model(arch: str, steps: int, device: str = "cpu", batch_size: int = 64, context: int = 256,
                         lr: float = 2e-3, seed: int = 0, max_s: float = 240.0) -> tuple[nn.Module, dict]:
    """Train the ``slm`` architecture ``arch`` on the corpus's train split for ``steps`` AdamW steps
    (cosine schedule, stopping early after ``max_s`` seconds) on torch ``device``; returns it (on the
    CPU) and a record with its validation and test bits per byte."""
    from nas.search_space import get_space
    from nas.slm.corpus import load_corpus
    from nas.slm.training import bits_per_byte, cosine_schedule, next_byte_loss, random_windows

    torch.manual_seed(seed)
    space = get_space("slm")
    model = space.build(space.from_string(arch)).to(device)
    corpus = load_corpus()
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    plan = {"steps": steps}  # shortened after 10 steps to what fits in max_s, so the schedule still ends
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_schedule(s, plan["steps"], 0.05, 0.1))
    start, done = time.time(), 0
    for step in range(steps):
        if step == 10:
            plan["steps"] = min(steps, int(max_s / ((time.time() - start) / 10)))
        if step >= plan["steps"]:
            break
        window = random_windows(corpus.train, batch_size, context + 1, rng).to(device)
        loss = next_byte_loss(model, window)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        done = step + 1
        if step % 100 == 0:
            print(f"slm step {step}/{steps} bits/byte {float(loss.detach()) / math.log(2):.3f} "
                  f"({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    model = model.cpu().eval()
    record = {"model": "slm", "arch": arch, "steps": done, "tokens": done * batch_size * context, "lr": lr,
              "validation_bpb": bits_per_byte(model, corpus.validation, context=context),
              "test_bpb": bits_per_byte(model, corpus.test, context=context),
              "wall_s": round(time.time() - start, 1), "device": str(device)}
    return model, record


@torch.no_grad()
def accuracy(model: nn.Module, split, batch_size: int = 500) -> float:
    model.eval()
    correct = sum(int((model(torch.from_numpy(x)).argmax(1) == torch.from_numpy(y)).sum()) for x, y in
                  split.batches(batch_size))
    return 100.0 * correct / len(split)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder for the trained models (NAME.onnx, NAME.json)")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder (default: the Debian package's)")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=15000, help="training images used (of 55,000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None,
                        help="torch device to train on (e.g. cuda): writes weights only, export on the CPU machine")
    parser.add_argument("--slm", metavar="ARCH", help="also train this slm architecture (folder slm/: decode.onnx)")
    parser.add_argument("--slm-steps", type=int, default=1500, help="AdamW steps of the slm model")
    parser.add_argument("--slm-max-s", type=float, default=240.0,
                        help="training time of the slm model (s); the cosine schedule is shortened to fit")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.slm:
        from nas.search_space import get_space
        from nas.search_space.slm.graphs import export_decode

        folder = work / "slm"
        folder.mkdir(exist_ok=True)
        if (folder / "slm.json").is_file():
            space = get_space("slm")
            model = space.build(space.from_string(json.loads((folder / "slm.json").read_text())["arch"]))
            model.load_state_dict(torch.load(folder / "slm.pt", map_location="cpu"))
        else:
            model, record = train_language_model(args.slm, args.slm_steps, device=args.device or "cpu",
                                                 max_s=args.slm_max_s)
            torch.save(model.state_dict(), folder / "slm.pt")
            (folder / "slm.json").write_text(json.dumps(record, indent=2) + "\n")
            print(json.dumps(record), flush=True)
        if args.device is None and not (folder / "decode.onnx").is_file():
            export_decode(model.eval(), folder / "decode.onnx")
            (folder / "result.json").write_text(json.dumps({"context": 512, "arch": args.slm}) + "\n")
    data = load_quantization_data("fashion-mnist", args.data_dir) if args.models else None
    for name in args.models:
        if (work / f"{name}.json").is_file():
            print(f"{name}: already trained in {work}", file=sys.stderr)
            model = MODELS[name]()
            model.load_state_dict(torch.load(work / f"{name}.pt", map_location="cpu"))
            model.eval()
        else:
            model, record = train(name, data, args.epochs, train_images=args.train_images,
                                  device=args.device or "cpu")
            torch.save(model.state_dict(), work / f"{name}.pt")
            (work / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
            print(json.dumps(record), flush=True)
        if args.device is None and not (work / f"{name}.onnx").is_file():
            export_module(model, (1, 28, 28), work / f"{name}.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
