"""Positive memory of the PostgreSQL backend: answered by the database itself.

By words
    ``turns.words`` is a generated ``tsvector`` of every rated or corrected
    turn (question weight A, best answer weight B; English stemming), under a
    partial GIN index. A query is its rarest words OR-ed (``'refund' |
    'polici'``; which: :mod:`.postgres_terms`), ranked by ``ts_rank_cd``
    among one owner's rows that pass ``min_score``
    (or have a correction), the session and the time filters, in one
    statement that also returns each hit's entry, so the retriever reads
    nothing more (:attr:`~.base.Hit.payload`). A query without words returns
    the owner's most recent remembered turns. Nothing is held by the
    process: a rating changed anywhere is in every process's next query, and
    :meth:`catch_up`, :meth:`on_change` and :meth:`reset` have nothing to do.

By meaning
    ``vectors`` holds one normalised float32 vector per remembered turn and
    model, made by an :class:`~.embedder.Embedder` thread in each process
    that uses embeddings: it leases turns from ``embed_queue`` (``FOR UPDATE
    SKIP LOCKED``: processes share the work, and a lease that ends with its
    process is taken again after :data:`LEASE` seconds), which a trigger
    fills when a turn enters memory or its text changes, and from which it
    drops a turn that leaves. Where the database has the ``vector`` extension
    (pgvector), vectors are also written to ``vectors.embedding``, a partial
    HNSW index per model (cosine) is built when the model's first vectors
    are stored, and the server ranks: one statement, filters applied while
    the index is scanned (``hnsw.iterative_scan``), hits with their entries.
    Without it (PostgreSQL's own packages) the server cannot rank vectors:
    each process proposes candidates from the vectors of the owners it
    searches (:mod:`.postgres_vectors`: a matrix, or for a large memory an
    approximate index built off the query path and snapshotted), and one
    statement checks and reads them: a vector removed meanwhile (its turn
    left memory, or the session was deleted) is dropped, and the filters
    apply there. One embedding model per process at a time; processes with
    different models on one namespace share one queue, so keep to one.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .base import Hit
from .embedder import Embedder
from .postgres_rows import dec_id, enc_id
from .postgres_schema import ensure_hnsw
from .postgres_terms import RECENT, Lexicon
from .postgres_vectors import HeldVectors
from .vector_queue import numpy_module

if TYPE_CHECKING:
    from .postgres import PostgresBackend

__all__ = ["LEASE", "PostgresMemory", "query_words"]

log = logging.getLogger("feedback_plugin")

LEASE = 300.0
"""Seconds a batch of turns stays leased to the embedder that took it."""

_WORD = re.compile(r"[^\W_]+")


def _hit(owner: str, session_id: str, qa_id: str, relevance: float, payload: str) -> Hit:
    """A hit from a row's stored ids, with its entry."""
    return Hit((dec_id(owner), str(dec_id(session_id))), str(dec_id(qa_id)), relevance, payload)


def vector_text(vector: Any) -> str:
    """A vector as pgvector's text input: ``[0.1,0.2]``."""
    return "[" + ",".join(map(repr, vector.tolist())) + "]"


def query_words(text: str, most: int = 64) -> list[str]:
    """The query's distinct words, lower case, the first ``most``.

    >>> query_words("Refund policy?! refund")
    ['refund', 'policy']
    """
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:most]


