"""Search spaces, found by name through a registry.

>>> from nas.search_space import get_space, list_spaces
>>> space = get_space("nb201")
"""

from __future__ import annotations

import csv
from pathlib import Path

from nas.errors import UserInputError
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



def read_arch_file(path: str | Path, space: str) -> list[tuple[str, ...]]:
    """Architectures of ``space`` listed in a file: one canonical string a line
    (blank lines and ``#`` comments skipped), or a CSV with an ``arch`` column."""
    search_space = get_space(space)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark (Excel) is not part of the text
    except OSError as error:
        raise UserInputError(f"cannot read architecture file {str(path)!r}: {error.strerror}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if lines and "arch" in [c.strip() for c in lines[0].split(",")]:
        lines = [row["arch"] for row in csv.DictReader(lines)]
    if not lines:
        raise UserInputError(f"{str(path)!r} lists no architectures; write one canonical string a line")
    return [search_space.from_string(line) for line in lines]


# Importing the modules registers their spaces.
from nas.search_space import fbnet, nb201, slm  # noqa: E402,F401

__all__ = ["Arch", "SearchSpace", "count_macs", "get_space", "list_spaces", "read_arch_file", "register_space"]
