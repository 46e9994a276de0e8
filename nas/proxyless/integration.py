"""ProxylessNAS inside ``nas search``: strategy ``proxyless`` and the ``fbnet``
accuracy estimator (a trained supernet scoring architectures with shared
weights), so evolution and Optuna can search ``fbnet`` too.
"""

from __future__ import annotations

import dataclasses
import os
import time
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nas.proxyless.data import DATASETS, DataSplits, load_data
from nas.proxyless.latency_table import SPACE, LatencyLookupTable, anchor_archs, fit_to_predictor
from nas.proxyless.search import LATENCY_LOSSES, ProxylessSearch, SearchConfig, check_supernet_format
from nas.proxyless.supernet import SUPERNET_FORMAT, ProxylessSupernet
from nas.search_space import Arch, get_space

try:  # the search package is optional for the rest of nas.proxyless
    from nas.search import (AccuracyEstimator, Candidate, SearchResult, SearchStrategy,
                            register_accuracy_estimator, register_strategy)
except ImportError:  # pragma: no cover - only while nas.search is absent
    AccuracyEstimator = SearchStrategy = object  # type: ignore[misc,assignment]
    register_strategy = register_accuracy_estimator = None  # type: ignore[assignment]

#: where supernets trained for the accuracy estimator are kept (``$NAS_CACHE`` overrides ``~/.cache/nas``)
CACHE_ENV = "NAS_CACHE"


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return (Path(configured).expanduser() if configured else Path.home() / ".cache" / "nas") / "proxyless"


