"""The test PostgreSQL, shared by every suite that runs on a real server.

``FEEDBACK_PLUGIN_TEST_POSTGRES`` names it (default: database ``test`` of the
local server on 127.0.0.1:5432, trust auth, that ``.ci/run`` starts when it
does not answer). Each test uses a namespace of its own (``test-<uuid>``) and
drops its rows at teardown. When the server does not answer, PostgreSQL tests
fail under CI (``$CI`` set) and are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import os
from functools import cache

import pytest

POSTGRES_URL = os.environ.get(
    "FEEDBACK_PLUGIN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


@cache
def postgres_unavailable() -> str | None:
    """Why the test PostgreSQL cannot be used, or ``None`` when it answers."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'feedback-plugin[postgres]')"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as con:
            con.execute("SELECT 1")
    except Exception as exc:
        return f"no PostgreSQL at {POSTGRES_URL} ({type(exc).__name__}: {exc})"
    return None


def require_postgres(what: str = "PostgreSQL") -> None:
    """Fail (under CI) or skip the calling test when the test PostgreSQL is unavailable."""
    reason = postgres_unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and the {what} tests cannot run: {reason}")
    pytest.skip(f"{what} tests skipped: {reason}")


# -- pgvector: the server-side vector index, where the extension is installed ---------

PGVECTOR_URL = os.environ.get(
    "FEEDBACK_PLUGIN_TEST_PGVECTOR", "postgresql://postgres@127.0.0.1:5432/test_pgvector"
)


@cache
def pgvector_unavailable() -> str | None:
    """Why the pgvector tests cannot run, or ``None``: they need the ``vector`` extension
    among the server's available ones (Debian's PostgreSQL packages lack it; it is built
    from source where these tests run), and make ``PGVECTOR_URL``'s database with it."""
    reason = postgres_unavailable()
    if reason is not None:
        return reason
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3) as con:
        available = "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        if not con.execute(available).fetchone():
            return "the server has no vector extension (pgvector) to install"
        name = PGVECTOR_URL.rsplit("/", 1)[-1].split("?")[0]
        if not con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(PGVECTOR_URL, autocommit=True, connect_timeout=3) as con:
        con.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return None


def require_pgvector() -> None:
    """Skip the calling test where pgvector is not available (in CI too: it is optional)."""
    reason = pgvector_unavailable()
    if reason is not None:
        pytest.skip(f"pgvector tests skipped: {reason}")
