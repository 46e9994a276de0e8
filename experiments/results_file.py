"""Writing a benchmark's results file without losing its hand-written reading."""

from __future__ import annotations

from pathlib import Path

READING = "## Reading"


def write_keeping_reading(path: Path, text: str) -> None:
    """Write ``text`` (the generated tables) to ``path``; a ``## Reading``
    section already in the file is kept after it, so a rerun refreshes the
    numbers and leaves the interpretation for a person to revisit."""
    old = path.read_text() if path.is_file() else ""
    if READING in old:
        text = text.rstrip("\n") + "\n\n" + old[old.index(READING):]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
