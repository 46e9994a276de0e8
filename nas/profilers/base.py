"""The profiler contract and the measurement record every profiler returns."""

from __future__ import annotations

import abc
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from nas.devices import Device
from nas.search_space import Arch


@dataclass(frozen=True)
class LatencyMeasurement:
    """Latency of one architecture on one device under fixed runtime settings.

    ``latency_ms`` is the profiler's best estimate (for the local profiler the
    drift-corrected median); ``spread_ms`` is how far repeated rounds
    disagreed (0 for replayed values); ``flagged`` marks a measurement whose
    spread stayed too high after the allowed repeats.
    """

    device: str
    space: str
    arch: str
    latency_ms: float
    spread_ms: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    flagged: bool = False
    source: str = "measured"

    def settings_key(self) -> str:
        return settings_key(self.settings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings_key(settings: dict[str, Any]) -> str:
    """Stable text form of runtime settings, used as part of store keys."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


class Profiler(abc.ABC):
    """Measures architectures of a search space on one device."""

    #: profiler kind named in device YAML files
    kind: str = ""

    def __init__(self, device: Device):
        self.device = device

    @property
    def settings(self) -> dict[str, Any]:
        """Runtime settings recorded with (and keying) every measurement."""
        return dict(self.device.settings)

    @abc.abstractmethod
    def measure(self, space: str, archs: Sequence[Arch]) -> list[LatencyMeasurement]:
        """Measure ``archs`` (tuples of the space) and return one record each, in order."""

    def check_available(self) -> None:
        """Raise :class:`nas.errors.DeviceUnavailableError` when the device cannot be reached."""