class PostgresMemory:
    """A :class:`~.base.MemorySearch` answered by the PostgreSQL server."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend
        self.s, self.t = backend.s, backend.t
        self._lock = threading.Lock()
        self._embedders: dict[str, Embedder] = {}
        place = f"{backend.conninfo}\x00{backend.schema}"
        self._vectors = HeldVectors(backend._run, f"{self.s}.vectors", backend.ns, place)
        self._lexicon = Lexicon(backend._run, backend.schema)

    # -- filters shared by both searches -------------------------------------------

    def _filters(
        self,
        user: str | None,
        min_score: int,
        session_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> tuple[str, dict[str, Any]]:
        """The conditions a remembered row ``t`` must meet, and their parameters."""
        sql = [
            "t.namespace = %(ns)s",
            "t.owner = %(o)s",
            "(t.score >= %(min)s OR t.corrected)",
            "(t.expires_at IS NULL OR t.expires_at > now())",
        ]
        params: dict[str, Any] = {"ns": self.backend.ns, "o": enc_id(user), "min": min_score}
        if session_id is not None:
            sql.append("t.session_id = %(sid)s")
            params["sid"] = enc_id(session_id)
        if since is not None:
            sql.append("(t.doc->>'time')::timestamptz >= %(since)s")
            params["since"] = since
        if until is not None:
            sql.append("(t.doc->>'time')::timestamptz <= %(until)s")
            params["until"] = until
        return " AND ".join(sql), params

    # -- by words --------------------------------------------------------------------

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
        """Best-first hits with their entries, in one statement (see the module docstring);
        ``metadata_filter`` is left to the caller."""
        where, params = self._filters(user, min_score, session_id, since, until)
        params["limit"] = limit
        words = query_words(query)
        if not words:
            sql = (
                "SELECT t.owner, t.session_id, t.qa_id, 0.0, coalesce(t.raw, t.doc::text)"
                f" FROM {self.t} t WHERE t.words IS NOT NULL AND {where}"
                " ORDER BY t.seq DESC LIMIT %(limit)s"
            )
        else:
            choice = self._lexicon.choose(words)
            if choice is None:
                return []  # stop words only: nothing to tell turns apart by
            params["q"], params["all"], recent = choice
            if recent:  # every word is common: rank the newest remembered turns only
                where += (
                    f" AND t.seq >= coalesce((SELECT r.seq FROM {self.t} r"
                    " WHERE r.namespace = %(ns)s AND r.owner = %(o)s AND r.words IS NOT NULL"
                    " ORDER BY r.seq DESC OFFSET %(recent)s LIMIT 1), 0)"
                )
                params["recent"] = RECENT
            # the entries of the top rows only, each read by its key in a subquery: a
            # join there made the planner probe the ends of the seq index, through
            # every dead row a mass delete left (3-9 ms of planning until vacuum)
            sql = (
                "SELECT top.owner, top.session_id, top.qa_id, top.r,"
                f" (SELECT coalesce(x.raw, x.doc::text) FROM {self.t} x WHERE x.seq = top.seq)"
                " FROM (SELECT t.seq, t.owner, t.session_id, t.qa_id,"
                " ts_rank_cd(t.words, %(all)s::tsquery) AS r"
                f" FROM {self.t} t WHERE t.words @@ %(q)s::tsquery AND {where}"
                " ORDER BY r DESC, t.seq DESC LIMIT %(limit)s) AS top"
                " ORDER BY top.r DESC, top.seq DESC"
            )
        return [
            _hit(o, s, q, float(r), payload)
            for o, s, q, r, payload in self.backend._run(sql, params, prepare=False)
        ]

    # -- nothing held, nothing to catch up ---------------------------------------------

    def catch_up(self) -> None:
        """The server is the memory: every committed change is already in it."""

    def on_change(self, key: tuple[str | None, str], qa_id: str) -> None:
        """Nothing is cached by words; a stale vector is dropped when a search meets it."""

    def on_delete_session(self, key: tuple[str | None, str]) -> None:
        """The rows went with the session (their vectors with them, by cascade)."""

    def reset(self) -> None:
        """Imports write rows whose generated columns and triggers index them already."""

    # -- by meaning ------------------------------------------------------------------

    def use_embeddings(self, model: str, embeddings: Any) -> None:
        """Start this process's embedder for ``model`` (stopping one of another model),
        after queueing every remembered turn of the namespace that has no vector of
        ``model`` yet."""
        with self._lock:
            embedder = self._embedders.get(model)
            if embedder is not None and embedder.alive():
                return
            for other in list(self._embedders):  # one model at a time: its batch finished
                self._embedders.pop(other).stop()
            self.queue_all(model)
            queue = _Queue(self)
            embedder = self._embedders[model] = Embedder(queue, model, embeddings)
            embedder.start()

    def queue_all(self, model: str) -> None:
        """Have every remembered turn of the namespace without a vector of ``model``
        queued, and the trigger queue the namespace's turns from now on."""
        self.backend._run(
            f"INSERT INTO {self.s}.meta VALUES ('embeddings:' || %(ns)s, %(m)s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            {"ns": self.backend.ns, "m": model},
        )
        self.backend._run(
            f"INSERT INTO {self.s}.embed_queue (turn_seq, namespace)"
            f" SELECT t.seq, t.namespace FROM {self.t} t"
            " WHERE t.namespace = %(ns)s AND t.words IS NOT NULL AND NOT EXISTS"
            f" (SELECT 1 FROM {self.s}.vectors v WHERE v.turn_seq = t.seq"
            " AND v.model = %(m)s) ON CONFLICT (turn_seq) DO NOTHING",
            {"ns": self.backend.ns, "m": model},
        )

    def wait_embedded(self, timeout: float) -> bool:
        with self._lock:
            embedders = list(self._embedders.values())
        if not embedders:
            return _Queue(self).pending() == 0
        return all(e.wait_idle(timeout) for e in embedders)

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
        """Nearest-first hits (relevance: cosine similarity) with their entries."""
        np = numpy_module()
        query = np.asarray(vector, dtype=np.float32)
        query = query / (float(np.linalg.norm(query)) or 1.0)
        where, params = self._filters(user, min_score, session_id, since, until)
        params["m"] = model
        if self.backend.server_vectors:
            return self._ranked_on_server(query, where, params, limit)
        owner = enc_id(user)
        count = max(limit * 2, 10)
        while True:
            candidates = self._vectors.nearest(np, owner, model, query, count)
            if not candidates:
                return []  # none, or a large memory's index still being built
            rows = self.backend._run(
                "SELECT c.seq, v.vec, t.owner, t.session_id, t.qa_id,"
                " coalesce(t.raw, t.doc::text)"
                " FROM unnest(%(c)s::bigint[]) WITH ORDINALITY AS c(seq, n)"
                f" LEFT JOIN {self.s}.vectors v ON v.turn_seq = c.seq AND v.model = %(m)s"
                f" LEFT JOIN {self.t} t ON t.seq = c.seq AND {where} ORDER BY c.n",
                {**params, "c": candidates},
                binary=True,
                prepare=False,
            )
            hits, gone = [], []
            for seq, vec, o, s, q, payload in rows:
                if vec is None:
                    gone.append(seq)
                elif payload is not None:
                    relevance = float(np.frombuffer(vec, dtype=np.float32) @ query)
                    hits.append(_hit(o, s, q, relevance, payload))
            if gone:
                self._vectors.forget(owner, model, gone)
            if len(hits) >= limit or len(candidates) < count:
                return hits[:limit]
            count *= 4

    def _ranked_on_server(
        self, query: Any, where: str, params: dict[str, Any], limit: int
    ) -> list[Hit]:
        """pgvector ranks: the model's HNSW index (an owner too small for it: the planner
        scans its rows exactly), filters applied as it scans; strict order outside."""
        dims = len(query)
        rows = self.backend._run(
            "SELECT o, s, q, 1 - d, payload FROM (SELECT t.owner AS o, t.session_id AS s,"
            f" t.qa_id AS q, v.embedding::vector({dims}) <=> %(qv)s::vector({dims}) AS d,"
            " coalesce(t.raw, t.doc::text) AS payload"
            f" FROM {self.s}.vectors v JOIN {self.t} t ON t.seq = v.turn_seq"
            " WHERE v.model = %(m)s AND v.namespace = %(ns)s AND v.owner = %(o)s"
            f" AND {where} ORDER BY d LIMIT %(limit)s) AS near ORDER BY d",
            {**params, "qv": vector_text(query), "limit": limit},
            prepare=False,
        )
        return [_hit(o, s, q, float(similarity), payload) for o, s, q, similarity, payload in rows]

    def close(self) -> None:
        with self._lock:
            embedders, self._embedders = list(self._embedders.values()), {}
        self._vectors.clear()
        for embedder in embedders:
            embedder.stop()


