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


def read(path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a checkpoint written by :func:`write`."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            meta = json.loads(str(data[_HEADER]))
            arrays = {k: data[k] for k in data.files if k != _HEADER}
    except FileNotFoundError:
        raise UserInputError(f"predictor checkpoint {os.fspath(path)!r} does not exist; write one with "
                             f"'nas predictor finetune ... --out FILE'") from None
    except (OSError, ValueError, KeyError) as error:
        raise UserInputError(f"{os.fspath(path)!r} is not a predictor checkpoint ({error})") from None
    return meta, arrays
