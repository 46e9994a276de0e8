"""How long does the command line take to answer when it has little to do?

Times ``nas --help``, ``nas devices list``, a mistyped command, the
``--help`` of subcommands and their argument errors (a malformed budget, an
unknown option, a missing required option), each run in a fresh process
several times, with a fresh parser cache (``$NAS_CACHE``) that one untimed
run of each subcommand has filled, as any run after the first finds it; and
the first run of ``nas search --help`` with an empty cache, as after
installing, which the descriptions shipped with the package answer. Each row
also says whether the command imported torch, ONNX or Optuna. Target: under
1 s. Prints a markdown table and writes it to
``experiments/results/cli_startup.md``.

    .venv/bin/python experiments/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine_line, write_keeping_reading  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "cli_startup.md"
COMMANDS = {
    "nas --help": ["--help"],
    "nas devices list": ["devices", "list"],
    "nas serch (argument error)": ["serch"],
    "nas search --help": ["search", "--help"],
    "nas search --device x --latency abc (bad budget)": ["search", "--device", "x", "--latency", "abc"],
    "nas search --bogus (unknown option, missing required)": ["search", "--bogus"],
    "nas profile (missing required options)": ["profile"],
    "nas predictor finetune --help": ["predictor", "finetune", "--help"],
    "nas quantize --help": ["quantize", "--help"],
}
#: timed with an empty parser cache each time: the first run after installing
FIRST_RUN = {"nas search --help, first run after installing (empty cache)": ["search", "--help"]}
TARGET_S = 1.0
HEAVY = ("torch", "onnx", "optuna")
#: ``python -m nas ARGS`` that also says, last on stderr, which heavy libraries it imported; exits with its code
_PROBE = ("import runpy, sys; sys.argv = ['nas'] + sys.argv[1:]; code = 0\n"
          "try:\n    runpy.run_module('nas', run_name='__main__')\n"
          "except SystemExit as stop:\n    code = stop.code or 0\n"
          f"print(','.join(m for m in {HEAVY!r} if m in sys.modules) or 'none', file=sys.stderr)\n"
          "sys.exit(code)")


def time_command(args: list[str], repeats: int, cache: Path, empty_cache: bool = False
                 ) -> tuple[float, float, int, str]:
    """Median and worst wall time (s) of ``nas ARGS`` in fresh processes, its exit code, and the heavy
    libraries the timed runs imported (with how many of them did, when not all or none)."""
    env = dict(os.environ, NAS_CACHE=str(cache))
    if not empty_cache:  # describe the parser now: a file of the package changed since makes it stale
        subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, env=env)
    times, code, imported = [], 0, []
    for _ in range(repeats):
        if empty_cache:
            shutil.rmtree(cache, ignore_errors=True)
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - start)
        code = run.returncode
        lines = run.stderr.strip().splitlines()
        imported.append(lines[-1] if lines else "?")
    if empty_cache:
        shutil.rmtree(cache, ignore_errors=True)
    heavy = max(set(imported), key=imported.count)
    if len(set(imported)) > 1:
        heavy = "; ".join(f"{name} ({imported.count(name)}/{repeats})" for name in sorted(set(imported)))
    return statistics.median(times), max(times), code, heavy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    rows = []
    cache = Path(tempfile.mkdtemp(prefix="nas-cli-startup-"))
    try:
        timed = [(label, args, False) for label, args in COMMANDS.items()]
        timed += [(label, args, True) for label, args in FIRST_RUN.items()]
        for label, args, empty in timed:
            median_s, worst_s, code, heavy = time_command(args, options.repeats, cache / "warm" if empty else cache,
                                                          empty_cache=empty)
            verdict = "met" if median_s < TARGET_S else "MISSED"
            rows.append(f"| `{label}` | {median_s:.2f} | {worst_s:.2f} | {code} | {heavy} | {verdict} |")
            print(rows[-1], file=sys.stderr)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    text = "\n".join([
        "# Command-line start-up",
        "",
        f"{machine_line()}; {options.repeats} fresh processes per command; subcommands with their parser "
        f"description cached by an untimed first run, except the last row (empty cache each time).",
        "",
        "| command | median s | worst s | exit code | heavy imports | target < 1 s |",
        "| --- | --- | --- | --- | --- | --- |",
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
