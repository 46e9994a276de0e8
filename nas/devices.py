"""The device catalog: one YAML file per device in ``devices/`` (shipped in
the package as ``nas/catalog``), saying what it is and how it is reached."""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from nas.errors import UserInputError


@dataclass(frozen=True)
class Device:
    """One catalog entry.

    ``profiler_kind`` names the profiler that reaches the device (``replay``,
    ``onnxruntime``, ``adb``, ``remote``); ``settings`` are its settings.
    """

    name: str
    description: str
    category: str
    profiler_kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    spaces: tuple[str, ...] = ()
    provenance: str = ""

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> "Device":
        profiler = raw.get("profiler") or {}
        return cls(name=str(raw["name"]), description=str(raw.get("description", "")),
                   category=str(raw.get("category", "")), profiler_kind=str(profiler.get("kind", "")),
                   settings=dict(profiler.get("settings") or {}), hardware=dict(raw.get("hardware") or {}),
                   spaces=tuple(raw.get("spaces") or ()), provenance=str(raw.get("provenance", "")))

    def with_settings(self, **overrides: Any) -> "Device":
        """A copy whose profiler settings are updated (``None`` values ignored)."""
        settings = dict(self.settings)
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return Device(self.name, self.description, self.category, self.profiler_kind, settings,
                      self.hardware, self.spaces, self.provenance)


@functools.lru_cache(maxsize=1)
def _catalog() -> dict[str, Device]:
    devices = {}
    for entry in resources.files("nas").joinpath("catalog").iterdir():
        if entry.name.endswith(".yaml"):
            device = Device.from_mapping(yaml.safe_load(entry.read_text()))
            devices[device.name] = device
    return devices


def list_devices() -> list[Device]:
    """Every catalog device, sorted by name."""
    return [device for _, device in sorted(_catalog().items())]


def get_device(name: str) -> Device:
    """The catalog device ``name``; an unknown name suggests the closest ones."""
    catalog = _catalog()
    if name in catalog:
        return catalog[name]
    close = difflib.get_close_matches(name, list(catalog), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UserInputError(f"unknown device {name!r}.{hint} Run 'nas devices list' to see all "
                         f"{len(catalog)} devices.")
