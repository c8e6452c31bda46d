"""MemoryIndex: positive memory in SQLite FTS5 (BM25), for any backend with a change feed.

Design
------
The :class:`~.base.MemorySearch` that diskcache, Redis and any backend with
a :class:`~.base.ChangeFeed` supply: one SQLite database, shared by a machine's
processes (``memory.sqlite3`` beside a diskcache directory; for Redis, a file in
the cache directory: :mod:`.redis_index`) holds every *rated or corrected* turn: a
``turns`` table with the fields retrieval filters on, and an
external-content FTS5 table over question and answer (Porter stemming,
Unicode folding), kept in step by triggers. Unrated turns never enter it,
so it stays a fraction of the store. Cached embeddings live in a
``vectors`` table keyed by the turn (owner, session, qa_id) and model.

The index is a cache of the backend, never the truth, and it heals itself.
The backend commits a feedback change together with a record in its change
feed (``ChangeFeed.changes_since``); the index keeps, per store namespace,
the feed position it has applied, and :meth:`MemoryIndex.catch_up` -- run
before every query -- applies the changes after it, re-reading each changed
turn from the backend, under the index's write lock. So the next query in any
process sees a rating made anywhere, and a crash after the store's commit
loses nothing (nothing is written to the index before the store commits).
The index rebuilds itself from a scan of the store when it has no position
(a new or deleted file), when its position is no longer in the feed (the
feed restarted or was trimmed), and when SQLite reports the file corrupt
(the file is moved aside as ``memory.sqlite3.corrupt-<time>``). A file
deleted or replaced while a process has it open is noticed by its inode
and reopened. The retriever still re-reads every hit and drops hits the
store no longer backs (turns evicted by TTL or ``max_entries``).

An import (entries written without ``update``) reaches every process's index
without a rebuild: :meth:`MemoryIndex.on_import` applies each batch here and
writes a feed record per rated turn through the feed (see :mod:`.feed`).

Queries become an FTS5 ``OR`` of quoted words (never raw FTS syntax), ranked
by ``bm25()`` with the question weighted over the answer. On an index of
thousands of rows a query looks for its rarest words only (at most 6, each
in at most 20% of the rows; when all are that common, the 2 rarest, ranked
over the last 2,000 rows that match), filling up with the words it dropped
when that finds fewer hits than asked for: see :mod:`.fts_terms`. A store
that predates the index is indexed from a full scan on first use. This
module imports no store and no LangChain: the store and the retriever
depend on it, never the reverse.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ..models import SessionQAEntry
from ..ratings import MIN_SCORE, is_remembered
from .base import ChangeFeed, Hit, SessionKey
from .feed import feed_writer
from .fts_schema import (
    DROP,
    SCHEMA,
    SCHEMA_VERSION,
    fts_text,
    is_corrupt,
    match_query,
    owner_key,
    owner_token,
    query_words,
    rollback,
    sql_id,
    unsql_id,
    use_wal,
)
from .fts_terms import TermPicker, select_turns
from .vectors import VectorStore

__all__ = ["MemoryIndex", "match_query"]

log = logging.getLogger("feedback_plugin")
_T = TypeVar("_T")


class MemoryIndex:
    """Full-text index of rated turns (a :class:`~.base.MemorySearch`); see the module
    docstring.

    The constructor does no I/O. ``path=None`` keeps the index in memory
    (one process only). ``feed`` is the backend it caches; without one the
    index is only what :meth:`apply` puts in it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        namespace: str | None = None,
        feed: ChangeFeed | None = None,
    ) -> None:
        self.path = ":memory:" if path is None else os.fspath(path)
        self.namespace = namespace
        self.feed = feed
        self._lock = threading.RLock()  # the writer connection and every write
        self._con: sqlite3.Connection | None = None
        self._pid = 0
        self._inode: tuple[int, int] | None = None
        self._generation = 0  # bumped when the file is reopened: readers reopen too
        self._readers = threading.local()  # each thread's own read connection (WAL)
        self._reader_list: list[tuple[int, sqlite3.Connection]] = []  # to close them all
        self._terms = TermPicker()  # which words of a query to search for
        self._vectors: VectorStore | None = None

    def __repr__(self) -> str:
        return f"MemoryIndex({self.path!r})"

    @classmethod
    def private(cls, *, namespace: str | None, feed: ChangeFeed) -> MemoryIndex:
        """An index in a temporary file of this process's own, removed when the index is
        dropped or the process exits: a file, not ``:memory:``, so that searches in
        several threads run at once (each on its own WAL read connection)."""
        directory = tempfile.mkdtemp(prefix="feedback-plugin-memory-")
        index = cls(os.path.join(directory, "memory.sqlite3"), namespace=namespace, feed=feed)
        weakref.finalize(index, _remove, directory, os.getpid())
        return index

    # -- connection --------------------------------------------------------

    def _file_id(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return (0, 0)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _connect(self) -> sqlite3.Connection:
        if self._con is not None and self._pid == os.getpid():
            if self._inode == self._file_id():
                return self._con
            # The file was deleted or replaced under us: what we hold is not
            # what other processes read. Open the file at the path again.
            log.warning("feedback_plugin: memory index %s was replaced; reopening", self.path)
            self._drop_connection()
        try:
            return self._open()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            self._quarantine(exc)
            return self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            use_wal(con)
            con.execute("PRAGMA secure_delete = ON")  # deleted turns leave no text behind
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("BEGIN IMMEDIATE")
            try:
                if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    # An older layout: start over; the index is rebuilt from the store.
                    for statement in filter(str.strip, DROP.split(";")):
                        con.execute(statement)
                    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                con.execute("COMMIT")
            except BaseException:
                rollback(con)
                raise
            con.executescript(SCHEMA)
        except BaseException:
            con.close()
            raise
        self._con, self._pid, self._inode = con, os.getpid(), self._file_id()
        return con

    def _drop_connection(self) -> None:
        if self._con is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._con.close()
        self._con, self._inode = None, None
        self._generation += 1

    def _reader(self) -> sqlite3.Connection | None:
        """This thread's read connection to the file (``None`` for an in-memory index,
        which has one connection only). Searches in several threads then run at
        once: WAL readers never wait for each other, nor for the writer."""
        if self.path == ":memory:":
            return None
        with self._lock:
            self._connect()  # the file exists, with its schema; notices a replaced file
            generation = self._generation
        local = self._readers
        con: sqlite3.Connection | None = getattr(local, "con", None)
        if con is not None and local.key == (os.getpid(), generation):
            return con
        if con is not None and local.key[0] == os.getpid():
            self._forget_reader(con)
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        with self._lock:
            self._reader_list.append((os.getpid(), con))
        local.con, local.key = con, (os.getpid(), generation)
        return con

    def _forget_reader(self, con: sqlite3.Connection) -> None:
        with self._lock:
            self._reader_list = [(p, c) for p, c in self._reader_list if c is not con]
        with contextlib.suppress(sqlite3.Error):
            con.close()

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run the read ``fn`` on this thread's connection; heal the file if corrupt."""
        try:
            con = self._reader()
            if con is not None:
                return fn(con)
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
        return self._healing(fn)  # the in-memory index, or a damaged file: under the lock

    def _quarantine(self, exc: BaseException) -> None:
        """The file is damaged: move it (and its WAL) aside; the next open starts afresh."""
        self._drop_connection()
        if self.path == ":memory:":
            return
        aside = f"{self.path}.corrupt-{int(time.time())}"
        log.error(
            "feedback_plugin: memory index %s is corrupt (%s); moved to %s, rebuilding",
            self.path,
            exc,
            aside,
        )
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path + suffix, aside + suffix)

    def _healing(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` on the connection; if the file turns out corrupt, set it aside,
        rebuild from the source and run ``fn`` once more."""
        with self._lock:
            try:
                return fn(self._connect())
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                self._quarantine(exc)
            con = self._connect()
            if self.feed is not None:
                self._sync(con)
            return fn(con)

    # -- keeping up with the store -------------------------------------------

    def _position_key(self) -> str:
        # One position per namespace: stores of several namespaces share the file,
        # and each one's feed and scan only cover its own namespace.
        if self.namespace is None:
            return "position"
        return "position:" + owner_key(self.namespace, None)

    def position(self) -> str | None:
        """The store feed position this index has applied (``None``: never built)."""
        with self._lock:
            row = (
                self._connect()
                .execute("SELECT value FROM meta WHERE key=?", (self._position_key(),))
                .fetchone()
            )
        return None if row is None else str(row[0])

    def catch_up(self) -> None:
        """Apply the backend's changes since this index's position; rebuild if it has none.

        A no-op without a ``feed``. Cheap when nothing changed: one read of
        the feed's head and one of the index's position.
        """
        if self.feed is None:
            return
        key = self._position_key()
        head = self.feed.feed_position()
        row = self._read(
            lambda con: con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        )
        if row is not None and row[0] == head:
            return  # nothing changed: no lock taken
        self._healing(self._sync)

    def _sync(self, con: sqlite3.Connection) -> None:
        feed = self.feed
        assert feed is not None
        key = self._position_key()
        con.execute("BEGIN IMMEDIATE")  # one process catches up at a time
        try:
            row = con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            caught = None if row is None else feed.changes_since(str(row[0]))
            if caught is None:
                position = feed.feed_position()  # before the scan: later changes re-apply
                prefix = owner_key(self.namespace, None)[:-5]  # '["ns", ' of '["ns", null]'
                con.execute(
                    "DELETE FROM turns WHERE owner >= ? AND owner < ?",
                    (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)),
                )
                for _, payload in feed.scan():
                    entry = _parse(payload)
                    if entry is not None and is_remembered(entry, MIN_SCORE):
                        self._upsert(con, entry)
            else:
                position, payloads = caught
                for payload in payloads:
                    entry = _parse(payload)
                    if entry is not None:
                        self._apply(con, entry)
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, position))
            con.execute("COMMIT")
        except BaseException:
            rollback(con)
            raise

    _every_word = False  # True: search for every word of a query (benchmarks compare)

    def on_import(self, entries: Sequence[SessionQAEntry]) -> bool:
        """Imported entries (written by ``append``): apply them here and commit a feed record
        per remembered one (see :mod:`.feed`); ``False``, changing nothing, when the feed
        cannot take the records: the caller then restarts it with :meth:`reset`."""
        feed, key = self.feed, self._position_key()
        refs = [
            ((e.user_id, e.session_id), e.qa_id) for e in entries if is_remembered(e, MIN_SCORE)
        ]
        writer = feed_writer(feed)
        if refs and feed is not None and writer is None:
            return False

        def take(con: sqlite3.Connection) -> bool:
            con.execute("BEGIN IMMEDIATE")  # no catch-up in between: none re-applies old data
            try:
                span = writer.add_changes(refs) if writer is not None and refs else None
                if span is None and refs and writer is not None:
                    rollback(con)
                    return False  # more records than the feed keeps
                row = con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
                if row is not None or feed is None:  # else the next query rebuilds anyway
                    for entry in entries:
                        self._apply(con, entry)
                if span is not None and row is not None and row[0] == span[0]:
                    # this index was at the head: its own records need no re-reading
                    con.execute("UPDATE meta SET value=? WHERE key=?", (span[1], key))
                con.execute("COMMIT")
                return True
            except BaseException:
                rollback(con)
                raise

        return self._healing(take)

    def rebuild(self) -> None:
        """Forget this namespace's position: this process's next query rebuilds."""
        with self._lock:
            self._connect().execute("DELETE FROM meta WHERE key=?", (self._position_key(),))

    def reset(self) -> None:
        """Every process rebuilds before its next query (entries written without ``update``)."""
        if self.feed is not None:
            self.feed.restart_feed()
        self.rebuild()

    def on_change(self, key: SessionKey, qa_id: str) -> None:
        """Bring one turn's row in line with the backend (a stale hit), re-read under the
        index's write lock so that a concurrent catch-up cannot be undone by it."""
        user, session_id = key
        feed = self.feed
        if feed is None:
            self.forget(user, session_id, qa_id)
            return

        def refresh(con: sqlite3.Connection) -> None:
            con.execute("BEGIN IMMEDIATE")
            try:
                payload = feed.get(key, qa_id)
                entry = None if payload is None else _parse(payload)
                if entry is None:
                    self._delete(con, user, session_id, qa_id)
                else:
                    self._apply(con, entry)
                con.execute("COMMIT")
            except BaseException:
                rollback(con)
                raise

        self._healing(refresh)

    # -- writes ------------------------------------------------------------

    def _upsert(self, con: sqlite3.Connection, entry: SessionQAEntry) -> None:
        owner = owner_key(self.namespace, entry.user_id)
        con.execute(
            "INSERT INTO turns(owner, tok, session_id, qa_id, score, corrected, time, question,"
            " answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(owner, session_id, qa_id) DO UPDATE SET"
            " score=excluded.score, corrected=excluded.corrected, time=excluded.time,"
            " question=excluded.question, answer=excluded.answer",
            (
                owner,
                owner_token(owner),
                sql_id(entry.session_id),
                sql_id(entry.qa_id),
                entry.feedback_score,
                int(entry.correction is not None),
                entry.time.timestamp(),
                fts_text(entry.question),
                fts_text(entry.best_answer),
            ),
        )

    def _apply(self, con: sqlite3.Connection, entry: SessionQAEntry) -> None:
        # the index holds every turn some min_score remembers: a score or a correction
        if is_remembered(entry, MIN_SCORE):
            self._upsert(con, entry)
        else:
            self._delete(con, entry.user_id, entry.session_id, entry.qa_id)

    def apply(self, entry: SessionQAEntry) -> None:
        """Bring one turn's row in line with its feedback (insert, update or delete)."""
        self._healing(lambda con: self._apply(con, entry))

    def forget(self, user: str | None, session_id: str, qa_id: str) -> None:
        """Drop one turn (the store no longer backs it)."""
        self._healing(lambda con: self._delete(con, user, session_id, qa_id))

    def on_delete_session(self, key: SessionKey) -> None:
        """Drop a deleted session's rows and scrub their text from the file.

        ``secure_delete`` zeroes freed pages, ``optimize`` rewrites the
        full-text segments without the deleted terms, and a checkpoint clears
        the write-ahead log: nothing of the session stays at rest.
        """

        user, session_id = key

        def forget(con: sqlite3.Connection) -> None:
            con.execute(
                "DELETE FROM turns WHERE owner=? AND session_id=?",
                (owner_key(self.namespace, user), sql_id(session_id)),
            )
            if con.execute("SELECT changes()").fetchone()[0]:
                con.execute("INSERT INTO turns_fts(turns_fts) VALUES ('optimize')")
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        self._healing(forget)

    def _delete(
        self, con: sqlite3.Connection, user: str | None, session_id: str, qa_id: str
    ) -> None:
        con.execute(
            "DELETE FROM turns WHERE owner=? AND session_id=? AND qa_id=?",
            (owner_key(self.namespace, user), sql_id(session_id), sql_id(qa_id)),
        )

    # -- queries -----------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        user: str | None,
        limit: int,
        min_score: int,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        metadata_filter: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Best-first candidates for ``query`` among this user's remembered turns.

        A query without words returns the most recent remembered turns. The
        index holds no metadata: ``metadata_filter`` is left to the caller.
        """
        owner = owner_key(self.namespace, user)
        where = ["t.owner = ?", "(t.score >= ? OR t.corrected = 1)"]  # ratings.is_remembered
        args: list[object] = [owner, min_score]
        if session_id is not None:
            where.append("t.session_id = ?")
            args.append(sql_id(session_id))
        if since is not None:
            where.append("t.time >= ?")
            args.append(since.timestamp())
        if until is not None:
            where.append("t.time <= ?")
            args.append(until.timestamp())
        words, tok = query_words(query), owner_token(owner)
        picker = None if self._every_word else self._terms
        rows = self._read(lambda con: select_turns(con, picker, words, tok, where, args, limit))
        return [Hit((user, unsql_id(r[0])), unsql_id(r[1]), float(r[2])) for r in rows]

    def recent(self, *, user: str | None, limit: int, min_score: int) -> list[Hit]:
        """The most recently recorded remembered turns (candidates for semantic ranking)."""
        return self.search("", user=user, limit=limit, min_score=min_score)

    # -- by meaning: the vectors live in this file too (backends/vectors.py) ------

    def _vector_store(self) -> VectorStore:
        with self._lock:
            if self._vectors is None:
                self._vectors = VectorStore(self)
            return self._vectors

    def use_embeddings(self, model: str, embeddings: Any) -> None:
        """Keep every remembered turn embedded with ``model`` (a background thread)."""
        self._vector_store().use(model, embeddings)

    def search_by_vector(
        self,
        vector: Sequence[float],
        *,
        model: str,
        user: str | None,
        limit: int,
        min_score: int,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Hit]:
        """Nearest-first remembered turns of ``user`` by meaning (see :mod:`.vectors`)."""
        return self._vector_store().search(
            vector,
            model=model,
            user=user,
            limit=limit,
            min_score=min_score,
            session_id=session_id,
            since=since,
            until=until,
        )

    def wait_embedded(self, timeout: float) -> bool:
        """Block until every remembered turn has its vector (``False`` on timeout)."""
        return self._vector_store().wait(timeout)

    # what the vector store needs of this file
    def reading(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return self._read(fn)

    def writing(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return self._healing(fn)

    def owner_of(self, user: str | None) -> str:
        return owner_key(self.namespace, user)

    def hit(self, user: str | None, session_id: str, qa_id: str, relevance: float) -> Hit:
        return Hit((user, unsql_id(session_id)), unsql_id(qa_id), relevance)

    def count(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT count(*) FROM turns").fetchone()[0])

    def rows(self) -> Iterator[tuple[str, str, str]]:
        """``(owner, session_id, qa_id)`` of every indexed turn."""
        with self._lock:
            for owner, session_id, qa_id in (
                self._connect().execute("SELECT owner, session_id, qa_id FROM turns").fetchall()
            ):
                yield owner, unsql_id(session_id), unsql_id(qa_id)

    def close(self) -> None:
        """Close the writer and every thread's reader (the store is closing)."""
        if self._vectors is not None:
            self._vectors.close()
        self._terms.close()
        with self._lock:
            self._drop_connection()
            readers, self._reader_list = self._reader_list, []
        for pid, con in readers:
            if pid == os.getpid():  # never a connection inherited through fork
                with contextlib.suppress(sqlite3.Error):
                    con.close()


def _remove(directory: str, owner: int) -> None:
    """Delete a private index's directory (only in the process that made it)."""
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)


def _parse(payload: str) -> SessionQAEntry | None:
    """A stored entry, or ``None`` (the store logs entries that do not parse)."""
    try:
        return SessionQAEntry.from_json(payload)
    except (ValueError, TypeError):
        return None
