"""The measurement store: every latency measured on a device, in SQLite on
this machine or in a PostgreSQL database a team shares.

One row per (device, runtime settings, space, canonical architecture). Each
``put`` commits at once, so a run that is killed keeps every measurement it
finished. A row keeps the latency (:data:`nas.profilers.base.LATENCY_STATISTIC`),
its spread, and the raw median of the runs with its spread.

Where it lives (``MeasurementStore(location)``, ``--store``, ``$NAS_STORE``):
a file path or ``sqlite:///path`` (default ``~/.cache/nas/measurements.db``),
or ``postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE``.

Several processes, on several machines with PostgreSQL, may share one store.
They never measure the same (device, settings, space, architecture) at once:
:func:`measure_claimed` claims what a process is about to measure, and the
others wait for it and take the result. A claim whose owner stops making
progress for :data:`CLAIM_TTL_S` seconds (a killed process) lapses.

The SQLite table layout is versioned in ``user_version`` (now
:data:`SCHEMA_VERSION`). A store of layout 1 (latencies rescaled to a
reference timed once per store, no raw columns) is moved to layout 2 when
opened: a measured row's latency becomes the raw median of its runs that
the row kept (its relative spread is kept), the rows of the reference
model that held the old scale are removed, imported rows stay as they are.

>>> from nas.profilers.store import MeasurementStore
>>> store = MeasurementStore()          # $NAS_STORE or ~/.cache/nas/measurements.db
>>> store.get("local-cpu", {"threads": 1}, "nb201", "|nor_conv_3x3~0|+...")
"""

from __future__ import annotations

import abc
import csv
import json
import os
import re
import secrets
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from nas.devices import Device
from nas.errors import UserInputError
from nas.profilers.base import LatencyMeasurement, settings_key

#: environment variable naming the store (a path or a URL)
STORE_ENV = "NAS_STORE"

#: layout of the measurements table (SQLite's ``user_version``; a row of ``nas_store`` in PostgreSQL)
SCHEMA_VERSION = 2

#: a claim whose owner made no progress for this long (seconds) lapses
CLAIM_TTL_S = 600.0

_COLUMNS = ("device", "settings_key", "space", "arch", "latency_ms", "spread_ms", "settings", "stats", "flagged",
            "origin", "measured_at", "raw_median_ms", "raw_spread_ms")
_KEY = ("device", "settings_key", "space", "arch")


