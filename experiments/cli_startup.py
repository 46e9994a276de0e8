"""How long does the command line take to answer when it has little to do?

Times ``nas --help``, ``nas devices list``, a mistyped command and, for
comparison, ``nas search --help`` (which registers the search command in
full and so imports torch), each run in a fresh process several times.
Target: under 1 s for the first three. Prints a markdown table and writes
it to ``experiments/results/cli_startup.md``.

    .venv/bin/python experiments/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine_line, write_keeping_reading  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "cli_startup.md"
COMMANDS = {
    "nas --help": ["--help"],
    "nas devices list": ["devices", "list"],
    "nas serch (argument error)": ["serch"],
    "nas search --help (imports torch)": ["search", "--help"],
}
TARGET_S = 1.0


def time_command(args: list[str], repeats: int) -> tuple[float, float, int]:
    """Median and worst wall time (s) of ``nas ARGS`` in fresh processes, and its exit code."""
    times, code = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True).returncode
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times), code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    rows = []
    for label, args in COMMANDS.items():
        median_s, worst_s, code = time_command(args, options.repeats)
        verdict = "" if "torch" in label else ("met" if median_s < TARGET_S else "MISSED")
        rows.append(f"| `{label}` | {median_s:.2f} | {worst_s:.2f} | {code} | {verdict} |")
        print(rows[-1], file=sys.stderr)
    text = "\n".join([
        "# Command-line start-up",
        "",
        f"{machine_line()}; {options.repeats} fresh processes per command.",
        "",
        "| command | median s | worst s | exit code | target < 1 s |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Reproduce: `.venv/bin/python experiments/cli_startup.py`",
        "",
    ])
    print(text)
    write_keeping_reading(RESULTS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
