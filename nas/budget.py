"""One parser for latency budgets, shared by every command."""

from __future__ import annotations

import math
import re

from nas.errors import UserInputError

_UNIT_TO_MS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}
_PATTERN = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf)\s*([a-zµ]*)\s*$", re.I)


def parse_latency_ms(text: str | float | int) -> float:
    """Parse a latency budget into milliseconds.

    Accepts ``20ms``, ``20 ms``, ``0.02s``, ``20000us`` and a plain number
    (milliseconds). Zero, negative, NaN, infinite and unknown units raise
    :class:`UserInputError`.
    """
    if isinstance(text, (int, float)):
        value, unit = float(text), "ms"
    else:
        match = _PATTERN.match(str(text))
        if not match:
            raise UserInputError(
                f"latency budget {text!r} is not a number with a unit; "
                "write it like 20ms, 20 ms, 0.02s, 20000us or 20 (milliseconds)")
        value, unit = float(match.group(1)), (match.group(2).lower() or "ms")
        if unit not in _UNIT_TO_MS:
            raise UserInputError(
                f"latency budget {text!r} has unknown unit {unit!r}; "
                f"allowed units: {', '.join(sorted(_UNIT_TO_MS))}")
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise UserInputError(
            f"latency budget {text!r} must be a finite number above zero, e.g. 20ms")
    return value * _UNIT_TO_MS[unit]
