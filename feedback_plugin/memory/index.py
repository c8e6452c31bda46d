"""MemoryIndex: the ranking engine behind positive memory (SQLite FTS5, BM25).

Design
------
One SQLite database (``memory.sqlite3`` beside the diskcache directory)
holds every *rated or corrected* turn of every user: a ``turns`` table with
the fields retrieval filters on, and an external-content FTS5 table over
question and answer (Porter stemming, Unicode folding), kept in step by
triggers. Unrated turns never enter it, so it stays a fraction of the store.

The store calls :meth:`MemoryIndex.apply` inside the same backend transaction
that changes a turn's feedback, so the next query -- in any process sharing
the directory -- sees the change. The index is a *candidate generator*, not
the truth: the retriever re-reads every hit from the store before returning
it and drops (and forgets) hits the store no longer backs, which covers
turns evicted by TTL or ``max_entries`` and a crash between the two commits.

Queries become an FTS5 ``OR`` of quoted terms (never raw FTS syntax), ranked
by ``bm25()`` with the question weighted over the answer. A store that
predates the index is indexed from a full scan on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from ..models import SessionQAEntry

__all__ = ["Hit", "MemoryIndex", "match_query"]

_TERM = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 64
QUESTION_WEIGHT, ANSWER_WEIGHT = 1.0, 0.4

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS turns(
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    tok TEXT NOT NULL,
    session_id TEXT NOT NULL,
    qa_id TEXT NOT NULL,
    score INTEGER,
    corrected INTEGER NOT NULL DEFAULT 0,
    time REAL NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    UNIQUE(owner, session_id, qa_id)
);
CREATE INDEX IF NOT EXISTS turns_recent ON turns(owner, time);
CREATE VIRTUAL TABLE IF NOT EXISTS turns_fts USING fts5(
    tok, question, answer, content='turns', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS turns_ai AFTER INSERT ON turns BEGIN
    INSERT INTO turns_fts(rowid, tok, question, answer)
        VALUES (new.id, new.tok, new.question, new.answer);
END;
CREATE TRIGGER IF NOT EXISTS turns_ad AFTER DELETE ON turns BEGIN
    INSERT INTO turns_fts(turns_fts, rowid, tok, question, answer)
        VALUES ('delete', old.id, old.tok, old.question, old.answer);
    DELETE FROM vectors WHERE id = old.id;
END;
CREATE TRIGGER IF NOT EXISTS turns_au AFTER UPDATE OF question, answer ON turns
WHEN old.question IS NOT new.question OR old.answer IS NOT new.answer BEGIN
    INSERT INTO turns_fts(turns_fts, rowid, tok, question, answer)
        VALUES ('delete', old.id, old.tok, old.question, old.answer);
    INSERT INTO turns_fts(rowid, tok, question, answer)
        VALUES (new.id, new.tok, new.question, new.answer);
    DELETE FROM vectors WHERE id = old.id;
END;
CREATE TABLE IF NOT EXISTS vectors(
    id INTEGER NOT NULL, model TEXT NOT NULL, vec TEXT NOT NULL, PRIMARY KEY(id, model)
);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_DROP = """
DROP TRIGGER IF EXISTS turns_ai; DROP TRIGGER IF EXISTS turns_ad; DROP TRIGGER IF EXISTS turns_au;
DROP TABLE IF EXISTS turns_fts; DROP TABLE IF EXISTS turns; DROP TABLE IF EXISTS vectors;
DROP TABLE IF EXISTS meta;
"""

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "could",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "should",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
"""English words too common to rank by: left out of a query unless it has nothing else."""


def match_query(text: str) -> str | None:
    """An FTS5 query that ORs the words of ``text``, each quoted; ``None`` if it has none.

    Stop words are left out unless the text has no other word: BM25 gives
    them next to no weight, yet each one makes the index visit most rows.

    >>> match_query("How do I reset my password?")
    '"reset" OR "password"'
    >>> match_query("How do I?")
    '"how" OR "do" OR "i"'
    >>> match_query("?!") is None
    True
    """
    seen: dict[str, None] = {}
    for term in _TERM.findall(text.lower()):
        seen.setdefault(term.replace("_", " "), None)
        if len(seen) >= MAX_TERMS:
            break
    terms = [t for t in seen if t not in STOPWORDS] or list(seen)
    return " OR ".join(f'"{t}"' for t in terms) or None


def _wal(con: sqlite3.Connection) -> None:
    """Switch to WAL once per file. The switch takes an exclusive lock and SQLite
    reports a concurrent switch as "locked" at once (no busy wait), so retry."""
    for attempt in range(100):
        if con.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        try:
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == 99:
                raise
            time.sleep(0.02)


def owner_token(owner: str) -> str:
    """One FTS token per owner, so a query visits only that user's rows."""
    return "o" + hashlib.blake2b(owner.encode(), digest_size=10).hexdigest()


