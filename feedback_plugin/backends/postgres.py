"""PostgreSQL backend: durable feedback shared by app workers on several machines.

Design
------
One row per turn in ``turns`` (the layout, indexes and migrations are in
:mod:`.postgres_schema`); every namespace shares the tables, and every id is
a bound parameter (:mod:`.postgres_rows` says how ids and texts PostgreSQL
cannot hold are stored). Each call is one statement, so one round trip:

* ``append``: one ``INSERT … SELECT FROM unnest(…)`` per batch (the
  write-behind writer's), ``ON CONFLICT`` replacing a turn recorded again in
  place; with ``max_entries``, one ``DELETE`` of the touched sessions' oldest
  turns in the same transaction;
* ``update`` (feedback): one ``UPDATE … SET doc = doc || fields RETURNING``:
  the server merges the rating into the stored entry under its row lock, so
  concurrent raters lose nothing and no payload crosses the wire twice (an
  entry kept as ``raw`` text, or a rating jsonb cannot hold, takes a locked
  read-modify-write instead);
* ``read(last_n=)``, ``sessions``, ``get_many``: index scans;
* ``scan``: a server-side cursor, streamed in batches of 2,000.

Retention: ``ttl`` sets ``expires_at``; every read skips expired rows, and
writes purge them (at most 1,000 rows, at most every 10 seconds per
process), so no cron is needed. ``max_entries`` trims on append.

Positive memory lives on the server: :mod:`.postgres_memory`.

Connections: a psycopg ``ConnectionPool`` for the sync methods and, per
event loop, an ``AsyncConnectionPool`` for the ``a*`` ones, both opened on
first use (the constructor does no I/O) and checked before each use, so a
server restart costs no failed call once it is back. The URL's own query
parameters ``schema`` (default ``feedback_plugin``), ``pool_size`` (10) and
``pool_timeout`` (seconds a call waits for a free connection, 2) are the
backend's; the rest go to libpq. An exhausted pool raises
``psycopg_pool.PoolTimeout`` (a transient error: queued turns are kept and
retried; a read raises :class:`~feedback_plugin.errors.StoreError` saying so).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError
from .base import Change, Item, SessionKey
from .postgres_memory import PostgresMemory
from .postgres_rows import dec_id, enc_id, jsonb_safe, split_payload
from .postgres_schema import check_schema_name, ensure_schema

__all__ = ["PostgresBackend"]

log = logging.getLogger("feedback_plugin")

PURGE_EVERY = 10.0
"""Seconds between purges of expired rows by one process's writes."""
PURGE_MAX = 1000
"""Expired rows one purge deletes at most."""
SCAN_BATCH = 2000


def _live(table: str = "") -> str:
    """The SQL condition that a row of ``table`` (an alias, or none) has not expired."""
    column = f"{table}.expires_at" if table else "expires_at"
    return f"({column} IS NULL OR {column} > now())"


_LIVE = _live()
_ITERATIVE_SCAN = "SET hnsw.iterative_scan = relaxed_order"
_PAYLOAD = "coalesce(raw, doc::text)"