class _Queue:
    """``embed_queue`` as the :class:`~.embedder.Embedder` leases from it."""

    def __init__(self, memory: PostgresMemory) -> None:
        self.memory = memory
        self.backend = memory.backend
        self.s, self.t = memory.s, memory.t
        self._indexed: set[tuple[str, int]] = set()  # HNSW indexes known to exist

    def lease(self, limit: int) -> tuple[float, list[tuple[int, str]]]:
        rows = self.backend._run(
            f"WITH picked AS (SELECT turn_seq FROM {self.s}.embed_queue"
            " WHERE namespace = %(ns)s AND lease < extract(epoch FROM now())"
            " ORDER BY turn_seq LIMIT %(n)s FOR UPDATE SKIP LOCKED)"
            f" UPDATE {self.s}.embed_queue q SET lease = extract(epoch FROM now()) + %(lease)s"
            f" FROM picked JOIN {self.t} t ON t.seq = picked.turn_seq"
            " WHERE q.turn_seq = picked.turn_seq RETURNING q.turn_seq, q.lease,"
            " t.doc->>'question', coalesce(t.doc->>'correction', t.doc->>'answer')",
            {"ns": self.backend.ns, "n": limit, "lease": LEASE},
        )
        if not rows:
            return 0.0, []
        return float(rows[0][1]), [(seq, f"Question: {q}\nAnswer: {a}") for seq, _, q, a in rows]

    def store(self, model: str, stamp: float, vectors: dict[int, Any]) -> None:
        """Save the vectors of turns still leased with ``stamp`` (one whose text changed,
        or that left memory, meanwhile is skipped: its vector would be of another text)."""
        np = numpy_module()
        seqs, normed = list(vectors), []
        for vec in vectors.values():
            arr = np.asarray(vec, dtype=np.float32)
            normed.append(arr / (float(np.linalg.norm(arr)) or 1.0))
        blobs = [arr.tobytes() for arr in normed]
        with self.backend.pool.connection() as con, con.transaction():
            done = [
                row[0]
                for row in con.execute(
                    f"DELETE FROM {self.s}.embed_queue WHERE turn_seq = ANY(%(s)s)"
                    " AND lease = %(stamp)s RETURNING turn_seq",
                    {"s": seqs, "stamp": stamp},
                ).fetchall()
            ]
            con.execute(
                f"DELETE FROM {self.s}.vectors WHERE turn_seq = ANY(%(s)s) AND model = %(m)s",
                {"s": done, "m": model},
            )
            server = self.backend.server_vectors
            con.execute(
                f"INSERT INTO {self.s}.vectors (turn_seq, namespace, owner, model, vec"
                + (", embedding)" if server else ")")
                + " SELECT t.seq, t.namespace, t.owner, %(m)s, x.vec"
                + (", x.e::vector" if server else "")
                + " FROM unnest(%(s)s::bigint[], %(v)s::bytea[], %(e)s::text[]) AS x(seq, vec, e)"
                f" JOIN {self.t} t ON t.seq = x.seq WHERE x.seq = ANY(%(done)s)",
                {
                    "m": model,
                    "s": seqs,
                    "v": blobs,
                    "e": [vector_text(arr) for arr in normed] if server else [None] * len(seqs),
                    "done": done,
                },
            )
        if self.backend.server_vectors and blobs:
            dims = len(blobs[0]) // 4
            if (model, dims) not in self._indexed:
                with self.backend.pool.connection() as con:
                    ensure_hnsw(con, self.backend.schema, model, dims)
                self._indexed.add((model, dims))

    def release(self, stamp: float, turn_ids: list[int]) -> None:
        self.backend._run(
            f"UPDATE {self.s}.embed_queue SET lease = 0 WHERE turn_seq = ANY(%(s)s)"
            " AND lease = %(stamp)s RETURNING 1",
            {"s": turn_ids, "stamp": stamp},
        )

    def pending(self) -> int:
        rows = self.backend._run(
            f"SELECT count(*) FROM {self.s}.embed_queue WHERE namespace = %s", (self.backend.ns,)
        )
        return int(rows[0][0])

    def catch_up(self) -> None:
        """The queue is filled by a trigger: nothing to look for."""

    def maintain(self) -> None:
        """Build and save the approximate indexes of large memories (no pgvector)."""
        if not self.backend.server_vectors:
            self.memory._vectors.maintain()
