"""diskcache backend: the default, for one machine.

Design
------
One diskcache ``Cache`` (a SQLite database plus a folder for large values)
holds three kinds of keys per session, each key a JSON array so that no id
can collide with another or act as a pattern::

    [ns, "m", user, session]          -> "first next"   the session's sequence window
    [ns, "e", user, session, seq]     -> payload        one entry, at its position
    [ns, "q", user, session, qa_id]   -> seq            where an entry lives
    [ns, "u", user]                   -> JSON list      the user's session ids

The user's session list is rewritten only when a session starts, so its
cost grows with the number of sessions, never with the number of turns.

Appending writes one ``e`` and one ``q`` key and rewrites the small ``m``
key, so a write costs the same at the 10th and the 10,000th turn; reading
the last ``n`` turns reads ``m`` and ``n`` ``e`` keys. Every write runs inside
``Cache.transact()`` (SQLite ``BEGIN IMMEDIATE``), which serialises writers
across threads and processes, so concurrent writers lose nothing. diskcache's
own eviction is off: nothing is dropped to save space.

Retention: ``ttl`` gives every key an expiry (feedback keeps the entry's
original expiry); ``max_entries`` evicts a session's oldest entries as new
ones arrive.

Tuning: ``settings`` passes diskcache settings through to ``diskcache.Cache``,
among them SQLite pragmas as ``sqlite_<pragma>`` (``sqlite_synchronous=2``
for FULL fsync on every commit, ``sqlite_max_page_count`` to cap the file,
...). diskcache *stores* settings in the directory's ``Settings`` table and
applies them to every later connection, also from stores opened without
them: to undo one, open once with the old value given explicitly.
``eviction_policy`` cannot be changed (nothing may be evicted silently).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import diskcache

from ..errors import ConfigurationError
from .base import Item, SessionKey

__all__ = ["DiskBackend"]

_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class DiskBackend:
    """Session entries in a diskcache directory.

    The constructor does no I/O; the directory is created on first use.

    >>> import tempfile
    >>> b = DiskBackend(tempfile.mkdtemp())
    >>> b.append([((None, "s1"), "q1", '{"qa_id": "q1"}')])
    >>> b.read((None, "s1"))
    ['{"qa_id": "q1"}']
    >>> b.close()
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        namespace: str | None = None,
        ttl: float | None = None,
        max_entries: int | None = None,
        timeout: float = 60.0,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        settings = dict(settings or {})
        if settings.get("eviction_policy", "none") != "none":
            raise ConfigurationError("DiskBackend keeps eviction_policy='none': it never evicts")
        settings.pop("eviction_policy", None)
        self.settings = settings
        self.directory = os.fspath(directory)
        self.namespace = namespace
        self.ttl = ttl
        self.max_entries = max_entries
        self.timeout = timeout
        self._cache: diskcache.Cache | None = None
        self._open_lock = threading.Lock()

    @property
    def index_path(self) -> str:
        """Where the positive-memory index lives: beside the cache."""
        return os.path.join(self.directory, "memory.sqlite3")

    def __repr__(self) -> str:
        return f"DiskBackend({self.directory!r}, namespace={self.namespace!r})"

    @property
    def cache(self) -> diskcache.Cache:
        """The underlying ``diskcache.Cache``, opened on first use."""
        cache = self._cache
        if cache is None:
            with self._open_lock:
                if self._cache is None:
                    self._cache = diskcache.Cache(
                        self.directory,
                        timeout=self.timeout,
                        eviction_policy="none",
                        **{"statistics": False, "tag_index": False, **self.settings},
                    )
                cache = self._cache
        return cache

    # -- keys -------------------------------------------------------------

    def _meta_key(self, key: SessionKey) -> str:
        return _dumps([self.namespace, "m", key[0], key[1]])

    def _entry_key(self, key: SessionKey, seq: int) -> str:
        return _dumps([self.namespace, "e", key[0], key[1], seq])

    def _qa_key(self, key: SessionKey, qa_id: str) -> str:
        return _dumps([self.namespace, "q", key[0], key[1], qa_id])

    def _user_key(self, user: str | None) -> str:
        return _dumps([self.namespace, "u", user])

    def _window(self, cache: diskcache.Cache, meta_key: str) -> tuple[int, int]:
        meta = cache.get(meta_key)
        if meta is None:
            return 0, 0
        first, _, nxt = meta.partition(" ")
        return int(first), int(nxt)

    # -- protocol ---------------------------------------------------------

    def append(self, items: Sequence[Item]) -> None:
        cache = self.cache
        ttl = self.ttl
        windows: dict[SessionKey, tuple[int, int]] = {}
        with cache.transact():
            for key, qa_id, payload in items:
                window = windows.get(key)
                if window is None:
                    window = self._window(cache, self._meta_key(key))
                    if window == (0, 0):
                        self._add_session(cache, key)
                first, nxt = window
                qa_key = self._qa_key(key, qa_id)
                seq = cache.get(qa_key)
                if seq is None:
                    seq, nxt = nxt, nxt + 1
                    cache.set(qa_key, seq, expire=ttl)
                cache.set(self._entry_key(key, seq), payload, expire=ttl)
                windows[key] = (self._trim(cache, key, first, nxt), nxt)
            for key, (first, nxt) in windows.items():
                cache.set(self._meta_key(key), f"{first} {nxt}", expire=ttl)

    def _add_session(self, cache: diskcache.Cache, key: SessionKey) -> None:
        user_key = self._user_key(key[0])
        names: list[str] = json.loads(cache.get(user_key, "[]"))
        if key[1] not in names:
            names.append(key[1])
            cache.set(user_key, _dumps(names))

    def sessions(self, user: str | None) -> list[str]:
        cache = self.cache
        names: list[str] = json.loads(cache.get(self._user_key(user), "[]"))
        return [n for n in names if self._meta_key((user, n)) in cache]

    def _trim(self, cache: diskcache.Cache, key: SessionKey, first: int, nxt: int) -> int:
        """Evict beyond ``max_entries`` and skip expired heads; return the new ``first``."""
        if self.max_entries is not None:
            while nxt - first > self.max_entries:
                payload = cache.pop(self._entry_key(key, first))
                if payload is not None:
                    cache.delete(self._qa_key(key, json.loads(payload)["qa_id"]))
                first += 1
        if self.ttl is not None:
            # Expired entries are always the oldest: move past a few per write.
            for _ in range(8):
                if first >= nxt - 1 or self._entry_key(key, first) in cache:
                    break
                first += 1
        return first

    def read(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        cache = self.cache
        first, nxt = self._window(cache, self._meta_key(key))
        if last_n is not None:
            first = max(first, nxt - last_n)
        out = []
        for seq in range(first, nxt):
            payload = cache.get(self._entry_key(key, seq))
            if payload is not None:
                out.append(payload)
        return out

    def get(self, key: SessionKey, qa_id: str) -> str | None:
        cache = self.cache
        seq = cache.get(self._qa_key(key, qa_id))
        if seq is None:
            return None
        payload: str | None = cache.get(self._entry_key(key, seq))
        return payload

    def update(self, key: SessionKey, qa_id: str, change: Callable[[str], str]) -> str | None:
        cache = self.cache
        with cache.transact():
            seq = cache.get(self._qa_key(key, qa_id))
            if seq is None:
                return None
            entry_key = self._entry_key(key, seq)
            payload, expire_time = cache.get(entry_key, expire_time=True)
            if payload is None:
                return None
            new = change(payload)
            expire = None if expire_time is None else max(expire_time - time.time(), 0.001)
            cache.set(entry_key, new, expire=expire)
            return new

    def delete_session(self, key: SessionKey) -> int:
        cache = self.cache
        removed = 0
        with cache.transact():
            meta_key = self._meta_key(key)
            first, nxt = self._window(cache, meta_key)
            for seq in range(first, nxt):
                payload = cache.pop(self._entry_key(key, seq))
                if payload is not None:
                    cache.delete(self._qa_key(key, json.loads(payload)["qa_id"]))
                    removed += 1
            cache.delete(meta_key)
            user_key = self._user_key(key[0])
            names = json.loads(cache.get(user_key, "[]"))
            if key[1] in names:
                names.remove(key[1])
                cache.set(user_key, _dumps(names))
        return removed

    def scan(self) -> Iterator[tuple[SessionKey, str]]:
        """Stream every entry of this namespace with one range query.

        Entry keys share the prefix ``[ns,"e",`` so SQLite walks diskcache's
        key index instead of every key; values are decoded by diskcache's own
        ``Disk.fetch`` (large ones live in files). A read-only connection of
        its own keeps the scan off the writers' way (WAL snapshot).
        """
        cache = self.cache
        prefix = _dumps([self.namespace, "e"])[:-1] + ","
        upper = prefix[:-1] + "-"  # the character after ","
        uri = Path(self.directory, diskcache.core.DBNAME).resolve().as_uri() + "?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=self.timeout)
        try:
            rows = con.execute(
                "SELECT key, mode, filename, value FROM Cache"
                " WHERE key >= ? AND key < ? AND raw = 1"
                " AND (expire_time IS NULL OR expire_time > ?)",
                (prefix, upper, time.time()),
            )
            for key, mode, filename, value in rows:
                parts = json.loads(key)
                try:
                    payload = cache.disk.fetch(mode, filename, value, False)
                except OSError:  # its file went with an eviction since the query began
                    continue
                yield (parts[2], parts[3]), payload
        finally:
            con.close()

    def close(self) -> None:
        with self._open_lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None
