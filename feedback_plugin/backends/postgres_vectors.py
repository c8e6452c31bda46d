"""PostgreSQL without pgvector: the vectors of searched owners, held by each process.

The server cannot rank vectors without the ``vector`` extension, so a
process proposes the candidates itself, from the owner's vectors in the
``vectors`` table (one per remembered turn and model; a vector's id only
grows, and a vector never changes: a new text is a new row):

* an owner with fewer than :data:`~.ann.APPROX_MIN` vectors is read whole
  (binary, about 80 ms per 30,000 vectors) into a float32 matrix
  (:class:`~.vector_owners.ExactOwner`) on its first search;
* a larger one (with faiss) is never read on the query path: the embedder
  thread (:meth:`HeldVectors.maintain`, when idle) reads it in batches,
  builds an approximate index (:class:`~.vector_owners.ApproxOwner`) and
  saves a snapshot in the cache directory (``$FEEDBACK_PLUGIN_CACHE_DIR``,
  else the user's cache directory), named by server, database, schema,
  namespace, owner and model, with the highest vector id it holds. A fresh
  process opens the snapshot and reads the vectors added since. Until an
  owner's index exists the search by meaning proposes nothing (logged) and
  the words half answers alone.

Before every search, the vectors added since the last look are read by id
(one indexed statement). A vector deleted since (its turn left memory or
its session went) stays until a search proposes it: the statement that
reads the hits finds it gone, and it is dropped here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from . import ann
from .redis_index import default_cache_dir
from .vector_owners import ApproxOwner, ExactOwner

__all__ = ["READ_BATCH", "HeldVectors"]

log = logging.getLogger("feedback_plugin")

READ_BATCH = 50_000
"""Vectors read per statement while an approximate index is built."""

Run = Callable[..., list[tuple[Any, ...]]]
Owner = ExactOwner | ApproxOwner


class _Held:
    """One owner's vectors of one model in this process."""

    __slots__ = ("count", "owner", "seen", "total")

    def __init__(self, owner: Owner, seen: int, dims: int, np: Any) -> None:
        self.owner = owner
        self.seen = seen  # the highest vector id applied
        self.total = np.zeros(dims, dtype=np.float64)  # running sum: an exact owner's centre
        self.count = 0


