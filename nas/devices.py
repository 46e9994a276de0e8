"""The device catalog: one YAML file per device in ``devices/`` (shipped in
the package as ``nas/catalog``), saying what it is and how it is reached,
extended by the user's own device files.

User device files live in the folder named by ``$NAS_DEVICES`` (default
``$XDG_CONFIG_HOME/nas/devices``, i.e. ``~/.config/nas/devices``), one
``NAME.yaml`` each, in the catalog's format; ``nas devices add`` writes and
checks one. A malformed file is reported with its line and field
(:func:`catalog_problems`) and never hides the rest of the catalog.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from nas.errors import UserInputError

#: environment variable naming the folder of the user's device files
DEVICES_ENV = "NAS_DEVICES"
#: what a device name may look like (it is also a file name)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: category of a device known only by measurements made elsewhere
UNLISTED = "unlisted"
_FIELDS = {"name", "description", "category", "profiler", "hardware", "spaces", "provenance"}


@dataclass(frozen=True)
class Device:
    """One catalog entry.

    ``profiler_kind`` names the profiler that reaches the device (``replay``,
    ``onnxruntime``, ``adb``, ``remote``); ``settings`` are its settings.
    ``source`` is the user device file it came from ("" for the shipped catalog).
    """

    name: str
    description: str
    category: str
    profiler_kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    spaces: tuple[str, ...] = ()
    provenance: str = ""
    source: str = ""

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], source: str = "") -> "Device":
        profiler = raw.get("profiler") or {}
        return cls(name=str(raw["name"]), description=str(raw.get("description") or ""),
                   category=str(raw.get("category") or ""), profiler_kind=str(profiler.get("kind", "")),
                   settings=dict(profiler.get("settings") or {}), hardware=dict(raw.get("hardware") or {}),
                   spaces=tuple(raw.get("spaces") or ()), provenance=str(raw.get("provenance") or ""),
                   source=source)

    def to_mapping(self) -> dict[str, Any]:
        """The entry in the catalog's file format."""
        return {"name": self.name, "description": self.description, "category": self.category,
                "profiler": {"kind": self.profiler_kind, "settings": dict(self.settings)},
                "hardware": dict(self.hardware), "spaces": list(self.spaces), "provenance": self.provenance}

    @property
    def listed(self) -> bool:
        """False for a device known only by measurements made elsewhere (:func:`unlisted_device`)."""
        return self.category != UNLISTED

    def with_settings(self, **overrides: Any) -> "Device":
        """A copy whose profiler settings are updated (``None`` values ignored)."""
        settings = dict(self.settings)
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return dataclasses.replace(self, settings=settings)


class DeviceFileError(UserInputError):
    """A user device file that cannot be read: names the file, line and field."""

    def __init__(self, path: Path, line: int | None, field_name: str, problem: str):
        self.path, self.line, self.field, self.problem = Path(path), line, field_name, problem
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: field {field_name!r}: {problem}" if field_name else f"{where}: {problem}")


