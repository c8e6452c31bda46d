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
vectors only, kept by the process and in step with the log
(:mod:`.vector_owners`): an owner with fewer than
:data:`~.ann.APPROX_MIN` vectors is a float32 matrix scored exactly (1.5 KB
read per vector: 20,000 liked turns, about 10 ms); a larger one gets an
approximate index (:mod:`.ann`, faiss IVF-SQ8), built off the query path by
:meth:`VectorStore.maintain` (the embedder calls it when idle) and saved
beside the file (``<file>.ann/``), so another process opens it in
milliseconds and replays the log since. Either proposes candidates; the
store reads their rows and vectors and scores them exactly. Filters
(minimum score, session, time) are applied to those rows, widening the
search until enough pass.

Scores are centred cosines (the memory's mean vector taken off, see
:mod:`.vector_owners`): the order. A hit's relevance is its plain cosine
similarity, which the retriever's ``min_similarity`` floor reads.

The layout, the queue of turns to embed and the running mean live in
:mod:`.vector_queue`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from . import ann
from .base import Hit
from .embedder import Embedder, Embeds
from .vector_owners import ApproxOwner, ExactOwner, centred_scores, snapshot_path
from .vector_queue import EmbeddingQueue, numpy_module, read_center

if TYPE_CHECKING:
    import sqlite3

__all__ = ["HELD_MAX", "VectorStore"]

log = logging.getLogger("feedback_plugin")


HELD_MAX = 500_000
"""Vectors of exactly searched owners a process keeps at most (about 750 MB of 384-d)."""


class Connections(Protocol):
    """How the vector store reaches the index file (the :class:`~.fts.MemoryIndex`)."""

    path: str  # the file (":memory:" for none): approximate-index snapshots sit beside it

    def catch_up(self) -> None: ...
    def reading(self, fn: Callable[[sqlite3.Connection], Any]) -> Any: ...
    def writing(self, fn: Callable[[sqlite3.Connection], Any]) -> Any: ...
    def owner_of(self, user: str | None) -> str: ...
    def hit(self, user: str | None, session_id: str, qa_id: str, relevance: float) -> Hit: ...


