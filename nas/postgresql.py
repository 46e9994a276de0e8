"""A throwaway PostgreSQL server on this machine, for the tests and
benchmarks of shared studies and measurement stores.

>>> with TemporaryPostgres() as server:      # initdb + pg_ctl in a temporary folder
...     run_search(storage=server.url)        # postgresql+psycopg://nas@127.0.0.1:PORT/nas

The server binaries (``initdb``, ``pg_ctl``) are looked up on ``PATH`` and in
``/usr/lib/postgresql/*/bin``. PostgreSQL refuses to run as root, so as root
the server runs as the ``postgres`` user (``runuser``). It listens on
127.0.0.1 on a free port with trust authentication, and everything is removed
on exit.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: how to get a server where none is installed
INSTALL_HINT = ("install a PostgreSQL server (Debian/Ubuntu: 'apt-get install postgresql-15'; macOS: "
                "'brew install postgresql@15') so that initdb and pg_ctl are found")


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (newest version first), or ``None``."""
    found = shutil.which("pg_ctl")
    if found and Path(found).with_name("initdb").exists():
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda f: [int(p) if p.isdigit() else 0
                                                                              for p in f.split("/")], reverse=True):
        if (Path(folder) / "pg_ctl").exists() and (Path(folder) / "initdb").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TemporaryPostgres:
    """A PostgreSQL server in a temporary folder, started on enter and removed on exit.

    ``url`` is its SQLAlchemy URL (database ``database``, user ``nas``,
    no password); :meth:`create_database` adds another database.
    """

    def __init__(self, database: str = "nas", *, max_connections: int = 200):
        self.database = database
        self.max_connections = max_connections
        self.port: int | None = None
        self._folder: str | None = None

    @property
    def url(self) -> str:
        return self.url_of(self.database)

    def url_of(self, database: str) -> str:
        return f"postgresql+psycopg://nas@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:  # PostgreSQL never runs as root
            command = ("runuser", "-u", "postgres", "--", *command)
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)

    def __enter__(self) -> "TemporaryPostgres":
        binaries = server_binaries()
        if binaries is None:
            raise RuntimeError(f"no PostgreSQL server binaries: {INSTALL_HINT}")
        self._folder = tempfile.mkdtemp(prefix="nas-postgres-")
        if os.geteuid() == 0:
            shutil.chown(self._folder, "postgres", "postgres")
        data = os.path.join(self._folder, "data")
        try:
            self._run(str(binaries / "initdb"), "-D", data, "-U", "nas", "--auth=trust", "-E", "UTF8",
                      "--no-sync")
            self.port = _free_port()
            options = (f"-p {self.port} -k {self._folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                       f"-c synchronous_commit=off -c full_page_writes=off -c max_connections={self.max_connections}")
            self._run(str(binaries / "pg_ctl"), "-D", data, "-o", options, "-l",
                      os.path.join(self._folder, "server.log"), "-w", "-t", "60", "start")
        except subprocess.CalledProcessError as error:
            self._remove()
            raise RuntimeError(f"PostgreSQL did not start: {error.stderr or error.stdout}") from None
        self.create_database(self.database)
        return self

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={self.port} user=nas dbname=postgres",
                                     autocommit=True) as connection:
                    connection.execute(f'CREATE DATABASE "{name}"')
                return self.url_of(name)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def __exit__(self, *_exc) -> None:
        binaries = server_binaries()
        if self._folder and binaries is not None and self.port is not None:
            try:
                self._run(str(binaries / "pg_ctl"), "-D", os.path.join(self._folder, "data"), "-m", "immediate",
                          "-w", "stop")
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass
        self._remove()

    def _remove(self) -> None:
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
