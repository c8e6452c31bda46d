"""The vectors' side of the index file: tables, triggers, the queue of turns to embed.

See :mod:`.vectors` for the design. Here: the layout (``embeddings``,
``embedding_pending``, ``embedding_log`` and the triggers that keep them in
step with ``turns``), the lease-embed-store cycle the :class:`~.embedder.Embedder`
runs, and the running mean of the vectors embedded (kept in ``meta``, read
by the search to centre its scores).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .fts_schema import immediate

if TYPE_CHECKING:
    import sqlite3

__all__ = ["LOG_KEEP", "EmbeddingQueue", "numpy_module", "read_center"]


class Writes(Protocol):
    """How the queue reaches the index file."""

    def reading(self, fn: Callable[[sqlite3.Connection], Any]) -> Any: ...
    def writing(self, fn: Callable[[sqlite3.Connection], Any]) -> Any: ...


LEASE = 120.0
"""Seconds a process holds a leased batch before another may take it."""

LOG_KEEP = 200_000
"""Log records kept; a process that fell further behind reloads its vectors."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings(
    turn_id INTEGER PRIMARY KEY, model TEXT NOT NULL, vec BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS embedding_pending(
    turn_id INTEGER PRIMARY KEY, lease REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS embedding_log(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, turn_id INTEGER NOT NULL, added INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS turns_embed_ai AFTER INSERT ON turns BEGIN
    DELETE FROM embedding_pending WHERE turn_id = new.id;
    INSERT INTO embedding_pending(turn_id, lease) VALUES (new.id, 0);
END;
CREATE TRIGGER IF NOT EXISTS turns_embed_au AFTER UPDATE OF question, answer ON turns
WHEN old.question IS NOT new.question OR old.answer IS NOT new.answer BEGIN
    DELETE FROM embeddings WHERE turn_id = old.id;
    DELETE FROM embedding_pending WHERE turn_id = new.id;
    INSERT INTO embedding_pending(turn_id, lease) VALUES (new.id, 0);
END;
CREATE TRIGGER IF NOT EXISTS turns_embed_ad AFTER DELETE ON turns BEGIN
    DELETE FROM embeddings WHERE turn_id = old.id;
    DELETE FROM embedding_pending WHERE turn_id = old.id;
END;
CREATE TRIGGER IF NOT EXISTS embeddings_ai AFTER INSERT ON embeddings BEGIN
    INSERT INTO embedding_log(turn_id, added) VALUES (new.turn_id, 1);
END;
CREATE TRIGGER IF NOT EXISTS embeddings_ad AFTER DELETE ON embeddings BEGIN
    INSERT INTO embedding_log(turn_id, added) VALUES (old.turn_id, 0);
END;
"""
# (A trigger's OR REPLACE would give way to the conflict clause of the statement that
# fired it -- the index's upserts -- so the triggers delete, then insert.)

DROP = """
DROP TRIGGER IF EXISTS turns_embed_ai; DROP TRIGGER IF EXISTS turns_embed_au;
DROP TRIGGER IF EXISTS turns_embed_ad; DROP TRIGGER IF EXISTS embeddings_ai;
DROP TRIGGER IF EXISTS embeddings_ad; DROP TABLE IF EXISTS embeddings;
DROP TABLE IF EXISTS embedding_pending; DROP TABLE IF EXISTS embedding_log;
DELETE FROM meta WHERE key IN ('embedding_model', 'embedding_sum', 'embedding_count');
"""

VERSION = "1"
"""The layout above; a file with another drops its vectors and starts again."""


CENTER_MIN = 50
"""Vectors embedded before scores are centred on their mean (fewer: plain cosine)."""


def read_center(np: Any, con: sqlite3.Connection) -> Any:
    """The mean of the vectors embedded with the file's model (``None``: too few yet)."""
    row = con.execute(
        "SELECT (SELECT value FROM meta WHERE key = 'embedding_sum'),"
        " (SELECT value FROM meta WHERE key = 'embedding_count')"
    ).fetchone()
    if row is None or row[0] is None or not row[1] or int(row[1]) < CENTER_MIN:
        return None
    return (np.frombuffer(row[0], dtype=np.float64) / int(row[1])).astype(np.float32)


def _add_to_center(np: Any, con: sqlite3.Connection, vectors: Any) -> None:
    """Add normalised ``vectors`` to the running sum the mean is read from (in the
    caller's transaction). Removals are not taken off: the mean of everything embedded
    is as good an estimate of the memory's common direction."""
    row = con.execute(
        "SELECT (SELECT value FROM meta WHERE key = 'embedding_sum'),"
        " (SELECT value FROM meta WHERE key = 'embedding_count')"
    ).fetchone()
    total = vectors.astype(np.float64).sum(axis=0)
    count = len(vectors)
    if row is not None and row[0] is not None and len(row[0]) == total.nbytes:
        total += np.frombuffer(row[0], dtype=np.float64)
        count += int(row[1] or 0)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('embedding_sum', ?)", (total.tobytes(),))
    con.execute("INSERT OR REPLACE INTO meta VALUES ('embedding_count', ?)", (count,))


def numpy_module() -> Any:
    """numpy, or the error that says which extra brings it."""
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        from ..errors import ConfigurationError

        raise ConfigurationError(
            "memory by meaning needs numpy: pip install 'feedback-plugin[semantic]'"
        ) from exc
    return numpy


class EmbeddingQueue:
    """The turns of one index file waiting for a vector, and the vectors stored."""

    def __init__(self, connections: Writes) -> None:
        self.connections = connections
        self._ready = False

    def create(self) -> None:
        """Lay the tables out (once per process; a file of another layout starts again)."""
        if self._ready:
            return

        def create(con: sqlite3.Connection) -> None:
            row = con.execute("SELECT value FROM meta WHERE key = 'vectors_layout'").fetchone()
            if row is None or row[0] != VERSION:
                con.executescript(DROP)
            con.executescript(SCHEMA)
            con.execute("INSERT OR REPLACE INTO meta VALUES ('vectors_layout', ?)", (VERSION,))

        self.connections.writing(create)
        self._ready = True

    def select(self, model: str) -> None:
        """Make ``model`` the file's: if it was another, drop its vectors, queue every turn."""
        self.create()

        def switch(con: sqlite3.Connection) -> None:
            with immediate(con):
                row = con.execute("SELECT value FROM meta WHERE key='embedding_model'").fetchone()
                if row is None or row[0] != model:
                    con.execute("DELETE FROM embeddings")
                    con.execute("DELETE FROM embedding_pending")
                    con.execute(
                        "DELETE FROM meta WHERE key IN ('embedding_sum', 'embedding_count')"
                    )
                    con.execute("INSERT INTO embedding_pending(turn_id) SELECT id FROM turns")
                    con.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('embedding_model', ?)", (model,)
                    )

        self.connections.writing(switch)

    def lease(self, limit: int) -> tuple[float, list[tuple[int, str]]]:
        """Take up to ``limit`` pending turns for embedding: the lease's stamp (give it to
        :meth:`store`) and ``(turn id, text)`` pairs."""
        now = time.time()
        stamp = now + LEASE
        waiting = self.connections.reading(
            lambda con: con.execute(
                "SELECT 1 FROM embedding_pending WHERE lease < ? LIMIT 1", (now,)
            ).fetchone()
        )
        if waiting is None:
            return stamp, []  # nothing to take: no write lock taken

        def take(con: sqlite3.Connection) -> list[tuple[int, str]]:
            with immediate(con):
                rows = con.execute(
                    "SELECT p.turn_id, t.question, t.answer FROM embedding_pending p"
                    " JOIN turns t ON t.id = p.turn_id WHERE p.lease < ? LIMIT ?",
                    (now, limit),
                ).fetchall()
                con.executemany(
                    "UPDATE embedding_pending SET lease = ? WHERE turn_id = ?",
                    [(stamp, r[0]) for r in rows],
                )
            return [(r[0], f"Question: {r[1]}\nAnswer: {r[2]}") for r in rows]

        result: list[tuple[int, str]] = self.connections.writing(take)
        return stamp, result

    def store(self, model: str, stamp: float, vectors: dict[int, Any]) -> None:
        """Save the vectors of turns leased with ``stamp`` and clear their queue entries;
        a turn that left memory, or whose text changed (queued again) meanwhile, is
        skipped: its vector would be of another text."""
        np = numpy_module()

        def save(con: sqlite3.Connection) -> None:
            with immediate(con):
                row = con.execute("SELECT value FROM meta WHERE key='embedding_model'").fetchone()
                if row is None or row[0] != model:  # another model took over: give them back
                    con.executemany(
                        "UPDATE embedding_pending SET lease = 0 WHERE turn_id = ? AND lease = ?",
                        [(turn_id, stamp) for turn_id in vectors],
                    )
                    return
                added = []
                for turn_id, vec in vectors.items():
                    still = con.execute(
                        "DELETE FROM embedding_pending WHERE turn_id = ? AND lease = ?",
                        (turn_id, stamp),
                    ).rowcount
                    if not still:  # left memory (or re-queued and done) meanwhile
                        continue
                    arr = np.asarray(vec, dtype=np.float32)
                    norm = float(np.linalg.norm(arr)) or 1.0
                    con.execute("DELETE FROM embeddings WHERE turn_id = ?", (turn_id,))
                    con.execute(
                        "INSERT INTO embeddings(turn_id, model, vec) VALUES (?, ?, ?)",
                        (turn_id, model, (arr / norm).tobytes()),
                    )
                    added.append(arr / norm)
                if added:
                    _add_to_center(np, con, np.stack(added))
                con.execute(
                    "DELETE FROM embedding_log"
                    " WHERE seq < (SELECT max(seq) FROM embedding_log) - ?",
                    (LOG_KEEP,),
                )

        self.connections.writing(save)

    def release(self, stamp: float, turn_ids: list[int]) -> None:
        """Give back a leased batch that could not be embedded (the model failed)."""
        self.connections.writing(
            lambda con: con.executemany(
                "UPDATE embedding_pending SET lease = 0 WHERE turn_id = ? AND lease = ?",
                [(turn_id, stamp) for turn_id in turn_ids],
            )
        )

    def pending(self) -> int:
        """Turns waiting for a vector."""
        self.create()
        count: int = self.connections.reading(
            lambda con: con.execute("SELECT count(*) FROM embedding_pending").fetchone()[0]
        )
        return count
