"""Latency predictors: HELP (meta-learned, few-shot), its baselines and the
default predictor.

>>> from nas import predictors
>>> predictor = predictors.load_default_predictor("nb201").adapt(measurements)
>>> predicted_ms, low_ms, high_ms = predictor.predict_interval(archs, coverage=0.9)
"""

from __future__ import annotations

from nas import benchmarks
from nas.errors import UserInputError
from nas.predictors import checkpoint, measurements
from nas.predictors.base import LatencyPredictor
from nas.predictors.methods import finetune, meta_train, shipped_checkpoint_path, trained_predictor
from nas.predictors.registry import create_predictor, list_predictors, predictor_class, register_predictor
from nas.predictors import baselines, help  # noqa: F401  (register their methods)
from nas.predictors.stacked import StackedPredictor
from nas.predictors.transfer import TransferPredictor
from nas.search_space import Arch, get_space

#: the method ``load_default_predictor`` ships a checkpoint of
DEFAULT_METHOD = "stacked"


def reference_archs(space: str) -> list[Arch]:
    """The 10 HELP reference architectures of ``space``: measure these on a
    new device; they form its hardware embedding and few-shot training set."""
    search_space = get_space(space)
    return [search_space.from_index(i) for i in benchmarks.help_protocol(space).reference_indices]


def default_checkpoint_path(space: str):
    """Where the shipped, meta-trained checkpoint of the default predictor lives."""
    return shipped_checkpoint_path(space, "default")


def load_predictor(path) -> LatencyPredictor:
    """A predictor saved with ``LatencyPredictor.save`` (adapted or not)."""
    meta, arrays = checkpoint.read(path)
    cls = predictor_class(meta["method"])
    try:
        return cls.from_state(meta["space"], meta, arrays)
    except UserInputError:
        raise
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as error:  # arrays that do not fit the method
        raise checkpoint.unreadable(path, f"its arrays do not fit a {meta['method']!r} predictor of space "
                                          f"{meta['space']!r} ({type(error).__name__}: {error})") from None


def load_default_predictor(space: str) -> LatencyPredictor:
    """The default predictor of ``space`` from its shipped checkpoint, not yet
    adapted: call ``.adapt(measurements)`` with the device's reference
    measurements, then ``.predict`` / ``.predict_interval``."""
    get_space(space)
    benchmarks.help_protocol(space)
    path = default_checkpoint_path(space)
    if path.is_file():
        return load_predictor(path)
    return create_predictor(DEFAULT_METHOD, space)


__all__ = ["DEFAULT_METHOD", "LatencyPredictor", "StackedPredictor", "TransferPredictor", "create_predictor", "default_checkpoint_path", "finetune", "meta_train",
           "list_predictors", "load_default_predictor", "load_predictor", "reference_archs", "register_predictor", "shipped_checkpoint_path", "trained_predictor"]
