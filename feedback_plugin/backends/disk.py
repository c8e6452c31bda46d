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
cost grows with the number of sessions, never with the number of turns;
with a ``ttl``, starting a session also drops the user's expired sessions
from the list (one lookup each), so it holds live sessions only.

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

import functools
import itertools
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


_ROWS_PER_INSERT = 499  # 999 parameters, SQLite's lowest limit


@functools.lru_cache(maxsize=8)
def _insert_rows_sql(n: int) -> str:
    """``INSERT OR REPLACE`` of ``n`` raw diskcache rows: ``?1`` the time, then key/value pairs."""
    rows = ", ".join(
        f"(?{i}, 1, ?1, NULL, ?1, 0, NULL, 0, {diskcache.core.MODE_RAW}, NULL, ?{i + 1})"
        for i in range(2, 2 * n + 2, 2)
    )
    return (
        "INSERT OR REPLACE INTO Cache(key, raw, store_time, expire_time, access_time,"
        " access_count, tag, size, mode, filename, value) VALUES " + rows
    )


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
        self._local = threading.local()
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
        if (
            self.ttl is None
            and self.max_entries is None
            and all(len(payload) < cache.disk.min_file_size for _, _, payload in items)
        ):
            self._append_rows(items)
            return
        ttl = self.ttl
        windows: dict[SessionKey, tuple[int, int]] = {}
        with cache.transact():
            for key, qa_id, payload in items:
                window = windows.get(key)
                if window is None:
                    window = self._window(cache, self._meta_key(key))
                    if window == (0, 0):
                        self._add_session(cache, key, windows)
                first, nxt = window
                qa_key = self._qa_key(key, qa_id)
                if cache.add(qa_key, nxt, expire=ttl):  # a new turn (one statement, not two)
                    seq, nxt = nxt, nxt + 1
                else:  # recorded again: replace it in place
                    seq = cache.get(qa_key)
                cache.set(self._entry_key(key, seq), payload, expire=ttl)
                windows[key] = (self._trim(cache, key, first, nxt), nxt)
            for key, (first, nxt) in windows.items():
                cache.set(self._meta_key(key), f"{first} {nxt}", expire=ttl)

    # -- the bulk path -----------------------------------------------------

    def _rows_con(self) -> sqlite3.Connection:
        """This thread's own connection to the cache database, for bulk appends."""
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None or self._local.pid != os.getpid():
            path = os.path.join(self.directory, diskcache.core.DBNAME)
            con = sqlite3.connect(path, timeout=self.timeout, isolation_level=None)
            # The same pragmas diskcache applies to its own connections (its
            # sqlite_* settings, e.g. synchronous, max_page_count, query_only).
            # journal_mode and auto_vacuum live in the file and are set already.
            for name, value in con.execute(
                "SELECT key, value FROM Settings WHERE key LIKE 'sqlite_%'"
                " AND key NOT IN ('sqlite_journal_mode', 'sqlite_auto_vacuum')"
            ).fetchall():
                con.execute(f"PRAGMA {name[len('sqlite_') :]} = {value!r}")
            self._local.con, self._local.pid = con, os.getpid()
        return con

    def _append_rows(self, items: Sequence[Item]) -> None:
        """``append`` for the common case (no ttl, no cap, values that live in the row).

        Writes the same rows diskcache's ``set`` would (``raw`` text keys, values
        in ``MODE_RAW``; diskcache's triggers keep its count and size), but with
        a few multi-row statements per batch instead of several Python
        calls per turn, inside one ``BEGIN IMMEDIATE`` transaction, the lock
        every diskcache writer takes. This is what keeps the write-behind
        thread from competing with the chain for the GIL.
        """
        con = self._rows_con()
        now = time.time()
        con.execute("BEGIN IMMEDIATE")
        try:
            fetch = "SELECT value FROM Cache WHERE key = ? AND raw = 1"
            windows: dict[SessionKey, list[int]] = {}
            for key, _, _ in items:
                if key not in windows:
                    row = con.execute(fetch, (self._meta_key(key),)).fetchone()
                    if row is None:
                        windows[key] = [0, 0]
                        self._add_session_row(con, key[0], key[1], now)
                    else:
                        head, _, tail = str(row[0]).partition(" ")
                        windows[key] = [int(head), int(tail)]
            # Keys share a per-session prefix: encode it once per session, not per turn.
            prefixes = {k: (self._qa_key(k, "")[:-3], self._entry_key(k, 0)[:-2]) for k in windows}
            qa_keys = [prefixes[key][0] + _dumps(qa_id) + "]" for key, qa_id, _ in items]
            seqs: dict[str, int] = {}  # qa key -> seq: turns already stored, then this batch's
            for start in range(0, len(qa_keys), 999):  # one query per 999 turns
                chunk = qa_keys[start : start + 999]
                seqs.update(
                    con.execute(
                        "SELECT key, value FROM Cache WHERE raw = 1 AND key IN"
                        f" ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                )
            rows: dict[str, object] = {}  # key -> value to write, in order
            for (key, _, payload), qa_key in zip(items, qa_keys, strict=True):
                seq = seqs.get(qa_key)
                if seq is None:  # a new turn (else: recorded again, replaced in place)
                    window = windows[key]
                    seq, window[1] = window[1], window[1] + 1
                    rows[qa_key] = seqs[qa_key] = seq
                rows[f"{prefixes[key][1]}{int(seq)}]"] = payload
            for key, (lo, hi) in windows.items():
                rows[self._meta_key(key)] = f"{lo} {hi}"
            # A few multi-row INSERTs, not executemany: that steps once per row,
            # taking the GIL back from the (maybe busy) caller thread each time.
            pairs = list(rows.items())
            for start in range(0, len(pairs), _ROWS_PER_INSERT):
                part = pairs[start : start + _ROWS_PER_INSERT]
                con.execute(_insert_rows_sql(len(part)), [now, *itertools.chain(*part)])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _add_session_row(
        self, con: sqlite3.Connection, user: str | None, session_id: str, now: float
    ) -> None:
        user_key = self._user_key(user)
        row = con.execute(
            "SELECT value FROM Cache WHERE key = ? AND raw = 1", (user_key,)
        ).fetchone()
        names: list[str] = json.loads(row[0]) if row else []
        if session_id not in names:
            names.append(session_id)
            con.execute(
                "INSERT OR REPLACE INTO Cache(key, raw, store_time, expire_time, access_time,"
                " access_count, tag, size, mode, filename, value)"
                f" VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, {diskcache.core.MODE_RAW}, NULL, ?)",
                (user_key, now, now, _dumps(names)),
            )

    def _add_session(
        self, cache: diskcache.Cache, key: SessionKey, batch: Mapping[SessionKey, object]
    ) -> None:
        user_key = self._user_key(key[0])
        names: list[str] = json.loads(cache.get(user_key, "[]"))
        if self.ttl is not None:
            # Sessions expire: forget the user's expired ones (this one too, if it
            # expired: it starts again at the end), else the list grows forever.
            # Sessions started earlier in this batch have no "m" key yet: keep them.
            names = [
                n for n in names if (key[0], n) in batch or self._meta_key((key[0], n)) in cache
            ]
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
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
        with self._open_lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None
