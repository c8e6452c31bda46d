"""Vectors of remembered turns: embedded once, in the background, searched by meaning.

Design
------
The vectors live in the memory index's own SQLite file (:mod:`.fts`), beside
the rows they embed, so every process sharing the file shares them:

* ``embeddings(turn_id, model, vec)``: one vector per remembered turn (its
  ``turns`` row id), float32, normalised; the model id it was made with.
* ``embedding_pending(turn_id, lease)``: turns still to embed. Triggers on
  ``turns`` queue a turn when it enters memory or its text changes, and drop
  its vector and queue entry when it leaves memory (a rating lowered or
  cleared, a session deleted): a vector never outlives its turn.
* ``embedding_log(seq, turn_id, added)``: every vector added or removed, in
  order (triggers on ``embeddings``), so a process keeps its in-memory search
  structure in step by reading what was logged since it last looked.

Embedding happens off the query path: :meth:`VectorStore.use` starts one
daemon thread per process and model (:class:`Embedder`) that leases a batch
of pending turns (a lease, not a delete: a process that dies mid-batch
leaves the turns to be leased again), embeds them, and stores the vectors
and clears their queue entries in one transaction. A query embeds only its
own text. A turn is searchable by meaning once its batch is stored
(milliseconds to a second after the rating, with a local model); by words at
once. When the model changes (another model id), every vector is dropped and
every turn queued again.

Search is per owner (one user of one store namespace), over that owner's
vectors only: an exact dot product (numpy) over a float32 matrix the process
keeps, loaded on the owner's first query and kept in step from the log.
Filters (minimum score, session, time) are applied to the rows of the
nearest vectors, widening the search until enough pass. Hits come back with
their cosine similarity as relevance.

Cost, measured on this project's 2-CPU machine: a query scans 1.5 KB per
vector of the owner (20,000 liked turns: about 10 ms). An approximate index
for owners with hundreds of thousands of liked turns must be built ahead
and shared: usearch's HNSW graph took 48 s to build 20,000 vectors here
(0.4 ms a search once built, 5 ms to open a saved one), far too slow to build
on a query. That graph, maintained by the embedder and saved beside the
index for every process to open, is the next step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from .base import Hit
from .embedder import Embedder, Embeds

if TYPE_CHECKING:
    import sqlite3

__all__ = ["VectorStore"]

log = logging.getLogger("feedback_plugin")

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
DELETE FROM meta WHERE key = 'embedding_model';
"""

VERSION = "1"
"""The layout above; a file with another drops its vectors and starts again."""


class Connections(Protocol):
    """How the vector store reaches the index file (the :class:`~.fts.MemoryIndex`)."""

    def catch_up(self) -> None: ...
    def reading(self, fn: Callable[[sqlite3.Connection], Any]) -> Any: ...
    def writing(self, fn: Callable[[sqlite3.Connection], Any]) -> Any: ...
    def owner_of(self, user: str | None) -> str: ...
    def hit(self, user: str | None, session_id: str, qa_id: str, relevance: float) -> Hit: ...


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        from ..errors import ConfigurationError

        raise ConfigurationError(
            "memory by meaning needs numpy: pip install 'feedback-plugin[semantic]'"
        ) from exc
    return numpy


class _Owner:
    """One owner's vectors in this process: a matrix, with the vectors added since the
    last search waiting aside."""

    def __init__(self, np: Any, dims: int) -> None:
        self.np = np
        self.dims = dims
        self.ids: dict[int, int] = {}  # turn id -> row in the matrix
        self.rows = np.zeros(0, dtype=np.int64)  # row -> turn id (-1: removed)
        self.matrix = np.zeros((0, dims), dtype=np.float32)
        self.pending: dict[int, Any] = {}

    def add(self, turn_id: int, vec: Any) -> None:
        if turn_id in self.ids:
            self.remove(turn_id)
        self.pending[turn_id] = vec

    def remove(self, turn_id: int) -> None:
        row = self.ids.pop(turn_id, None)
        if row is not None:
            self.rows[row] = -1
        self.pending.pop(turn_id, None)

    def _settle(self) -> None:
        np = self.np
        if len(self.rows) > 2 * len(self.ids) + 1000:  # mostly removed rows: compact
            live = self.rows >= 0
            self.matrix, self.rows = self.matrix[live], self.rows[live]
            self.ids = {int(t): i for i, t in enumerate(self.rows)}
        if self.pending:
            start = len(self.rows)
            vecs = np.stack(list(self.pending.values())).astype(np.float32)
            self.matrix = np.concatenate([self.matrix, vecs]) if len(self.matrix) else vecs
            self.rows = np.concatenate([self.rows, np.fromiter(self.pending, dtype=np.int64)])
            for i, turn_id in enumerate(self.pending):
                self.ids[turn_id] = start + i
            self.pending = {}

    def nearest(self, query: Any, count: int) -> list[tuple[int, float]]:
        """``count`` nearest ``(turn id, cosine similarity)``, best first."""
        self._settle()
        np = self.np
        if not self.ids:
            return []
        count = min(count, len(self.ids))
        scores = self.matrix @ query
        scores[self.rows < 0] = -np.inf
        if count < len(scores):
            top = np.argpartition(-scores, count - 1)[:count]
        else:
            top = np.arange(len(scores))
        top = top[np.argsort(-scores[top])]
        return [(int(self.rows[r]), float(scores[r])) for r in top if self.rows[r] >= 0]


