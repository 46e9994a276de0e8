"""One latency scale per device and settings: the device's reference level.

A drift-corrected cell is timed as a ratio to a fixed reference model run
right around it, and a ratio is what a noisy device repeats: when the
machine slows down, cell and reference slow down together. What the ratio
is multiplied by decides the level of every stored latency. Taking the
reference's speed during the cell's own rounds gives the machine's level of
that moment, and a virtual machine or a phone can be 30 % slower or faster a
few minutes later, so two stores filled minutes apart disagree by that much.

This module keeps, per user, every reference block ever timed for a device
(under fixed settings, for one space's reference model, on one host) in one
small SQLite file beside the default store, shared by every store and
process. The *level* is the median of the most recent
:data:`WINDOW_BLOCKS` blocks: the device's typical speed, which plain ONNX
Runtime on the device reproduces at a typical moment. The *level spread*
is how far its slower moments sit above it: the reference's median over
each second, at the 90th percentile of those seconds, over the level. A
latency's reported spread says how much slower a user timing it for a
second or so may find it at a slow moment. A lasting change of the device's speed
moves the level as its blocks fill the window.

``$NAS_LEVELS`` names another file.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nas.errors import UserInputError

LEVELS_ENV = "NAS_LEVELS"
#: the level is taken over this many of the latest reference blocks of a key
WINDOW_BLOCKS = 2000
#: blocks kept per key (older ones are dropped as new ones arrive)
KEEP_BLOCKS = 5 * WINDOW_BLOCKS

_SCHEMA = ("CREATE TABLE IF NOT EXISTS reference_blocks (key TEXT NOT NULL, timed_at REAL NOT NULL, "
           "block_ms REAL NOT NULL)")
_INDEX = "CREATE INDEX IF NOT EXISTS reference_blocks_key ON reference_blocks (key, timed_at)"


def default_levels_path() -> Path:
    """``$NAS_LEVELS`` when set, else ``~/.cache/nas/reference-levels.db``."""
    configured = os.environ.get(LEVELS_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "nas" / "reference-levels.db"


def this_host() -> str:
    """A short fingerprint of this machine's processor (model name and ISA flags): the reference
    level of a model timed here belongs to this processor."""
    from nas.machine import processor

    model, flags = processor()
    text = f"{platform.machine()}|{model}|{' '.join(sorted(flags))}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: the device's speed is judged over spans of this many seconds (about what timing a model with a few
#: hundred runs takes): a slow span is what a user timing the model then would find
SPAN_S = 1.0
#: spans with fewer reference blocks than this are not judged; with fewer judged spans than
#: MIN_SPANS the blocks themselves are (a wider, safer spread)
MIN_BLOCKS_PER_SPAN = 3
MIN_SPANS = 5


@dataclass(frozen=True)
class Level:
    """A device's reference level: ``level_ms`` (median block), ``relative_spread`` (how much
    slower its slow moments are: the 90th percentile of its one-second spans' medians over the
    median, minus 1) and how many blocks it rests on."""

    level_ms: float
    relative_spread: float
    blocks: int


def level_of(blocks_ms: Sequence[float], times_s: Sequence[float] | None = None) -> Level:
    """The :class:`Level` of reference blocks (ms each), timed at ``times_s`` (seconds; ``None``:
    unknown, every block judged alone)."""
    values = np.asarray(blocks_ms, dtype=float)
    median = float(np.median(values))
    slow = values
    if times_s is not None:
        spans = np.floor(np.asarray(times_s, dtype=float) / SPAN_S)
        kept = [values[spans == span] for span in np.unique(spans)]
        medians = [float(np.median(v)) for v in kept if len(v) >= MIN_BLOCKS_PER_SPAN]
        if len(medians) >= MIN_SPANS:
            slow = np.asarray(medians)
    upper = float(np.percentile(slow, 90))
    return Level(median, max(upper / median - 1.0, 0.0) if median > 0 else 0.0, len(values))


class ReferenceLevels:
    """The per-user log of reference blocks (see the module docstring); safe to share between processes."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_levels_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None,
                                               check_same_thread=False)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute(_SCHEMA)
            self._connection.execute(_INDEX)
        except (OSError, sqlite3.Error) as error:
            raise UserInputError(f"cannot open the reference-level file {str(self.path)!r}: {error}. "
                                 f"Set ${LEVELS_ENV} to a writable file path.") from None

    def add(self, key: str, blocks_ms: Sequence[float], times_s: Sequence[float] | None = None) -> None:
        """Append reference blocks (ms each) of ``key``, timed at ``times_s`` (``time.time()``
        seconds; ``None``: just now)."""
        now = time.time()
        times_s = [now] * len(blocks_ms) if times_s is None else list(times_s)
        with self._connection:
            self._connection.executemany("INSERT INTO reference_blocks VALUES (?, ?, ?)",
                                         [(key, float(t), float(ms)) for t, ms in zip(times_s, blocks_ms)])
            # the file stays small: blocks far outside the window are dropped
            self._connection.execute(
                "DELETE FROM reference_blocks WHERE key = ? AND rowid NOT IN (SELECT rowid FROM reference_blocks "
                "WHERE key = ? ORDER BY timed_at DESC, rowid DESC LIMIT ?)", (key, key, KEEP_BLOCKS))

    def level(self, key: str) -> Level | None:
        """The level of ``key`` over its latest :data:`WINDOW_BLOCKS` blocks; ``None`` when it has none."""
        rows = self._connection.execute(
            "SELECT block_ms, timed_at FROM reference_blocks WHERE key = ? ORDER BY timed_at DESC, rowid DESC "
            "LIMIT ?", (key, WINDOW_BLOCKS)).fetchall()
        return level_of([row[0] for row in rows], [row[1] for row in rows]) if rows else None

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "ReferenceLevels":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()
