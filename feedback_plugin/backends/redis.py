"""Redis backend: one store shared by app workers on several machines.

Design
------
Every id is JSON-encoded and then base64url-encoded before it enters a key,
so no session id can reach another key or act as a glob pattern::

    fp:{ns}:l:{sk}          LIST of encoded qa ids: the session's order
    fp:{ns}:e:{sk}:{qa}     STRING: one entry's payload (its own TTL)
    fp:{ns}:u:{user}        ZSET of the user's encoded session keys, by start time
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

Retention: ``ttl`` applies per entry, as on diskcache; ``max_entries``
trims the oldest entries of a session on append. With a ``ttl`` the
session list and the user's session index expire too, and a new session
drops the user's expired ones from the index, so nothing outlives its turns.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .base import Item, SessionKey
from .fts import MemoryIndex

__all__ = ["RedisBackend"]

_APPEND = """
-- KEYS[1] list, KEYS[2] entry, KEYS[3] user's sessions
-- ARGV: qa, payload, ttl_ms, max_entries, entry_prefix, session key, now, list_prefix
local ttl = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ttl > 0 then
    -- sessions expire: forget the user's expired ones (this one too, if it expired:
    -- it starts again at the end), else the index grows with every session ever
    for _, sk in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
      if redis.call('EXISTS', ARGV[8] .. sk) == 0 then redis.call('ZREM', KEYS[3], sk) end
    end
  end
  redis.call('ZADD', KEYS[3], 'NX', tonumber(ARGV[7]), ARGV[6])
end
local is_new = redis.call('EXISTS', KEYS[2]) == 0
if ttl > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[2], ARGV[2])
end
if is_new then redis.call('RPUSH', KEYS[1], ARGV[1]) end
local cap = tonumber(ARGV[4])
if cap > 0 then
  while redis.call('LLEN', KEYS[1]) > cap do
    redis.call('DEL', ARGV[5] .. redis.call('LPOP', KEYS[1]))
  end
end
if ttl > 0 then
  for _ = 1, 8 do
    local head = redis.call('LINDEX', KEYS[1], 0)
    if not head or redis.call('EXISTS', ARGV[5] .. head) == 1 then break end
    redis.call('LPOP', KEYS[1])
  end
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)  -- outlives every list it names: they expire earlier
end
return 1
"""

_READ = """
-- KEYS[1] list; ARGV: start, entry_prefix
local ids = redis.call('LRANGE', KEYS[1], tonumber(ARGV[1]), -1)
if #ids == 0 then return {} end
local out = {}
-- MGET in chunks: unpack() of ~8,000 values or more overflows Lua's C stack
for first = 1, #ids, 1000 do
  local keys = {}
  for i = first, math.min(first + 999, #ids) do keys[#keys + 1] = ARGV[2] .. ids[i] end
  for _, v in ipairs(redis.call('MGET', unpack(keys))) do
    if v then out[#out + 1] = v end
  end
end
return out
"""

_DELETE = """
-- KEYS[1] list, KEYS[2] user's sessions; ARGV: entry_prefix, session key
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
local n = 0
for _, id in ipairs(ids) do n = n + redis.call('DEL', ARGV[1] .. id) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return n
"""


def _enc(value: object) -> str:
    raw = json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _dec(text: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


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
        self._prefix = f"fp:{_enc(namespace)}:"
        self.changes_key = self._prefix + "changes"
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
        return f"{self._prefix}l:{_enc(list(key))}"

    def _entry_prefix(self, key: SessionKey) -> str:
        return f"{self._prefix}e:{_enc(list(key))}:"

    def _user_key(self, user: str | None) -> str:
        return f"{self._prefix}u:{_enc(user)}"

    @property
    def _ttl_ms(self) -> int:
        return 0 if self.ttl is None else max(int(self.ttl * 1000), 1)

    # -- protocol ---------------------------------------------------------

    def append(self, items: Sequence[Item]) -> None:
        script = self._script("append", _APPEND)
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
        script = aclient.script("append", _APPEND)
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
            prefix, qa = self._entry_prefix(key), _enc(qa_id)
            calls.append(
                (
                    [self._list_key(key), prefix + qa, self._user_key(key[0])],
                    [
                        qa,
                        payload,
                        self._ttl_ms,
                        self.max_entries or 0,
                        prefix,
                        _enc(list(key)),
                        now + i * 1e-6,
                        f"{self._prefix}l:",
                    ],
                )
            )
        return calls

    def read(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        keys, args = self._read_call(key, last_n)
        result: list[str] = self._script("read", _READ)(keys=keys, args=args)
        return result

    async def aread(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        keys, args = self._read_call(key, last_n)
        result: list[str] = await self._async().script("read", _READ)(keys=keys, args=args)
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
        return self._entry_prefix(key) + _enc(qa_id)

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
            "fields": {"k": _enc(list(key)), "q": _enc(qa_id)},
            "maxlen": self.stream_maxlen,
            "approximate": True,
        }

    def delete_session(self, key: SessionKey) -> int:
        keys, args = self._delete_call(key)
        removed: int = self._script("delete", _DELETE)(keys=keys, args=args)
        return removed

    async def adelete_session(self, key: SessionKey) -> int:
        keys, args = self._delete_call(key)
        removed: int = await self._async().script("delete", _DELETE)(keys=keys, args=args)
        return removed

    def _delete_call(self, key: SessionKey) -> tuple[list[str], list[Any]]:
        return [self._list_key(key), self._user_key(key[0])], [
            self._entry_prefix(key),
            _enc(list(key)),
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
        return [_dec(sk)[1] for sk, live in zip(encoded, alive, strict=True) if live]

    def scan(self) -> Iterator[tuple[SessionKey, str]]:
        client = self.client
        pattern = f"{self._prefix}e:*"  # the prefix is base64url: no glob characters
        batch: list[str] = []
        for name in client.scan_iter(match=pattern, count=1000):
            batch.append(name)
            if len(batch) >= 500:
                yield from self._fetch(batch)
                batch = []
        if batch:
            yield from self._fetch(batch)

    def _fetch(self, names: list[str]) -> Iterator[tuple[SessionKey, str]]:
        start = len(self._prefix) + 2
        for name, payload in zip(names, self.client.mget(names), strict=True):
            if payload is not None:
                user, session_id = _dec(name[start:].partition(":")[0])
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

    def _changed_entry(self, fields: dict[str, str]) -> str:
        if "q" in fields:
            return f"{self._prefix}e:{fields['k']}:{fields['q']}"
        # a change written before stream entries stopped carrying the payload ("p")
        entry = json.loads(fields["p"])
        return self._entry_prefix((entry.get("user_id"), entry["session_id"])) + _enc(
            entry["qa_id"]
        )

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
