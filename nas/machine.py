"""This machine's processor, as Linux describes it: what latencies measured here belong to."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.lru_cache(maxsize=1)
def processor() -> tuple[str, frozenset[str]]:
    """The CPU's model name and its ISA flags, from ``/proc/cpuinfo`` (Linux); elsewhere the
    platform's processor string and no flags."""
    model, flags = platform.processor() or platform.machine() or "unknown CPU", frozenset()
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return model, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = frozenset(value.split())
            break
    return model, flags
