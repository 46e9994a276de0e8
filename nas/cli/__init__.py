"""The ``nas`` command line: thin wrappers that parse, call one library
function and print. Each subcommand lives in its own module with a one-line
``HELP`` and a ``register(subparsers)`` function.

Only the subcommand being run is registered in full (its options, its
choices from the registries, and with them torch); the others appear by
name and ``HELP`` alone. So ``nas --help``, ``nas devices list`` or a
mistyped command answer without importing the heavy libraries, which is
why a subcommand module imports them inside its functions, never at the top.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from nas.errors import UserInputError

#: modules under ``nas.cli`` that add subcommands, in help order
SUBCOMMAND_MODULES = ("search", "quantize", "predictor", "profile", "export", "devices", "agent")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A value such as '-5ms' or '-1%' is a (bad) value for the option before it, not an option: let it
        # reach the option's own parser, whose message says what is allowed. argparse knows only '-5'.
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*[a-zA-Zµ%]*$")

    def error(self, message: str):  # argparse's own errors are bad input too: exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (its first word that is not an option), if any."""
    words = [word for word in argv if not word.startswith("-")]
    return words[0] if words and words[0] in SUBCOMMAND_MODULES else None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``nas`` parser. With ``argv``, only the subcommand it names is
    registered in full; without, every subcommand is (slow: imports torch)."""
    chosen = _chosen_command(argv) if argv is not None else None
    parser = _Parser(prog="nas", description="Hardware-aware NAS: measure, predict and meet a latency budget.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"nas.cli.{name}")
        if argv is None or name == chosen:
            module.register(subparsers)
        else:
            subparsers.add_parser(name, help=module.HELP, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserInputError as error:
        print(f"nas {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"\nnas {args.command}: interrupted; everything measured so far is stored.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
