"""ProxylessNAS end to end: :func:`run_proxyless_search`.

1. fit the device's per-(layer, candidate) latency table (see
   :mod:`nas.proxyless.latency_table`);
2. train the path-binarized supernet towards the budget (resumable);
3. derive the most probable architecture and, when the table or the device
   says it is over budget, give up the least probable latency first
   (:func:`derive_within_budget`) until a measurement meets the budget;
4. retrain it from scratch, report test accuracy, export ``model.onnx``
   with the trained weights.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nas import package_versions
from nas.budget import parse_latency_ms
from nas.devices import Device, get_device
from nas.errors import UserInputError
from nas.proxyless.data import DataSplits, load_data
from nas.proxyless.latency_table import SPACE, LatencyLookupTable, build_lookup_table
from nas.proxyless.search import ProxylessSearch, SearchConfig
from nas.proxyless.train import train_architecture
from nas.search_space import Arch, get_space

#: measures architectures on the device, returning milliseconds in order
MeasureFunction = Callable[[Sequence[Arch]], list[float]]


def shrink_to_latency(probs: np.ndarray, table: LatencyLookupTable, limit_ms: float,
                      start: Sequence[int] | None = None) -> list[int] | None:
    """Candidate indices per layer whose table latency is <= ``limit_ms``.

    Starts from the most probable candidates (or ``start``) and repeatedly
    makes the swap that loses the least log-probability per millisecond
    saved; ``None`` when even the fastest choices exceed ``limit_ms``.
    """
    log_p = np.log(np.clip(probs, 1e-12, None))
    picks = list(probs.argmax(1) if start is None else start)
    lat = table.latency_ms
    rows = np.arange(len(picks))
    while table.base_ms + lat[rows, picks].sum() > limit_ms:
        current = lat[rows, picks][:, None]
        saved = current - lat
        cost = (log_p[rows, picks][:, None] - log_p) / np.where(saved > 1e-9, saved, np.nan)
        if np.all(np.isnan(cost)):
            return None
        layer, cand = np.unravel_index(np.nanargmin(cost), cost.shape)
        picks[layer] = int(cand)
    return [int(p) for p in picks]


def derive_within_budget(probs: np.ndarray, table: LatencyLookupTable, budget_ms: float,
                         measure: MeasureFunction | None = None, *, max_measurements: int = 6,
                         margin: float = 0.97) -> dict[str, Any]:
    """The most probable architecture that meets ``budget_ms``.

    With ``measure`` every proposal is measured; after a miss the table is
    rescaled by the measured/table ratio and the limit tightened by
    ``margin``, so each retry is faster. Never returns an architecture
    measured over budget: raises :class:`UserInputError` instead. Without
    ``measure`` (replayed devices cannot time new architectures) the table
    alone decides and ``measured_latency_ms`` is ``None``.
    """
    names = table.candidates
    trail: list[dict[str, Any]] = []
    scale, limit = 1.0, budget_ms
    picks = None
    for attempt in range(max(1, max_measurements)):
        picks = shrink_to_latency(probs, table, limit / scale, start=picks)
        if picks is None:
            break
        arch = tuple(names[k] for k in picks)
        predicted = table.arch_latency_ms(arch)
        if measure is None:
            return {"arch": arch, "predicted_latency_ms": predicted, "measured_latency_ms": None, "trail": trail}
        measured = float(measure([arch])[0])
        trail.append({"arch": " ".join(arch), "table_latency_ms": predicted, "measured_latency_ms": measured,
                      "meets_budget": measured <= budget_ms})
        if measured <= budget_ms:
            return {"arch": arch, "predicted_latency_ms": predicted, "measured_latency_ms": measured, "trail": trail}
        # a table that predicts (almost) nothing for this path would make the ratio infinite: floor it
        scale = max(scale, measured / max(predicted, 1e-3 * budget_ms))
        limit = budget_ms * margin ** (attempt + 1)
    fastest = min(trail, key=lambda t: t["measured_latency_ms"], default=None)
    floor = f"; the fastest measured was {fastest['measured_latency_ms']:.2f} ms" if fastest else ""
    raise UserInputError(f"no architecture met the {budget_ms:g} ms budget after {len(trail)} measurements{floor}. "
                         f"The fastest fbnet architecture (all 'skip') needs about "
                         f"{table.arch_latency_ms(('skip',) * len(probs)):.2f} ms on {table.device} by the "
                         "latency table; try a larger --latency")


def run_proxyless_search(device: str | Device, latency: str | float, *, data: str | DataSplits = "digits",
                         data_dir: str | os.PathLike | None = None, epochs: int = 6,
                         retrain_epochs: int | None = None, resolution: int = 32,
                         out: str | os.PathLike | None = None, resume: bool = False, seed: int = 0,
                         store: Any = None, max_measurements: int = 6, config: SearchConfig | None = None,
                         table: LatencyLookupTable | None = None,
                         progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Search ``fbnet`` with ProxylessNAS for ``device`` under ``latency`` (e.g. ``"2ms"``).

    Trains the supernet ``epochs`` epochs on ``data`` (``digits``, ``cifar10``,
    ``imagefolder``, or prepared :class:`DataSplits`), retrains the found architecture ``retrain_epochs``
    (default ``epochs``) from scratch and returns a JSON-ready dict: ``arch``,
    ``predicted_latency_ms`` (table), ``measured_latency_ms`` (device),
    ``test_accuracy`` / ``val_accuracy`` (percent), ``device_samples``,
    ``latency_table`` (fit report), ``history``, timings, ``warnings`` (e.g. a test
    accuracy near chance: the network has not learned the task). ``out`` receives the
    checkpoint (``--resume`` continues from it), ``model.onnx`` with the
    trained weights and ``result.json``. ``store`` is the measurement store
    of :func:`nas.profilers.measure`; ``table`` skips fitting one.
    """
    started = time.perf_counter()
    say = progress or (lambda _message: None)
    budget_ms = parse_latency_ms(latency)
    device = get_device(device) if isinstance(device, str) else device
    if device.spaces and SPACE not in device.spaces:
        raise UserInputError(f"device {device.name!r} has data only for {', '.join(device.spaces)}, not {SPACE}")
    if resume and out is None:
        raise UserInputError("--resume needs --out: the directory holding the interrupted search's checkpoint")
    config = config or SearchConfig.for_epochs(epochs, seed=seed)
    data_splits = data if isinstance(data, DataSplits) else load_data(data, data_dir, resolution=resolution)
    measurable = device.profiler_kind != "replay"
    device_samples = 0

    def measure(archs: Sequence[Arch]) -> list[float]:
        nonlocal device_samples
        from nas.profilers import measure as measure_device

        records = measure_device(device, SPACE, list(archs), store=store)
        device_samples += len(records)
        return [r.latency_ms for r in records]

    search = None
    if resume:
        search = _resumed(out, data_splits, budget_ms, config, say)
        table = search.table
    if table is None:
        table, _ = build_lookup_table(device, measure=measure if measurable else None, progress=say)
        say(f"latency table of {device.name}: {_fit_line(table)}")
    if search is None:
        search = ProxylessSearch(data_splits, table, budget_ms, config, checkpoint_dir=out)
    supernet = search.run(say)
    probs = supernet.probs().detach().numpy()
    found = derive_within_budget(probs, table, budget_ms, measure if measurable else None,
                                 max_measurements=max_measurements)
    arch = found["arch"]
    say(f"derived {' '.join(arch)}: table {found['predicted_latency_ms']:.2f} ms, measured "
        f"{found['measured_latency_ms'] if found['measured_latency_ms'] is None else round(found['measured_latency_ms'], 3)} ms")
    trained = train_architecture(arch, data_splits, epochs=retrain_epochs or config.epochs,
                                 batch_size=config.batch_size, seed=seed, progress=say)
    from nas.search.pipeline import chance_level_warning

    warnings = [w for w in [chance_level_warning(trained.test_accuracy, data_splits.num_classes,
                                                 "the retrained network's test accuracy")] if w]
    for warning in warnings:
        say(f"warning: {warning}")
    result = {
        "strategy": "proxyless", "space": SPACE, "device": device.name, "budget_ms": budget_ms,
        "status": "verified" if found["measured_latency_ms"] is not None else "predicted",
        "arch": get_space(SPACE).to_string(arch),
        "predicted_latency_ms": found["predicted_latency_ms"],
        "measured_latency_ms": found["measured_latency_ms"],
        "accuracy": trained.test_accuracy, "test_accuracy": trained.test_accuracy,
        "val_accuracy": trained.val_accuracy, "dataset": data_splits.name,
        "resolution": data_splits.resolution,
        "device_samples": device_samples, "verification": found["trail"],
        "latency_table": table.fit, "search_epochs": config.epochs, "retrain_epochs": trained.epochs,
        "search_wall_s": search.wall_s, "retrain_wall_s": trained.wall_s,
        "history": search.history, "seed": seed, "versions": package_versions(),
        "num_classes": data_splits.num_classes, "warnings": warnings,
        "arch_probabilities": {name: probs[:, i].round(4).tolist() for i, name in enumerate(table.candidates)},
    }
    if out is not None:
        from nas.export import export_module

        out_dir = Path(out)
        result["onnx_path"] = str(export_module(trained.model, get_space(SPACE).input_shape, out_dir / "model.onnx"))
        result["wall_s"] = time.perf_counter() - started
        (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    result["wall_s"] = time.perf_counter() - started
    return result


def _resumed(out, data_splits, budget_ms: float, config: SearchConfig, say) -> ProxylessSearch:
    import torch

    path = Path(out) / ProxylessSearch.CHECKPOINT
    if not path.is_file():
        raise UserInputError(f"--resume: no checkpoint at {path}; run once with --out {out} (without --resume)")
    table = LatencyLookupTable.from_dict(torch.load(path, weights_only=False)["table"])
    search = ProxylessSearch(data_splits, table, budget_ms, config, checkpoint_dir=out)
    search.resume()
    say(f"resumed from {path} after epoch {search.epoch}/{config.epochs}")
    return search


def _fit_line(table: LatencyLookupTable) -> str:
    fit = table.fit
    parts = [fit.get("source", "")]
    if "r2" in fit:
        parts.append(f"held-out R^2 {fit['r2']:.3f}, Spearman {fit['spearman']:.3f}")
    if "vs_measured" in fit:
        parts.append(f"vs {fit.get('n_measured', 'the')} measurements: Spearman {fit['vs_measured']['spearman']:.3f}")
    return "; ".join(p for p in parts if p)