# --------------------------------------------------------------------------- #
# Reading device files
# --------------------------------------------------------------------------- #
def _line(node: yaml.Node | None, *keys: str) -> int | None:
    """1-based line of the value at ``keys`` inside mapping ``node`` (the deepest one found)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
        if match is None:
            break
        node, line = match[1], match[0].start_mark.line + 1
    return line


def parse_device_file(text: str, path: str | os.PathLike) -> Device:
    """The device described by YAML ``text`` (read from ``path``), checked field by field.

    A problem raises :class:`DeviceFileError` with the file, line and field.
    """
    path = Path(path)
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise DeviceFileError(path, mark.line + 1 if mark else None, "",
                              f"not valid YAML ({getattr(error, 'problem', None) or error})") from None
    if not isinstance(raw, dict):
        raise DeviceFileError(path, _line(node), "", "a device file is a mapping with name, description, "
                                                     "category, profiler (kind, settings), hardware, spaces")
    for key in raw:
        if key not in _FIELDS:
            close = difflib.get_close_matches(str(key), sorted(_FIELDS), n=1)
            raise DeviceFileError(path, _line(node, str(key)), str(key),
                                  "unknown field" + (f"; did you mean {close[0]!r}?" if close else
                                                     f"; allowed: {', '.join(sorted(_FIELDS))}"))
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise DeviceFileError(path, _line(node, "name"), "name",
                              f"{name!r} is not a device name: letters, digits and . _ - (at most 64)")
    for key in ("description", "category", "provenance"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise DeviceFileError(path, _line(node, key), key, f"must be text, not {raw[key]!r}")
    profiler = raw.get("profiler")
    if not isinstance(profiler, dict):
        raise DeviceFileError(path, _line(node, "profiler"), "profiler",
                              "missing or not a mapping; e.g. profiler: {kind: remote, settings: {url: ...}}")
    if not isinstance(profiler.get("kind"), str) or not profiler["kind"]:
        raise DeviceFileError(path, _line(node, "profiler", "kind"), "profiler.kind",
                              f"must name a profiler kind (onnxruntime, remote, adb, replay), not "
                              f"{profiler.get('kind')!r}")
    unknown = set(profiler) - {"kind", "settings"}
    if unknown:
        key = sorted(unknown)[0]
        raise DeviceFileError(path, _line(node, "profiler", key), f"profiler.{key}",
                              "unknown field; a profiler has kind and settings")
    if profiler.get("settings") is not None and not isinstance(profiler["settings"], dict):
        raise DeviceFileError(path, _line(node, "profiler", "settings"), "profiler.settings",
                              "must be a mapping of setting: value")
    if raw.get("hardware") is not None and not isinstance(raw["hardware"], dict):
        raise DeviceFileError(path, _line(node, "hardware"), "hardware", "must be a mapping")
    spaces = raw.get("spaces")
    if spaces is not None and not (isinstance(spaces, list) and all(isinstance(s, str) for s in spaces)):
        raise DeviceFileError(path, _line(node, "spaces"), "spaces", "must be a list of search space names")
    return Device.from_mapping(raw, source=str(path))


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, Device]:
    devices = {}
    for entry in resources.files("nas").joinpath("catalog").iterdir():
        if entry.name.endswith(".yaml"):
            device = Device.from_mapping(yaml.safe_load(entry.read_text()))
            devices[device.name] = device
    return devices


def user_devices_dir() -> Path:
    """``$NAS_DEVICES`` when set, else ``$XDG_CONFIG_HOME/nas/devices`` (``~/.config/nas/devices``)."""
    configured = os.environ.get(DEVICES_ENV)
    if configured:
        return Path(configured).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config).expanduser() / "nas" / "devices"


def _user_devices() -> tuple[dict[str, Device], list[DeviceFileError]]:
    """The user's devices and the problems of the files that could not be read (read afresh each call)."""
    folder = user_devices_dir()
    devices: dict[str, Device] = {}
    problems: list[DeviceFileError] = []
    if not folder.is_dir():
        return devices, problems
    shipped = _shipped()
    for path in sorted(folder.glob("*.y*ml")):
        try:
            device = parse_device_file(path.read_text(encoding="utf-8-sig"), path)
            if device.name in shipped:
                raise DeviceFileError(path, 1, "name", f"{device.name!r} is a shipped catalog device; give "
                                                       f"yours another name")
            if device.name in devices:
                raise DeviceFileError(path, 1, "name", f"{device.name!r} is also defined in "
                                                       f"{devices[device.name].source}")
        except DeviceFileError as problem:
            problems.append(problem)
            continue
        except (OSError, UnicodeDecodeError) as error:
            problems.append(DeviceFileError(path, None, "", f"cannot be read ({error})"))
            continue
        devices[device.name] = device
    return devices, problems


def _catalog() -> dict[str, Device]:
    return {**_shipped(), **_user_devices()[0]}


def catalog_problems() -> list[DeviceFileError]:
    """Every user device file that could not be read, with its line and field."""
    return _user_devices()[1]


def list_devices() -> list[Device]:
    """Every catalog device (shipped and the user's readable files), sorted by name."""
    return [device for _, device in sorted(_catalog().items())]


def get_device(name: str) -> Device:
    """The catalog device ``name``; an unknown name suggests the closest ones.

    A user device file for ``name`` that is malformed raises its
    :class:`DeviceFileError` (file, line, field).
    """
    catalog = _catalog()
    if name in catalog:
        return catalog[name]
    for problem in catalog_problems():
        if problem.path.stem == name:
            raise problem
    close = difflib.get_close_matches(name, list(catalog), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UserInputError(f"unknown device {name!r}.{hint} Run 'nas devices list' to see all "
                         f"{len(catalog)} devices, or add yours with 'nas devices add {name} --profiler KIND'.")


def unlisted_device(name: str) -> Device:
    """A device outside the catalog, known only by measurements made elsewhere
    (``nas search --measurements``): searched for, never measured from here."""
    if not NAME_PATTERN.fullmatch(name):
        raise UserInputError(f"device name {name!r}: use letters, digits and . _ - (at most 64)")
    return Device(name, "not in the catalog: known only by the measurements given", UNLISTED, "")


def resolve_device(name: str, *, unlisted_ok: bool = False) -> Device:
    """:func:`get_device`, or with ``unlisted_ok`` an :func:`unlisted_device` for a name the catalog lacks."""
    try:
        return get_device(name)
    except DeviceFileError:
        raise
    except UserInputError:
        if not unlisted_ok:
            raise
    return unlisted_device(name)


def write_user_device(device: Device, *, overwrite: bool = False) -> Path:
    """Write ``device`` as ``NAME.yaml`` in :func:`user_devices_dir`; returns the path.

    A shipped device's name, or an existing file without ``overwrite``, is refused.
    """
    if not NAME_PATTERN.fullmatch(device.name):
        raise UserInputError(f"device name {device.name!r}: use letters, digits and . _ - (at most 64)")
    if device.name in _shipped():
        raise UserInputError(f"{device.name!r} is a shipped catalog device; give yours another name")
    folder = user_devices_dir()
    path = folder / f"{device.name}.yaml"
    if path.exists() and not overwrite:
        raise UserInputError(f"{path} exists; pass --force to replace it")
    text = yaml.safe_dump(device.to_mapping(), sort_keys=False)
    parse_device_file(text, path)  # what is written must read back
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as error:
        raise UserInputError(f"cannot write {path} ({error.strerror}); set ${DEVICES_ENV} to a writable "
                             f"folder") from None
    return path
