"""The profiler contract and the measurement record every profiler returns."""

from __future__ import annotations

import abc
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from nas.devices import Device
from nas.search_space import Arch


#: what ``latency_ms`` of a measured (not replayed or imported) architecture is
LATENCY_STATISTIC = (
    "median of per-run ONNX Runtime timings on the device (ms), at the device's typical speed: with drift "
    "correction each run is divided by a reference model timed right around it and multiplied by the device's "
    "reference level, the median of the latest 2,000 reference blocks timed on the device under the same "
    "settings (one level per user, shared by every store and process); spread_ms adds how much slower the "
    "device's slow moments are (the 90th percentile of its seconds) to the rounds' own spread; raw_median_ms is the "
    "uncorrected median of every run at the moment of measuring, raw_spread_ms the standard deviation of its "
    "rounds' medians")


@dataclass(frozen=True)
class LatencyMeasurement:
    """Latency of one architecture on one device under fixed runtime settings.

    ``latency_ms`` is the profiler's estimate of what timing the model with
    plain ONNX Runtime on the device gives (see :data:`LATENCY_STATISTIC`:
    the median of per-run timings, at the device's typical speed);
    ``spread_ms`` is the standard deviation of its repeated rounds widened
    by the device's slow moments (0 for replayed values); ``flagged`` marks a measurement whose spread
    stayed too high after the allowed repeats. ``raw_median_ms`` and
    ``raw_spread_ms`` are the same without drift correction or outlier
    rejection (``None`` for replayed or imported latencies).
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
    raw_median_ms: float | None = None
    raw_spread_ms: float | None = None

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
    def measure(self, space: str, archs: Sequence[Arch],
                on_measured: Callable[[LatencyMeasurement], None] | None = None) -> list[LatencyMeasurement]:
        """Measure ``archs`` (tuples of the space) and return one record each, in order.

        ``on_measured`` is called with each record the moment it is final,
        before the others are done, so a caller can keep it (e.g. store it)
        even if the rest is interrupted.
        """

    def check_available(self) -> None:
        """Raise :class:`nas.errors.DeviceUnavailableError` when the device cannot be reached."""
