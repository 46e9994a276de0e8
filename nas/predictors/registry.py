"""Predictor methods by name: ``register_predictor`` / ``create_predictor`` /
``list_predictors``; the CLI's ``--method`` choices come from here."""

from __future__ import annotations

from typing import Any, Callable

from nas.errors import UserInputError

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_predictor(name: str):
    """Class decorator: make a predictor available as ``create_predictor(name, space)``."""
    def decorate(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorate


def list_predictors() -> list[str]:
    return sorted(_REGISTRY)


def predictor_class(name: str):
    if name not in _REGISTRY:
        raise UserInputError(f"unknown predictor method {name!r}; available: {', '.join(list_predictors())}")
    return _REGISTRY[name]


def create_predictor(name: str, space: str, **options: Any):
    """A fresh (unadapted, untrained) predictor of method ``name`` for ``space``."""
    return predictor_class(name)(space, **options)
