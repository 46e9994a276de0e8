"""Writing a benchmark's results file without losing its hand-written reading,
and the line that says which machine measured it."""

from __future__ import annotations

import os
from datetime import datetime, timezone
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


#: ISA extensions that decide float and int8 speed on x86 CPUs
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def cpu_description() -> str:
    """CPU model and its speed-relevant ISA extensions (``nas.machine.processor``)."""
    from nas.machine import processor

    model, flags = processor()
    present = [flag for flag in ISA_FLAGS if flag in flags]
    return f"{model} ({os.cpu_count()} logical CPUs; {', '.join(present) or 'no AVX2/AVX-512'})"


def machine_line() -> str:
    """When and where a benchmark ran: UTC time, CPU model, ISA flags and the load average at the time."""
    load = "/".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu_description()}; load average {load} (1/5/15 min)"