def _schema(real: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS measurements (
    device        TEXT NOT NULL,
    settings_key  TEXT NOT NULL,
    space         TEXT NOT NULL,
    arch          TEXT NOT NULL,
    latency_ms    {real} NOT NULL,
    spread_ms     {real} NOT NULL,
    settings      TEXT NOT NULL,
    stats         TEXT NOT NULL,
    flagged       INTEGER NOT NULL,
    origin        TEXT NOT NULL,
    measured_at   {real} NOT NULL,
    raw_median_ms {real},
    raw_spread_ms {real},
    PRIMARY KEY (device, settings_key, space, arch)
)"""


def _claims_schema(real: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS claims (
    device       TEXT NOT NULL,
    settings_key TEXT NOT NULL,
    space        TEXT NOT NULL,
    arch         TEXT NOT NULL,
    owner        TEXT NOT NULL,
    claimed_at   {real} NOT NULL,
    PRIMARY KEY (device, settings_key, space, arch)
)"""


_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM measurements"
_UPSERT = (f"INSERT INTO measurements ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
           + ", ".join(f"{c}=excluded.{c}" for c in _COLUMNS if c not in _KEY))
#: statistics of a layout-1 row that were on the once-per-store reference scale
_OLD_SCALED_STATS = ("median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "reference_ms", "raw_median_ms")
_POSTGRESQL = re.compile(r"^postgres(ql)?(\+psycopg)?://", re.IGNORECASE)


def default_store_path() -> Path:
    """``$NAS_STORE`` when it names a file, else ``~/.cache/nas/measurements.db``."""
    configured = os.environ.get(STORE_ENV)
    if configured and "://" not in configured:
        return Path(configured).expanduser()
    if configured and configured.lower().startswith("sqlite:///"):
        return Path(configured[len("sqlite:///"):]).expanduser()
    return Path.home() / ".cache" / "nas" / "measurements.db"


def default_store_location() -> str:
    """``$NAS_STORE`` (a path or URL) when set, else the default store file."""
    return os.environ.get(STORE_ENV) or str(default_store_path())


def shown_location(location: str) -> str:
    """``location`` with any password masked, for messages."""
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", str(location))


class MeasurementStore:
    """Store of :class:`LatencyMeasurement` records in SQLite or PostgreSQL.

    ``location``: a path, ``sqlite:///path`` or a PostgreSQL URL (see the
    module docstring); default :func:`default_store_location`. Records
    read back have ``source='stored'``; the profiler that made them is kept
    as ``origin`` in the table. A location that is malformed, cannot be
    written or cannot be reached is a :class:`UserInputError`.
    """

    def __init__(self, location: str | os.PathLike | None = None):
        location = default_store_location() if location is None else location
        text = str(location)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        if _POSTGRESQL.match(text):
            self.location = text
            self.path = None
            self._backend: _Backend = _PostgreSQL(text)
        elif "://" in text and not text.lower().startswith("sqlite:///"):
            raise UserInputError(f"--store {shown_location(text)!r} is not a measurement store location; allowed: "
                                 f"a file path, sqlite:///path, or postgresql+psycopg://USER@HOST:5432/DATABASE")
        else:
            path = text[len("sqlite:///"):] if text.lower().startswith("sqlite:///") else text
            self.path = Path(path).expanduser()
            self.location = str(self.path)
            self._backend = _SQLite(self.path)

    @property
    def shared(self) -> bool:
        """True for a store on a database server."""
        return isinstance(self._backend, _PostgreSQL)

    def get(self, device: str | Device, settings: dict[str, Any] | str, space: str,
            arch: str) -> LatencyMeasurement | None:
        """The stored measurement of canonical architecture string ``arch``, or ``None``.

        ``settings`` is the runtime-settings dict (or its :func:`settings_key`).
        """
        rows = self._backend.query(f"{_SELECT} WHERE device=? AND settings_key=? AND space=? AND arch=?",
                                   (_device_name(device), _key(settings), space, arch))
        return _record(rows[0]) if rows else None

    def put(self, measurement: LatencyMeasurement) -> None:
        """Store ``measurement`` (replacing an older one under the same key), committed at once.

        It also keeps this store's claims alive (:func:`measure_claimed`):
        storing is the progress that shows their owner is at work.
        """
        now = time.time()
        self._backend.execute(_UPSERT, (
            measurement.device, measurement.settings_key(), measurement.space, measurement.arch,
            float(measurement.latency_ms), float(measurement.spread_ms),
            json.dumps(measurement.settings, sort_keys=True), json.dumps(measurement.stats, sort_keys=True),
            int(measurement.flagged), measurement.source, now,
            _optional(measurement.raw_median_ms), _optional(measurement.raw_spread_ms)))
        self._backend.execute("UPDATE claims SET claimed_at=? WHERE owner=?", (now, self.owner))

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
        query += f" ORDER BY measured_at, {self._backend.tiebreak}"
        return [_record(row) for row in self._backend.query(query, values)]

    # claims ------------------------------------------------------------------
    def claim(self, device: str | Device, settings: dict[str, Any] | str, space: str,
              archs: Sequence[str]) -> list[str]:
        """Claim ``archs`` for measuring by this store's owner; returns those now claimed by it.

        An architecture another owner claimed, and whose claim has not lapsed
        (:data:`CLAIM_TTL_S`), is not returned.
        """
        name, key, now = _device_name(device), _key(settings), time.time()
        self._backend.execute("DELETE FROM claims WHERE claimed_at < ?", (now - CLAIM_TTL_S,))
        for arch in archs:
            self._backend.execute("INSERT INTO claims (device, settings_key, space, arch, owner, claimed_at) "
                                  "VALUES (?,?,?,?,?,?) ON CONFLICT (device, settings_key, space, arch) DO NOTHING",
                                  (name, key, space, arch, self.owner, now))
        mine = {row[0] for row in self._backend.query(
            "SELECT arch FROM claims WHERE device=? AND settings_key=? AND space=? AND owner=?",
            (name, key, space, self.owner))}
        return [arch for arch in archs if arch in mine]

    def claimed(self, device: str | Device, settings: dict[str, Any] | str, space: str) -> set[str]:
        """Architectures someone holds a live claim on."""
        return {row[0] for row in self._backend.query(
            "SELECT arch FROM claims WHERE device=? AND settings_key=? AND space=? AND claimed_at >= ?",
            (_device_name(device), _key(settings), space, time.time() - CLAIM_TTL_S))}

    def release(self, device: str | Device, settings: dict[str, Any] | str, space: str,
                archs: Sequence[str]) -> None:
        """Give up this owner's claims on ``archs``."""
        for arch in archs:
            self._backend.execute("DELETE FROM claims WHERE device=? AND settings_key=? AND space=? AND arch=? "
                                  "AND owner=?", (_device_name(device), _key(settings), space, arch, self.owner))

    def __len__(self) -> int:
        return int(self._backend.query("SELECT COUNT(*) FROM measurements", ())[0][0])

    def __iter__(self) -> Iterator[LatencyMeasurement]:
        return iter(self.all())

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> "MeasurementStore":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MeasurementStore({shown_location(self.location)!r})"


def open_store(store: Any) -> MeasurementStore | None:
    """``store`` as a :class:`MeasurementStore`: ``None`` the default one, a path or URL, a store
    itself, or ``False`` for none (returns ``None``)."""
    if store is False:
        return None
    if store is None:
        return MeasurementStore()
    if isinstance(store, MeasurementStore):
        return store
    return MeasurementStore(store)


def measure_claimed(store: MeasurementStore, device: str | Device, settings: dict[str, Any] | str, space: str,
                    archs: Sequence[str], measure_some: Callable[[list[str]], None], *, refresh: bool = False,
                    poll_s: float = 0.5, on_wait: Callable[[int], None] | None = None) -> None:
    """Have every architecture of ``archs`` measured into ``store`` exactly once among the
    processes sharing it.

    ``measure_some(archs)`` measures and stores the architectures this
    process claimed. Architectures another process is measuring are waited
    for (``on_wait(count)`` is told how many, once per wait) and then read
    from the store; a claim left by a killed process lapses after
    :data:`CLAIM_TTL_S` seconds without progress and is taken over.
    ``refresh``: measure again even what the store already holds.
    """
    name = _device_name(device)
    pending = list(dict.fromkeys(archs))
    told = False
    while pending:
        claimed = store.claim(name, settings, space, pending)
        try:
            todo = claimed if refresh else [a for a in claimed if store.get(name, settings, space, a) is None]
            if todo:
                measure_some(todo)
        finally:
            store.release(name, settings, space, claimed)
        pending = [a for a in pending if a not in set(claimed)]
        if not pending:
            return
        busy = store.claimed(name, settings, space)
        # one that nobody holds any more was measured by its holder (or given up, and is claimed again)
        pending = [a for a in pending if a in busy or store.get(name, settings, space, a) is None]
        waiting = sum(a in busy for a in pending)
        if waiting:
            if on_wait is not None and not told:
                on_wait(waiting)
            told = True
            time.sleep(poll_s)


# --------------------------------------------------------------------------- #
# The two databases
# --------------------------------------------------------------------------- #
class _Backend(abc.ABC):
    """One connection: statements with ``?`` placeholders, each committed at once."""

    tiebreak = "arch"

    @abc.abstractmethod
    def execute(self, sql: str, values: Sequence = ()) -> None: ...

    @abc.abstractmethod
    def query(self, sql: str, values: Sequence = ()) -> list[tuple]: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class _SQLite(_Backend):
    tiebreak = "rowid"

    def __init__(self, path: Path):
        self.path = path
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: every statement is its own transaction
            self._connection = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None,
                                               check_same_thread=False)
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._prepare_layout()
            self._connection.execute(_claims_schema("REAL"))
        except (OSError, sqlite3.Error) as error:
            raise UserInputError(f"cannot open the measurement store {str(self.path)!r}: {error}. "
                                 f"Pass another path (or set ${STORE_ENV}).") from None

    def execute(self, sql: str, values: Sequence = ()) -> None:
        self._connection.execute(sql, tuple(values))

    def query(self, sql: str, values: Sequence = ()) -> list[tuple]:
        return self._connection.execute(sql, tuple(values)).fetchall()

    def close(self) -> None:
        self._connection.close()

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
                    self._connection.execute(_schema("REAL"))
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


class _PostgreSQL(_Backend):
    def __init__(self, url: str):
        self.url = url
        shown = shown_location(url)
        try:
            import psycopg
        except ImportError:
            raise UserInputError(f"--store {shown}: PostgreSQL needs the psycopg package; pip install "
                                 f"'psycopg[binary]' (or pip install 'nas[postgresql]')") from None
        self._errors = psycopg.Error
        conninfo = _POSTGRESQL.sub("postgresql://", url)
        try:
            self._connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise UserInputError(
                f"--store {shown}: cannot reach the PostgreSQL measurement store ({reason}). Start a server "
                f"(e.g. 'initdb -D DIR && pg_ctl -D DIR -o \"-p 5432\" start', then 'createdb DATABASE') or check "
                f"the host, port, user and database of the URL") from None
        except psycopg.ProgrammingError as error:
            raise UserInputError(f"--store {shown} is malformed ({error}); e.g. "
                                 f"postgresql+psycopg://nas@localhost:5432/nas") from None
        try:
            with self._connection.transaction():
                # one process creates the tables; the others wait on the lock, then find them
                self._connection.execute("SELECT pg_advisory_xact_lock(4242001)")
                self._connection.execute(_schema("DOUBLE PRECISION"))
                self._connection.execute(_claims_schema("DOUBLE PRECISION"))
                self._connection.execute("CREATE TABLE IF NOT EXISTS nas_store (name TEXT PRIMARY KEY, value TEXT)")
                self._connection.execute("INSERT INTO nas_store VALUES ('layout', %s) ON CONFLICT (name) DO NOTHING",
                                         (str(SCHEMA_VERSION),))
                layout = int(self._connection.execute("SELECT value FROM nas_store WHERE name='layout'")
                             .fetchone()[0])
        except psycopg.Error as error:
            raise UserInputError(f"--store {shown}: the database cannot hold a measurement store "
                                 f"({str(error).strip().splitlines()[0]}); check the user's rights") from None
        if layout != SCHEMA_VERSION:
            raise UserInputError(f"the measurement store {shown} has table layout {layout}; this nas reads layout "
                                 f"{SCHEMA_VERSION}. Upgrade nas, or pass another --store.")

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def execute(self, sql: str, values: Sequence = ()) -> None:
        self._connection.execute(self._sql(sql), tuple(values))

    def query(self, sql: str, values: Sequence = ()) -> list[tuple]:
        return self._connection.execute(self._sql(sql), tuple(values)).fetchall()

    def close(self) -> None:
        self._connection.close()


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
