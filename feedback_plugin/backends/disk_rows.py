"""diskcache rows read and written with SQL: the diskcache backend's fast paths, and
the lock its writers in one process take turns on.

diskcache's API costs several Python calls and statements per key. The hot
paths of :class:`~.disk.DiskBackend` -- a batch of appends, a rating, reading
the turns a memory query found -- work on the same rows directly: keys are
``raw`` text, small values are stored in the row (``MODE_RAW``), and each
path is one transaction of a few statements. A value diskcache keeps in a
file (larger than its ``min_file_size``) is never touched here: the caller
falls back to diskcache's API for it (:data:`IN_FILE`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping

import diskcache

__all__ = [
    "IN_FILE",
    "RowConnections",
    "read_rows",
    "rollback",
    "write_rows",
    "writer_lock",
]

IN_FILE = object()
"""A live value diskcache keeps in a file: read it through diskcache."""

_CHUNK = 999  # SQLite's lowest limit of parameters per statement
_ROWS_PER_INSERT = 499  # two parameters per row


class RowConnections:
    """One connection per thread (and process) to a diskcache directory's database,
    with the pragmas diskcache applies to its own (its ``sqlite_*`` settings).
    :meth:`close` closes every thread's (the store is closing: none is in use)."""

    def __init__(self, directory: str, timeout: float) -> None:
        self.path = os.path.join(directory, diskcache.core.DBNAME)
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[tuple[int, sqlite3.Connection]] = []
        self._generation = 0

    def get(self) -> sqlite3.Connection:
        local = self._local
        con: sqlite3.Connection | None = getattr(local, "con", None)
        if con is not None and local.key == (os.getpid(), self._generation):
            return con
        con = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        # journal_mode and auto_vacuum live in the file and are set already.
        for name, value in con.execute(
            "SELECT key, value FROM Settings WHERE key LIKE 'sqlite_%'"
            " AND key NOT IN ('sqlite_journal_mode', 'sqlite_auto_vacuum')"
        ).fetchall():
            con.execute(f"PRAGMA {name[len('sqlite_') :]} = {value!r}")
        with self._lock:
            self._opened.append((os.getpid(), con))
            local.con, local.key = con, (os.getpid(), self._generation)
        return con

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
            self._generation += 1
        for pid, con in opened:
            if pid == os.getpid():  # never a connection inherited through fork
                with contextlib.suppress(sqlite3.Error):
                    con.close()


def read_rows(con: sqlite3.Connection, keys: Iterable[str], now: float) -> dict[str, object]:
    """The live values of these keys (missing and expired keys left out; a value kept in
    a file as :data:`IN_FILE`), one query per 999 keys."""
    found: dict[str, object] = {}
    wanted = list(dict.fromkeys(keys))
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        for key, value, mode in con.execute(
            "SELECT key, value, mode FROM Cache WHERE raw = 1"
            " AND (expire_time IS NULL OR expire_time > ?)"
            f" AND key IN ({','.join('?' * len(chunk))})",
            (now, *chunk),
        ):
            found[key] = value if mode == diskcache.core.MODE_RAW else IN_FILE
    return found


def write_rows(con: sqlite3.Connection, rows: Mapping[str, object], now: float) -> None:
    """Store ``key -> value`` rows as diskcache's ``set`` would (no expiry), in a few
    multi-row statements (not ``executemany``, which steps once per row, taking the
    GIL back from a busy caller thread each time)."""
    pairs = list(rows.items())
    for start in range(0, len(pairs), _ROWS_PER_INSERT):
        part = pairs[start : start + _ROWS_PER_INSERT]
        con.execute(_insert_rows_sql(len(part)), [now, *itertools.chain(*part)])


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


_writer_locks: dict[str, threading.RLock] = {}
_writer_locks_lock = threading.Lock()


def writer_lock(directory: str) -> threading.RLock:
    """One lock per store directory in this process, shared by every backend object on it."""
    lock = _writer_locks.get(directory)
    if lock is None:
        with _writer_locks_lock:
            lock = _writer_locks.setdefault(directory, threading.RLock())
    return lock


def _forget_writer_locks() -> None:
    """In a forked child: a lock another thread of the parent held stays held; start over."""
    global _writer_locks_lock
    _writer_locks.clear()
    _writer_locks_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_writer_locks)


def rollback(con: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite ends one itself on some errors
    (a full disk), and a ROLLBACK then would hide the real error behind its own."""
    if con.in_transaction:
        con.execute("ROLLBACK")