class HeldVectors:
    """The owners' vectors this process searched, kept in step with the table by id."""

    def __init__(self, run: Run, table: str, namespace: str, place: str) -> None:
        self._run = run
        self.table = table  # '"schema".vectors'
        self.namespace = namespace
        self.place = place  # server, database and schema: where snapshots are filed
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], _Held] = {}
        self._building: set[tuple[str, str]] = set()

    # -- reading the table ----------------------------------------------------------

    def _rows(self, owner: str, model: str, since: int, limit: int | None = None) -> list[Any]:
        return self._run(
            f"SELECT id, turn_seq, vec FROM {self.table} WHERE namespace = %(ns)s"
            " AND owner = %(o)s AND model = %(m)s AND id > %(since)s ORDER BY id"
            + (" LIMIT %(limit)s" if limit else ""),
            {"ns": self.namespace, "o": owner, "m": model, "since": since, "limit": limit},
            binary=True,
        )

    def _count(self, owner: str, model: str) -> int:
        rows = self._run(
            f"SELECT count(*) FROM {self.table} WHERE namespace = %(ns)s AND owner = %(o)s"
            " AND model = %(m)s",
            {"ns": self.namespace, "o": owner, "m": model},
        )
        return int(rows[0][0])

    # -- the query path -------------------------------------------------------------

    def nearest(self, np: Any, owner: str, model: str, query: Any, count: int) -> list[int] | None:
        """Up to ``count`` candidate turn seqs, best first; ``None`` while the owner's
        approximate index is being built (search by words meanwhile)."""
        key = (owner, model)
        with self._lock:
            if key in self._building:
                return None
            held = self._held.get(key) or self._first_look(np, key, len(query))
            if held is None:
                return None
            self._apply(np, held, self._rows(owner, model, held.seen))
            if held.owner.size == 0 or held.total.shape[0] != len(query):
                return []
            center = (held.total / max(held.count, 1)).astype(np.float32)
            return held.owner.nearest(query, count, center)

    def forget(self, owner: str, model: str, seqs: list[int]) -> None:
        """Drop vectors the table no longer has (found missing by a search)."""
        with self._lock:
            held = self._held.get((owner, model))
            if held is not None:
                for seq in seqs:
                    held.owner.remove(seq)

    def _first_look(self, np: Any, key: tuple[str, str], dims: int) -> _Held | None:
        """An owner not held yet: small ones read now, large ones from a snapshot or later."""
        owner, model = key
        if not ann.available() or self._count(owner, model) < ann.APPROX_MIN:
            held = self._held[key] = _Held(ExactOwner(np, dims), 0, dims, np)
            return held
        opened = ApproxOwner.open(np, self._snapshot(owner, model), model, owner)
        if opened is None:
            if key not in self._building:
                log.info(
                    "feedback_plugin: building the vector index of a large memory; "
                    "searched by words until it is ready"
                )
            self._building.add(key)
            return None
        approx, seen = opened
        held = self._held[key] = _Held(approx, seen, dims, np)
        return held

    def _apply(self, np: Any, held: _Held, rows: list[Any]) -> None:
        if not rows:
            return
        owner = held.owner
        vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32)
        if len(vectors) != len(rows) * held.total.shape[0]:
            return  # another build of the model wrote these: skipped
        vectors = vectors.reshape(len(rows), held.total.shape[0])
        seqs = [int(r[1]) for r in rows]
        if isinstance(owner, ApproxOwner):
            owner.add_many(seqs, vectors)
        else:
            for seq, vec in zip(seqs, vectors, strict=True):
                owner.add(seq, vec)
        held.total += vectors.sum(axis=0)
        held.count += len(rows)
        held.seen = int(rows[-1][0])

    # -- off the query path -----------------------------------------------------------

    def maintain(self) -> None:
        """Build the approximate index of every large owner waiting for one, and save
        snapshots that are behind (the embedder thread, when idle)."""
        np = _numpy()
        with self._lock:
            waiting = list(self._building)
            if ann.available():  # grown past the exact size, or past what it was trained on
                waiting += [
                    key
                    for key, held in self._held.items()
                    if (isinstance(held.owner, ExactOwner) and held.owner.size >= ann.APPROX_MIN)
                    or (isinstance(held.owner, ApproxOwner) and held.owner.outgrown())
                ]
        for owner, model in waiting:
            self._build(np, owner, model)
        with self._lock:
            due = [
                (key, held)
                for key, held in self._held.items()
                if isinstance(held.owner, ApproxOwner) and held.owner.due()
            ]
            saves = [(key, held.seen, _serialize(held.owner)) for key, held in due]
        for (owner, model), seen, data in saves:
            held = self._held.get((owner, model))
            if held is not None and isinstance(held.owner, ApproxOwner):
                held.owner.save(self._snapshot(owner, model), model, owner, seen, data)

    def _build(self, np: Any, owner: str, model: str) -> None:
        seqs: list[int] = []
        parts: list[Any] = []
        seen = 0
        while True:  # outside the lock: searches go on (by words for this owner)
            rows = self._rows(owner, model, seen, READ_BATCH)
            if not rows:
                break
            seqs.extend(int(r[1]) for r in rows)
            parts.append(np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32))
            seen = int(rows[-1][0])
        if not seqs:
            with self._lock:
                self._building.discard((owner, model))
            return
        vectors = np.concatenate(parts).reshape(len(seqs), -1)
        center = vectors.mean(axis=0).astype(np.float32)
        approx = ApproxOwner(ann.ApproximateIndex.build(seqs, vectors, center), saved=False)
        with self._lock:
            held = self._held[(owner, model)] = _Held(approx, seen, vectors.shape[1], np)
            held.total, held.count = vectors.sum(axis=0).astype(np.float64), len(seqs)
            self._building.discard((owner, model))
            data = approx.index.serialize()
        approx.save(self._snapshot(owner, model), model, owner, seen, data)

    def _snapshot(self, owner: str, model: str) -> str:
        name = hashlib.sha256(f"{self.place}\x00{self.namespace}\x00{owner}\x00{model}".encode())
        return os.path.join(default_cache_dir(), "postgres-vectors", name.hexdigest()[:32])

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._building.clear()


def _serialize(owner: Owner) -> Any:
    assert isinstance(owner, ApproxOwner)
    return owner.index.serialize()


def _numpy() -> Any:
    from .vector_queue import numpy_module

    return numpy_module()
