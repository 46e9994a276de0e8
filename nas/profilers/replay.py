"""Replay profiler: the recorded latency of a benchmark table, never a guess."""

from __future__ import annotations

from typing import Sequence

from nas import benchmarks
from nas.errors import UserInputError
from nas.profilers import register_profiler
from nas.profilers.base import LatencyMeasurement, Profiler
from nas.search_space import Arch, get_space


@register_profiler("replay")
class ReplayProfiler(Profiler):
    """Returns the latency recorded for the device in the shipped tables."""

    def measure(self, space: str, archs: Sequence[Arch]) -> list[LatencyMeasurement]:
        column_name = self.device.settings.get("table_column", self.device.name)
        if self.device.spaces and space not in self.device.spaces:
            raise UserInputError(f"device {self.device.name!r} has recorded latencies only for "
                                 f"{', '.join(self.device.spaces)}, not for space {space!r}")
        column = benchmarks.latency_table(space).column(column_name)
        search_space = get_space(space)
        records = []
        for arch in archs:
            try:
                index = search_space.index_of(arch)
            except KeyError:
                raise UserInputError(
                    f"device {self.device.name!r} is reached by replaying recorded latencies, and the "
                    f"{space} table has no record of {search_space.to_string(arch)!r}; pick one of the "
                    f"table's architectures or a device that can be measured (e.g. local-cpu)") from None
            records.append(LatencyMeasurement(self.device.name, space, search_space.to_string(arch),
                                              float(column[index]), settings=self.settings,
                                              source="replayed"))
        return records
