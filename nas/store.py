"""The measurement store: every latency measured on a device, in SQLite.

One row per (device, runtime settings, space, canonical architecture). Each
``put`` commits at once, so a run that is killed keeps every measurement it
finished; several processes may share one store file. A row keeps the
latency (:data:`nas.profilers.base.LATENCY_STATISTIC`), its spread, and the
raw median of the runs with its spread.

The table layout is versioned in SQLite's ``user_version`` (now
:data:`SCHEMA_VERSION`). A store of layout 1 (latencies rescaled to a
reference timed once per store, no raw columns) is moved to layout 2 when
opened: a measured row's latency becomes the raw median of its runs that
the row kept (its relative spread is kept), the rows of the reference
model that held the old scale are removed, imported rows stay as they are.

>>> from nas.store import MeasurementStore
>>> store = MeasurementStore()          # $NAS_STORE or ~/.cache/nas/measurements.db
>>> store.get("local-cpu", {"threads": 1}, "nb201", "|nor_conv_3x3~0|+...")
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from nas.devices import Device
from nas.errors import UserInputError
from nas.profilers.base import LatencyMeasurement, settings_key

#: environment variable naming the store file
STORE_ENV = "NAS_STORE"

#: layout of the measurements table, kept in SQLite's ``user_version``
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    device        TEXT NOT NULL,
    settings_key  TEXT NOT NULL,
    space         TEXT NOT NULL,
    arch          TEXT NOT NULL,
    latency_ms    REAL NOT NULL,
    spread_ms     REAL NOT NULL,
    settings      TEXT NOT NULL,
    stats         TEXT NOT NULL,
    flagged       INTEGER NOT NULL,
    origin        TEXT NOT NULL,
    measured_at   REAL NOT NULL,
    raw_median_ms REAL,
    raw_spread_ms REAL,
    PRIMARY KEY (device, settings_key, space, arch)
)
"""
_COLUMNS = ("device", "settings_key", "space", "arch", "latency_ms", "spread_ms", "settings", "stats", "flagged",
            "origin", "measured_at", "raw_median_ms", "raw_spread_ms")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM measurements"