class VectorStore:
    """The vectors of one memory index file (see the module docstring)."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self._lock = threading.RLock()
        self._model: str | None = None
        self._owners: dict[str, ExactOwner | ApproxOwner] = {}
        self._center: Any = None  # the memory's mean vector (see vector_owners)
        self._maintaining = threading.Lock()
        self._turn_owner: dict[int, str] = {}
        self._seq = 0
        self._embedders: dict[str, Embedder] = {}
        self.queue = EmbeddingQueue(connections)
        self._building: set[str] = set()  # large owners waiting for an approximate index

    # -- the file ------------------------------------------------------------------

    def use(self, model: str, embeddings: Embeds) -> Embedder:
        """Keep every remembered turn embedded with ``model`` (a background thread in this
        process); on another model than the file's, drop the old vectors and queue all."""
        with self._lock:
            embedder = self._embedders.get(model)
            if embedder is not None and embedder.alive():
                return embedder
            self.select(model)
            for other in [m for m in self._embedders if m != model]:  # one model at a time
                self._embedders.pop(other).stop(wait=0)  # the file stays open
            embedder = self._embedders[model] = Embedder(self, model, embeddings)
            embedder.start()
            return embedder

    def select(self, model: str) -> None:
        """Make ``model`` the file's: if it was another, drop its vectors, queue every turn."""
        with self._lock:
            self.queue.select(model)
            if self._model != model:
                self._forget(model)

    def _create(self) -> None:
        self.queue.create()

    def _forget(self, model: str) -> None:
        """Another model: nothing held of the last one is of use (under the lock)."""
        self._model, self._owners, self._turn_owner, self._seq = model, {}, {}, 0
        self._center, self._building = None, set()

    # the queue's side, for the embedder (and tests)
    def lease(self, limit: int) -> tuple[float, list[tuple[int, str]]]:
        return self.queue.lease(limit)

    def store(self, model: str, stamp: float, vectors: dict[int, Any]) -> None:
        self.queue.store(model, stamp, vectors)

    def release(self, stamp: float, turn_ids: list[int]) -> None:
        self.queue.release(stamp, turn_ids)

    def pending(self) -> int:
        return self.queue.pending()

    def catch_up(self) -> None:
        """Have the index file see every change of the store (turns to embed)."""
        self.connections.catch_up()

    # -- search --------------------------------------------------------------------

    def _sync(self, np: Any) -> None:
        """Apply the vectors logged since this process last looked (under the lock). Holding
        no owner (a fresh process), only the log's position is read: an owner read later
        is read as it is then."""
        held = bool(self._owners)

        def changes(
            con: sqlite3.Connection,
        ) -> tuple[int | None, int | None, list[tuple[int, int, int]], Any]:
            first, last = con.execute(  # two subqueries: min() and max() each by the key
                "SELECT (SELECT min(seq) FROM embedding_log), (SELECT max(seq) FROM embedding_log)"
            ).fetchone()
            rows = (
                con.execute(
                    "SELECT seq, turn_id, added FROM embedding_log WHERE seq > ? ORDER BY seq",
                    (self._seq,),
                ).fetchall()
                if held and last is not None and last > self._seq
                else []
            )
            moved = last is not None and last != self._seq
            center = read_center(np, con) if moved or self._center is None else None
            return first, last, rows, center

        first, last, rows, center = self.connections.reading(changes)
        if center is not None:
            self._center = center
        if first is not None and self._seq and first > self._seq + 1:
            # fell behind the kept log: every owner is read again (large ones rebuilt)
            self._building |= {o for o, h in self._owners.items() if h.approximate}
            self._owners, self._turn_owner = {}, {}
            rows = []
        if last is None or last == self._seq:
            return
        self._seq = last
        if rows:
            self._apply(np, rows, list(self._owners))

    def _apply(self, np: Any, rows: list[tuple[int, int, int]], owners: list[str]) -> None:
        """Apply logged ``(seq, turn id, added)`` rows to the held ``owners``."""
        latest: dict[int, int] = {}
        for _, turn_id, added in rows:
            latest[turn_id] = added
        unplaced: list[int] = []  # removed turns of no exact owner: maybe an approximate one's
        for turn_id in [t for t, added in latest.items() if not added]:
            owner = self._turn_owner.pop(turn_id, None)
            if owner is None:
                unplaced.append(turn_id)
            elif owner in self._owners and owner in owners:
                self._owners[owner].remove(turn_id)
        fresh = [t for t, added in latest.items() if added]
        for owner in owners:
            held = self._owners.get(owner)
            if isinstance(held, ApproxOwner):
                held.remove_many(unplaced + fresh)  # fresh ones come back below, re-read
        if fresh and owners:
            arrived: dict[str, list[tuple[int, Any]]] = {}
            for turn_id, owner, blob in self._vectors(fresh, None):
                if owner in owners and owner in self._owners:
                    arrived.setdefault(owner, []).append(
                        (turn_id, np.frombuffer(blob, dtype=np.float32))
                    )
            for owner, pairs in arrived.items():
                held = self._owners[owner]
                if isinstance(held, ApproxOwner):
                    held.add_many([t for t, _ in pairs], np.stack([v for _, v in pairs]))
                    continue
                for turn_id, vec in pairs:
                    held.add(turn_id, vec)
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

    def _owner(self, np: Any, owner: str, dims: int) -> ExactOwner | ApproxOwner | None:
        """The owner's vectors, read if not held. ``None`` for a large owner (at least
        :data:`~.ann.APPROX_MIN` vectors) without a usable snapshot: reading its vectors
        would take seconds, so its approximate index is built in the background
        (:meth:`maintain`) and the query goes on by words meanwhile."""
        held = self._owners.pop(owner, None)
        if held is not None:
            self._owners[owner] = held  # the most recently used last
            return held
        if owner in self._building:
            return None
        opened = self._open_snapshot(np, owner)
        if opened is not None:
            self._owners[owner] = opened
            return opened
        if ann.available() and self._count(owner) >= ann.APPROX_MIN:
            self._building.add(owner)
            log.info(
                "feedback_plugin: memory %s by meaning is being indexed; by words until then", owner
            )
            self.wake()
            return None
        exact = ExactOwner(np, dims)
        for turn_id, _, blob in self._vectors(None, owner):
            exact.add(turn_id, np.frombuffer(blob, dtype=np.float32))
            self._turn_owner[turn_id] = owner
        self._evict(exact.size)
        self._owners[owner] = exact
        return exact

    def _count(self, owner: str) -> int:
        """The owner's vectors in the file."""
        count: int = self.connections.reading(
            lambda con: con.execute(
                "SELECT count(*) FROM turns t JOIN embeddings e ON e.turn_id = t.id"
                " WHERE t.owner = ? AND e.model = ?",
                (owner, self._model),
            ).fetchone()[0]
        )
        return count

    def _evict(self, room: int) -> None:
        """Forget the least recently searched owners' matrices until ``room`` more vectors
        fit in :data:`HELD_MAX` (an app with many users keeps only the active ones; an
        owner forgotten is read again on its next query)."""
        held = sum(h.size for h in self._owners.values() if isinstance(h, ExactOwner))
        for owner in list(self._owners):
            if held + room <= HELD_MAX:
                return
            gone = self._owners[owner]
            if isinstance(gone, ExactOwner):
                del self._owners[owner]
                held -= gone.size
                for turn_id in [*gone.ids, *gone.pending]:
                    self._turn_owner.pop(turn_id, None)

    def _snapshot(self, owner: str) -> str | None:
        if self._model is None or not ann.available():
            return None
        return snapshot_path(self.connections.path, self._model, owner)

    def _open_snapshot(self, np: Any, owner: str) -> ApproxOwner | None:
        """The owner's saved approximate index brought up to this process's log position,
        or ``None`` (none saved, or older than the kept log)."""
        path = self._snapshot(owner)
        opened = (
            None
            if path is None or self._model is None
            else (ApproxOwner.open(np, path, self._model, owner))
        )
        if opened is None:
            return None
        held, seq = opened

        first, rows = self._logged(seq)
        if first is not None and first > seq + 1:
            return None  # the log since the snapshot was trimmed: it cannot catch up
        self._owners[owner] = held
        try:
            self._apply(np, rows, [owner])
        finally:
            del self._owners[owner]
        return held

    def _logged(self, since: int) -> tuple[int | None, list[tuple[int, int, int]]]:
        """The log's first position, and its rows after ``since`` up to this process's."""

        def read(con: sqlite3.Connection) -> tuple[int | None, list[tuple[int, int, int]]]:
            first = con.execute("SELECT min(seq) FROM embedding_log").fetchone()[0]
            rows = con.execute(
                "SELECT seq, turn_id, added FROM embedding_log WHERE seq > ? AND seq <= ?"
                " ORDER BY seq",
                (since, self._seq),
            ).fetchall()
            return first, rows

        result: tuple[int | None, list[tuple[int, int, int]]] = self.connections.reading(read)
        return result

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
        """The ``limit`` remembered turns of ``user`` nearest to ``vector`` (``model``'s),
        by centred cosine (see :mod:`.vector_owners`); each hit's relevance is its plain
        cosine similarity."""
        np = numpy_module()
        self._create()
        query = np.asarray(vector, dtype=np.float32)
        query = query / (float(np.linalg.norm(query)) or 1.0)
        owner = self.connections.owner_of(user)
        with self._lock:
            if self._model != model:
                self._forget(model)
            self._sync(np)
            held = self._owner(np, owner, len(query))
            if held is None:
                return []  # being indexed: found by words meanwhile
            center = self._center_for(np, len(query))
            count = limit * 4
            while True:
                near = held.nearest(query, count, center)
                hits = self._passing(
                    np, near, query, center, user, min_score, session_id, since, until
                )
                if len(hits) >= limit or len(near) < count:
                    return hits[:limit]
                count *= 4

    def _center_for(self, np: Any, dims: int) -> Any:
        center = self._center
        if center is None or len(center) != dims:
            return np.zeros(dims, dtype=np.float32)
        return center

    def _passing(
        self,
        np: Any,
        near: list[int],
        query: Any,
        center: Any,
        user: str | None,
        min_score: int,
        session_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> list[Hit]:
        """The candidates still remembered and passing the filters, scored exactly: best
        first by centred cosine, with their plain cosine as relevance."""
        if not near:
            return []
        model = self._model

        def rows(con: sqlite3.Connection) -> list[tuple[Any, ...]]:
            found: list[tuple[Any, ...]] = []
            for i in range(0, len(near), 900):
                part = near[i : i + 900]
                found += con.execute(
                    "SELECT t.id, t.session_id, t.qa_id, t.score, t.corrected, t.time, e.vec"
                    " FROM turns t JOIN embeddings e ON e.turn_id = t.id"
                    f" WHERE e.model = ? AND t.id IN ({','.join('?' * len(part))})",
                    (model, *part),
                ).fetchall()
            return found

        kept = []
        for row in self.connections.reading(rows):
            _, _, _, score, corrected, when, _ = row
            if not ((score is not None and score >= min_score) or corrected):
                continue  # ratings.is_remembered
            if since is not None and when < since.timestamp():
                continue
            if until is not None and when > until.timestamp():
                continue
            kept.append(row)
        if not kept:
            return []
        matrix = np.stack([np.frombuffer(r[6], dtype=np.float32) for r in kept])
        plain = matrix @ query
        order = np.argsort(-centred_scores(np, matrix, query, center), kind="stable")
        out: list[Hit] = []
        for i in order:
            _, sid, qa, *_ = kept[i]
            hit = self.connections.hit(user, sid, qa, float(plain[i]))
            if session_id is not None and hit.key[1] != session_id:
                continue
            out.append(hit)
        return out

    # -- the approximate indexes ---------------------------------------------------

    def maintain(self) -> None:
        """Give owners grown past :data:`~.ann.APPROX_MIN` vectors an approximate index
        (built outside the lock, from a copy), and write snapshots that fell behind. The
        embedder calls it when idle; :meth:`wait` once everything is embedded."""
        if not ann.available():
            return
        with self._maintaining:  # one build at a time (the embedder and wait())
            self._maintain(numpy_module())

    def _maintain(self, np: Any) -> None:
        with self._lock:
            if self._model is None:
                return
            self._sync(np)  # every vector logged so far counted
            grown = {
                owner
                for owner, held in self._owners.items()
                if (isinstance(held, ExactOwner) and held.size >= ann.APPROX_MIN)
                or (isinstance(held, ApproxOwner) and held.outgrown())
            }
            todo, seq, model = sorted(grown | self._building), self._seq, self._model
        for owner in todo:
            # Read outside the lock (queries go on); what changes meanwhile is in the
            # log after ``seq`` and replayed below (adding or removing twice is harmless).
            rows = self._vectors(None, owner)
            if len(rows) < ann.APPROX_MIN // 2:  # shrank meanwhile: searched exactly
                with self._lock:
                    self._building.discard(owner)
                continue
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32)
            matrix = matrix.reshape(len(rows), -1)
            del rows
            built = ann.ApproximateIndex.build(ids, matrix, self._center_for(np, matrix.shape[1]))
            with self._lock:
                if self._model != model:
                    return
                self._sync(np)
                _, logged = self._logged(seq)
                self._owners.pop(owner, None)
                fresh = ApproxOwner(built, saved=False)
                self._owners[owner] = fresh
                self._apply(np, logged, [owner])
                self._building.discard(owner)
        self._save_snapshots(model)

    def _save_snapshots(self, model: str) -> None:
        """Write the snapshots that fell behind: serialised under the lock (the index must
        not change meanwhile), written outside it."""
        due = []
        with self._lock:
            for owner, held in self._owners.items():
                path = self._snapshot(owner)
                if isinstance(held, ApproxOwner) and path and held.due():
                    due.append((held, path, owner, self._seq, held.index.serialize()))
        for held, path, owner, seq, data in due:
            try:
                held.save(path, model, owner, seq, data)
            except OSError as exc:
                log.warning("feedback_plugin: vector snapshot not saved: %s", exc)

    def wait(self, timeout: float) -> bool:
        """Block until every remembered turn has its vector; ``False`` on timeout (or when
        no embedder runs in this process and turns are pending)."""
        self.connections.catch_up()  # a rating just made, in any process, is in memory now
        with self._lock:
            running = [e for e in self._embedders.values() if e.alive()]
        done = self.pending() == 0 if not running else all(e.wait_idle(timeout) for e in running)
        if done:
            self.maintain()
        return done

    def wake(self) -> None:
        """A turn may have entered memory: embed it now."""
        for embedder in list(self._embedders.values()):
            embedder.wake()

    def close(self) -> None:
        with self._lock:
            embedders = list(self._embedders.values())
            self._embedders.clear()
        for embedder in embedders:  # joined outside the lock: it may be waiting for it
            embedder.stop()
        with self._lock:
            self._owners, self._turn_owner, self._seq = {}, {}, 0
            self.queue = EmbeddingQueue(self.connections)
