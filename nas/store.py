"""The measurement store: every latency measured on a device, in SQLite.

One row per (device, runtime settings, space, canonical architecture). Each
``put`` commits at once, so a run that is killed keeps every measurement it
finished; several processes may share one store file.

>>> from nas.store import MeasurementStore
>>> store = MeasurementStore()          # $NAS_STORE or ~/.cache/nas/measurements.db
>>> store.get("local-cpu", {"threads": 1}, "nb201", "|nor_conv_3x3~0|+...")
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from nas.devices import Device
from nas.errors import UserInputError
from nas.profilers.base import LatencyMeasurement, settings_key

#: environment variable naming the store file
STORE_ENV = "NAS_STORE"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    device       TEXT NOT NULL,
    settings_key TEXT NOT NULL,
    space        TEXT NOT NULL,
    arch         TEXT NOT NULL,
    latency_ms   REAL NOT NULL,
    spread_ms    REAL NOT NULL,
    settings     TEXT NOT NULL,
    stats        TEXT NOT NULL,
    flagged      INTEGER NOT NULL,
    origin       TEXT NOT NULL,
    measured_at  REAL NOT NULL,
    PRIMARY KEY (device, settings_key, space, arch)
)
"""


def default_store_path() -> Path:
    """``$NAS_STORE`` when set, else ``~/.cache/nas/measurements.db``."""
    configured = os.environ.get(STORE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "nas" / "measurements.db"


class MeasurementStore:
    """SQLite store of :class:`LatencyMeasurement` records.

    ``path`` defaults to :func:`default_store_path`. Records read back have
    ``source='stored'``; the profiler that made them is kept as ``origin``
    in the table.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: every statement is its own transaction
            self._connection = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise UserInputError(f"cannot open the measurement store {str(self.path)!r}: {error}. "
                                 f"Pass another path (or set ${STORE_ENV}).") from None

    def get(self, device: str | Device, settings: dict[str, Any] | str, space: str,
            arch: str) -> LatencyMeasurement | None:
        """The stored measurement of canonical architecture string ``arch``, or ``None``.

        ``settings`` is the runtime-settings dict (or its :func:`settings_key`).
        """
        row = self._connection.execute(
            "SELECT * FROM measurements WHERE device=? AND settings_key=? AND space=? AND arch=?",
            (_device_name(device), _key(settings), space, arch)).fetchone()
        return _record(row) if row else None

    def put(self, measurement: LatencyMeasurement) -> None:
        """Store ``measurement`` (replacing an older one under the same key), committed at once."""
        self._connection.execute(
            "INSERT OR REPLACE INTO measurements VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (measurement.device, measurement.settings_key(), measurement.space, measurement.arch,
             float(measurement.latency_ms), float(measurement.spread_ms),
             json.dumps(measurement.settings, sort_keys=True), json.dumps(measurement.stats, sort_keys=True),
             int(measurement.flagged), measurement.source, time.time()))

    def put_latencies(self, device: str | Device, settings: dict[str, Any], space: str,
                      latencies_ms: dict[str, float], source: str = "imported") -> list[LatencyMeasurement]:
        """Store latencies measured elsewhere (``{canonical arch string: ms}``, e.g. from
        :func:`nas.predictors.measurements.read_measurements_csv`) under ``settings``."""
        records = [LatencyMeasurement(_device_name(device), space, arch, float(ms), settings=dict(settings),
                                      source=source) for arch, ms in latencies_ms.items()]
        for record in records:
            self.put(record)
        return records

    def all(self, device: str | Device | None = None, space: str | None = None) -> list[LatencyMeasurement]:
        """Every stored measurement, optionally only of one device and/or space, oldest first."""
        query, values = "SELECT * FROM measurements", []
        conditions = []
        if device is not None:
            conditions.append("device=?")
            values.append(_device_name(device))
        if space is not None:
            conditions.append("space=?")
            values.append(space)
        if conditions:
            query += " WHERE " + " AND ".join(conditions)
        query += " ORDER BY measured_at, rowid"
        return [_record(row) for row in self._connection.execute(query, values)]

    def __len__(self) -> int:
        return int(self._connection.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])

    def __iter__(self) -> Iterator[LatencyMeasurement]:
        return iter(self.all())

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "MeasurementStore":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MeasurementStore({str(self.path)!r})"


def _device_name(device: str | Device) -> str:
    return device.name if isinstance(device, Device) else str(device)


def _key(settings: dict[str, Any] | str) -> str:
    return settings if isinstance(settings, str) else settings_key(settings)


def _record(row: tuple) -> LatencyMeasurement:
    device, _key_text, space, arch, latency_ms, spread_ms, settings, stats, flagged, _origin, _at = row
    return LatencyMeasurement(device=device, space=space, arch=arch, latency_ms=latency_ms,
                              spread_ms=spread_ms, settings=json.loads(settings), stats=json.loads(stats),
                              flagged=bool(flagged), source="stored")


# --------------------------------------------------------------------------- #
# Measurement files: what ``nas profile --out`` writes
# --------------------------------------------------------------------------- #
#: columns of the CSV ``nas profile --out`` writes
CSV_COLUMNS = ("arch", "latency_ms", "spread_ms", "flagged", "source", "median_ms", "mean_ms", "p10_ms",
               "p90_ms", "std_ms", "device", "space", "settings")


def write_csv(path: str | os.PathLike, measurements: list[LatencyMeasurement]) -> Path:
    """Write ``measurements`` as CSV with :data:`CSV_COLUMNS` (milliseconds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for m in measurements:
            writer.writerow([m.arch, f"{m.latency_ms:.6g}", f"{m.spread_ms:.4g}", int(m.flagged), m.source,
                             *(f"{m.stats[k]:.6g}" if k in m.stats else "" for k in CSV_COLUMNS[5:10]),
                             m.device, m.space, json.dumps(m.settings, sort_keys=True)])
    return path
