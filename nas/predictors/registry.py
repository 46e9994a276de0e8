"""Predictor methods by name: ``register_predictor`` / ``create_predictor`` /
``list_predictors``; the CLI's ``--method`` choices come from here."""

from __future__ import annotations

from typing import Any

from nas.registry import Registry

PREDICTORS: Registry = Registry("predictor method", name_attribute="name")

register_predictor = PREDICTORS.register
list_predictors = PREDICTORS.names
predictor_class = PREDICTORS.lookup


def create_predictor(name: str, space: str, **options: Any):
    """A fresh (unadapted, untrained) predictor of method ``name`` for ``space``."""
    return predictor_class(name)(space, **options)
