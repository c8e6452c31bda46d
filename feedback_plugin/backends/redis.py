"""Redis backend: one store shared by app workers on several machines.

Design
------
Every id is JSON-encoded and then base64url-encoded before it enters a key,
so no session id can reach another key or act as a glob pattern::

    fp:{ns}:l:{sk}          LIST of encoded qa ids: the session's order
    fp:{ns}:e:{sk}:{qa}     STRING: one entry's payload (its own TTL)
    fp:{ns}:u:{user}        ZSET of the user's encoded session keys, by start time
    fp:{ns}:users           SET of encoded users with sessions, and "*" once complete
    fp:{ns}:changes         STREAM of feedback changes: which entry, not its text
    fp:{ns}:gen             STRING: the generation token memory index files check

where ``{ns}`` encodes the namespace, ``{sk}`` the ``(user, session_id)`` key
and ``{qa}`` the qa id. Appends and reads run as Lua scripts (atomic, one
round trip); batches of appends go out in one pipeline. Feedback is an
optimistic read-modify-write: ``WATCH`` the entry, compute the new payload,
``MULTI``/``SET KEEPTTL``/``XADD``/``EXEC``, retried if another writer got
there first, so concurrent writers on different machines lose nothing.

Positive memory: plain Redis 7 has no full-text search, so memory is an
SQLite FTS5 index of rated turns (:mod:`.fts`) in a file on local disk,
shared by every process of the machine that uses the same server, database
and namespace, and kept after they exit (:mod:`.redis_index`: where it
lives, the ``index_dir`` option). It records the change-feed position it
reflects. Every query first reads the ``changes`` stream after that
position (one round trip for the head; when something changed, one
``XREAD``, then one ``MGET`` of the changed entries' current payloads), so
the next query in any process sees a feedback change made anywhere, and a
fresh process starts from the file instead of a scan. A stream entry names
the changed entry (``k``, ``q``) and holds none of its text, so deleting or
expiring a turn leaves no copy behind, and the stream costs ~150 bytes per
change. The stream keeps the last ``stream_maxlen`` changes. The file is
rebuilt from a scan when it is new, when its position was trimmed away
(checked with ``XINFO STREAM``), and when the namespace's generation token
(``fp:{ns}:gen``) is not the one it was built with: the database was
flushed, the namespace dropped, or the file met another server
(:mod:`.redis_feed`). A directory that cannot be written leaves each process
a private temporary file, as before. The index costs about 40 MB of disk per
100,000 rated turns, once per machine; in each process, SQLite's page cache
(at most 2 MB per connection).

Scans (a memory rebuild, an export) read the namespace's own keys only:
``SSCAN`` of the ``users`` set (kept by the append and delete scripts),
then pipelined batches of ``ZRANGE`` (sessions), ``LRANGE`` (turns) and
``MGET``. A namespace without the set's ``"*"`` mark (written before the
set existed, or never scanned) is walked once with ``SCAN MATCH
fp:{ns}:e:*``, which costs as much as the whole database; that walk adds
the users it saw and the mark. Every writer must run this version by then.

Imports (``add_changes``): one ``XADD`` per rated turn, in ``MULTI`` blocks
that start with the stream's last id, so the importer can skip its own.

Retention: ``ttl`` applies per entry, as on diskcache; ``max_entries``
trims the oldest entries of a session on append. With a ``ttl`` the
session list, the user's session index and the ``users`` set expire too,
a new session drops the user's expired ones from the index, and a scan
drops users whose index expired from the set: nothing outlives its turns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .base import Item, SessionKey
from .fts import MemoryIndex
from .redis_feed import RedisFeed
from .redis_index import clear_index, default_cache_dir, index_file, open_index, split_index_dir
from .redis_lua import APPEND, COMPLETE, DELETE, FIRST, PRUNE, READ, dec, enc

__all__ = ["RedisBackend"]

log = logging.getLogger("feedback_plugin")


class RedisBackend(RedisFeed):
    """Session entries in Redis (``redis://host:port/db``).

    The constructor validates and does no I/O; it connects on first use.
    ``index_dir`` (or the URL's ``index_dir`` query parameter) is where the
    memory index file lives (default: ``$FEEDBACK_PLUGIN_CACHE_DIR``, else the
    per-user cache directory): see :mod:`.redis_index`.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str | None = None,
        ttl: float | None = None,
        max_entries: int | None = None,
        stream_maxlen: int = 100_000,
        client: Any = None,
        index_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - exercised without the extra
            from ..errors import ConfigurationError

            raise ConfigurationError(
                "the Redis backend needs the redis client: pip install 'feedback-plugin[redis]'"
            ) from exc
        url, in_url = split_index_dir(url)
        self.url = url
        chosen = os.fspath(index_dir) if index_dir is not None else in_url
        self.index_dir = None if chosen is None else os.path.expanduser(chosen)
        self.namespace = namespace
        self.ttl = ttl
        self.max_entries = max_entries
        self.stream_maxlen = stream_maxlen
        self._redis = redis
        self._client = client
        self._prefix = f"fp:{enc(namespace)}:"
        self.changes_key = self._prefix + "changes"
        self.gen_key = self._prefix + "gen"
        self._users_key = self._prefix + "users"
        self._scripts: dict[str, Any] = {}
        self._memory: MemoryIndex | None = None
        self._memory_lock = threading.Lock()
        # redis.asyncio connections belong to the event loop that opened them: one
        # async client per running loop, dropped with its loop
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        from ..calls import redacted

        return f"RedisBackend({redacted(self.url)!r}, namespace={self.namespace!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._redis.Redis.from_url(self.url, **_OPTIONS)
        return self._client

    def _script(self, name: str, source: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(source)
        return script

    def _async(self) -> _AsyncClient:
        """This event loop's async client (made on first use in the loop)."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            from redis import asyncio as aioredis

            # A bounded pool that makes a caller wait for a free connection: 200
            # concurrent calls share a few sockets instead of opening 200 (or
            # failing with "Too many connections" past the plain pool's limit).
            connections = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=ASYNC_CONNECTIONS,
                timeout=_OPTIONS["socket_timeout"],
                **_OPTIONS,
            )
            client = self._aclients[loop] = _AsyncClient(
                aioredis.Redis(connection_pool=connections)
            )
        return client

    # -- keys -------------------------------------------------------------

    def _list_key(self, key: SessionKey) -> str:
        return f"{self._prefix}l:{enc(list(key))}"

    def _entry_prefix(self, key: SessionKey) -> str:
        return f"{self._prefix}e:{enc(list(key))}:"

    def _user_key(self, user: str | None) -> str:
        return f"{self._prefix}u:{enc(user)}"

    @property
    def _ttl_ms(self) -> int:
        return 0 if self.ttl is None else max(int(self.ttl * 1000), 1)

    # -- protocol ---------------------------------------------------------

    def append(self, items: Sequence[Item]) -> None:
        script = self._script("append", APPEND)
        calls = self._append_calls(items)
        if len(calls) == 1:
            # One EVALSHA (atomic by itself): one round trip. A pipeline would add a
            # second one, the SCRIPT EXISTS that redis-py sends before every pipelined
            # script call.
            script(keys=calls[0][0], args=calls[0][1])
            return
        pipe = self.client.pipeline(transaction=True)
        for keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        pipe.execute()

    async def aappend(self, items: Sequence[Item]) -> None:
        aclient = self._async()
        script = aclient.script("append", APPEND)
        calls = self._append_calls(items)
        if len(calls) == 1:
            await script(keys=calls[0][0], args=calls[0][1])
            return
        async with aclient.redis.pipeline(transaction=True) as pipe:
            for keys, args in calls:
                await script(keys=keys, args=args, client=pipe)
            await pipe.execute()

    def _append_calls(self, items: Sequence[Item]) -> list[tuple[list[str], list[Any]]]:
        """``(keys, args)`` of the append script for each item (one core, sync and async)."""
        now = time.time()
        calls = []
        for i, (key, qa_id, payload) in enumerate(items):
            prefix, qa = self._entry_prefix(key), enc(qa_id)
            calls.append(
                (
                    [self._list_key(key), prefix + qa, self._user_key(key[0]), self._users_key],
                    [
                        qa,
                        payload,
                        self._ttl_ms,
                        self.max_entries or 0,
                        prefix,
                        enc(list(key)),
                        now + i * 1e-6,
                        f"{self._prefix}l:",
                        enc(key[0]),
                    ],
                )
            )
        return calls

    def read(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        keys, args = self._read_call(key, last_n)
        result: list[str] = self._script("read", READ)(keys=keys, args=args)
        return result

    async def aread(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        keys, args = self._read_call(key, last_n)
        result: list[str] = await self._async().script("read", READ)(keys=keys, args=args)
        return result

    def _read_call(self, key: SessionKey, last_n: int | None) -> tuple[list[str], list[Any]]:
        start = 0 if last_n is None else -last_n
        return [self._list_key(key)], [start, self._entry_prefix(key)]

    def first(self, key: SessionKey) -> str | None:
        payload: str | None = self._script("first", FIRST)(
            keys=[self._list_key(key)], args=[self._entry_prefix(key)]
        )
        return payload

    async def afirst(self, key: SessionKey) -> str | None:
        payload: str | None = await self._async().script("first", FIRST)(
            keys=[self._list_key(key)], args=[self._entry_prefix(key)]
        )
        return payload

    def get(self, key: SessionKey, qa_id: str) -> str | None:
        payload: str | None = self.client.get(self._entry_key(key, qa_id))
        return payload

    async def aget(self, key: SessionKey, qa_id: str) -> str | None:
        payload: str | None = await self._async().redis.get(self._entry_key(key, qa_id))
        return payload

    def _entry_key(self, key: SessionKey, qa_id: str) -> str:
        return self._entry_prefix(key) + enc(qa_id)

    def update(self, key: SessionKey, qa_id: str, change: Callable[[str], str]) -> str | None:
        entry_key = self._entry_key(key, qa_id)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(entry_key)
                    payload = pipe.get(entry_key)
                    if payload is None:
                        pipe.unwatch()
                        return None
                    new = change(payload)
                    pipe.multi()
                    pipe.set(entry_key, new, keepttl=True)
                    pipe.xadd(**self._change_record(key, qa_id))
                    pipe.execute()
                    return new
                except self._redis.WatchError:
                    continue

    async def aupdate(
        self, key: SessionKey, qa_id: str, change: Callable[[str], str]
    ) -> str | None:
        entry_key = self._entry_key(key, qa_id)
        async with self._async().redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(entry_key)
                    payload = await pipe.get(entry_key)
                    if payload is None:
                        await pipe.unwatch()
                        return None
                    new = change(payload)
                    pipe.multi()
                    pipe.set(entry_key, new, keepttl=True)
                    pipe.xadd(**self._change_record(key, qa_id))
                    await pipe.execute()
                    return new
                except self._redis.WatchError:
                    continue

    def delete_session(self, key: SessionKey) -> int:
        keys, args = self._delete_call(key)
        removed: int = self._script("delete", DELETE)(keys=keys, args=args)
        return removed

    async def adelete_session(self, key: SessionKey) -> int:
        keys, args = self._delete_call(key)
        removed: int = await self._async().script("delete", DELETE)(keys=keys, args=args)
        return removed

    def _delete_call(self, key: SessionKey) -> tuple[list[str], list[Any]]:
        return [self._list_key(key), self._user_key(key[0]), self._users_key], [
            self._entry_prefix(key),
            enc(list(key)),
            enc(key[0]),
        ]

    def sessions(self, user: str | None) -> list[str]:
        client = self.client
        encoded = client.zrange(self._user_key(user), 0, -1)
        if not encoded:
            return []
        pipe = client.pipeline(transaction=False)
        for sk in encoded:
            pipe.exists(f"{self._prefix}l:{sk}")
        return self._alive(encoded, pipe.execute())

    async def asessions(self, user: str | None) -> list[str]:
        client = self._async().redis
        encoded = await client.zrange(self._user_key(user), 0, -1)
        if not encoded:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for sk in encoded:
                pipe.exists(f"{self._prefix}l:{sk}")
            return self._alive(encoded, await pipe.execute())

    def _alive(self, encoded: list[str], alive: list[int]) -> list[str]:
        return [dec(sk)[1] for sk, live in zip(encoded, alive, strict=True) if live]

    def scan(self) -> Iterator[tuple[SessionKey, str]]:
        """Every entry of this namespace, read through its ``users`` set (see the module
        docstring); a namespace whose set is not marked complete walks the database."""
        client = self.client
        if not client.sismember(self._users_key, COMPLETE):
            yield from self._walk()
            return
        users: list[str] = []
        for user in client.sscan_iter(self._users_key, count=1000):
            if user != COMPLETE:
                users.append(user)
            if len(users) >= 200:
                yield from self._scan_users(users)
                users = []
        if users:
            yield from self._scan_users(users)

    def _scan_users(self, users: list[str]) -> Iterator[tuple[SessionKey, str]]:
        client, prefix = self.client, self._prefix
        pipe = client.pipeline(transaction=False)
        for user in users:
            pipe.zrange(f"{prefix}u:{user}", 0, -1)
        listed: list[list[str]] = pipe.execute()
        gone = [user for user, keys in zip(users, listed, strict=True) if not keys]
        if gone:  # their session index expired: drop them, unless one came back meanwhile
            self._script("prune", PRUNE)(keys=[self._users_key], args=[f"{prefix}u:", *gone])
        sessions = [sk for keys in listed for sk in keys]
        for start in range(0, len(sessions), 200):
            chunk = sessions[start : start + 200]
            pipe = client.pipeline(transaction=False)
            for sk in chunk:
                pipe.lrange(f"{prefix}l:{sk}", 0, -1)
            names: list[str] = []
            owners: list[SessionKey] = []
            for sk, qa_ids in zip(chunk, pipe.execute(), strict=True):
                user, session_id = dec(sk)
                names.extend(f"{prefix}e:{sk}:{qa}" for qa in qa_ids)
                owners.extend([(user, session_id)] * len(qa_ids))
            pipe = client.pipeline(transaction=False)
            for i in range(0, len(names), 1000):
                pipe.mget(names[i : i + 1000])
            payloads = [p for reply in pipe.execute() for p in reply]
            for key, payload in zip(owners, payloads, strict=True):
                if payload is not None:
                    yield key, payload

    def _walk(self) -> Iterator[tuple[SessionKey, str]]:
        """``SCAN MATCH`` over the whole database (a namespace without a complete ``users``
        set); once it has seen everything, adds the users found and the mark."""
        client = self.client
        pattern = f"{self._prefix}e:*"  # the prefix is base64url: no glob characters
        users: set[str | None] = set()
        batch: list[str] = []
        for name in client.scan_iter(match=pattern, count=1000):
            batch.append(name)
            if len(batch) >= 500:
                for key, payload in self._fetch(batch):
                    users.add(key[0])
                    yield key, payload
                batch = []
        for key, payload in self._fetch(batch):
            users.add(key[0])
            yield key, payload
        found = [enc(user) for user in users]
        for i in range(0, len(found), 1000):
            client.sadd(self._users_key, *found[i : i + 1000])
        client.sadd(self._users_key, COMPLETE)

    def _fetch(self, names: list[str]) -> Iterator[tuple[SessionKey, str]]:
        if not names:
            return
        start = len(self._prefix) + 2
        for name, payload in zip(names, self.client.mget(names), strict=True):
            if payload is not None:
                user, session_id = dec(name[start:].partition(":")[0])
                yield (user, session_id), payload

    # -- change feed (positive memory) -------------------------------------

    def is_transient(self, exc: BaseException) -> bool:
        """Connection trouble, and a server that is loading, busy, out of memory or
        read-only, may pass; other errors are about what was sent."""
        errors = self._redis
        if isinstance(exc, (OSError, errors.ConnectionError, errors.TimeoutError)):
            return True
        return isinstance(exc, errors.ResponseError) and str(exc).startswith(
            ("OOM", "LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
        )

    shared_across_processes = True

    def exists(self) -> bool:
        """A server: always (an empty namespace is an empty store)."""
        return True

    @property
    def index_path(self) -> str:
        """The memory index file this machine's processes share (see :mod:`.redis_index`)."""
        pool = getattr(self.client, "connection_pool", None)  # no I/O
        where = getattr(pool, "connection_kwargs", None) or {"host": self.url}
        return index_file(self.index_dir or default_cache_dir(), where, self.namespace)

    def memory(self) -> MemoryIndex:
        """Positive memory: an SQLite FTS5 index in a file on this machine, shared by its
        processes, kept up to date from the ``changes`` stream before every query (plain
        Redis has no search); see :mod:`.redis_index`."""
        with self._memory_lock:
            if self._memory is None:
                self._memory = open_index(self.index_path, namespace=self.namespace, feed=self)
            return self._memory

    def get_many(self, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]:
        """One ``MGET``, whatever the number of entries."""
        if not refs:
            return []
        payloads: list[str | None] = self.client.mget([self._entry_key(*r) for r in refs])
        return payloads

    async def aget_many(self, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]:
        if not refs:
            return []
        names = [self._entry_key(*r) for r in refs]
        payloads: list[str | None] = await self._async().redis.mget(names)
        return payloads

    def drop(self) -> int:
        """Delete every key of this namespace (tests, resets) and empty its memory index
        file; return how many keys went.

        The generation token goes last, so a process that rebuilds its index meanwhile
        (from what is left) rebuilds again on its next query.
        """
        client, removed = self.client, 0
        batch: list[str] = []
        for name in client.scan_iter(match=self._prefix + "*", count=1000):
            if name != self.gen_key:
                batch.append(name)
            if len(batch) >= 500:
                removed += client.delete(*batch)
                batch = []
        if batch:
            removed += client.delete(*batch)
        removed += int(client.delete(self.gen_key))
        self._clear_memory()
        return removed

    def _clear_memory(self) -> None:
        """Empty the memory index file (its generation token is gone: it would rebuild
        anyway, but its text should not wait for that)."""
        try:
            if self._memory is not None:
                clear_index(self._memory)
            elif os.path.exists(path := self.index_path):
                index = MemoryIndex(path, namespace=self.namespace)
                try:
                    clear_index(index)
                finally:
                    index.close()
        except (OSError, sqlite3.Error) as exc:
            log.warning("feedback_plugin: memory index of %r not emptied: %s", self, exc)

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
        if self._client is not None:
            self._client.close()
            self._client = None
            self._scripts.clear()

    async def aclose(self) -> None:
        """Close this loop's async connections (other loops close theirs), then the rest."""
        aclient = self._aclients.pop(asyncio.get_running_loop(), None)
        if aclient is not None:
            await aclient.redis.aclose(close_connection_pool=True)
        self.close()  # no I/O: drops the sync pool's sockets


ASYNC_CONNECTIONS = 16
"""Connections an event loop opens to Redis at most; more concurrent calls wait for one."""

_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_timeout": 5,
    "socket_connect_timeout": 5,
    "health_check_interval": 30,
}


class _AsyncClient:
    """One event loop's ``redis.asyncio`` client and its registered scripts."""

    __slots__ = ("redis", "scripts")

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.scripts: dict[str, Any] = {}

    def script(self, name: str, source: str) -> Any:
        script = self.scripts.get(name)
        if script is None:
            script = self.scripts[name] = self.redis.register_script(source)
        return script
