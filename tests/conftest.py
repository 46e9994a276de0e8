"""Fixtures shared by several test folders."""

import pytest


@pytest.fixture(autouse=True)
def own_reference_levels(tmp_path, monkeypatch):
    """Every test keeps its devices' reference levels in its own file, never in the user's."""
    monkeypatch.setenv("NAS_LEVELS", str(tmp_path / "reference-levels.db"))


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (skipped, saying how to get one, where none is installed)."""
    from nas.postgresql import INSTALL_HINT, TemporaryPostgres, server_binaries

    if server_binaries() is None:
        pytest.skip(f"no PostgreSQL server on this machine: {INSTALL_HINT}")
    pytest.importorskip("psycopg", reason="PostgreSQL needs the psycopg package: pip install 'psycopg[binary]'")
    with TemporaryPostgres() as server:
        yield server
