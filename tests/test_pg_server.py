"""Tests of the private PostgreSQL server (tests/_pg_server.py) itself, with psycopg alone:
a row written survives a clean stop, an immediate stop and a SIGKILL of the postmaster."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from _pg_server import (
    PrivatePostgres,
    StopMode,
    private_postgres,  # noqa: F401  (the fixture, imported as a conftest would)
    skip_or_fail,
    unavailable,
)

# each test starts a server of its own (0.5-1 s on 2 shared CPUs), the first also makes the
# template (initdb, 1-1.5 s)
pytestmark = pytest.mark.slow


@pytest.fixture
def server(request: pytest.FixtureRequest) -> PrivatePostgres:
    """The ``private_postgres`` fixture (by its name: a parameter of that name would shadow
    the import above)."""
    pg: PrivatePostgres = request.getfixturevalue("private_postgres")
    return pg


def write_row(url: str) -> None:
    with psycopg.connect(url, connect_timeout=5) as con:
        con.execute("CREATE TABLE t (v text)")
        con.execute("INSERT INTO t VALUES ('kept')")


def read_rows(url: str) -> list[tuple[str]]:
    with psycopg.connect(url, connect_timeout=5) as con:
        return con.execute("SELECT v FROM t").fetchall()


def test_the_fixture_serves_database_test_with_fsync_on(server: PrivatePostgres) -> None:
    assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/test"
    with psycopg.connect(server.url, connect_timeout=5) as con:
        row = con.execute("SELECT current_database(), current_setting('fsync')").fetchone()
    assert row == ("test", "on")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_row_survives_a_stop(server: PrivatePostgres, mode: StopMode) -> None:
    write_row(server.url)
    server.stop(mode=mode)
    assert not server.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=5)
    server.start()
    assert read_rows(server.url) == [("kept",)]


def test_a_killed_server_starts_again_and_recovers(server: PrivatePostgres) -> None:
    write_row(server.url)
    client = psycopg.connect(server.url, connect_timeout=5)  # a backend: kill() waits for it
    server.kill()
    assert not server.running
    with pytest.raises(psycopg.OperationalError):
        client.execute("SELECT 1")
    client.close()
    server.start()
    assert read_rows(server.url) == [("kept",)]


def test_close_leaves_nothing_behind(tmp_path: Path) -> None:
    """The class on its own, given a test's tmp_path (private to root: pytest makes it so)."""
    reason = unavailable()
    if reason:
        skip_or_fail(reason)
    pg = PrivatePostgres(tmp_path / "pg")
    pg.start()
    pid = pg.postmaster_pid()
    pg.close()
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert not pg.directory.exists()
    assert not pg.home.exists()
    pg.close()  # twice is harmless
