"""The memory index file: its layout, and how ids, text and queries go into it.

The SQLite schema (a ``turns`` table, an external-content FTS5 table kept in
step by triggers, an ``fts5vocab`` view of its terms' document counts,
cached ``vectors``, and ``meta`` for feed positions), its version (an older
layout is dropped and rebuilt from the store), and the encodings the index
relies on: ids as JSON-escaped ASCII, one FTS token per owner so a query
visits only that user's rows, and a query as an FTS5 ``OR`` of quoted words
without stop words (never raw FTS syntax). Which of a query's words go into
the ``OR`` is :mod:`.fts_terms`'s choice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator

__all__ = [
    "ANSWER_WEIGHT",
    "DROP",
    "MAX_TERMS",
    "QUESTION_WEIGHT",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STOPWORDS",
    "fts_text",
    "immediate",
    "is_corrupt",
    "match_query",
    "or_query",
    "owner_key",
    "owner_token",
    "query_words",
    "rollback",
    "sql_id",
    "unsql_id",
    "use_wal",
]


def is_corrupt(exc: BaseException) -> bool:
    """Whether SQLite says the file itself is damaged (not busy, full or read-only)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, (sqlite3.OperationalError, sqlite3.IntegrityError)
    )


_TERM = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 64
QUESTION_WEIGHT, ANSWER_WEIGHT = 1.0, 0.4

SCHEMA_VERSION = 4

SCHEMA = """
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
    DELETE FROM vectors WHERE owner = old.owner AND session_id = old.session_id
        AND qa_id = old.qa_id;
END;
CREATE TRIGGER IF NOT EXISTS turns_au AFTER UPDATE OF question, answer ON turns
WHEN old.question IS NOT new.question OR old.answer IS NOT new.answer BEGIN
    INSERT INTO turns_fts(turns_fts, rowid, tok, question, answer)
        VALUES ('delete', old.id, old.tok, old.question, old.answer);
    INSERT INTO turns_fts(rowid, tok, question, answer)
        VALUES (new.id, new.tok, new.question, new.answer);
    DELETE FROM vectors WHERE owner = old.owner AND session_id = old.session_id
        AND qa_id = old.qa_id;
END;
CREATE TABLE IF NOT EXISTS vectors(
    owner TEXT NOT NULL, session_id TEXT NOT NULL, qa_id TEXT NOT NULL, model TEXT NOT NULL,
    vec TEXT NOT NULL, PRIMARY KEY(owner, session_id, qa_id, model)
);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS turns_vocab USING fts5vocab(turns_fts, row);
"""

DROP = """
DROP TRIGGER IF EXISTS turns_ai; DROP TRIGGER IF EXISTS turns_ad; DROP TRIGGER IF EXISTS turns_au;
DROP TABLE IF EXISTS turns_fts; DROP TABLE IF EXISTS turns; DROP TABLE IF EXISTS vectors;
DROP TABLE IF EXISTS meta; DROP TABLE IF EXISTS turns_vocab;
"""

STOPWORDS = frozenset(
    """
    a an and are as at be but by can could do does for from had has have how i if in is it
    its me my of on or our should so than that the their them then there these they this to
    was we were what when where which who why will with would you your
    """.split()  # noqa: SIM905 - a word list reads best as words
)
"""English words too common to rank by: left out of a query unless it has nothing else."""


def query_words(text: str) -> list[str]:
    """The words of ``text`` a query searches for, lowercased, each once, in order.

    Stop words are left out unless the text has no other word: BM25 gives
    them next to no weight, yet each one makes the index visit most rows. An
    underscore separates words within one (``a_b`` is the phrase ``a b``).

    >>> query_words("How do I reset my password?")
    ['reset', 'password']
    >>> query_words("How do I?")
    ['how', 'do', 'i']
    """
    seen: dict[str, None] = {}
    for term in _TERM.findall(text.lower()):
        seen.setdefault(term.replace("_", " "), None)
        if len(seen) >= MAX_TERMS:
            break
    return [t for t in seen if t not in STOPWORDS] or list(seen)


def or_query(words: list[str]) -> str | None:
    """An FTS5 query that ORs ``words``, each quoted; ``None`` if there are none."""
    return " OR ".join(f'"{t}"' for t in words) or None


def match_query(text: str) -> str | None:
    """An FTS5 query that ORs every word of ``text`` (:func:`query_words`), each quoted;
    ``None`` if it has none.

    >>> match_query("How do I reset my password?")
    '"reset" OR "password"'
    >>> match_query("How do I?")
    '"how" OR "do" OR "i"'
    >>> match_query("?!") is None
    True
    """
    return or_query(query_words(text))


def use_wal(con: sqlite3.Connection) -> None:
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


def sql_id(text: str) -> str:
    """Ids as SQLite can store them: JSON-escaped ASCII (lone surrogates included)."""
    return json.dumps(text, ensure_ascii=True)


def unsql_id(text: str) -> str:
    value: str = json.loads(text)
    return value


def fts_text(text: str) -> str:
    """Text for the full-text index: unencodable characters become U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8")


def owner_key(namespace: str | None, user: str | None) -> str:
    """The index's scope for one user of one store namespace."""
    return json.dumps([namespace, user], ensure_ascii=True)


@contextlib.contextmanager
def immediate(con: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on the index file: ``BEGIN IMMEDIATE`` (the write lock at
    once, so readers never block it halfway), committed at the end of the block, rolled
    back on any error."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise


def rollback(con: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (SQLite ends one itself on some errors,
    and a ROLLBACK then would hide the real error behind its own)."""
    if con.in_transaction:
        con.execute("ROLLBACK")
