"""The ``nas`` command line: thin wrappers that parse, call one library
function and print. Each subcommand lives in its own module with a one-line
``HELP`` and a ``register(subparsers)`` function.

Only the subcommand being run is registered in full (its options, its
choices from the registries, and with them torch); the others appear by
name and ``HELP`` alone. So ``nas --help``, ``nas devices list`` or a
mistyped command answer without importing the heavy libraries, which is
why a subcommand module imports them inside its functions, never at the top.

A subcommand's own ``--help`` and argument errors answer without them too:
its parser is rebuilt from a cached description (:mod:`nas.cli.parser_cache`)
and the module's optional ``check_arguments(args)`` refuses bad values that
need no heavy import (a malformed budget) before the real parser is built.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from nas.cli import parser_cache
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


def build_parser(argv: list[str] | None = None, described: dict | None = None) -> argparse.ArgumentParser:
    """The ``nas`` parser. With ``argv``, only the subcommand it names is
    registered in full; without, every subcommand is (slow: imports torch).
    With ``described`` (from :func:`nas.cli.parser_cache.load`), the named
    subcommand is rebuilt from that description instead of registered."""
    chosen = _chosen_command(argv) if argv is not None else None
    parser = _Parser(prog="nas", description="Hardware-aware NAS: measure, predict and meet a latency budget.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"nas.cli.{name}")
        if described is not None and name == chosen:
            parser_cache.add_described(subparsers, name, module.HELP, described)
        elif argv is None or name == chosen:
            module.register(subparsers)
        else:
            subparsers.add_parser(name, help=module.HELP, add_help=False)
    return parser


def _subcommand_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _check(command: str | None, args) -> int | None:
    """Run the subcommand's light ``check_arguments``; the exit code of a refusal, else None."""
    check = getattr(importlib.import_module(f"nas.cli.{command}"), "check_arguments", None) if command else None
    try:
        if check is not None:
            check(args)
    except UserInputError as error:
        print(f"nas {command}: error: {error}", file=sys.stderr)
        return error.exit_code
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = _chosen_command(argv)
    # Once torch is loaded the cached parser saves nothing, and this process may have registered
    # strategies or spaces of its own that a description of the package's parser does not know.
    fresh = chosen is not None and "torch" not in sys.modules
    described = parser_cache.load(chosen) if fresh else None
    if described is not None:  # help and argument errors end here, before the registries are imported
        refused = _check(chosen, build_parser(argv, described).parse_args(argv))
        if refused is not None:
            return refused
    parser = build_parser(argv)
    if fresh and described is None:
        parser_cache.save(chosen, _subcommand_parser(parser, chosen))
    args = parser.parse_args(argv)
    if described is None:
        refused = _check(chosen, args)
        if refused is not None:
            return refused
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