def recalibrate_batchnorm(model: torch.nn.Module, loader, batches: int) -> None:
    """Re-estimate BatchNorm statistics for the active paths: shared weights
    see a different mix of paths in training than any single architecture."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for i, (images, _labels) in enumerate(loader):
            if i >= batches:
                break
            model(images)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


class _SharedPrefixRun:
    """Runs many architectures of one supernet over the same images, layer by
    layer down the tree of their prefixes: layers that architectures share
    (the stem, and every prefix they have in common) are computed once, and
    every BatchNorm uses the statistics of the prefix it sits in, so each
    architecture gets what one network at a time would give
    (:func:`recalibrate_batchnorm`, then evaluation).

    ``calibrate`` passes normalise with batch statistics and accumulate them
    (cumulative average of batch means and unbiased variances, as BatchNorm
    with ``momentum=None``); ``evaluate`` passes use the accumulated ones.
    Statistics are keyed by (BatchNorm, prefix) because a layer's input
    depends only on the layers before it.
    """

    def __init__(self, supernet: ProxylessSupernet):
        self.supernet = supernet
        self.stats: dict[tuple[int, tuple], list] = {}  # -> [sum of means, sum of variances, batches]
        self.calibrating = True

    def _norm(self, bn: torch.nn.BatchNorm2d, x: torch.Tensor, key: tuple) -> torch.Tensor:
        if self.calibrating:
            # momentum 1: the buffers receive this batch's mean and unbiased variance
            mean, var = torch.zeros_like(bn.running_mean), torch.ones_like(bn.running_var)
            out = F.batch_norm(x, mean, var, bn.weight, bn.bias, True, 1.0, bn.eps)
            entry = self.stats.setdefault((id(bn), key), [0.0, 0.0, 0])
            entry[0], entry[1], entry[2] = entry[0] + mean, entry[1] + var, entry[2] + 1
            return out
        total_mean, total_var, batches = self.stats[(id(bn), key)]
        return F.batch_norm(x, total_mean / batches, total_var / batches, bn.weight, bn.bias, False, 0.0, bn.eps)

    def _run(self, module: torch.nn.Module, x: torch.Tensor, key: tuple) -> torch.Tensor:
        if isinstance(module, torch.nn.BatchNorm2d):
            return self._norm(module, x, key)
        if isinstance(module, torch.nn.Sequential):
            for child in module:
                x = self._run(child, x, key)
            return x
        if type(module).__name__ == "InvertedBottleneck":
            out = self._run(module.body, x, key)
            return out + x if module.residual else out
        return module(x)

    def forward(self, images: torch.Tensor, archs: Sequence[Sequence[int]]) -> dict[tuple, torch.Tensor]:
        """Logits of ``images`` for each architecture (candidate indices per layer), keyed by the index tuple."""
        net = self.supernet
        logits: dict[tuple, torch.Tensor] = {}

        def descend(x: torch.Tensor, prefix: tuple, group: list[tuple]) -> None:
            position = len(prefix)
            if position == len(net.layers):
                logits[prefix] = self._run(net.head, x, prefix)
                return
            layer = net.layers[position]
            base = None if layer.shortcut is None else \
                self._run(layer.candidates[layer.shortcut], x, prefix + ("shortcut",))
            for k in sorted({a[position] for a in group}):
                if base is not None and k == layer.shortcut:
                    out = base
                else:
                    out = self._run(layer.candidates[k], x, prefix + (k,))
                    out = out if base is None else base + out
                descend(out, prefix + (k,), [a for a in group if a[position] == k])

        descend(self._run(net.stem, images, ()), (), list(dict.fromkeys(tuple(a) for a in archs)))
        return logits


def shared_weight_accuracy(supernet: ProxylessSupernet, archs: Sequence[Arch], calibration: Sequence[torch.Tensor],
                           images: torch.Tensor, labels: torch.Tensor, *, rows: int = 256) -> list[float]:
    """Accuracy (percent) on ``images``/``labels`` of each architecture run inside ``supernet``,
    BatchNorm recalibrated per architecture on the ``calibration`` batches; all of ``archs``
    in the same passes over the images (``rows`` at a time), the layers they share computed once."""
    index = [tuple(supernet.candidate_names.index(op) for op in arch) for arch in archs]
    runner = _SharedPrefixRun(supernet)
    correct = {key: 0 for key in index}
    with torch.no_grad():
        for batch in calibration:
            runner.forward(batch, index)
        runner.calibrating = False
        for start in range(0, len(images), rows):
            logits = runner.forward(images[start:start + rows], index)
            for key in correct:
                correct[key] += int((logits[key].argmax(1) == labels[start:start + rows]).sum())
    return [100.0 * correct[key] / max(len(images), 1) for key in index]


class SupernetAccuracy(AccuracyEstimator):
    """Validation accuracy (percent) of ``fbnet`` architectures run inside a
    trained supernet (weights shared, BatchNorm recalibrated per architecture).

    ``checkpoint``: a ProxylessNAS checkpoint (``checkpoint.pt`` of a search
    ``--out`` directory). Without one, a supernet is trained with uniform
    path sampling for ``epochs`` on ``data`` (at ``resolution`` pixels;
    default 16 for digits, 32 otherwise) the first time an estimate is
    asked for, and cached under ``$NAS_CACHE/proxyless``.

    Architectures are scored ``group_size`` at a time in shared forward
    passes (:func:`shared_weight_accuracy`) over calibration and validation
    batches loaded once.
    """

    space = SPACE
    cheap = False
    #: evolution / random / Optuna score this many architectures unless told otherwise
    default_evaluations = 200

    def __init__(self, *, checkpoint: str | os.PathLike | None = None, data: str | DataSplits = "digits",
                 data_dir: str | os.PathLike | None = None, resolution: int | None = None, epochs: int = 4, seed: int = 0,
                 calibration_batches: int = 4, supernet: ProxylessSupernet | None = None, group_size: int = 16):
        if resolution is None:  # digits are 8x8 images: 16 px keeps all of them at a quarter of 32 px's cost
            resolution = 16 if data == "digits" else 32
        self._data_spec = (data, data_dir, resolution)
        self._data = data if isinstance(data, DataSplits) else None
        if self._data is None and data not in DATASETS:
            from nas.errors import UserInputError

            raise UserInputError(f"fbnet accuracy data {data!r} is not one of {', '.join(DATASETS)}")
        self.checkpoint, self.epochs, self.seed = checkpoint, int(epochs), int(seed)
        self.calibration_batches = calibration_batches
        self.group_size = max(1, int(group_size))
        self._supernet = supernet
        self._batches: tuple[list[torch.Tensor], torch.Tensor, torch.Tensor] | None = None
        self._cache: dict[Arch, float] = {}
        name = self._data.name if self._data is not None else data
        source = f"checkpoint {checkpoint}" if checkpoint else (
            "the search's supernet" if supernet is not None else f"supernet trained {epochs} epochs")
        self.description = f"{name} validation accuracy inside a weight-sharing supernet ({source}); an estimate"

    @property
    def data(self) -> DataSplits:
        if self._data is None:
            name, data_dir, resolution = self._data_spec
            self._data = load_data(name, data_dir, resolution=resolution)
        return self._data

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return self.data.num_classes

    def adopt(self, supernet: ProxylessSupernet, data: DataSplits) -> None:
        """Score with ``supernet`` (trained on ``data``) from now on, unless a checkpoint was named."""
        if self.checkpoint is None and self._supernet is None:
            self._supernet, self._data = supernet, data
            self._cache.clear()
            self._batches = None
            self.description = (f"{data.name} validation accuracy inside the searched ProxylessNAS supernet "
                                "(weights shared); an estimate")

    def supernet(self) -> ProxylessSupernet:
        if self._supernet is None:
            self._supernet = self._load_or_train()
        return self._supernet

    def _cache_folder(self) -> Path:
        return cache_dir() / (f"supernet-v{SUPERNET_FORMAT}-{self.data.name}-r{self.data.resolution}"
                              f"-e{self.epochs}-s{self.seed}")

    def announce(self) -> str | None:
        """Says that the first estimate trains the supernet (when no trained one is at hand), and where it is kept."""
        if self._supernet is not None or self.checkpoint is not None:
            return None
        folder = self._cache_folder()
        checkpoint = folder / ProxylessSearch.CHECKPOINT
        if checkpoint.is_file():
            done = torch.load(checkpoint, weights_only=False).get("epoch", 0)
            if done >= self.epochs:
                return None
            what = f"continuing the training of the fbnet accuracy supernet (epoch {done + 1} of {self.epochs})"
        else:
            what = f"training the fbnet accuracy supernet first ({self.epochs} epoch{'s' if self.epochs != 1 else ''})"
        sizes = self.data.sizes()
        minutes = self._training_estimate_s() / 60
        return (f"{what} on {self.data.name} ({sizes['train']} training images at {self.data.resolution}x"
                f"{self.data.resolution} px), weights only: it ranks architectures by their accuracy inside it. "
                f"About {minutes:.0f} min on this machine as loaded now (from timing 3 training steps). "
                f"This happens once; the supernet is kept in {folder} for later searches. A line follows each "
                f"epoch, with an ETA")

    def _training_estimate_s(self) -> float:
        """Seconds the supernet training should take here, from the faster of two timed training steps."""
        supernet = ProxylessSupernet(self.data.num_classes)
        optimizer = torch.optim.SGD(supernet.weight_parameters(), lr=0.01, momentum=0.9)
        batch_size = SearchConfig().batch_size
        images, labels = next(iter(self.data.loader("train", batch_size, shuffle=True, seed=self.seed)))
        generator = torch.Generator().manual_seed(self.seed)
        took = []
        for _ in range(3):  # the first step also warms up
            start = time.perf_counter()
            supernet.train()
            supernet.sample_single(generator)
            loss = F.cross_entropy(supernet(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            took.append(time.perf_counter() - start)
        return min(took[1:]) * self.epochs * len(self.data.loader("train", batch_size))

    def _load_or_train(self) -> ProxylessSupernet:
        supernet = ProxylessSupernet(self.data.num_classes)
        if self.checkpoint is not None:
            from nas.errors import UserInputError

            path = Path(self.checkpoint)
            path = path / ProxylessSearch.CHECKPOINT if path.is_dir() else path
            if not path.is_file():
                raise UserInputError(f"supernet checkpoint {str(path)!r} does not exist")
            state = torch.load(path, weights_only=False)
            check_supernet_format(state.get("identity", {}), path, "supernet checkpoint")
            supernet.load_state_dict(state["supernet"])
            return supernet
        folder = self._cache_folder()
        # weights only (warm-up for every epoch): uniform path sampling, alpha untouched
        table = LatencyLookupTable("none", supernet.candidate_names, np.zeros(tuple(supernet.alpha.shape)), 0.0)
        search = ProxylessSearch(self.data, table, 1.0, SearchConfig(epochs=self.epochs, warmup_epochs=self.epochs,
                                                                      seed=self.seed), checkpoint_dir=folder)
        if search.checkpoint_path.is_file():
            search.resume()
        report, started, first_epoch = self.report, time.perf_counter(), search.epoch

        def say(_line: str) -> None:
            if report is None:
                return
            elapsed = time.perf_counter() - started
            left = elapsed / max(search.epoch - first_epoch, 1) * (self.epochs - search.epoch)
            report(f"fbnet accuracy supernet: epoch {search.epoch}/{self.epochs}, training loss "
                   f"{search.history[-1]['weight_loss']:.3f}, {elapsed / 60:.1f} min elapsed"
                   + (f", ETA {left / 60:.1f} min" if search.epoch < self.epochs else ""))

        return search.run(say)

    def _fixed_batches(self) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The calibration batches (64 training images each) and the validation set, loaded once."""
        if self._batches is None:
            calibration = []
            for images, _labels in self.data.loader("train", 64, shuffle=True, seed=self.seed):
                if len(calibration) >= self.calibration_batches:
                    break
                calibration.append(images)
            pairs = list(self.data.loader("val", 256))
            self._batches = (calibration, torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]))
        return self._batches

    def estimate(self, archs: Sequence[Arch]) -> np.ndarray:
        supernet = self.supernet()
        missing = [a for a in dict.fromkeys(tuple(a) for a in archs) if a not in self._cache]
        if missing:
            calibration, images, labels = self._fixed_batches()
            for start in range(0, len(missing), self.group_size):
                group = missing[start:start + self.group_size]
                scores = shared_weight_accuracy(supernet, group, calibration, images, labels)
                self._cache.update(zip(group, scores))
        return np.array([self._cache[tuple(a)] for a in archs], dtype=np.float64)