#: statistics of a layout-1 row that were on the once-per-store reference scale
_OLD_SCALED_STATS = ("median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "reference_ms", "raw_median_ms")


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
            self._prepare_layout()
        except (OSError, sqlite3.Error) as error:
            raise UserInputError(f"cannot open the measurement store {str(self.path)!r}: {error}. "
                                 f"Pass another path (or set ${STORE_ENV}).") from None

    def _user_version(self) -> int:
        return int(self._connection.execute("PRAGMA user_version").fetchone()[0])

    def _prepare_layout(self) -> None:
        """Create the table, or move a layout-1 store to :data:`SCHEMA_VERSION`; refuse a newer one."""
        if self._user_version() == SCHEMA_VERSION:
            return
        self._connection.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
        try:
            version = self._user_version()
            if version > SCHEMA_VERSION:
                raise UserInputError(
                    f"the measurement store {str(self.path)!r} has table layout {version}, written by a newer "
                    f"nas; this one reads layout {SCHEMA_VERSION}. Upgrade nas, or pass another --store "
                    f"(or set ${STORE_ENV}).")
            if version < SCHEMA_VERSION:
                columns = {row[1] for row in self._connection.execute("PRAGMA table_info(measurements)")}
                if not columns:
                    self._connection.execute(_SCHEMA)
                elif "raw_median_ms" not in columns:
                    self._migrate_from_layout_1()
                self._connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._connection.execute("COMMIT")
        except BaseException:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise

    def _migrate_from_layout_1(self) -> None:
        """Layout 1 held latencies rescaled to a reference measured once per store: keep each
        measured row's raw median of runs as its latency, drop the reference rows."""
        execute = self._connection.execute
        execute("ALTER TABLE measurements ADD COLUMN raw_median_ms REAL")
        execute("ALTER TABLE measurements ADD COLUMN raw_spread_ms REAL")
        moved = removed = 0
        for rowid, latency_ms, spread_ms, stats_text in execute(
                "SELECT rowid, latency_ms, spread_ms, stats FROM measurements").fetchall():
            stats = json.loads(stats_text)
            if stats.get("is_reference"):
                execute("DELETE FROM measurements WHERE rowid=?", (rowid,))
                removed += 1
            elif "raw_median_ms" in stats and latency_ms > 0:
                raw_ms = float(stats["raw_median_ms"])
                kept = {k: v for k, v in stats.items() if k not in _OLD_SCALED_STATS}
                kept["migrated_from_layout"] = 1.0
                execute("UPDATE measurements SET latency_ms=?, spread_ms=?, raw_median_ms=?, stats=? WHERE rowid=?",
                        (raw_ms, spread_ms * raw_ms / latency_ms, raw_ms, json.dumps(kept, sort_keys=True), rowid))
                moved += 1
        if moved or removed:
            print(f"measurement store {self.path}: moved to table layout {SCHEMA_VERSION}; {moved} measured "
                  f"latencies are now the raw median of their runs (no longer rescaled to a reference), "
                  f"{removed} reference rows removed", file=sys.stderr, flush=True)

    def get(self, device: str | Device, settings: dict[str, Any] | str, space: str,
            arch: str) -> LatencyMeasurement | None:
        """The stored measurement of canonical architecture string ``arch``, or ``None``.

        ``settings`` is the runtime-settings dict (or its :func:`settings_key`).
        """
        row = self._connection.execute(
            f"{_SELECT} WHERE device=? AND settings_key=? AND space=? AND arch=?",
            (_device_name(device), _key(settings), space, arch)).fetchone()
        return _record(row) if row else None

    def put(self, measurement: LatencyMeasurement) -> None:
        """Store ``measurement`` (replacing an older one under the same key), committed at once."""
        self._connection.execute(
            f"INSERT OR REPLACE INTO measurements ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            (measurement.device, measurement.settings_key(), measurement.space, measurement.arch,
             float(measurement.latency_ms), float(measurement.spread_ms),
             json.dumps(measurement.settings, sort_keys=True), json.dumps(measurement.stats, sort_keys=True),
             int(measurement.flagged), measurement.source, time.time(),
             _optional(measurement.raw_median_ms), _optional(measurement.raw_spread_ms)))

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
        query, values = _SELECT, []
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


def _optional(value: float | None) -> float | None:
    return None if value is None else float(value)


def _record(row: tuple) -> LatencyMeasurement:
    (device, _key_text, space, arch, latency_ms, spread_ms, settings, stats, flagged, _origin, _at,
     raw_median_ms, raw_spread_ms) = row
    return LatencyMeasurement(device=device, space=space, arch=arch, latency_ms=latency_ms,
                              spread_ms=spread_ms, settings=json.loads(settings), stats=json.loads(stats),
                              flagged=bool(flagged), source="stored", raw_median_ms=raw_median_ms,
                              raw_spread_ms=raw_spread_ms)


# --------------------------------------------------------------------------- #
# Measurement files: what ``nas profile --out`` writes
# --------------------------------------------------------------------------- #
#: columns of the CSV ``nas profile --out`` writes
CSV_COLUMNS = ("arch", "latency_ms", "spread_ms", "flagged", "source", "raw_median_ms", "raw_spread_ms", "mean_ms",
               "p10_ms", "p90_ms", "std_ms", "device", "space", "settings")


def write_csv(path: str | os.PathLike, measurements: list[LatencyMeasurement]) -> Path:
    """Write ``measurements`` as CSV with :data:`CSV_COLUMNS` (milliseconds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for m in measurements:
            raw = [m.raw_median_ms, m.raw_spread_ms]
            writer.writerow([m.arch, f"{m.latency_ms:.6g}", f"{m.spread_ms:.4g}", int(m.flagged), m.source,
                             *("" if v is None else f"{v:.6g}" for v in raw),
                             *(f"{m.stats[k]:.6g}" if k in m.stats else "" for k in CSV_COLUMNS[7:11]),
                             m.device, m.space, json.dumps(m.settings, sort_keys=True)])
    return path
