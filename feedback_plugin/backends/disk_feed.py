"""The diskcache backend's change feed (positive memory), a mixin of :class:`~.disk.DiskBackend`.

Keys (JSON arrays, as every key of the backend)::

    [ns, "c"]          -> "epoch seq"          the feed's head
    [ns, "c", seq]     -> [user, session, qa]  one change: which entry, not its text

A rating writes one record in the transaction that changes the entry
(:meth:`DiskFeed._feed`, or :func:`feed_records` on the SQL fast path); an
import writes one per rated or corrected turn it brought, in one
transaction after the batch (:meth:`DiskFeed.add_changes`). The last
``feed_keep`` records are kept. A reader holding another ``epoch`` (the
feed restarted) or a position older than the records kept rebuilds.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Sequence

import diskcache

from .base import SessionKey
from .disk_rows import IN_FILE, read_rows, rollback, write_rows, writer_lock

__all__ = ["DiskFeed", "feed_records"]

_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
_CHUNK = 999  # SQLite's lowest limit of parameters per statement


def feed_records(
    con: sqlite3.Connection,
    namespace: str | None,
    keep: int,
    refs: Sequence[tuple[SessionKey, str]],
    head: object,
    now: float,
) -> tuple[str, str]:
    """Append records naming ``refs`` to the feed, inside the caller's ``BEGIN IMMEDIATE``
    (``head``: the head row's value, ``None`` for none), and forget records beyond the
    last ``keep``; return the feed positions before and after them."""
    epoch, _, last = str(head or " 0").partition(" ")
    seq = int(last)
    end, new_epoch = seq + len(refs), epoch or uuid.uuid4().hex
    rows = {
        _dumps([namespace, "c", seq + i]): _dumps([key[0], key[1], qa_id])
        for i, (key, qa_id) in enumerate(refs, 1)
    }
    rows[_dumps([namespace, "c"])] = f"{new_epoch} {end}"
    write_rows(con, rows, now)
    old = [_dumps([namespace, "c", n - keep]) for n in range(max(seq + 1, keep + 1), end + 1)]
    for start in range(0, len(old), _CHUNK):
        chunk = old[start : start + _CHUNK]
        con.execute(
            f"DELETE FROM Cache WHERE raw = 1 AND key IN ({','.join('?' * len(chunk))})", chunk
        )
    return f"{epoch}:{seq}", f"{new_epoch}:{end}"


class DiskFeed:
    """The change feed half of :class:`~.disk.DiskBackend` (which supplies these)."""

    namespace: str | None
    feed_keep: int
    _lock_key: str

    @property
    def cache(self) -> diskcache.Cache:
        raise NotImplementedError

    def _transact(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _rows_con(self) -> sqlite3.Connection:
        raise NotImplementedError

    def get_many(self, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]:
        raise NotImplementedError

    # -- the feed ------------------------------------------------------------

    def _feed_head_key(self) -> str:
        return _dumps([self.namespace, "c"])

    def _feed_key(self, seq: int) -> str:
        return _dumps([self.namespace, "c", seq])

    def _head(self, cache: diskcache.Cache) -> tuple[str, int]:
        head = cache.get(self._feed_head_key())
        if head is None:
            return "", 0
        epoch, _, seq = str(head).partition(" ")
        return epoch, int(seq)

    def _feed(self, cache: diskcache.Cache, key: SessionKey, qa_id: str) -> None:
        """Record a change (inside the caller's transaction); forget the oldest kept one."""
        epoch, seq = self._head(cache)
        seq += 1
        cache.set(self._feed_key(seq), _dumps([key[0], key[1], qa_id]))
        cache.set(self._feed_head_key(), f"{epoch or uuid.uuid4().hex} {seq}")
        if seq > self.feed_keep:
            cache.delete(self._feed_key(seq - self.feed_keep))

    def feed_position(self) -> str:
        """The position of the newest change, to read the changes after it later."""
        epoch, seq = self._head(self.cache)
        return f"{epoch}:{seq}"

    def changes_since(self, position: str) -> tuple[str, list[str]] | None:
        """Current payloads of the entries changed after ``position``, and the new position.

        ``None`` when the changes after ``position`` cannot all be read (the
        feed restarted, or they are older than the ``feed_keep`` records
        kept): the reader must rebuild from a scan. Entries deleted since
        their change are left out. Records and entries are read in bulk (an
        import may have left thousands).
        """
        cache = self.cache
        epoch, head = self._head(cache)
        seen_epoch, _, seen_text = position.rpartition(":")
        if not seen_text.isdigit():
            return None
        seen = int(seen_text)
        if seen_epoch != epoch and (seen_epoch or seen):  # another feed (restarted)
            return None
        if seen > head or head - seen > self.feed_keep:
            return None
        keys = [self._feed_key(seq) for seq in range(seen + 1, head + 1)]
        records = read_rows(self._rows_con(), keys, time.time())
        changed: dict[tuple[SessionKey, str], None] = {}
        for name in keys:
            record = records.get(name)
            if record is IN_FILE:
                record = cache.get(name)
            if record is None:  # trimmed meanwhile
                return None
            user, session_id, qa_id = json.loads(str(record))
            changed[((user, session_id), qa_id)] = None
        payloads = self.get_many(list(changed))
        return f"{epoch}:{head}", [p for p in payloads if p is not None]

    def restart_feed(self) -> None:
        """Start the feed over: every reader rebuilds from a scan on its next read."""
        cache = self.cache
        with self._transact():
            _, seq = self._head(cache)  # the next seq has no record: "rebuild" for everyone
            cache.set(self._feed_head_key(), f"{uuid.uuid4().hex} {seq + 1}")

    def add_changes(self, refs: Sequence[tuple[SessionKey, str]]) -> tuple[str | None, str] | None:
        """Records naming entries written by ``append`` (an import), in one transaction, so
        every reader re-reads them (a :class:`~.feed.FeedWriter`); ``None``, writing
        nothing, when they are more than the ``feed_keep`` records kept."""
        if len(refs) > self.feed_keep:
            return None
        if not refs:
            position = self.feed_position()
            return position, position
        self.cache  # noqa: B018 -- creates the directory and database on first use
        with writer_lock(self._lock_key):
            con, now = self._rows_con(), time.time()
            con.execute("BEGIN IMMEDIATE")
            try:
                head_key = self._feed_head_key()
                head = read_rows(con, [head_key], now).get(head_key)
                span = feed_records(con, self.namespace, self.feed_keep, refs, head, now)
                con.execute("COMMIT")
            finally:
                rollback(con)  # nothing to roll back after the COMMIT
        return span
