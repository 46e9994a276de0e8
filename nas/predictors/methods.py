"""Getting a ready predictor of any method: meta-train it, load its shipped
checkpoint, or adapt the default one to a device (what the CLI calls)."""

from __future__ import annotations

from importlib import resources
from typing import Callable, Mapping

from nas import benchmarks
from nas.errors import UserInputError
from nas.predictors.base import LatencyPredictor
from nas.predictors.registry import predictor_class


def shipped_checkpoint_path(space: str, method: str = "default"):
    """Where a pretrained checkpoint of ``method`` for ``space`` ships in the package."""
    return resources.files("nas").joinpath("data", "checkpoints", f"{space}_{method}.npz")


def meta_train(method: str, space: str, seed: int = 0, log: Callable[[str], None] | None = None,
               **options) -> LatencyPredictor:
    """An unadapted predictor of ``method``, meta-trained (seeded) on the
    meta-train devices of ``space``; methods without meta-training are just
    built. ``options`` go to the method's ``meta_train`` (e.g. ``config``)."""
    benchmarks.help_protocol(space)
    cls = predictor_class(method)
    if hasattr(cls, "meta_train"):
        return cls.meta_train(space, seed=seed, log=log, **options)
    try:
        return cls(space, seed=seed)
    except TypeError:
        return cls(space)


def trained_predictor(method: str, space: str, seed: int = 0,
                      log: Callable[[str], None] | None = None) -> LatencyPredictor:
    """The shipped checkpoint of ``method`` when there is one (seed 0), else a
    freshly meta-trained predictor."""
    from nas.predictors import DEFAULT_METHOD, load_predictor

    cls = predictor_class(method)
    name = "default" if method == DEFAULT_METHOD else method
    path = shipped_checkpoint_path(space, name)
    if seed == 0 and path.is_file():
        predictor = load_predictor(path)
        if predictor.name == cls.name:
            return predictor
    return meta_train(method, space, seed, log)


def finetune(space: str, measurements: Mapping[str, float] | None = None, device: str | None = None,
             progress: bool = False) -> LatencyPredictor:
    """The default predictor of ``space`` adapted to one device, from given
    ``measurements`` ({canonical arch: ms}, including the 10 reference
    architectures) or by measuring (or replaying) the references on ``device``."""
    from nas.predictors import load_default_predictor, reference_archs

    if (measurements is None) == (device is None):
        raise UserInputError("give either measurements or a device to measure, not both or neither")
    if device is not None:
        from nas import profilers
        from nas.search_space import get_space

        archs = reference_archs(space)
        if hasattr(profilers, "measure"):
            records = profilers.measure(device, space, archs, progress=progress)
        else:
            records = profilers.make_profiler(device).measure(space, archs)
        search_space = get_space(space)
        measurements = {search_space.to_string(a): r.latency_ms for a, r in zip(archs, records)}
    return load_default_predictor(space).adapt(measurements)
