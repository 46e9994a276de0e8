"""Cached descriptions of the subcommand parsers, so that a subcommand's
``--help`` and its argument errors answer without importing torch.

A subcommand's options come from the registries (search spaces, strategies,
predictor methods), and filling those imports torch. So the first time a
subcommand runs, its real parser is described as plain data (every option,
group, choice and help text) and written to the cache; later runs rebuild an
identical argparse parser from that description, which is enough to print
help or refuse bad arguments. The real parser still parses every command
that goes on to run. A description is tied to the package's files (their
paths, sizes and modification times) and the Python version: any change to
the code makes it stale and it is written again.

The cache lives in ``$NAS_CACHE/cli-parsers`` (default
``~/.cache/nas/cli-parsers``); where it cannot be written, nothing is cached
and each command imports what it needs, as without it. Until the first run
writes it, the descriptions shipped with the package (``nas/cli/parsers/``,
written by ``python -m nas.cli.write_parsers`` from the same sources, which
the tests check) answer, so a fresh install answers at once too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

#: environment variable naming the cache folder's parent (shared with other caches of the package)
CACHE_ENV = "NAS_CACHE"
_FORMAT = 1
_TYPES = {int: "int", float: "float", str: "str"}
_KINDS = {
    argparse._StoreAction: "store",
    argparse._StoreConstAction: "store_const",
    argparse._StoreTrueAction: "store_true",
    argparse._StoreFalseAction: "store_false",
    argparse._AppendAction: "append",
    argparse._AppendConstAction: "append_const",
    argparse._CountAction: "count",
    argparse._HelpAction: "help",
    argparse.BooleanOptionalAction: "boolean_optional",
}
#: keyword arguments of ``add_argument`` each kind of action accepts (besides help, dest, default, required)
_KIND_FIELDS = {
    "store": ("nargs", "const", "type", "choices", "metavar"),
    "append": ("nargs", "const", "type", "choices", "metavar"),
    "store_const": ("const",),
    "append_const": ("const",),
    "store_true": (),
    "store_false": (),
    "count": (),
    "help": (),
    "boolean_optional": ("type", "choices", "metavar"),
}
_PARSER_FIELDS = ("usage", "description", "epilog", "prefix_chars", "fromfile_prefix_chars", "argument_default",
                  "conflict_handler", "add_help", "allow_abbrev")


class NotDescribable(ValueError):
    """The parser uses something a description cannot hold (a custom action, a non-plain default)."""


def cache_dir() -> Path:
    """Where the descriptions are kept: ``$NAS_CACHE/cli-parsers`` or ``~/.cache/nas/cli-parsers``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "nas")
    return Path(root) / "cli-parsers"


def fingerprint() -> str:
    """A digest of the package's files (path, size, modification time) and the Python version."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(f"{_FORMAT} {sys.version}".encode())
    for folder, subfolders, files in os.walk(package):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(folder, name)
            try:
                status = os.stat(path)
            except OSError:
                continue
            digest.update(f"{os.path.relpath(path, package)}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _plain(value, what: str):
    """``value`` if JSON holds it unchanged, else :class:`NotDescribable`."""
    try:
        if json.loads(json.dumps(value)) == value:
            return value
    except (TypeError, ValueError):
        pass
    raise NotDescribable(f"{what} {value!r} is not plain data")


def describe(parser: argparse.ArgumentParser) -> dict:
    """``parser`` as plain data: its settings, groups, actions and subcommands."""
    groups = parser._action_groups
    group_of = {id(a): i for i, g in enumerate(groups) for a in g._group_actions}
    mutex = parser._mutually_exclusive_groups
    mutex_of = {id(a): i for i, g in enumerate(mutex) for a in g._group_actions}
    actions = []
    for action in parser._actions:
        record = {"group": group_of.get(id(action), 1), "mutex": mutex_of.get(id(action))}
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            record.update(kind="subcommands", dest=action.dest, required=action.required, help=action.help,
                          metavar=action.metavar,
                          commands=[{"name": name, "help": helps.get(name), "has_help": name in helps,
                                     "parser": describe(sub)} for name, sub in action.choices.items()])
            actions.append(record)
            continue
        kind = _KINDS.get(type(action))
        if kind is None:
            raise NotDescribable(f"action {type(action).__name__} of {action.option_strings or action.dest}")
        if action.type is not None and action.type not in _TYPES:
            # A custom converter cannot be described: the cached parser takes the text as it is, and the
            # real parser, which parses every command that runs, converts and checks it.
            record["type"] = None
        elif kind in ("store", "append", "boolean_optional"):
            record["type"] = _TYPES.get(action.type)
        choices = None if action.choices is None else [_plain(c, "choice") for c in action.choices]
        record.update(kind=kind, option_strings=list(action.option_strings), dest=action.dest,
                      nargs=_plain(action.nargs, "nargs"), const=_plain(action.const, "const"),
                      choices=choices, required=action.required, help=action.help,
                      metavar=list(action.metavar) if isinstance(action.metavar, tuple) else action.metavar)
        try:
            record["default"] = _plain(action.default, "default")
        except NotDescribable:
            record["default"] = None  # only the real parser's values are ever used
        actions.append(record)
    settings = {field: getattr(parser, field) for field in _PARSER_FIELDS}
    formatter = parser.formatter_class
    if getattr(argparse, formatter.__name__, None) is not formatter:
        raise NotDescribable(f"formatter {formatter.__name__}")
    return {
        "settings": _plain(settings, "parser setting"), "formatter": formatter.__name__,
        "groups": [{"title": g.title, "description": g.description} for g in groups],
        "mutex": [{"required": g.required, "container": groups.index(g._container)
                   if g._container in groups else None} for g in mutex],
        "actions": actions,
    }


def add_described(subparsers, name: str, help: str | None, description: dict, has_help: bool = True):
    """Add subcommand ``name`` to ``subparsers``, rebuilt from :func:`describe`'s ``description``."""
    settings = dict(description["settings"])
    settings["formatter_class"] = getattr(argparse, description["formatter"])
    if has_help:
        settings["help"] = help
    parser = subparsers.add_parser(name, **settings)
    _fill(parser, description)
    return parser


