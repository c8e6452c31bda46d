"""The contract suite's fixtures: every test here runs once per backend.

``backend`` is parametrised over ``"disk"`` (a diskcache directory under
``tmp_path``), ``"redis"`` (a real server, ``$FEEDBACK_PLUGIN_TEST_REDIS``,
default ``redis://127.0.0.1:6379/15``, in a namespace of its own,
``test-<uuid>``, whose keys are deleted at teardown), ``"postgres"`` (a real
server, ``$FEEDBACK_PLUGIN_TEST_POSTGRES``, default database ``test`` on
127.0.0.1:5432, likewise in a namespace of its own whose rows are deleted at
teardown), ``"pgvector"`` (the same in database ``test_pgvector`` with the
``vector`` extension, so the server ranks by meaning; skipped where the server
has no pgvector, CI included: the extension is optional) and ``"memory"`` (an
in-memory backend written only against the documented protocol,
``contract/memory_backend.py``: it proves the protocol is the whole
contract). Tests that need a second process skip a backend that is not
``shared_across_processes``.

No server answering: that server's part fails when ``$CI`` is set (CI must
run every part) and is skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _postgres import PGVECTOR_URL, POSTGRES_URL, require_pgvector, require_postgres
from _redis import REDIS_URL, require_redis

from feedback_plugin import SessionStore

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ["disk", "redis", "postgres", "pgvector", "memory"]


class Stores:
    """Opens stores on one backend's test location; closes and cleans them up afterwards.

    ``stores()`` opens another store object on the *same* data (a fresh
    connection / cache handle); ``stores(namespace=stores.ns("a"))`` one in a
    sibling namespace; ``stores.fresh()`` one on new, empty data (a new namespace).
    """

    def __init__(self, backend: str, root: Path) -> None:
        self.backend = backend
        self.root = root
        self._opened: list[SessionStore] = []
        self._fresh = 0
        self.baseline: set[str] | None = None
        if backend in ("redis", "postgres", "pgvector"):
            self.location = {"redis": REDIS_URL, "postgres": POSTGRES_URL}.get(
                backend, PGVECTOR_URL
            )
            self.namespace: str | None = f"test-{uuid.uuid4().hex}"
        elif backend == "memory":
            import contract.memory_backend  # noqa: F401  (registers memory://)

            self.location = f"memory://{uuid.uuid4().hex}"
            self.namespace = None
        else:
            self.location = str(root / "store")
            self.namespace = None

    @property
    def is_redis(self) -> bool:
        return self.backend == "redis"

    @property
    def is_server(self) -> bool:
        """Redis or PostgreSQL: data outlives the test unless dropped."""
        return self.backend in ("redis", "postgres", "pgvector")

    def ns(self, suffix: str) -> str:
        """A namespace of its own for this test (a server: under the test's unique prefix)."""
        return f"{self.namespace}-{suffix}" if self.namespace else f"app-{suffix}"

    def __call__(self, **kwargs: Any) -> SessionStore:
        kwargs.setdefault("namespace", self.namespace)
        store = SessionStore(kwargs.pop("location", self.location), **kwargs)
        self._opened.append(store)
        return store

    def adopt(self, store: SessionStore) -> SessionStore:
        """Close (and on a server drop) a store built by the test itself at teardown."""
        self._opened.append(store)
        return store

    def fresh(self, **kwargs: Any) -> SessionStore:
        """A store on new, empty data: a namespace of its own at the same location."""
        self._fresh += 1
        kwargs.setdefault("namespace", self.ns(f"fresh{self._fresh}"))
        return self(**kwargs)

    def discard(self, store: SessionStore) -> None:
        """Close a store and (a server) delete its data now: hypothesis makes many per test."""
        self._cleanup(store)
        self._opened.remove(store)

    def _cleanup(self, store: SessionStore) -> None:
        try:
            store.close()
        finally:
            if self.is_server:
                store.backend.drop()  # type: ignore[attr-defined]
                store.backend.close()

    def close(self) -> None:
        errors: list[BaseException] = []
        for store in reversed(self._opened):
            try:
                self._cleanup(store)
            except Exception as exc:  # clean up every namespace even if one fails
                errors.append(exc)
        self._opened.clear()
        if errors:
            raise errors[0]
        if self.baseline is not None:
            assert self.keys_outside(self.baseline) == [], "keys outside the test's namespaces"

    # -- Redis key inspection ------------------------------------------------

    def redis_keys(self) -> set[str]:
        """Every key in the test database (SCAN, never KEYS)."""
        import redis

        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            return set(client.scan_iter(count=1000))
        finally:
            client.close()

    def keys_outside(self, before: set[str], store: SessionStore | None = None) -> list[str]:
        """Keys created since ``before`` outside ``store``'s namespace prefix (no store:
        outside every namespace this test made, ``test-<uuid>`` and ``test-<uuid>-*``).

        Keys of *other* test or benchmark stores (namespaces ``test-…`` / ``bench…``:
        other sessions may run their suites against this database right now) are not
        counted; any other key is.
        """
        import base64
        import json

        prefix = None if store is None else store.backend._prefix  # type: ignore[attr-defined]
        mine = self.namespace or "\0"
        outside = []
        for key in sorted(self.redis_keys() - before):
            if prefix is not None and key.startswith(prefix):
                continue
            head, _, rest = key.partition(":")
            segment = rest.partition(":")[0]
            try:
                ns = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
            except ValueError:
                ns = None
            if head == "fp" and isinstance(ns, str):
                if prefix is None and ns.startswith(mine):
                    continue  # one of this test's namespaces
                if ns.startswith(("test-", "bench")) and not ns.startswith(mine):
                    continue  # another test's or benchmark's
            outside.append(key)
        return outside

    def watch_keys(self) -> None:
        """Check at teardown that this test created no key outside its namespaces."""
        if self.is_redis and self.baseline is None:
            self.baseline = self.redis_keys()

    def stored_text(self, store: SessionStore) -> str:
        """Everything ``store`` keeps at rest, as one string (to look for leftover text).

        Redis: every key of the namespace, whatever its type. diskcache: every
        live row of the cache and every row of the memory index file.
        """
        parts: list[str] = []
        backend: Any = store.backend
        if self.backend == "memory":
            return str(backend.stored_text())
        if self.backend in ("postgres", "pgvector"):
            s, ns = backend.s, backend.ns
            rows = backend._run(
                f"SELECT t.doc::text || coalesce(t.raw, '') FROM {s}.turns t"
                " WHERE t.namespace = %(ns)s UNION ALL"
                f" SELECT encode(v.vec, 'hex') FROM {s}.vectors v WHERE v.namespace = %(ns)s",
                {"ns": ns},
            )
            return "\n".join(row[0] for row in rows)
        if self.is_redis:
            client = backend.client
            for name in client.scan_iter(match=backend._prefix + "*", count=1000):
                kind = client.type(name)
                if kind == "string":
                    parts.append(client.get(name) or "")
                elif kind == "list":
                    parts.extend(client.lrange(name, 0, -1))
                elif kind == "zset":
                    parts.extend(client.zrange(name, 0, -1))
                elif kind == "stream":
                    parts.extend(repr(fields) for _, fields in client.xrange(name))
                else:
                    parts.append(f"<{kind} {name}>")
            return "\n".join(parts)
        import sqlite3

        cache = backend.cache
        parts.extend(f"{k} {cache.get(k)}" for k in cache.iterkeys())
        if os.path.exists(backend.index_path):
            con = sqlite3.connect(backend.index_path)
            try:
                parts.extend(repr(row) for row in con.execute("SELECT * FROM turns"))
            finally:
                con.close()
        return "\n".join(parts)

    def subprocess_args(self, store: SessionStore | None = None) -> list[str]:
        """Command-line arguments that let a child process open the same store."""
        if store is None:
            return [self.location, self.namespace or ""]
        return [store.location, store.namespace or ""]


def require_backend(name: str) -> None:
    """Skip the calling test when the server ``name`` runs on is not there (pgvector is
    optional everywhere, CI included; Redis and PostgreSQL are required in CI)."""
    if name == "redis":
        require_redis("Redis contract")
    elif name == "postgres":
        require_postgres("PostgreSQL contract")
    elif name == "pgvector":
        require_pgvector()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return str(request.param)


@pytest.fixture
def stores(backend: str, tmp_path: Path) -> Iterator[Stores]:
    factory = Stores(backend, tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def backend_store(stores: Stores) -> SessionStore:
    """A store on the backend under test, with the default write-behind queue."""
    return stores()


# -- child processes ---------------------------------------------------------------

CHILD_PRELUDE = """
import sys
from feedback_plugin import SessionStore

def open_store(**kw):
    return SessionStore(sys.argv[1], namespace=sys.argv[2] or None, **kw)
"""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter (``open_store()`` opens the store of ``args``)."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_child_env(),
        cwd=str(REPO),
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def popen_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``code`` in a new interpreter with pipes for a line-by-line conversation."""
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
        cwd=str(REPO),
    )


def require_processes(stores: Stores) -> None:
    """Skip the calling test on a backend that says other processes cannot share it."""
    backend = stores().backend  # the constructor does no I/O
    if not backend.shared_across_processes:
        pytest.skip(f"{type(backend).__name__} is not shared across processes")


@pytest.fixture
def run_child(stores: Stores) -> Any:
    """``run_child(code, store=None)``: run ``code`` in a new process on this test's store."""
    require_processes(stores)

    def run(
        code: str, store: SessionStore | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return run_python(code, *stores.subprocess_args(store), timeout=timeout)

    return run


@pytest.fixture
def popen_child(stores: Stores) -> Iterator[Any]:
    """``popen_child(code)``: like ``run_child`` but running alongside the test (killed at end)."""
    require_processes(stores)
    started: list[subprocess.Popen[str]] = []

    def start(code: str, store: SessionStore | None = None) -> subprocess.Popen[str]:
        child = popen_python(code, *stores.subprocess_args(store))
        started.append(child)
        return child

    yield start
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        for pipe in (child.stdin, child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()


def process_context() -> Any:
    """A multiprocessing context whose children start in milliseconds.

    ``spawn`` re-imports langchain-core in every child (1-3 s each on a small
    machine); a ``forkserver`` with the library preloaded forks ready children
    from one clean server process (no pytest state, no threads, unlike ``fork``).
    """
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["feedback_plugin", "redis", "psycopg", "contract.workers", "faults.workers"]
    )
    return ctx
