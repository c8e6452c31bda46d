"""The PostgreSQL backend's own promises, beyond the contract suite (tests/contract/).

What a user of this backend relies on: the constructor does no I/O and checks
its options; the schema is created, versioned and migrated forward by the
library, and a newer database is refused; a rating is one ``UPDATE …
RETURNING`` and a batch of turns one ``INSERT``; text PostgreSQL cannot hold
round-trips exactly; expired turns are purged by writes without a cron; and a
rating made in one process is in another's very next memory query, with
nothing held in that process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _postgres import POSTGRES_URL, require_postgres
from contract.conftest import run_python

from feedback_plugin import ConfigurationError, SessionStore
from feedback_plugin.backends import postgres, postgres_schema


@pytest.fixture(autouse=True)
def _server() -> None:
    require_postgres()


@pytest.fixture
def store() -> Iterator[SessionStore]:
    s = SessionStore(POSTGRES_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield s
    s.close()
    s.backend.drop()  # type: ignore[attr-defined]
    s.backend.close()


@pytest.fixture
def schema() -> Iterator[str]:
    """A schema of this test's own, dropped afterwards."""
    import psycopg

    name = f"fp_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    postgres._schema_ready.pop((POSTGRES_URL, name), None)


def _sql(statement: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
        cur = con.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


class Statements:
    """The SQL statements the backend's connections run (the pool's empty checks left out)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import psycopg

        self.sql: list[str] = []
        execute = psycopg.Connection.execute

        def counting(con: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            if str(query).strip():
                self.sql.append(" ".join(str(query).split()))
            return execute(con, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "execute", counting)


# -- configuration ----------------------------------------------------------------


def test_the_constructor_does_no_io_and_checks_its_options() -> None:
    nowhere = SessionStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    assert nowhere.backend.shared_across_processes  # built, not connected
    assert SessionStore("postgres://u@h/db").backend.schema == "feedback_plugin"  # type: ignore[attr-defined]
    for bad in ("?schema=Robert');DROP", "?pool_size=0", "?pool_timeout=soon"):
        with pytest.raises(ConfigurationError):
            SessionStore("postgresql://u@h/db" + bad)


def test_options_of_the_url_are_the_backends_and_the_rest_go_to_libpq() -> None:
    backend = SessionStore(
        "postgresql://u@h:5/db?schema=app_fb&pool_size=3&pool_timeout=2.5&sslmode=disable"
    ).backend
    assert (backend.schema, backend.pool_size, backend.pool_timeout) == ("app_fb", 3, 2.5)  # type: ignore[attr-defined]
    assert backend.conninfo == "postgresql://u@h:5/db?sslmode=disable"  # type: ignore[attr-defined]


# -- the schema -------------------------------------------------------------------


def test_the_schema_is_created_on_first_use_with_its_version(schema: str) -> None:
    with SessionStore(f"{POSTGRES_URL}?schema={schema}", write_behind=False) as s:
        s.record("s1", "q", "a")
    version = _sql(f'SELECT value FROM "{schema}".meta WHERE key = %s', "schema_version")
    assert version == [(str(postgres_schema.SCHEMA_VERSION),)]


def test_a_migration_moves_an_older_database_forward(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SessionStore(f"{POSTGRES_URL}?schema={schema}", write_behind=False) as s:
        kept = s.record("s1", "q", "a")
    postgres._schema_ready.clear()  # a new process, with a newer library
    step = ["CREATE TABLE {s}.notes (turn_seq bigint, note text)"]
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", [*postgres_schema.MIGRATIONS, step])
    monkeypatch.setattr(postgres_schema, "SCHEMA_VERSION", postgres_schema.SCHEMA_VERSION + 1)
    with SessionStore(f"{POSTGRES_URL}?schema={schema}") as s:
        assert s.get_session("s1") == [kept]
    assert _sql(f'SELECT value FROM "{schema}".meta WHERE key = %s', "schema_version") == [
        (str(postgres_schema.SCHEMA_VERSION),)
    ]
    assert _sql(f'SELECT count(*) FROM "{schema}".notes') == [(0,)]


def test_a_database_newer_than_the_library_is_refused(schema: str) -> None:
    with SessionStore(f"{POSTGRES_URL}?schema={schema}", write_behind=False) as s:
        s.record("s1", "q", "a")
    _sql(f"UPDATE \"{schema}\".meta SET value = '999' WHERE key = 'schema_version'")
    postgres._schema_ready.clear()
    with pytest.raises(Exception, match="version 999") as caught:
        SessionStore(f"{POSTGRES_URL}?schema={schema}").get_session("s1")
    assert isinstance(caught.value.__cause__, ConfigurationError)


# -- one round trip -----------------------------------------------------------------


def test_a_rating_is_one_update_returning(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    turn = store.record("s1", "How do I reset my password?", "Use the link.", wait=True)
    statements = Statements(monkeypatch)
    rated = store.rate("s1", turn.qa_id, "clear", 5)
    assert len(statements.sql) == 1 and statements.sql[0].startswith("UPDATE")
    assert "RETURNING" in statements.sql[0]
    assert (rated.feedback_text, rated.feedback_score) == ("clear", 5)
    assert rated.feedback_time is not None
    assert store.get_entry("s1", turn.qa_id) == rated


def test_a_batch_of_turns_is_one_insert(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.get_session("warm-up")  # schema and pool ready
    statements = Statements(monkeypatch)
    for i in range(200):
        store.record_trusted(f"s{i % 7}", f"q{i}", "a", (), None, {}, f"t{i}")
    store.flush()
    inserts = [sql for sql in statements.sql if sql.startswith("INSERT")]
    assert len(inserts) <= 2  # the writer may have split the queue once
    assert sum(len(store.get_session(f"s{i}")) for i in range(7)) == 200


# -- text PostgreSQL cannot hold -------------------------------------------------------


def test_text_postgresql_cannot_hold_round_trips_and_is_remembered(store: SessionStore) -> None:
    odd = "reset\x00password \ud800 now"
    turn = store.record("s\x00", odd, "Use the link.", metadata={"big": 1e20, "nul\x00": 1})
    assert store.thumbs("s\x00", turn.qa_id, up=True)
    [got] = store.get_session("s\x00")
    assert (got.question, got.metadata, got.feedback_score) == (odd, turn.metadata, 5)
    assert isinstance(got.metadata["big"], float)
    hits = store.memory.search("password", user=None, limit=5, min_score=4)
    assert [h.qa_id for h in hits] == [turn.qa_id]


# -- retention ----------------------------------------------------------------------


def test_expired_turns_are_hidden_at_once_and_purged_by_later_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    monkeypatch.setattr(postgres, "PURGE_EVERY", 0.0)
    ns = f"test-{uuid.uuid4().hex}"
    with SessionStore(POSTGRES_URL, namespace=ns, ttl=0.3, write_behind=False) as s:
        old = s.record("s1", "my secret question", "a")
        s.thumbs("s1", old.qa_id, up=True)
        time.sleep(0.5)
        assert s.get_session("s1") == []
        assert s.memory.search("secret", user=None, limit=5, min_score=1) == []
        s.record("s2", "another question", "b")  # a write: purges what expired
        rows = _sql("SELECT doc->>'question' FROM feedback_plugin.turns WHERE namespace = %s", ns)
        assert rows == [("another question",)]
        s.backend.drop()  # type: ignore[attr-defined]


# -- memory across processes ----------------------------------------------------------


CHILD_RATES = """
import sys
store = open_store()
store.add_feedback("s1", sys.argv[3], feedback_score=int(sys.argv[4]))
store.close()
"""


def test_a_rating_made_in_another_process_is_in_the_very_next_query(store: SessionStore) -> None:
    turn = store.record("s1", "How do I export my invoices?", "Settings, then Billing.", wait=True)
    memory = store.ready_memory()
    assert memory.search("export invoices", user=None, limit=5, min_score=4) == []
    args = (store.location, store.namespace or "")
    run_python(CHILD_RATES, *args, turn.qa_id, "5")
    hits = memory.search("export invoices", user=None, limit=5, min_score=4)
    assert [h.qa_id for h in hits] == [turn.qa_id]
    assert hits[0].payload is not None  # the entry came with the hit: nothing re-read
    run_python(CHILD_RATES, *args, turn.qa_id, "1")
    assert memory.search("export invoices", user=None, limit=5, min_score=4) == []


BLACK_HOLE_APP = """
import asyncio, socket, sys
from feedback_plugin.backends import postgres

hole = socket.socket()
hole.bind(("127.0.0.1", 0))
hole.listen(8)  # the kernel completes the handshake; nobody ever answers
port = hole.getsockname()[1]
pool_class = postgres.{pool}

async def main() -> None:
    pool = pool_class(f"host=127.0.0.1 port={{port}} user=x dbname=x connect_timeout=30",
                      min_size=1, open=False)
    await pool.open(wait=False)  # a worker starts connecting
    await asyncio.sleep(0.2)     # ... and is still connecting when the app ends

asyncio.run(main())
print("exited")
"""


@pytest.mark.slow
def test_an_app_that_ends_while_the_pool_connects_exits() -> None:
    """Regression: psycopg_pool's workers swallow a cancellation that lands while they
    connect, so asyncio.run(), which cancels every task at the end and waits for them,
    hung at exit. The backend's pool class re-cancels its workers until they end."""
    proc = run_python(BLACK_HOLE_APP.format(pool="_async_pool_class()"), timeout=25)
    assert proc.returncode == 0, proc.stderr
    assert "exited" in proc.stdout