def _fill(parser: argparse.ArgumentParser, description: dict) -> None:
    groups = list(parser._action_groups)  # positionals and options already exist
    for record in description["groups"][len(groups):]:
        groups.append(parser.add_argument_group(record["title"], record["description"]))
    mutex: dict[int, argparse._MutuallyExclusiveGroup] = {}
    for record in description["actions"]:
        container = groups[record["group"]]
        if record["mutex"] is not None:
            index = record["mutex"]
            if index not in mutex:
                spec = description["mutex"][index]
                owner = parser if spec["container"] in (None, 0, 1) else groups[spec["container"]]
                mutex[index] = owner.add_mutually_exclusive_group(required=spec["required"])
            container = mutex[index]
        if record["kind"] == "subcommands":
            kwargs = {"dest": record["dest"], "metavar": record["metavar"]}
            if record["help"] is not None:
                kwargs["help"] = record["help"]
            subparsers = parser.add_subparsers(**kwargs)
            subparsers.required = record["required"]
            for command in record["commands"]:
                add_described(subparsers, command["name"], command["help"], command["parser"], command["has_help"])
            continue
        if record["kind"] == "help" and parser.add_help and record["option_strings"] == ["-h", "--help"]:
            continue  # added by the parser itself
        kwargs = {"help": record["help"], "default": record["default"]}
        kwargs["action"] = argparse.BooleanOptionalAction if record["kind"] == "boolean_optional" else record["kind"]
        for field in _KIND_FIELDS[record["kind"]]:
            value = record[field]
            if field == "type":
                value = {"int": int, "float": float, "str": str}.get(value)
            if field == "metavar" and isinstance(value, list):
                value = tuple(value)
            if value is not None:
                kwargs[field] = value
        if record["option_strings"]:
            kwargs.update(dest=record["dest"], required=record["required"])
            container.add_argument(*record["option_strings"], **kwargs)
        else:
            container.add_argument(record["dest"], **kwargs)


#: descriptions shipped with the package, one ``COMMAND.json`` each
SHIPPED = Path(__file__).resolve().parent / "parsers"


def load(command: str) -> dict | None:
    """The cached description of ``command``'s parser for this code, else the shipped one, else None."""
    try:
        record = json.loads((cache_dir() / f"{command}.json").read_text(encoding="utf-8"))
        if isinstance(record, dict) and record.get("fingerprint") == fingerprint():
            return record.get("parser")
    except (OSError, ValueError):
        pass
    return shipped(command)


def source_digest() -> str:
    """A digest of the package's Python sources (contents, not times) and the Python version: what a
    shipped description was written from (about 2 ms)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(f"{_FORMAT} {sys.version_info[:2]}".encode())
    for folder, subfolders, files in os.walk(package):
        subfolders[:] = sorted(d for d in subfolders if d not in ("__pycache__", "data"))
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, package).encode() + b"\0")
                with open(path, "rb") as source:
                    digest.update(source.read())
    return digest.hexdigest()


def shipped(command: str) -> dict | None:
    """The description of ``command``'s parser shipped with the package, when it was written from
    these very sources (None otherwise)."""
    try:
        record = json.loads((SHIPPED / f"{command}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("sources") != source_digest():
        return None
    return record.get("parser")


def write_shipped(folder: Path = SHIPPED) -> list[Path]:
    """Describe every subcommand's real parser into ``folder`` (imports everything)."""
    from nas.cli import SUBCOMMAND_MODULES, _subcommand_parser, build_parser

    parser = build_parser()
    folder.mkdir(parents=True, exist_ok=True)
    written, sources = [], source_digest()
    for command in SUBCOMMAND_MODULES:
        path = folder / f"{command}.json"
        record = {"sources": sources, "parser": describe(_subcommand_parser(parser, command))}
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


def save(command: str, parser: argparse.ArgumentParser) -> None:
    """Describe ``parser`` (the subcommand ``command``'s) into the cache; silently skipped where it cannot be."""
    try:
        record = {"fingerprint": fingerprint(), "parser": describe(parser)}
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{command}.", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.replace(temporary, folder / f"{command}.json")  # readers never see half a file
    except (OSError, NotDescribable):
        pass
