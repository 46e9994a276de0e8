"""Reading a device's latency measurements from a CSV file.

Format: header ``arch,latency_ms``, then one canonical architecture string
and its latency in milliseconds per line. Further columns after these two
(as in the CSV ``nas profile --out`` writes) are allowed and ignored. The file must contain the 10
HELP reference architectures (``nas predictor reference-archs``).
"""

from __future__ import annotations

import csv
import math
import os

from nas.errors import UserInputError
from nas.search_space import get_space

HEADER = ("arch", "latency_ms")


def read_measurements_csv(path, space: str, require_reference: bool = True) -> dict[str, float]:
    """``{canonical arch string: latency_ms}`` from ``path``.

    Raises :class:`UserInputError` (naming the line) for a bad header, an
    unparsable architecture or latency, a negative / zero latency or a
    duplicate architecture, and (naming it) for a missing reference
    architecture when ``require_reference``.
    """
    from nas.predictors import reference_archs

    search_space = get_space(space)
    path = os.fspath(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # utf-8-sig: Excel writes a byte-order mark
    except OSError as error:
        raise UserInputError(f"cannot read measurements file {path!r}: {error.strerror}") from None
    measurements: dict[str, float] = {}
    first_line: dict[str, int] = {}
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:2]) != HEADER:
            raise UserInputError(f"{path}: line 1: the header must start with 'arch,latency_ms', got "
                                 f"{','.join(header or [])!r}")
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise UserInputError(f"{path}: line {line}: expected {len(header)} columns like the header, got {len(row)}; "
                                     f"quote FBNet arch strings only if they contain commas")
            text, value = row[0].strip(), row[1].strip()
            try:
                arch = search_space.from_string(text)
            except UserInputError as error:
                raise UserInputError(f"{path}: line {line}: {error}") from None
            try:
                latency_ms = float(value)
            except ValueError:
                raise UserInputError(f"{path}: line {line}: latency {value!r} is not a number of milliseconds") from None
            if not math.isfinite(latency_ms) or latency_ms <= 0:
                raise UserInputError(f"{path}: line {line}: latency must be a positive number of milliseconds, "
                                     f"got {value}")
            key = search_space.to_string(arch)
            if key in measurements:
                raise UserInputError(f"{path}: line {line}: duplicate architecture {key!r} "
                                     f"(first given on line {first_line[key]}); keep one measurement per architecture")
            measurements[key] = latency_ms
            first_line[key] = line
    if require_reference:
        for arch in reference_archs(space):
            key = search_space.to_string(arch)
            if key not in measurements:
                raise UserInputError(f"{path}: the reference architecture {key!r} is missing; the file must "
                                     f"measure all 10 listed by 'nas predictor reference-archs --space {space}'")
    return measurements
