"""The ``nas`` command line: thin wrappers that parse, call one library
function and print. Each subcommand lives in its own module with a
``register(subparsers)`` function."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from nas.errors import UserInputError

#: modules under ``nas.cli`` that add subcommands, in help order
SUBCOMMAND_MODULES = ("search", "predictor", "profile", "export", "devices", "agent")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors are bad input too: exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas", description="Hardware-aware NAS: measure, predict and meet a latency budget.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"nas.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