class VectorStore:
    """The vectors of one memory index file (see the module docstring)."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self._lock = threading.RLock()
        self._ready = False
        self._model: str | None = None
        self._owners: dict[str, _Owner] = {}
        self._turn_owner: dict[int, str] = {}
        self._seq = 0
        self._embedders: dict[str, Embedder] = {}

    # -- the file ------------------------------------------------------------------

    def _create(self) -> None:
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

    def use(self, model: str, embeddings: Embeds) -> Embedder:
        """Keep every remembered turn embedded with ``model`` (a background thread in this
        process); on another model than the file's, drop the old vectors and queue all."""
        with self._lock:
            embedder = self._embedders.get(model)
            if embedder is not None and embedder.alive():
                return embedder
            self.select(model)
            for other in [m for m in self._embedders if m != model]:  # one model at a time
                self._embedders.pop(other).stop()
            embedder = self._embedders[model] = Embedder(self, model, embeddings)
            embedder.start()
            return embedder

    def select(self, model: str) -> None:
        """Make ``model`` the file's: if it was another, drop its vectors, queue every turn."""
        self._create()

        def switch(con: sqlite3.Connection) -> None:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT value FROM meta WHERE key='embedding_model'").fetchone()
                if row is None or row[0] != model:
                    con.execute("DELETE FROM embeddings")
                    con.execute("DELETE FROM embedding_pending")
                    con.execute("INSERT INTO embedding_pending(turn_id) SELECT id FROM turns")
                    con.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('embedding_model', ?)", (model,)
                    )
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

        with self._lock:
            self.connections.writing(switch)
            if self._model != model:
                self._model, self._owners, self._turn_owner = model, {}, {}

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
            con.execute("BEGIN IMMEDIATE")
            try:
                rows = con.execute(
                    "SELECT p.turn_id, t.question, t.answer FROM embedding_pending p"
                    " JOIN turns t ON t.id = p.turn_id WHERE p.lease < ? LIMIT ?",
                    (now, limit),
                ).fetchall()
                con.executemany(
                    "UPDATE embedding_pending SET lease = ? WHERE turn_id = ?",
                    [(stamp, r[0]) for r in rows],
                )
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            return [(r[0], f"Question: {r[1]}\nAnswer: {r[2]}") for r in rows]

        result: list[tuple[int, str]] = self.connections.writing(take)
        return stamp, result

    def store(self, model: str, stamp: float, vectors: dict[int, Any]) -> None:
        """Save the vectors of turns leased with ``stamp`` and clear their queue entries;
        a turn that left memory, or whose text changed (queued again) meanwhile, is
        skipped: its vector would be of another text."""
        np = _numpy()

        def save(con: sqlite3.Connection) -> None:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT value FROM meta WHERE key='embedding_model'").fetchone()
                if row is None or row[0] != model:  # another model took over: give them back
                    con.executemany(
                        "UPDATE embedding_pending SET lease = 0 WHERE turn_id = ? AND lease = ?",
                        [(turn_id, stamp) for turn_id in vectors],
                    )
                    con.execute("COMMIT")
                    return
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
                con.execute(
                    "DELETE FROM embedding_log"
                    " WHERE seq < (SELECT max(seq) FROM embedding_log) - ?",
                    (LOG_KEEP,),
                )
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

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
        self._create()
        count: int = self.connections.reading(
            lambda con: con.execute("SELECT count(*) FROM embedding_pending").fetchone()[0]
        )
        return count

    # -- search --------------------------------------------------------------------

    def _sync(self, np: Any) -> None:
        """Apply the vectors logged since this process last looked (under the lock)."""

        def changes(con: sqlite3.Connection) -> tuple[int | None, list[tuple[int, int, int]]]:
            first = con.execute("SELECT min(seq) FROM embedding_log").fetchone()[0]
            rows = con.execute(
                "SELECT seq, turn_id, added FROM embedding_log WHERE seq > ? ORDER BY seq",
                (self._seq,),
            ).fetchall()
            return first, rows

        first, rows = self.connections.reading(changes)
        if first is not None and self._seq and first > self._seq + 1:
            self._owners, self._turn_owner = {}, {}  # fell behind the kept log: reload
        if not rows:
            return
        self._seq = rows[-1][0]
        latest: dict[int, int] = {}
        for _, turn_id, added in rows:
            latest[turn_id] = added
        gone = [t for t, added in latest.items() if not added]
        for turn_id in gone:
            owner = self._turn_owner.pop(turn_id, None)
            if owner is not None and owner in self._owners:
                self._owners[owner].remove(turn_id)
        fresh = [t for t, added in latest.items() if added]
        if fresh and self._owners:
            for turn_id, owner, blob in self._vectors(fresh, None):
                held = self._owners.get(owner)
                if held is not None:
                    held.add(turn_id, np.frombuffer(blob, dtype=np.float32))
                    self._turn_owner[turn_id] = owner

    def _vectors(
        self, turn_ids: list[int] | None, owner: str | None
    ) -> list[tuple[int, str, bytes]]:
        model = self._model

        def fetch(con: sqlite3.Connection) -> list[tuple[int, str, bytes]]:
            if turn_ids is not None:
                out: list[tuple[int, str, bytes]] = []
                for i in range(0, len(turn_ids), 900):
                    part = turn_ids[i : i + 900]
                    out += con.execute(
                        "SELECT e.turn_id, t.owner, e.vec FROM embeddings e JOIN turns t"
                        f" ON t.id = e.turn_id WHERE e.model = ? AND e.turn_id IN"
                        f" ({','.join('?' * len(part))})",
                        (model, *part),
                    ).fetchall()
                return out
            rows: list[tuple[int, str, bytes]] = con.execute(
                "SELECT e.turn_id, t.owner, e.vec FROM turns t JOIN embeddings e"
                " ON e.turn_id = t.id WHERE t.owner = ? AND e.model = ?",
                (owner, model),
            ).fetchall()
            return rows

        result: list[tuple[int, str, bytes]] = self.connections.reading(fetch)
        return result

    def _owner(self, np: Any, owner: str, dims: int) -> _Owner:
        held = self._owners.get(owner)
        if held is None:
            held = self._owners[owner] = _Owner(np, dims)
            for turn_id, _, blob in self._vectors(None, owner):
                held.add(turn_id, np.frombuffer(blob, dtype=np.float32))
                self._turn_owner[turn_id] = owner
        return held

    def search(
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
        """The ``limit`` remembered turns of ``user`` nearest to ``vector`` (``model``'s)."""
        np = _numpy()
        self._create()
        query = np.asarray(vector, dtype=np.float32)
        query = query / (float(np.linalg.norm(query)) or 1.0)
        owner = self.connections.owner_of(user)
        with self._lock:
            if self._model != model:
                self._model, self._owners, self._turn_owner, self._seq = model, {}, {}, 0
            self._sync(np)
            held = self._owner(np, owner, len(query))
            count = limit * 4
            while True:
                near = held.nearest(query, count)
                hits = self._passing(near, user, min_score, session_id, since, until)
                if len(hits) >= limit or len(near) < count:
                    return hits[:limit]
                count *= 4

    def _passing(
        self,
        near: list[tuple[int, float]],
        user: str | None,
        min_score: int,
        session_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> list[Hit]:
        if not near:
            return []
        ids = [t for t, _ in near]

        def rows(con: sqlite3.Connection) -> dict[int, tuple[Any, ...]]:
            found: dict[int, tuple[Any, ...]] = {}
            for i in range(0, len(ids), 900):
                part = ids[i : i + 900]
                for row in con.execute(
                    "SELECT id, session_id, qa_id, score, corrected, time FROM turns"
                    f" WHERE id IN ({','.join('?' * len(part))})",
                    part,
                ):
                    found[row[0]] = row
            return found

        found = self.connections.reading(rows)
        out: list[Hit] = []
        for turn_id, similarity in near:
            row = found.get(turn_id)
            if row is None:
                continue
            _, sid, qa, score, corrected, when = row
            if not ((score is not None and score >= min_score) or corrected):
                continue  # ratings.is_remembered
            if since is not None and when < since.timestamp():
                continue
            if until is not None and when > until.timestamp():
                continue
            hit = self.connections.hit(user, sid, qa, similarity)
            if session_id is not None and hit.key[1] != session_id:
                continue
            out.append(hit)
        return out

    def wait(self, timeout: float) -> bool:
        """Block until every remembered turn has its vector; ``False`` on timeout (or when
        no embedder runs in this process and turns are pending)."""
        self.connections.catch_up()  # a rating just made, in any process, is in memory now
        with self._lock:
            running = [e for e in self._embedders.values() if e.alive()]
        if not running:
            return self.pending() == 0
        return all(e.wait_idle(timeout) for e in running)

    def wake(self) -> None:
        """A turn may have entered memory: embed it now."""
        for embedder in list(self._embedders.values()):
            embedder.wake()

    def close(self) -> None:
        with self._lock:
            for embedder in self._embedders.values():
                embedder.stop()
            self._embedders.clear()
            self._owners, self._turn_owner, self._seq, self._ready = {}, {}, 0, False
