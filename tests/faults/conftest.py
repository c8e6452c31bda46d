"""Fixtures for the fault tests: stores per backend, a private redis-server and a private
PostgreSQL server (``private_postgres``, from tests/_pg_server.py), checks.

Every fault test ends with :func:`assert_consistent`: every stored entry
parses and its fields agree with what the writer wrote (nothing half-written).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pg_server import private_postgres  # noqa: F401  (the fixture, for the fault tests)
from _postgres import POSTGRES_URL, require_postgres
from _redis import REDIS_URL, require_redis

from feedback_plugin import SessionQAEntry, SessionStore


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; in CI (``$CI`` set) a missing server is a failure instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and this fault test cannot run: {reason}")
    pytest.skip(reason)


def process_context() -> Any:
    """Children forked from a ``forkserver`` with the library preloaded (see
    tests/contract/conftest.py): milliseconds to start instead of seconds."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["feedback_plugin", "redis", "psycopg", "contract.workers", "faults.workers"]
    )
    return ctx


@pytest.fixture(params=["disk", "redis", "postgres"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(location, namespace)`` of an empty store on each backend; on the servers (the
    shared test Redis and PostgreSQL) a namespace of its own, whose keys or rows are
    dropped after."""
    if request.param == "disk":
        yield str(tmp_path / "store"), ""
        return
    if request.param == "redis":
        require_redis("Redis fault")
        location = REDIS_URL
    else:
        require_postgres("PostgreSQL fault")
        location = POSTGRES_URL
    namespace = f"test-{uuid.uuid4().hex}"
    yield location, namespace
    with SessionStore(location, namespace=namespace) as store:
        store.backend.drop()  # type: ignore[attr-defined]


def with_params(url: str, **params: object) -> str:
    """``url`` with these query parameters added (``pool_timeout=1``, ...)."""
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def assert_consistent(store: SessionStore) -> list[SessionQAEntry]:
    """Every stored entry parses (``iter_entries`` validates each payload) and is whole:
    the fields the fault writers derive from the turn number all agree."""
    entries = list(store.iter_entries())
    for e in entries:
        if not e.qa_id.startswith("t") or not e.qa_id[1:].isdigit():
            continue
        i = int(e.qa_id[1:])
        assert e.question == f"q{i}", e
        assert e.answer == expected_answer(i), e.qa_id
        assert e.context == [f"c{i}"], e
        assert e.metadata == {"i": i}, e
        assert e.time.tzinfo is not None
        if e.feedback_score is not None or e.feedback_text is not None:
            assert (e.feedback_text, e.feedback_score) == (f"fb{i}", i % 5 + 1), e
            assert e.feedback_time is not None and e.feedback_time >= e.time
    return entries


def expected_answer(i: int) -> str:
    """Every 10th answer is 40 KB: diskcache stores it in a file of its own, not in SQLite."""
    return f"a{i} " + ("🎉" * 10_000 if i % 10 == 0 else "ok")


# -- a private redis-server --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of this test's own, on a free port, its data in ``directory``.

    Persistence: append-only file, fsync on every write (``appendfsync always``).
    Every wait is bounded; ``close()`` always leaves no server behind.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    def start(self, timeout: float = 10) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        self.kill()
        raise RuntimeError(f"private redis-server on port {self.port} did not start:\n{log}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10) -> None:
        """A clean shutdown (SIGTERM: the server finishes its AOF and exits)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        skip_or_fail("redis-server is not installed: the Redis outage tests need their own server")
    try:
        import redis  # noqa: F401
    except ImportError:
        skip_or_fail("the redis client is not installed (pip install 'feedback-plugin[redis]')")
    directory = tmp_path / "redis-data"
    directory.mkdir()
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=5)
        server.kill()


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except Exception:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
