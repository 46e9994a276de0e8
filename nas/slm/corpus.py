"""The text the `slm` search trains on: a frozen extract of the CPython 3.11
standard library's own ``.py`` sources, shipped in the package, never
downloaded.

Files are split into train / validation / test by file (a file's split comes
from a hash of its path), so the validation and test bytes belong to modules
the model never saw. Each split is one xz-compressed text in which every file
starts with a ``# file: <path>`` line. ``stdlib-corpus.json`` records the
Python version, the licence (PSF), every file per split and a sha256 of each
compressed split, which :func:`load_corpus` checks.

Rebuild (reproduces the shipped files byte for byte from the same Python)::

    python -m nas.slm.corpus build [--stdlib DIR] [--out nas/slm/data]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import lzma
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import UserInputError

#: where the shipped corpus lives
DATA_DIR = Path(__file__).resolve().parent / "data"
MANIFEST = "stdlib-corpus.json"
SPLITS = ("train", "validation", "test")
#: byte-level vocabulary: every token is one byte
VOCAB_SIZE = 256

#: folders of the standard library left out: tests, machine-generated tables, installed packages
_EXCLUDED_PARTS = {"test", "tests", "idle_test", "site-packages", "encodings", "__pycache__", "__phello__",
                   "turtledemo", "pydoc_data"}


@dataclass(frozen=True)
class TextCorpus:
    """The three splits as byte arrays (uint8) plus the manifest that describes them."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    manifest: dict[str, Any]

    def split(self, name: str) -> np.ndarray:
        """The bytes of split ``name`` (``train``, ``validation`` or ``test``)."""
        if name not in SPLITS:
            raise UserInputError(f"unknown corpus split {name!r}; allowed: {', '.join(SPLITS)}")
        return getattr(self, name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=4)
def load_corpus(directory: str | None = None) -> TextCorpus:
    """The shipped corpus (or one built into ``directory``), each split's hash checked."""
    folder = Path(directory) if directory else DATA_DIR
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise UserInputError(f"no text corpus at {folder} (missing {MANIFEST}); build one with "
                             f"'python -m nas.slm.corpus build --out {folder}'")
    manifest = json.loads(manifest_path.read_text())
    arrays = {}
    for split in SPLITS:
        entry = manifest["splits"][split]
        path = folder / entry["file"]
        if _sha256(path) != entry["sha256"]:
            raise UserInputError(f"corpus file {path} does not match the sha256 in {manifest_path}; "
                                 f"reinstall the package or rebuild the corpus")
        arrays[split] = np.frombuffer(lzma.decompress(path.read_bytes()), dtype=np.uint8)
    return TextCorpus(**arrays, manifest=manifest)


def split_of(relative_path: str, validation_share: float = 0.05, test_share: float = 0.05) -> str:
    """The split a file belongs to, from a hash of its path (stable across machines)."""
    bucket = int(hashlib.sha256(relative_path.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < test_share:
        return "test"
    if bucket < test_share + validation_share:
        return "validation"
    return "train"


def _stdlib_files(stdlib: Path, max_file_bytes: int) -> list[Path]:
    files = []
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib)
        if _EXCLUDED_PARTS.intersection(relative.parts[:-1]) or relative.parts[0].startswith("config-"):
            continue
        if relative.name.startswith("_sysconfigdata") or path.stat().st_size > max_file_bytes:
            continue  # machine-specific, or one file that would dominate a split
        files.append(path)
    return files


def build_corpus(stdlib: str | Path | None = None, out: str | Path = DATA_DIR, *,
                 max_file_bytes: int = 60_000, max_split_bytes: dict[str, int] | None = None) -> dict[str, Any]:
    """Write the compressed splits and the manifest into ``out``; returns the manifest.

    Files are taken in path order until a split holds ``max_split_bytes`` of
    text (default 2.4 MB train, 300 kB each for validation and test).
    """
    own = stdlib is None
    stdlib = Path(stdlib or sysconfig.get_paths()["stdlib"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    caps = {"train": 2_400_000, "validation": 300_000, "test": 300_000, **(max_split_bytes or {})}
    texts: dict[str, list[bytes]] = {s: [] for s in SPLITS}
    listed: dict[str, list[str]] = {s: [] for s in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    # in hash order, so the caps cut a mix of the whole library rather than its first letters
    ordered = sorted(_stdlib_files(stdlib, max_file_bytes),
                     key=lambda p: hashlib.sha256(p.relative_to(stdlib).as_posix().encode()).hexdigest())
    for path in ordered:
        relative = path.relative_to(stdlib).as_posix()
        split = split_of(relative)
        body = path.read_bytes()
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            continue
        document = b"# file: " + relative.encode() + b"\n" + body.rstrip(b"\n") + b"\n\n"
        if sizes[split] + len(document) > caps[split]:
            continue
        texts[split].append(document)
        listed[split].append(relative)
        sizes[split] += len(document)
    licence = stdlib / "LICENSE.txt"
    manifest: dict[str, Any] = {
        "description": "CPython standard library .py sources (no tests, no generated tables), split by file",
        "python_version": platform.python_version() if own else "unknown",
        "source": str(stdlib),
        "licence": "PSF License Agreement for Python (see LICENSE-PSF.txt)",
        "command": "python -m nas.slm.corpus build",
        "max_file_bytes": max_file_bytes,
        "splits": {},
    }
    if licence.is_file():
        (out / "LICENSE-PSF.txt").write_bytes(licence.read_bytes())
    for split in SPLITS:
        name = f"stdlib-py311.{split}.txt.xz"
        raw = b"".join(texts[split])
        # preset 9 with a fixed check: the same input gives the same bytes
        (out / name).write_bytes(lzma.compress(raw, preset=9, check=lzma.CHECK_CRC64))
        manifest["splits"][split] = {"file": name, "files": listed[split], "num_files": len(listed[split]),
                                     "bytes": len(raw), "text_sha256": hashlib.sha256(raw).hexdigest(),
                                     "sha256": _sha256(out / name)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    load_corpus.cache_clear()
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nas.slm.corpus", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the corpus from a Python standard library")
    build.add_argument("--stdlib", default=None, help="standard library folder (default: this Python's)")
    build.add_argument("--out", default=str(DATA_DIR), help=f"output folder (default {DATA_DIR})")
    args = parser.parse_args(argv)
    manifest = build_corpus(args.stdlib, args.out)
    for split, entry in manifest["splits"].items():
        print(f"{split}: {entry['num_files']} files, {entry['bytes']} bytes -> {entry['file']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
