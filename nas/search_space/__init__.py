"""Search spaces, found by name through a registry.

>>> from nas.search_space import get_space, list_spaces
>>> space = get_space("nb201")
"""

from __future__ import annotations

from nas.registry import Registry
from nas.search_space.base import Arch, SearchSpace, count_macs

SPACES: Registry = Registry("search space")
_INSTANCES: dict[str, SearchSpace] = {}

register_space = SPACES.register
list_spaces = SPACES.names


def get_space(name: str) -> SearchSpace:
    """The (shared, stateless) space instance registered as ``name``."""
    if name not in _INSTANCES:
        _INSTANCES[name] = SPACES.lookup(name)()
    return _INSTANCES[name]


# Importing the modules registers their spaces.
from nas.search_space import fbnet, nb201  # noqa: E402,F401

__all__ = ["Arch", "SearchSpace", "count_macs", "get_space", "list_spaces", "register_space"]
