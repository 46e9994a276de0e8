"""One registry type for everything found by name: search spaces, profilers,
predictor methods, search strategies and accuracy estimators. The command
line's choices come from these registries, never from hand-kept lists."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from nas.errors import UserInputError

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """``name -> entry`` for one kind of thing (``kind`` names it in messages).

    With ``name_attribute``, :meth:`register` also stores the registered name
    on the entry (e.g. ``cls.name``).
    """

    def __init__(self, kind: str, *, name_attribute: str | None = None):
        super().__init__()
        self.kind = kind
        self.name_attribute = name_attribute

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class or factory as ``name``."""
        def decorate(entry: T) -> T:
            if self.name_attribute:
                setattr(entry, self.name_attribute, name)
            self[name] = entry
            return entry
        return decorate

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self)

    def lookup(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name is a user error
        that suggests the closest names and lists all of them."""
        if name in self:
            return self[name]
        close = difflib.get_close_matches(name, list(self), n=2, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UserInputError(f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}")
