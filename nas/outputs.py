"""Checking, before any work starts, that the files a command will write can be written.

A long search or measurement that fails at its last step because ``--out``
points into a read-only folder loses its result; these checks turn that into
an immediate :class:`UserInputError` (exit 2) naming the path and the reason.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nas.errors import UserInputError


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_folder(folder: Path, what: str, option: str) -> None:
    """Create and delete a file in ``folder``: the only check that sees read-only mounts, ACLs and full disks."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nas-write-check-"):
            pass
    except OSError as error:
        raise UserInputError(f"{option}: cannot write {what} in {str(folder)!r} ({error.strerror}); "
                             f"choose a folder you can write to") from None


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Raise :class:`UserInputError` unless a file can be written at ``path``
    (its folder may still have to be created). Returns ``path`` as a Path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserInputError(f"{option}: {str(path)!r} is a folder; give the path of the file to write")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserInputError(f"{option}: {str(path)!r} exists and is not writable; choose another path")
    existing = _nearest_existing(path.parent.absolute())
    if not existing.is_dir():
        raise UserInputError(f"{option}: cannot create {str(path)!r}: {str(existing)!r} is a file, not a folder")
    _probe_folder(existing, "files", option)
    return path


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Raise :class:`UserInputError` unless ``path`` is (or can be created as) a
    writable folder. Creates nothing. Returns ``path`` as a Path."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserInputError(f"{option}: {str(path)!r} is a file; give a folder to write the results in")
    existing = _nearest_existing(path.absolute())
    if not existing.is_dir():
        raise UserInputError(f"{option}: cannot create folder {str(path)!r}: {str(existing)!r} is a file")
    _probe_folder(existing, "results", option)
    return path
