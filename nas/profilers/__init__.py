"""Profilers, found through a registry keyed by the ``profiler.kind`` of a
device's catalog entry."""

from __future__ import annotations

from nas.devices import Device, get_device
from nas.errors import UserInputError
from nas.registry import Registry
from nas.profilers.base import LatencyMeasurement, Profiler, settings_key

PROFILERS: Registry = Registry("profiler kind", name_attribute="kind")

register_profiler = PROFILERS.register
list_profiler_kinds = PROFILERS.names


def make_profiler(device: Device | str) -> Profiler:
    """The profiler that reaches ``device`` (a catalog name or entry)."""
    if isinstance(device, str):
        device = get_device(device)
    if device.profiler_kind not in PROFILERS:
        raise UserInputError(f"device {device.name!r} names profiler kind {device.profiler_kind!r}; "
                             f"known kinds: {', '.join(list_profiler_kinds())}")
    return PROFILERS[device.profiler_kind](device)


from nas.profilers.protocol import InterleavedProfiler, MeasurementProtocol, measure  # noqa: E402

# Importing the modules registers their kinds.
from nas.profilers import adb, onnxruntime, remote, replay  # noqa: E402,F401

__all__ = ["InterleavedProfiler", "LatencyMeasurement", "MeasurementProtocol", "Profiler", "list_profiler_kinds",
           "make_profiler", "measure", "register_profiler", "settings_key"]
