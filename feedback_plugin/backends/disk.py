"""diskcache backend: the default, for one machine.

Design
------
One diskcache ``Cache`` (a SQLite database plus a folder for large values)
holds these keys, each a JSON array so that no id can collide with another
or act as a pattern::

    [ns, "m", user, session]          -> "first next order"   the session's sequence window
    [ns, "e", user, session, seq]     -> payload              one entry, at its position
    [ns, "q", user, session, qa_id]   -> seq                  where an entry lives
    [ns, "n"]                         -> count                sessions ever started (their order)
    [ns, "c"]                         -> "epoch seq"          the change feed's head
    [ns, "c", seq]                    -> [user, session, qa]  one feedback change

A user's sessions are the ``m`` keys under the prefix ``[ns, "m", user,``:
listing them is one range query on diskcache's key index, and starting a
session writes one ``m`` key and bumps the ``n`` counter, whatever the number
of sessions the user already has. ``order`` (from ``n``) lists them oldest
first.

Appending writes one ``e`` and one ``q`` key and rewrites the small ``m``
key, so a write costs the same at the 10th and the 10,000th turn; reading
the last ``n`` turns reads ``m`` and ``n`` ``e`` keys. Every write runs inside
``Cache.transact()`` (SQLite ``BEGIN IMMEDIATE``), which serialises writers
across threads and processes, so concurrent writers lose nothing. diskcache's
own eviction is off: nothing is dropped to save space.

The change feed (positive memory, :mod:`.disk_feed`): every ``update`` also
writes a ``c`` record naming the changed entry, in the same transaction,
and keeps the last ``feed_keep`` records; an import writes one record per
rated turn it brought (``add_changes``). The memory index records the feed
position it has applied and reads the records after it
(``changes_since``) before each query, so a rating committed here reaches
every process's next query even if the process that made it dies right
after its commit. A feed ``epoch`` changes when the feed restarts; readers
that hold another epoch, or a position older than the records kept, rebuild.

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

import contextlib
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
from .disk_feed import DiskFeed, feed_records
from .disk_rows import IN_FILE, RowConnections, read_rows, rollback, write_rows, writer_lock
from .fts import MemoryIndex
from .threaded import ThreadedAsync

__all__ = ["DiskBackend"]

_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class DiskBackend(ThreadedAsync, DiskFeed):
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
        feed_keep: int = 100_000,
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
        self.feed_keep = feed_keep
        self._cache: diskcache.Cache | None = None
        self._memory: MemoryIndex | None = None
        self._open_lock = threading.Lock()
        self._lock_key = os.path.abspath(self.directory)  # no I/O in the constructor
        self._rows = RowConnections(self.directory, timeout)

    @contextlib.contextmanager
    def _transact(self) -> Iterator[None]:
        """The one way to write: this process's writers to the directory queue on a lock,
        then ``Cache.transact()`` (SQLite ``BEGIN IMMEDIATE``) serialises processes.

        The lock is fairness, not safety: two threads reaching ``BEGIN IMMEDIATE``
        at once leave one in SQLite's busy handler, which sleeps in growing steps
        (up to 100 ms each), and a burst of concurrent ratings gets a tail of
        hundreds of milliseconds. Waiting on a lock wakes the next writer as soon
        as the last one commits.
        """
        with writer_lock(self._lock_key), self.cache.transact():
            yield

    shared_across_processes = True

    @property
    def index_path(self) -> str:
        """Where the positive-memory index lives: beside the cache."""
        return os.path.join(self.directory, "memory.sqlite3")

    def exists(self) -> bool:
        """Whether the directory holds a store (its SQLite database)."""
        return os.path.isfile(os.path.join(self.directory, diskcache.core.DBNAME))

    def memory(self) -> MemoryIndex:
        """Positive memory: one SQLite FTS5 file beside the cache, shared by every process
        and kept up to date from this backend's change feed."""
        with self._open_lock:
            if self._memory is None:
                self._memory = MemoryIndex(self.index_path, namespace=self.namespace, feed=self)
            return self._memory

    def __repr__(self) -> str:
        return f"DiskBackend({self.directory!r}, namespace={self.namespace!r})"

    @property
    def cache(self) -> diskcache.Cache:
        """The underlying ``diskcache.Cache``, opened on first use."""
        cache = self._cache
        if cache is None:  # opening writes diskcache's settings: a writer like the others
            with writer_lock(self._lock_key), self._open_lock:  # that order, as in _transact
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

    def _legacy_user_key(self, user: str | None) -> str:
        """The JSON list of session ids that stores written before 0.2 kept per user."""
        return _dumps([self.namespace, "u", user])

    def _window(self, cache: diskcache.Cache, meta_key: str) -> list[int] | None:
        meta = cache.get(meta_key)
        return None if meta is None else _parse_window(meta)

    def _next_order(self, cache: diskcache.Cache) -> int:
        """Number a new session (one counter for the namespace: O(1), ordered)."""
        key = _dumps([self.namespace, "n"])
        order = int(cache.get(key, 0)) + 1
        cache.set(key, str(order))
        return order

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
        windows: dict[SessionKey, list[int]] = {}
        with self._transact():
            for key, qa_id, payload in items:
                window = windows.get(key)
                if window is None:
                    window = self._window(cache, self._meta_key(key))
                    if window is None:  # a new session
                        window = [0, 0, self._next_order(cache)]
                    windows[key] = window
                first, nxt, _ = window
                qa_key = self._qa_key(key, qa_id)
                if cache.add(qa_key, nxt, expire=ttl):  # a new turn (one statement, not two)
                    seq, window[1] = nxt, nxt + 1
                else:  # recorded again: replace it in place
                    seq = cache.get(qa_key)
                cache.set(self._entry_key(key, seq), payload, expire=ttl)
                window[0] = self._trim(cache, key, first, window[1])
            for key, window in windows.items():
                cache.set(self._meta_key(key), _format_window(window), expire=ttl)

    # -- the bulk path -----------------------------------------------------

    def _rows_con(self) -> sqlite3.Connection:
        """This thread's own connection to the cache database, for the SQL fast paths."""
        return self._rows.get()

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
        with writer_lock(self._lock_key):
            self._append_in(con, items, now)

    def _append_in(self, con: sqlite3.Connection, items: Sequence[Item], now: float) -> None:
        con.execute("BEGIN IMMEDIATE")
        try:
            fetch = "SELECT value FROM Cache WHERE key = ? AND raw = 1"
            rows: dict[str, object] = {}  # key -> value to write, in order
            windows: dict[SessionKey, list[int]] = {}
            for key, _, _ in items:
                if key not in windows:
                    row = con.execute(fetch, (self._meta_key(key),)).fetchone()
                    windows[key] = [] if row is None else _parse_window(str(row[0]))
            new_sessions = [key for key, window in windows.items() if not window]
            if new_sessions:
                count_key = _dumps([self.namespace, "n"])
                row = con.execute(fetch, (count_key,)).fetchone()
                order = int(row[0]) if row else 0
                for key in new_sessions:
                    order += 1
                    windows[key] = [0, 0, order]
                rows[count_key] = str(order)
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
            for (key, _, payload), qa_key in zip(items, qa_keys, strict=True):
                seq = seqs.get(qa_key)
                if seq is None:  # a new turn (else: recorded again, replaced in place)
                    window = windows[key]
                    seq, window[1] = window[1], window[1] + 1
                    rows[qa_key] = seqs[qa_key] = seq
                rows[f"{prefixes[key][1]}{int(seq)}]"] = payload
            for key, window in windows.items():
                rows[self._meta_key(key)] = _format_window(window)
            write_rows(con, rows, now)
            con.execute("COMMIT")
        except BaseException:
            rollback(con)
            raise

    def sessions(self, user: str | None) -> list[str]:
        """One range query over the user's ``m`` keys, sorted by the order they started in."""
        prefix = _dumps([self.namespace, "m", user])[:-1] + ","
        upper = prefix[:-1] + "-"  # the character after ","
        self.cache  # noqa: B018 -- creates the directory and database on first use
        rows = (
            self._rows_con()
            .execute(
                "SELECT key, value FROM Cache WHERE key >= ? AND key < ? AND raw = 1"
                " AND (expire_time IS NULL OR expire_time > ?)",
                (prefix, upper, time.time()),
            )
            .fetchall()
        )
        found: list[tuple[int, str]] = []
        legacy: list[str] = []  # sessions started before 0.2 (no order in their window)
        for key, value in rows:
            session_id = json.loads(key)[3]
            window = _parse_window(str(value))
            if len(window) == 3:
                found.append((window[2], session_id))
            else:
                legacy.append(session_id)
        found.sort()
        if legacy:
            listed = json.loads(self.cache.get(self._legacy_user_key(user), "[]"))
            rank = {name: i for i, name in enumerate(listed)}
            legacy.sort(key=lambda name: rank.get(name, len(rank)))
        return legacy + [name for _, name in found]

    def _trim(self, cache: diskcache.Cache, key: SessionKey, first: int, nxt: int) -> int:
        """Evict beyond ``max_entries`` and skip expired heads; return the new ``first``."""
        if self.max_entries is not None:
            while nxt - first > self.max_entries:
                payload = cache.pop(self._entry_key(key, first))
                qa_id = _qa_id_of(payload)
                if qa_id is not None:
                    cache.delete(self._qa_key(key, qa_id))
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
        window = self._window(cache, self._meta_key(key))
        if window is None:
            return []
        first, nxt = window[0], window[1]
        if last_n is not None:
            first = max(first, nxt - last_n)
        out = []
        for seq in range(first, nxt):
            payload = cache.get(self._entry_key(key, seq))
            if payload is not None:
                out.append(payload)
        return out

    def first(self, key: SessionKey) -> str | None:
        cache = self.cache
        window = self._window(cache, self._meta_key(key))
        for seq in range(*window[:2]) if window is not None else ():
            payload: str | None = cache.get(self._entry_key(key, seq))
            if payload is not None:
                return payload
        return None

    def get(self, key: SessionKey, qa_id: str) -> str | None:
        return self.get_many([(key, qa_id)])[0]

    def get_many(self, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]:
        """Two queries (the turns' positions, then their payloads) in one read snapshot."""
        if not refs:
            return []
        cache, now = self.cache, time.time()
        con = self._rows_con()
        qa_keys = [self._qa_key(key, qa_id) for key, qa_id in refs]
        con.execute("BEGIN")
        try:
            seqs = read_rows(con, qa_keys, now)
            entry_keys = [
                self._entry_key(key, seq) if isinstance(seq := seqs.get(qa_key), int) else None
                for (key, _), qa_key in zip(refs, qa_keys, strict=True)
            ]
            payloads = read_rows(con, filter(None, entry_keys), now)
        finally:
            rollback(con)
        out: list[str | None] = []
        for entry_key in entry_keys:
            payload = None if entry_key is None else payloads.get(entry_key)
            if payload is IN_FILE:  # a large entry, kept in a file
                payload = cache.get(entry_key)
            out.append(payload if isinstance(payload, str) else None)
        return out

    def update(self, key: SessionKey, qa_id: str, change: Callable[[str], str]) -> str | None:
        if self.ttl is None:
            done, new = self._update_rows(key, qa_id, change)
            if done:
                return new
        cache = self.cache
        with self._transact():
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
            self._feed(cache, key, qa_id)
            return new

    def _update_rows(
        self, key: SessionKey, qa_id: str, change: Callable[[str], str]
    ) -> tuple[bool, str | None]:
        """``update`` in one SQL transaction of a few statements (the diskcache API
        takes about ten calls): ``(True, new payload or None)``, or ``(False, None)``
        for an entry diskcache keeps in a file (then its API does it)."""
        with writer_lock(self._lock_key):
            limit = self.cache.disk.min_file_size
            con, now = self._rows_con(), time.time()
            con.execute("BEGIN IMMEDIATE")
            try:
                qa_key = self._qa_key(key, qa_id)
                seq = read_rows(con, [qa_key], now).get(qa_key)
                if not isinstance(seq, int):
                    return True, None
                entry_key, head_key = self._entry_key(key, seq), self._feed_head_key()
                found = read_rows(con, [entry_key, head_key], now)
                payload = found.get(entry_key)
                if payload is None:
                    return True, None
                if not isinstance(payload, str):
                    return False, None
                new = change(payload)
                if len(new) >= limit:
                    return False, None
                con.execute(
                    "UPDATE Cache SET value = ?, store_time = ?, access_time = ?"
                    " WHERE key = ? AND raw = 1",
                    (new, now, now, entry_key),
                )
                feed_records(
                    con, self.namespace, self.feed_keep, [(key, qa_id)], found.get(head_key), now
                )
                con.execute("COMMIT")
                return True, new
            finally:
                rollback(con)  # nothing to roll back after the COMMIT

    def delete_session(self, key: SessionKey) -> int:
        cache = self.cache
        removed = 0
        with self._transact():
            meta_key = self._meta_key(key)
            first, nxt, *_ = self._window(cache, meta_key) or [0, 0]
            for seq in range(first, nxt):
                payload = cache.pop(self._entry_key(key, seq))
                if payload is not None:
                    removed += 1
                    qa_id = _qa_id_of(payload)
                    if qa_id is not None:
                        cache.delete(self._qa_key(key, qa_id))
            cache.delete(meta_key)
        return removed

    def is_transient(self, exc: BaseException) -> bool:
        """Disk errors, a busy or full database and diskcache's lock timeout may pass."""
        return isinstance(exc, (OSError, sqlite3.OperationalError, diskcache.Timeout))

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
        self._rows.close()
        with self._open_lock:
            if self._memory is not None:
                self._memory.close()
            if self._cache is not None:
                self._cache.close()
                self._cache = None


def _parse_window(meta: str) -> list[int]:
    """``[first, next, order]`` from an ``m`` value (``order`` absent before 0.2)."""
    return [int(part) for part in meta.split(" ")]


def _format_window(window: Sequence[int]) -> str:
    return " ".join(map(str, window))


def _qa_id_of(payload: str | None) -> str | None:
    """The ``qa_id`` of a stored payload, or ``None`` if it has none (missing or corrupt)."""
    if payload is None:
        return None
    try:
        qa_id = json.loads(payload)["qa_id"]
    except (ValueError, TypeError, KeyError):
        return None
    return qa_id if isinstance(qa_id, str) else None