def _sql(text: str) -> str:
    """Ids as SQLite can store them: JSON-escaped ASCII (lone surrogates included)."""
    return json.dumps(text, ensure_ascii=True)


def _unsql(text: str) -> str:
    value: str = json.loads(text)
    return value


def _fts(text: str) -> str:
    """Text for the full-text index: unencodable characters become U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8")


def owner_key(namespace: str | None, user: str | None) -> str:
    """The index's scope for one user of one store namespace."""
    return json.dumps([namespace, user], ensure_ascii=True)


def in_memory(entry: SessionQAEntry) -> bool:
    """Whether a turn belongs in the index: it has a score or a correction."""
    return entry.feedback_score is not None or entry.correction is not None


@dataclass(frozen=True, slots=True)
class Hit:
    """One candidate from the index."""

    session_id: str
    qa_id: str
    relevance: float  # -bm25: higher is more relevant; 0 for a query with no terms
    row_id: int


class MemoryIndex:
    """Full-text index of rated turns; see the module docstring.

    The constructor does no I/O. ``path=None`` keeps the index in memory
    (one process only).
    """

    def __init__(
        self, path: str | os.PathLike[str] | None, *, namespace: str | None = None
    ) -> None:
        self.path = ":memory:" if path is None else os.fspath(path)
        self.namespace = namespace
        self._lock = threading.RLock()
        self._con: sqlite3.Connection | None = None
        self._pid = 0
        self._ready = False

    def __repr__(self) -> str:
        return f"MemoryIndex({self.path!r})"

    # -- connection --------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._con is not None and self._pid == os.getpid():
            return self._con
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        _wal(con)
        con.execute("PRAGMA secure_delete = ON")  # deleted turns leave no text behind
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("BEGIN IMMEDIATE")
        try:
            if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                # An older layout: start over; the index is rebuilt from the store.
                for statement in filter(str.strip, _DROP.split(";")):
                    con.execute(statement)
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.executescript(_SCHEMA)
        self._con, self._pid, self._ready = con, os.getpid(), False
        return con

    def _built_key(self) -> str:
        # One flag per namespace: stores of several namespaces share the file,
        # and each one's scan only sees its own namespace.
        return "built" if self.namespace is None else "built:" + owner_key(self.namespace, None)

    def ensure_built(self, scan: Callable[[], Iterable[SessionQAEntry]]) -> None:
        """Index an existing store once (upgrades), then never again."""
        if self._ready:
            return
        key = self._built_key()
        with self._lock:
            con = self._connect()
            if con.execute("SELECT 1 FROM meta WHERE key=?", (key,)).fetchone() is None:
                con.execute("BEGIN IMMEDIATE")
                try:
                    if con.execute("SELECT 1 FROM meta WHERE key=?", (key,)).fetchone() is None:
                        for entry in scan():
                            if in_memory(entry):
                                self._upsert(con, entry)
                        con.execute("INSERT INTO meta VALUES (?, '1')", (key,))
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            self._ready = True

    def rebuild(self, scan: Callable[[], Iterable[SessionQAEntry]]) -> None:
        """Empty the index and fill it again from ``scan`` (one transaction)."""
        with self._lock:
            con = self._connect()
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute("DELETE FROM turns")
                for entry in scan():
                    if in_memory(entry):
                        self._upsert(con, entry)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('built', '1')")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self._ready = True

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
                _sql(entry.session_id),
                _sql(entry.qa_id),
                entry.feedback_score,
                int(entry.correction is not None),
                entry.time.timestamp(),
                _fts(entry.question),
                _fts(entry.correction if entry.correction is not None else entry.answer),
            ),
        )

    def apply(self, entry: SessionQAEntry) -> None:
        """Bring one turn's row in line with its feedback (insert, update or delete)."""
        with self._lock:
            con = self._connect()
            if in_memory(entry):
                self._upsert(con, entry)
            else:
                self._delete(con, entry.user_id, entry.session_id, entry.qa_id)

    def forget(self, user: str | None, session_id: str, qa_id: str) -> None:
        """Drop one turn (the store no longer backs it)."""
        with self._lock:
            self._delete(self._connect(), user, session_id, qa_id)

    def forget_session(self, user: str | None, session_id: str) -> None:
        """Drop a deleted session's rows and scrub their text from the file.

        ``secure_delete`` zeroes freed pages, ``optimize`` rewrites the
        full-text segments without the deleted terms, and a checkpoint clears
        the write-ahead log: nothing of the session stays at rest.
        """
        with self._lock:
            con = self._connect()
            con.execute(
                "DELETE FROM turns WHERE owner=? AND session_id=?",
                (owner_key(self.namespace, user), _sql(session_id)),
            )
            if con.execute("SELECT changes()").fetchone()[0]:
                con.execute("INSERT INTO turns_fts(turns_fts) VALUES ('optimize')")
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _delete(
        self, con: sqlite3.Connection, user: str | None, session_id: str, qa_id: str
    ) -> None:
        con.execute(
            "DELETE FROM turns WHERE owner=? AND session_id=? AND qa_id=?",
            (owner_key(self.namespace, user), _sql(session_id), _sql(qa_id)),
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
    ) -> list[Hit]:
        """Best-first candidates for ``query`` among this user's remembered turns.

        A query without words returns the most recent remembered turns.
        """
        owner = owner_key(self.namespace, user)
        where = ["t.owner = ?", "(t.score >= ? OR t.corrected = 1)"]
        args: list[object] = [owner, min_score]
        if session_id is not None:
            where.append("t.session_id = ?")
            args.append(_sql(session_id))
        if since is not None:
            where.append("t.time >= ?")
            args.append(since.timestamp())
        if until is not None:
            where.append("t.time <= ?")
            args.append(until.timestamp())
        match = match_query(query)
        with self._lock:
            con = self._connect()
            if match is None:
                rows = con.execute(
                    f"SELECT t.session_id, t.qa_id, 0.0, t.id FROM turns t"
                    f" WHERE {' AND '.join(where)} ORDER BY t.time DESC, t.id DESC LIMIT ?",
                    (*args, limit),
                ).fetchall()
            else:
                rows = con.execute(
                    "SELECT t.session_id, t.qa_id,"
                    f" -bm25(turns_fts, 0.0, {QUESTION_WEIGHT}, {ANSWER_WEIGHT}) AS rel, t.id"
                    " FROM turns_fts JOIN turns t ON t.id = turns_fts.rowid"
                    f" WHERE turns_fts MATCH ? AND {' AND '.join(where)}"
                    " ORDER BY rel DESC, t.time DESC, t.id DESC LIMIT ?",
                    (f'tok:"{owner_token(owner)}" AND {{question answer}}:({match})', *args, limit),
                ).fetchall()
        return [Hit(_unsql(r[0]), _unsql(r[1]), float(r[2]), r[3]) for r in rows]

    def recent(self, *, user: str | None, limit: int, min_score: int) -> list[Hit]:
        """The most recently recorded remembered turns (candidates for semantic ranking)."""
        return self.search("", user=user, limit=limit, min_score=min_score)

    # -- vectors (semantic ranking cache) ----------------------------------

    def vectors(self, model: str, row_ids: Iterable[int]) -> dict[int, list[float]]:
        ids = list(row_ids)
        if not ids:
            return {}
        with self._lock:
            rows = (
                self._connect()
                .execute(
                    "SELECT id, vec FROM vectors WHERE model = ?"
                    f" AND id IN ({','.join('?' * len(ids))})",
                    (model, *ids),
                )
                .fetchall()
            )
        return {row_id: json.loads(vec) for row_id, vec in rows}

    def save_vectors(self, model: str, vectors: dict[int, list[float]]) -> None:
        with self._lock:
            self._connect().executemany(
                "INSERT OR REPLACE INTO vectors(id, model, vec) SELECT ?, ?, ?"
                " WHERE EXISTS (SELECT 1 FROM turns WHERE id = ?)",
                ((i, model, json.dumps(v), i) for i, v in vectors.items()),
            )

    def count(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT count(*) FROM turns").fetchone()[0])

    def rows(self) -> Iterator[tuple[str, str, str]]:
        """``(owner, session_id, qa_id)`` of every indexed turn."""
        with self._lock:
            for owner, session_id, qa_id in (
                self._connect().execute("SELECT owner, session_id, qa_id FROM turns").fetchall()
            ):
                yield owner, _unsql(session_id), _unsql(qa_id)

    def close(self) -> None:
        with self._lock:
            if self._con is not None and self._pid == os.getpid():
                self._con.close()
            self._con, self._ready = None, False
