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
