"""Predictor checkpoints: one ``.npz`` file of plain arrays plus a JSON
header, read back with ``allow_pickle=False`` (nothing is unpickled)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from nas.errors import UserInputError

_HEADER = "__meta__"


def write(path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``meta`` (json-able) and ``arrays`` to ``path``, atomically."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        np.savez_compressed(handle, **{_HEADER: np.array(json.dumps(meta))},
                            **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)


#: how to get a good checkpoint back, said with every refusal
REBUILD_HINT = ("rebuild it: 'nas predictor finetune ... --out FILE' writes an adapted predictor, "
                "'nas predictor meta-train ... --out FILE' a meta-trained one; a checkpoint shipped with nas "
                "comes back by reinstalling the package")


def unreadable(path, reason: str) -> UserInputError:
    """The error for a file that is not a usable predictor checkpoint: which file, why, how to rebuild it."""
    return UserInputError(f"{os.fspath(path)!r} is not a usable predictor checkpoint: {reason}; {REBUILD_HINT}")


def read(path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a checkpoint written by :func:`write`.

    A missing, truncated, corrupted or foreign file raises
    :class:`UserInputError` naming the file and how to rebuild it.
    """
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise unreadable(path, "it holds a single array, not the archive of arrays a checkpoint is")
            if _HEADER not in data.files:
                raise unreadable(path, "it has no header naming the predictor method and space")
            meta = json.loads(str(data[_HEADER]))
            arrays = {k: data[k] for k in data.files if k != _HEADER}  # reads (and CRC-checks) every array
    except FileNotFoundError:
        raise UserInputError(f"predictor checkpoint {os.fspath(path)!r} does not exist; write one with "
                             f"'nas predictor finetune ... --out FILE'") from None
    except (IsADirectoryError, PermissionError) as error:
        raise UserInputError(f"cannot read predictor checkpoint {os.fspath(path)!r}: {error.strerror}") from None
    except UserInputError:
        raise
    except ValueError as error:
        if "pickle" in str(error):  # numpy refuses object arrays: not a file this package wrote
            raise unreadable(path, "it is not an archive of plain arrays (it would need unpickling, "
                                   "which is never done)") from None
        raise unreadable(path, f"it is damaged or not a checkpoint ({error})") from None
    except Exception as error:  # zipfile, zlib and numpy format errors of a truncated or bit-flipped file
        raise unreadable(path, f"it is truncated or corrupted ({type(error).__name__}: {error})") from None
    if not isinstance(meta, dict) or not {"method", "space"} <= set(meta):
        raise unreadable(path, "its header does not name the predictor method and space")
    return meta, arrays
