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

where ``{ns}`` encodes the namespace, ``{sk}`` the ``(user, session_id)`` key
and ``{qa}`` the qa id. Appends and reads run as Lua scripts (atomic, one
round trip); batches of appends go out in one pipeline. Feedback is an
optimistic read-modify-write: ``WATCH`` the entry, compute the new payload,
``MULTI``/``SET KEEPTTL``/``XADD``/``EXEC``, retried if another writer got
there first, so concurrent writers on different machines lose nothing.

Positive memory: plain Redis 7 has no full-text search, so each process
keeps its own SQLite FTS5 index of rated turns (a private temporary file,
removed at exit, so threads search it at once), built from a scan on first
use and kept fresh from the ``changes`` stream, which every query reads
first (one ``XREAD``, then one ``MGET`` of the changed entries' current
payloads), so the next query in any process sees a feedback change made
anywhere. A stream entry names the changed entry (``k``, ``q``) and holds
none of its text, so deleting or expiring a turn leaves no copy behind, and
the stream costs ~150 bytes per change. The stream keeps the last
``stream_maxlen`` changes; a process whose position was trimmed away
(checked with ``XINFO STREAM``) rebuilds from a scan.

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
import json
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .base import Item, SessionKey
from .fts import MemoryIndex
from .redis_lua import APPEND, COMPLETE, DELETE, PRUNE, READ, dec, enc

__all__ = ["RedisBackend"]


class RedisBackend:
    """Session entries in Redis (``redis://host:port/db``).

    The constructor validates and does no I/O; it connects on first use.
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
    ) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - exercised without the extra
            from ..errors import ConfigurationError

            raise ConfigurationError(
                "the Redis backend needs the redis client: pip install 'feedback-plugin[redis]'"
            ) from exc
        self.url = url
        self.namespace = namespace
        self.ttl = ttl
        self.max_entries = max_entries
        self.stream_maxlen = stream_maxlen
        self._redis = redis
        self._client = client
        self._prefix = f"fp:{enc(namespace)}:"
        self.changes_key = self._prefix + "changes"
        self._users_key = self._prefix + "users"
        self._scripts: dict[str, Any] = {}
        self._memory: MemoryIndex | None = None
        # redis.asyncio connections belong to the event loop that opened them: one
        # async client per running loop, dropped with its loop
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r}, namespace={self.namespace!r})"

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

    def _change_record(self, key: SessionKey, qa_id: str) -> dict[str, Any]:
        """The ``XADD`` that commits with a feedback change (the memory's change feed)."""
        return {
            "name": self.changes_key,
            "fields": {"k": enc(list(key)), "q": enc(qa_id)},
            "maxlen": self.stream_maxlen,
            "approximate": True,
        }

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

    def memory(self) -> MemoryIndex:
        """Positive memory: an SQLite FTS5 index private to this process (a temporary
        file), kept up to date from the ``changes`` stream before every query (plain
        Redis has no search)."""
        if self._memory is None:
            self._memory = MemoryIndex.private(namespace=self.namespace, feed=self)
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

    def feed_position(self) -> str:
        """The id of the newest change, to read changes after it later."""
        last = self.client.xrevrange(self.changes_key, count=1)
        return str(last[0][0]) if last else "0-0"

    def changes_since(self, position: str) -> tuple[str, list[str]] | None:
        """Current payloads of the entries changed after ``position``, and the new position.

        ``None`` when changes after ``position`` were trimmed from the stream:
        some may be missing, and the reader must rebuild from a scan. Entries
        deleted or expired since their change are left out (the retriever
        re-reads every hit, so their stale index rows are dropped on sight).
        """
        client = self.client
        start, names = position, dict[str, None]()
        while True:
            reply = client.xread({self.changes_key: position}, count=10_000)
            if not reply:
                break
            messages = reply[0][1]
            for _, fields in messages:
                if "restart" in fields:  # restart_feed(): every reader rebuilds
                    return None
                names[self._changed_entry(fields)] = None
            position = messages[-1][0]
            if len(messages) < 10_000:
                break
        if position != start and self._trimmed_after(start):
            return None
        out: list[str] = []
        keys = list(names)
        for i in range(0, len(keys), 1000):
            out.extend(p for p in client.mget(keys[i : i + 1000]) if p is not None)
        return position, out

    def restart_feed(self) -> None:
        """Start the feed over: every reader rebuilds from a scan on its next read."""
        self.client.xadd(
            self.changes_key, {"restart": "1"}, maxlen=self.stream_maxlen, approximate=True
        )

    def add_changes(self, refs: Sequence[tuple[SessionKey, str]]) -> tuple[str | None, str] | None:
        """Stream records naming entries written by ``append`` (an import): every reader
        re-reads them (a :class:`~.feed.FeedWriter`). ``None``, writing nothing, when
        they are more than the stream keeps (``stream_maxlen``).

        Each ``MULTI`` of up to 10,000 records starts with the stream's last id,
        so the span is contiguous (``before`` not ``None``) unless another
        writer's record came between two of them.
        """
        if len(refs) > self.stream_maxlen:
            return None
        if not refs:
            head = self.feed_position()
            return head, head
        before: str | None = None
        after = ""
        for start in range(0, len(refs), 10_000):
            pipe = self.client.pipeline(transaction=True)
            pipe.xrevrange(self.changes_key, count=1)
            for key, qa_id in refs[start : start + 10_000]:
                pipe.xadd(**self._change_record(key, qa_id))
            replies = pipe.execute()
            last = str(replies[0][0][0]) if replies[0] else "0-0"
            before = last if start == 0 else (before if last == after else None)
            after = str(replies[-1])
        return before, after

    def _changed_entry(self, fields: dict[str, str]) -> str:
        if "q" in fields:
            return f"{self._prefix}e:{fields['k']}:{fields['q']}"
        # a change written before stream entries stopped carrying the payload ("p")
        entry = json.loads(fields["p"])
        return self._entry_prefix((entry.get("user_id"), entry["session_id"])) + enc(entry["qa_id"])

    def _trimmed_after(self, position: str) -> bool:
        """Whether the stream may have lost (trimmed) a change newer than ``position``."""
        try:
            info = self.client.xinfo_stream(self.changes_key)
        except self._redis.ResponseError:  # the stream is gone (dropped): start over
            return True
        first = info.get("first-entry")
        if not first:
            return False
        if position != "0-0":  # everything older than the first kept change is gone
            return _older(position, str(first[0]))
        # "0-0": this reader has seen no change yet, so any trimmed change was one it
        # needed (trimming leaves no trace in max-deleted-entry-id; count instead)
        added = info.get("entries-added")  # Redis >= 7
        if added is not None:
            return int(added) > int(info["length"])
        return int(info["length"]) >= self.stream_maxlen  # Redis 6: maybe trimmed

    def drop(self) -> int:
        """Delete every key of this namespace (tests, resets); return how many went."""
        client, removed = self.client, 0
        batch: list[str] = []
        for name in client.scan_iter(match=self._prefix + "*", count=1000):
            batch.append(name)
            if len(batch) >= 500:
                removed += client.delete(*batch)
                batch = []
        if batch:
            removed += client.delete(*batch)
        return removed

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


def _older(a: str, b: str) -> bool:
    """Whether stream id ``a`` is older than ``b``."""
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) < (int(bms), int(bseq or 0))