def table_from_predictor(predictor, name: str = "predictor",
                         measured: tuple[Sequence[Arch], Sequence[float]] | None = None) -> LatencyLookupTable:
    """:func:`~nas.proxyless.latency_table.fit_to_predictor`, named after a fingerprint
    of the adapted predictor and the measurements: they stand for the device
    (checkpoint identity)."""
    predicted = np.asarray(predictor.predict(list(get_space(SPACE).measured_archs())[:100]), dtype=np.float64)
    fingerprint = np.round(np.concatenate([predicted, measured[1] if measured else []]), 4)
    return fit_to_predictor(predictor, f"{name}-{zlib.crc32(fingerprint.tobytes()):08x}", measured=measured)


class ProxylessStrategy(SearchStrategy):
    """ProxylessNAS: trains a path-binarized supernet towards the budget with
    the problem's adapted predictor as latency table, derives the most
    probable architecture (and faster fall-backs for verification), and
    retrains the first one from scratch (``SearchResult.model``,
    ``info['test_accuracy']``)."""

    needs_data = True

    def __init__(self, *, seed: int = 0, num_evaluations: int | None = None, data: str = "digits",
                 data_dir: str | os.PathLike | None = None, epochs: int = 6, retrain_epochs: int | None = None,
                 resolution: int = 32, resume: bool = False, checkpoint_dir: str | os.PathLike | None = None,
                 out: str | os.PathLike | None = None, fallbacks: int = 4, latency_loss: str = "hinge"):
        from nas.search.base import check_positive

        self.seed, self.num_evaluations = int(seed), num_evaluations
        self.data_spec = (data, data_dir, resolution)
        if data not in DATASETS:
            from nas.errors import UserInputError

            raise UserInputError(f"--data {data!r} is not one of {', '.join(DATASETS)}")
        self.epochs = check_positive("epochs", epochs)
        self.retrain_epochs = check_positive("retrain_epochs", retrain_epochs) if retrain_epochs else self.epochs
        self.resume = bool(resume)
        self.checkpoint_dir = checkpoint_dir or out
        self.fallbacks = int(fallbacks)
        if latency_loss not in LATENCY_LOSSES:
            from nas.errors import UserInputError

            raise UserInputError(f"--latency-loss {latency_loss!r} is not one of {', '.join(LATENCY_LOSSES)}")
        self.latency_loss = latency_loss

    @classmethod
    def add_arguments(cls, parser) -> None:
        group = parser.add_argument_group("proxyless (strategy options)")
        group.add_argument("--data", default="digits", choices=DATASETS,
                           help="training data for the supernet (default digits, bundled)")
        group.add_argument("--epochs", type=int, default=6, help="supernet epochs, and retraining epochs")
        group.add_argument("--retrain-epochs", dest="retrain_epochs", type=int, default=None,
                           help="retraining epochs of the found architecture (default: --epochs)")
        group.add_argument("--resolution", type=int, default=32, help="training image size in pixels (default 32)")
        group.add_argument("--latency-loss", dest="latency_loss", default="hinge", choices=LATENCY_LOSSES,
                           help="hinge (default): CE*max(1, E[LAT]/T)^0.6, no pull under the budget; "
                                "mul: CE*(E[LAT]/T)^0.6; add: CE + 0.1*E[LAT] (the ProxylessNAS paper's forms)")
        group.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
        group.add_argument("--checkpoint-dir", dest="checkpoint_dir", default=None,
                           help="where the supernet checkpoint is written each epoch")

    def search(self, problem, progress=None) -> SearchResult:
        from nas.errors import UserInputError
        from nas.proxyless.pipeline import shrink_to_latency
        from nas.proxyless.train import train_architecture

        name, data_dir, resolution = self.data_spec
        data = load_data(name, data_dir, resolution=resolution)
        measured = None
        if problem.measure is not None:  # pin the table's fast and slow ends with measured anchors
            space = get_space(SPACE)
            anchors = anchor_archs()
            known = [(space.from_string(a), ms) for a, ms in problem.samples.items()]
            measured = ([a for a, _ in known] + anchors,
                        [ms for _, ms in known] + [float(ms) for ms in problem.measure(anchors)])
        table = table_from_predictor(problem.predictor, measured=measured)
        config = SearchConfig.for_epochs(self.epochs, seed=self.seed, latency_loss=self.latency_loss)
        # without --checkpoint-dir the checkpoint goes to the cache, under a name --resume finds again
        folder = self.checkpoint_dir or cache_dir() / (
            f"search-{table.device}-{problem.budget_ms:g}ms-{data.name}-r{data.resolution}-s{self.seed}")
        search = ProxylessSearch(data, table, problem.budget_ms, config, checkpoint_dir=folder)
        if self.resume:
            search.resume()
        supernet = search.run()
        probs = supernet.probs().detach().numpy()
        archs: list[Arch] = []
        picks = None
        for k in range(self.fallbacks + 1):
            picks = shrink_to_latency(probs, table, problem.budget_ms * 0.97 ** k, start=picks)
            if picks is None:
                break
            arch = tuple(table.candidates[i] for i in picks)
            if arch not in archs:
                archs.append(arch)
        if not archs:
            raise UserInputError(f"no fbnet architecture is predicted to meet {problem.budget_ms:g} ms")
        estimator = SupernetAccuracy(data=data, supernet=supernet, seed=self.seed)
        accuracy = estimator.estimate(archs)
        if isinstance(problem.accuracy, SupernetAccuracy):
            # the pipeline scores further architectures (the device's reference samples) with the
            # problem's estimator: let it use this supernet rather than train one of its own
            problem.accuracy.adopt(supernet, data)
        error_ms = table.fit.get("mean_abs_error_ms", 0.0)
        candidates = []
        for arch, acc in zip(archs, accuracy):
            predicted = table.arch_latency_ms(arch)
            candidates.append(Candidate(arch, float(acc), predicted, max(predicted - error_ms, 0.0),
                                        predicted + error_ms))
        if progress:
            progress(len(candidates))
        result = SearchResult(self.name, candidates, problem.budget_ms,
                              info={"latency_table": table.fit, "history": search.history})
        best = result.best or candidates[0]
        trained = train_architecture(best.arch, data, epochs=self.retrain_epochs, batch_size=config.batch_size,
                                     seed=self.seed)
        result.model = trained.model
        # the derived architecture was really trained: rank it by its retrained validation accuracy,
        # not by the shared-weight estimate that the other candidates (and the pipeline's extras) carry
        result.candidates = [dataclasses.replace(c, accuracy=trained.val_accuracy) if c.arch == best.arch else c
                             for c in result.candidates]
        result.info.update(test_accuracy=trained.test_accuracy, val_accuracy=trained.val_accuracy,
                           retrained_arch=get_space(SPACE).to_string(best.arch))
        return result


if register_strategy is not None:
    register_strategy("proxyless")(ProxylessStrategy)

    @register_accuracy_estimator(SPACE)
    def _fbnet_accuracy(dataset: str | None = None, **options: Any) -> SupernetAccuracy:
        """``dataset`` (the ``nas search --dataset`` value) names the supernet's training data,
        one of ``DATASETS`` (default ``digits``); ``data_dir`` where ``cifar10`` / ``imagefolder`` are.
        Any other name is refused: an estimate is never silently made on other data."""
        if dataset is not None and dataset not in DATASETS:
            from nas.errors import UserInputError

            raise UserInputError(f"--dataset {dataset} does not apply to fbnet: its accuracy comes from a supernet "
                                 f"trained on one of {', '.join(DATASETS)} (digits is bundled; cifar10 and "
                                 f"imagefolder need --data-dir). Give one of those, or leave --dataset out for digits")
        return SupernetAccuracy(**({"data": dataset, **options} if dataset is not None else options))
