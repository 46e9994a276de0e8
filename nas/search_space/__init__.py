"""Search spaces, found by name through a registry.

>>> from nas.search_space import get_space, list_spaces
>>> space = get_space("nb201")
"""

from __future__ import annotations

from typing import Callable

from nas.errors import UserInputError
from nas.search_space.base import Arch, SearchSpace, count_macs

_REGISTRY: dict[str, Callable[[], SearchSpace]] = {}
_INSTANCES: dict[str, SearchSpace] = {}


def register_space(name: str):
    """Class decorator: make a space available as ``get_space(name)``."""
    def decorate(cls):
        _REGISTRY[name] = cls
        return cls
    return decorate


def list_spaces() -> list[str]:
    return sorted(_REGISTRY)


def get_space(name: str) -> SearchSpace:
    """The (shared, stateless) space instance registered as ``name``."""
    if name not in _REGISTRY:
        raise UserInputError(f"unknown search space {name!r}; available: {', '.join(list_spaces())}")
    if name not in _INSTANCES:
        _INSTANCES[name] = _REGISTRY[name]()
    return _INSTANCES[name]


# Importing the modules registers their spaces.
from nas.search_space import fbnet, nb201  # noqa: E402,F401

__all__ = ["Arch", "SearchSpace", "count_macs", "get_space", "list_spaces", "register_space"]