# (conninfo, schema) checked by this process -> whether the database has pgvector
_schema_ready: dict[tuple[str, str], bool] = {}
_schema_lock = threading.Lock()


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """The libpq URL without the backend's own query parameters, and those."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ("schema", "pool_size", "pool_timeout"):
            ours[name] = value
        else:
            rest.append((name, value))
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    # quote, not quote_plus: libpq reads "+" as a plus sign, not a space
    query = urlencode(rest, quote_via=quote)
    return urlunsplit((scheme, parts.netloc, parts.path, query, "")), ours


class PostgresBackend:
    """Session entries in PostgreSQL (``postgresql://user@host:5432/db``).

    The constructor validates and does no I/O: the pool connects, and the
    schema is created or migrated, on first use.
    """

    shared_across_processes = True

    def __init__(
        self,
        url: str,
        *,
        namespace: str | None = None,
        ttl: float | None = None,
        max_entries: int | None = None,
        schema: str | None = None,
        pool_size: int | None = None,
        pool_timeout: float | None = None,
    ) -> None:
        try:
            import psycopg  # noqa: F401
            import psycopg_pool  # noqa: F401
        except ImportError as exc:  # pragma: no cover - exercised without the extra
            raise ConfigurationError(
                "the PostgreSQL backend needs psycopg: pip install 'feedback-plugin[postgres]'"
            ) from exc
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigurationError(f"not a PostgreSQL URL: {url!r}")
        self.conninfo, options = _split_url(url)
        self.url = url
        self.schema = check_schema_name(schema or options.get("schema") or "feedback_plugin")
        try:
            self.pool_size = int(pool_size or options.get("pool_size") or 10)
            self.pool_timeout = float(pool_timeout or options.get("pool_timeout") or 2.0)
        except ValueError as exc:
            raise ConfigurationError(f"bad pool option in {url!r}: {exc}") from exc
        if self.pool_size < 1 or not self.pool_timeout > 0:
            raise ConfigurationError("pool_size must be >= 1 and pool_timeout > 0")
        self.namespace = namespace
        self.ttl = ttl
        self.max_entries = max_entries
        self.ns = enc_id(namespace)
        s = self.s = f'"{self.schema}"'
        self.t = f"{s}.turns"
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self._apools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._memory: PostgresMemory | None = None
        self._purged = 0.0
        self.server_vectors = False  # the database has pgvector (known after first use)
        self._checked = False  # the schema was checked (and server_vectors learnt)

    def __repr__(self) -> str:
        from ..calls import redacted

        return f"PostgresBackend({redacted(self.url)!r}, namespace={self.namespace!r})"

    # -- connections -----------------------------------------------------------------

    def _ensure_schema(self, pool: Any = None) -> None:
        """Create or migrate the schema once per process (on a connection of ``pool``, else
        on one of its own), and learn whether the database has pgvector."""
        key = (self.conninfo, self.schema)
        if key not in _schema_ready:
            import psycopg

            with _schema_lock:
                if key not in _schema_ready and pool is not None:
                    with self._first_connection(pool) as con:
                        _schema_ready[key] = ensure_schema(con, self.schema)
                elif key not in _schema_ready:
                    with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as con:
                        _schema_ready[key] = ensure_schema(con, self.schema)
        self.server_vectors = _schema_ready[key]
        self._checked = True

    @contextlib.contextmanager
    def _first_connection(self, pool: Any) -> Iterator[Any]:
        """A connection of a pool that never connected yet. A pool that cannot connect
        says only that it timed out: then one direct attempt says why (the server
        refused, the password was wrong)."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            connection = pool.connection()
            con = connection.__enter__()
        except PoolTimeout:
            with psycopg.connect(self.conninfo, connect_timeout=5):
                pass  # it raises the reason; if it connects now, the timeout stands
            raise
        try:
            yield con
        except BaseException as exc:
            connection.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            connection.__exit__(None, None, None)

    @staticmethod
    def _configure(con: Any) -> None:
        """A new pooled connection: let a filtered HNSW search scan on until enough rows
        pass (pgvector 0.8's iterative scan). Set whether or not the database has
        pgvector (a setting with a dot is kept for an extension that may load later), so
        no connection waits for the schema check."""
        with contextlib.suppress(Exception):
            con.execute(_ITERATIVE_SCAN)

    @staticmethod
    async def _aconfigure(con: Any) -> None:
        with contextlib.suppress(Exception):
            await con.execute(_ITERATIVE_SCAN)

    def _pool_options(self) -> dict[str, Any]:
        return {
            "min_size": 1,
            "max_size": self.pool_size,
            "timeout": self.pool_timeout,
            # a failed reconnection is retried at 1, 3, 7, 15... s, and no caller starts
            # another meanwhile: give up within seconds, so the next call connects at once
            # when the server is back (the default, 300 s, kept calls failing for as long
            # as the outage had lasted)
            "reconnect_timeout": max(self.pool_timeout, 2.0),
            "kwargs": {"autocommit": True, "connect_timeout": 5},
            "open": False,
        }

    @property
    def pool(self) -> Any:
        """The sync connection pool (opened on first use)."""
        pool = self._pool
        if pool is None:
            from psycopg_pool import ConnectionPool

            with self._pool_lock:
                if self._pool is None:
                    pool = ConnectionPool(
                        self.conninfo,
                        check=ConnectionPool.check_connection,
                        configure=self._configure,
                        name=f"feedback-plugin-{self.schema}",
                        **self._pool_options(),
                    )
                    pool.open(wait=False)
                    self._pool = pool
                pool = self._pool
        if not self._checked:
            self._ensure_schema(pool)  # on its first connection: one connect per process
        return pool

    async def apool(self) -> Any:
        """This event loop's async connection pool (opened on first use)."""
        loop = asyncio.get_running_loop()
        pool = self._apools.get(loop)
        if pool is None:
            AsyncConnectionPool = _async_pool_class()
            await asyncio.to_thread(self._ensure_schema)
            pool = AsyncConnectionPool(
                self.conninfo,
                check=AsyncConnectionPool.check_connection,
                configure=self._aconfigure,
                name=f"feedback-plugin-{self.schema}-async",
                **self._pool_options(),
            )
            await pool.open(wait=False)
            self._apools[loop] = pool
        return pool

    def _run(
        self, sql: str, params: Any = None, binary: bool = False, prepare: bool | None = None
    ) -> list[tuple[Any, ...]]:
        """One statement's rows (``binary``: bytea as bytes on the wire, not hex text).

        ``prepare=False`` for a statement whose best plan depends on its values (a
        memory search: one owner's few rows, or the GIN index): psycopg prepares a
        statement run five times, and PostgreSQL then settles on one generic plan
        (measured: 2.4 ms planned per query, 10.7 ms prepared)."""
        with self.pool.connection() as con:
            cur = con.execute(sql, params, binary=binary, prepare=prepare)
            rows: list[tuple[Any, ...]] = cur.fetchall() if cur.description else []
        return rows

    async def _arun(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        async with (await self.apool()).connection() as con:
            cur = await con.execute(sql, params)
            rows: list[tuple[Any, ...]] = await cur.fetchall() if cur.description else []
        return rows

    # -- append ----------------------------------------------------------------------

    def _append_sql(self, items: Sequence[Item]) -> list[tuple[str, dict[str, Any]]]:
        """The statements of one batch: the insert, then the trims and purge it calls for."""
        latest: dict[tuple[SessionKey, str], str] = {}
        for key, qa_id, payload in items:  # one row per turn (the first's place, last text)
            latest[(key, qa_id)] = payload
        owners, sids, qas, docs, raws = [], [], [], [], []
        for ((user, session_id), qa_id), payload in latest.items():
            doc, raw = split_payload(payload)
            owners.append(enc_id(user))
            sids.append(enc_id(session_id))
            qas.append(enc_id(qa_id))
            docs.append(doc)
            raws.append(raw)
        t = self.t
        statements = [
            (
                f"INSERT INTO {t} (namespace, owner, session_id, qa_id, doc, raw, expires_at)"
                " SELECT %(ns)s, o, s, q, d::jsonb, r,"
                " now() + make_interval(secs => %(ttl)s::float8)"
                " FROM unnest(%(o)s::text[], %(s)s::text[], %(q)s::text[], %(d)s::text[],"
                " %(r)s::text[]) WITH ORDINALITY AS x(o, s, q, d, r, n) ORDER BY n"
                " ON CONFLICT (namespace, owner, session_id, qa_id) DO UPDATE"
                " SET doc = EXCLUDED.doc, raw = EXCLUDED.raw, expires_at = EXCLUDED.expires_at",
                {
                    "ns": self.ns,
                    "ttl": self.ttl,
                    "o": owners,
                    "s": sids,
                    "q": qas,
                    "d": docs,
                    "r": raws,
                },
            )
        ]
        if self.max_entries is not None:
            touched = sorted({(o, s) for o, s in zip(owners, sids, strict=True)})
            statements.append(
                (
                    f"DELETE FROM {t} WHERE seq IN (SELECT old.seq"
                    " FROM unnest(%(o)s::text[], %(s)s::text[]) AS k(o, s),"
                    f" LATERAL (SELECT seq FROM {t} WHERE namespace = %(ns)s AND owner = k.o"
                    " AND session_id = k.s ORDER BY seq DESC OFFSET %(keep)s) AS old)",
                    {
                        "ns": self.ns,
                        "o": [o for o, _ in touched],
                        "s": [s for _, s in touched],
                        "keep": self.max_entries,
                    },
                )
            )
        if self.ttl is not None and time.monotonic() - self._purged > PURGE_EVERY:
            self._purged = time.monotonic()
            statements.append(
                (
                    f"DELETE FROM {t} WHERE seq IN (SELECT seq FROM {t} WHERE namespace = %(ns)s"
                    " AND expires_at <= now() LIMIT %(max)s)",
                    {"ns": self.ns, "max": PURGE_MAX},
                )
            )
        return statements

    def append(self, items: Sequence[Item]) -> None:
        if not items:
            return
        statements = self._append_sql(items)
        with self.pool.connection() as con, con.transaction():
            for sql, params in statements:
                con.execute(sql, params)

    async def aappend(self, items: Sequence[Item]) -> None:
        if not items:
            return
        statements = self._append_sql(items)
        async with (await self.apool()).connection() as con, con.transaction():
            for sql, params in statements:
                await con.execute(sql, params)

    # -- reads -----------------------------------------------------------------------

    def _key(self, key: SessionKey) -> dict[str, Any]:
        return {"ns": self.ns, "o": enc_id(key[0]), "s": enc_id(key[1])}

    def _read_sql(self, key: SessionKey, last_n: int | None) -> tuple[str, dict[str, Any]]:
        return (
            f"SELECT {_PAYLOAD} FROM (SELECT seq, doc, raw FROM {self.t}"
            " WHERE namespace = %(ns)s AND owner = %(o)s AND session_id = %(s)s"
            f" AND {_LIVE} ORDER BY seq DESC LIMIT %(n)s) AS newest ORDER BY seq",
            {**self._key(key), "n": last_n},
        )

    def read(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        return [row[0] for row in self._run(*self._read_sql(key, last_n))]

    async def aread(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        return [row[0] for row in await self._arun(*self._read_sql(key, last_n))]

    def _first_sql(self, key: SessionKey) -> tuple[str, dict[str, Any]]:
        return (
            f"SELECT {_PAYLOAD} FROM {self.t} WHERE namespace = %(ns)s AND owner = %(o)s"
            f" AND session_id = %(s)s AND {_LIVE} ORDER BY seq LIMIT 1",
            self._key(key),
        )

    def first(self, key: SessionKey) -> str | None:
        rows = self._run(*self._first_sql(key))
        return str(rows[0][0]) if rows else None

    async def afirst(self, key: SessionKey) -> str | None:
        rows = await self._arun(*self._first_sql(key))
        return str(rows[0][0]) if rows else None

    def _get_sql(self, refs: Sequence[tuple[SessionKey, str]]) -> tuple[str, dict[str, Any]]:
        return (
            f"SELECT x.n, {_PAYLOAD} FROM unnest(%(o)s::text[], %(s)s::text[], %(q)s::text[])"
            f" WITH ORDINALITY AS x(o, s, q, n) JOIN {self.t} t ON t.namespace = %(ns)s"
            " AND t.owner = x.o AND t.session_id = x.s AND t.qa_id = x.q"
            f" WHERE {_live('t')}",
            {
                "ns": self.ns,
                "o": [enc_id(key[0]) for key, _ in refs],
                "s": [enc_id(key[1]) for key, _ in refs],
                "q": [enc_id(qa_id) for _, qa_id in refs],
            },
        )

    @staticmethod
    def _placed(count: int, rows: list[tuple[Any, ...]]) -> list[str | None]:
        found: list[str | None] = [None] * count
        for n, payload in rows:
            found[n - 1] = payload
        return found

    def get(self, key: SessionKey, qa_id: str) -> str | None:
        return self.get_many([(key, qa_id)])[0]

    async def aget(self, key: SessionKey, qa_id: str) -> str | None:
        return (await self.aget_many([(key, qa_id)]))[0]

    def get_many(self, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]:
        """One query, whatever the number of entries."""
        if not refs:
            return []
        return self._placed(len(refs), self._run(*self._get_sql(refs)))

    async def aget_many(self, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]:
        if not refs:
            return []
        return self._placed(len(refs), await self._arun(*self._get_sql(refs)))

    def _sessions_sql(self, user: str | None) -> tuple[str, dict[str, Any]]:
        return (
            f"SELECT session_id FROM {self.t} WHERE namespace = %(ns)s AND owner = %(o)s"
            f" AND {_LIVE} GROUP BY session_id ORDER BY min(seq)",
            {"ns": self.ns, "o": enc_id(user)},
        )

    def sessions(self, user: str | None) -> list[str]:
        return [str(dec_id(row[0])) for row in self._run(*self._sessions_sql(user))]

    async def asessions(self, user: str | None) -> list[str]:
        return [str(dec_id(row[0])) for row in await self._arun(*self._sessions_sql(user))]

    def scan(self) -> Iterator[tuple[SessionKey, str]]:
        """Every live entry of this namespace, through a server-side cursor."""
        with self.pool.connection() as con, con.transaction():
            cursor = con.cursor(name="feedback_plugin_scan")
            cursor.itersize = SCAN_BATCH
            cursor.execute(
                f"SELECT owner, session_id, {_PAYLOAD} FROM {self.t}"
                f" WHERE namespace = %s AND {_LIVE}",
                (self.ns,),
            )
            for owner, session_id, payload in cursor:
                yield (dec_id(owner), str(dec_id(session_id))), payload

    # -- changes ---------------------------------------------------------------------

    def _update_sql(self, key: SessionKey, qa_id: str, fields: str) -> tuple[str, dict[str, Any]]:
        return (
            f"UPDATE {self.t} SET doc = (doc || %(f)s::jsonb) - ARRAY(SELECT key FROM"
            " jsonb_each(%(f)s::jsonb) WHERE value IN ('{}'::jsonb, '[]'::jsonb))"
            " WHERE namespace = %(ns)s"
            " AND owner = %(o)s AND session_id = %(s)s AND qa_id = %(q)s AND raw IS NULL"
            f" AND {_LIVE} RETURNING doc::text",
            {**self._key(key), "q": enc_id(qa_id), "f": fields},
        )

    def _locked_sql(self, key: SessionKey, qa_id: str) -> tuple[str, dict[str, Any]]:
        return (
            f"SELECT seq, {_PAYLOAD} FROM {self.t} WHERE namespace = %(ns)s AND owner = %(o)s"
            f" AND session_id = %(s)s AND qa_id = %(q)s AND {_LIVE} FOR UPDATE",
            {**self._key(key), "q": enc_id(qa_id)},
        )

    def _rewrite_sql(self, seq: int, payload: str) -> tuple[str, dict[str, Any]]:
        doc, raw = split_payload(payload)
        return (
            f"UPDATE {self.t} SET doc = %(d)s::jsonb, raw = %(r)s WHERE seq = %(seq)s",
            {"d": doc, "r": raw, "seq": seq},
        )

    def update(self, key: SessionKey, qa_id: str, change: Change) -> str | None:
        """One ``UPDATE … RETURNING`` when ``change`` has ``fields`` jsonb holds (see the
        module docstring); otherwise a read-modify-write under the row's lock."""
        fields = _fields(change)
        with self.pool.connection() as con:
            if fields is not None:
                row = con.execute(*self._update_sql(key, qa_id, fields)).fetchone()
                if row is not None:
                    return str(row[0])
            with con.transaction():
                found = con.execute(*self._locked_sql(key, qa_id)).fetchone()
                if found is None:
                    return None
                new = change(found[1])
                con.execute(*self._rewrite_sql(found[0], new))
                return new

    async def aupdate(self, key: SessionKey, qa_id: str, change: Change) -> str | None:
        fields = _fields(change)
        async with (await self.apool()).connection() as con:
            if fields is not None:
                cur = await con.execute(*self._update_sql(key, qa_id, fields))
                row = await cur.fetchone()
                if row is not None:
                    return str(row[0])
            async with con.transaction():
                cur = await con.execute(*self._locked_sql(key, qa_id))
                found = await cur.fetchone()
                if found is None:
                    return None
                new = change(found[1])
                await con.execute(*self._rewrite_sql(found[0], new))
                return new

    def _delete_sql(self, key: SessionKey) -> tuple[str, dict[str, Any]]:
        return (
            f"WITH gone AS (DELETE FROM {self.t} WHERE namespace = %(ns)s AND owner = %(o)s"
            f" AND session_id = %(s)s RETURNING {_LIVE} AS live)"
            " SELECT count(*) FILTER (WHERE live) FROM gone",
            self._key(key),
        )

    def delete_session(self, key: SessionKey) -> int:
        return int(self._run(*self._delete_sql(key))[0][0])

    async def adelete_session(self, key: SessionKey) -> int:
        return int((await self._arun(*self._delete_sql(key)))[0][0])

    def drop(self) -> int:
        """Delete every row of this namespace (tests, resets); return how many went."""
        return int(
            self._run(
                f"WITH gone AS (DELETE FROM {self.t} WHERE namespace = %s RETURNING 1)"
                " SELECT count(*) FROM gone",
                (self.ns,),
            )[0][0]
        )

    # -- the rest of the protocol ----------------------------------------------------

    def is_transient(self, exc: BaseException) -> bool:
        """A server that is down, restarting, out of disk or busy (a pool with no free
        connection), a lost connection, a serialization failure or deadlock: may pass.
        Errors about the data sent (a constraint, bad input) do not."""
        import psycopg
        from psycopg_pool import PoolTimeout, TooManyRequests

        if isinstance(exc, (OSError, PoolTimeout, TooManyRequests, psycopg.OperationalError)):
            return True
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate.startswith(("08", "53", "57P", "40"))

    def exists(self) -> bool:
        """A server: always (an empty namespace is an empty store)."""
        return True

    def memory(self) -> PostgresMemory:
        """Positive memory, searched on the server (:mod:`.postgres_memory`)."""
        with self._pool_lock:
            if self._memory is None:
                self._memory = PostgresMemory(self)
            return self._memory

    def close(self) -> None:
        """Release the sync pool, and the async pool of every event loop that is not
        running now (closed on that loop: its tasks end there, not whenever the loop's
        owner cancels what is left); a running loop's pool is its own ``aclose``'s."""
        if self._memory is not None:
            self._memory.close()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        for loop, apool in list(self._apools.items()):
            if loop.is_running():
                continue
            self._apools.pop(loop, None)
            if not loop.is_closed():
                try:
                    loop.run_until_complete(apool.close(timeout=1.0))
                except Exception as exc:  # closing is best effort: the loop goes anyway
                    log.warning("feedback_plugin: async pool not closed: %s", exc)

    async def aclose(self) -> None:
        """Close this loop's async pool (other loops close theirs), then the sync one."""
        pool = self._apools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()
        await asyncio.to_thread(self.close)


@functools.cache
def _async_pool_class() -> Any:
    """psycopg_pool's ``AsyncConnectionPool``, with workers that end when cancelled.

    Its worker tasks catch ``CancelledError`` while they connect (to keep the
    pool consistent), so a cancellation that lands then is lost and the worker
    goes back to waiting for work. ``asyncio.run`` cancels every task when the
    loop ends and waits for them: an app that ended while the pool was still
    opening a connection hung at exit (reproduced under load). Each worker
    here runs the library's worker as an inner task and, when cancelled,
    cancels it again until it ends.
    """
    from psycopg_pool import AsyncConnectionPool

    class _AsyncPool(AsyncConnectionPool):
        @classmethod
        async def worker(cls, q: Any) -> None:
            work = asyncio.ensure_future(super().worker(q))
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                while not work.done():
                    work.cancel()
                    await asyncio.wait([work], timeout=0.1)
                raise

    return _AsyncPool


def _fields(change: Change) -> str | None:
    """The JSON object of the top-level fields ``change`` sets, when it names them and
    jsonb can hold them as given (see :class:`~.base.Change`)."""
    fields = change.fields
    return fields if fields is not None and jsonb_safe(fields) else None
