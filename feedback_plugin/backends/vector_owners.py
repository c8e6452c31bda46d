"""One owner's vectors in a process: searched exactly, or through an approximate index.

:class:`ExactOwner` keeps the owner's normalised vectors in a float32 matrix
and scores every one; :class:`ApproxOwner` keeps an
:class:`~.ann.ApproximateIndex` (owners of :data:`~.ann.APPROX_MIN` vectors
and more). Both propose candidate turn ids, best first, for a query; the
vector store scores the candidates exactly. Both take additions and removals
by turn id (from the embeddings log) and are called under the vector store's
lock.

Scores are *centred* cosines: the memory's mean vector (the direction every
help-centre turn shares) is taken off the query and the vectors before the
cosine, so what tells turns apart weighs more. On the project's paraphrase
set (76 paraphrases, 1,000 liked distractors, all-MiniLM-L6-v2), recall@5
went from 0.724 to 0.816.

Snapshots: an approximate index is saved beside the memory index file
(``<file>.ann/<hash>.faiss`` and a ``.json`` of the log position it holds
and its centre), so another process opens it in milliseconds and applies the
log since, instead of reading every vector and training again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

from .ann import ApproximateIndex

__all__ = ["ApproxOwner", "ExactOwner", "centred_scores", "snapshot_path"]

log = logging.getLogger("feedback_plugin")

SNAPSHOT_EVERY = 1_000
"""Changes applied to an approximate index before its snapshot is written again."""

SNAPSHOT_AFTER = 30.0
"""...and seconds since the last one."""


def centred_scores(np: Any, matrix: Any, query: Any, center: Any) -> Any:
    """Centred cosine of each normalised row of ``matrix`` with the normalised ``query``:
    the cosine of ``row - center`` and ``query - center``."""
    q = query - center
    qn = float(np.linalg.norm(q)) or 1.0
    both = matrix @ np.stack([q, center], axis=1)
    norms = np.sqrt(np.maximum(1.0 - 2.0 * both[:, 1] + float(center @ center), 1e-12))
    return (both[:, 0] - float(center @ q)) / (norms * qn)


class ExactOwner:
    """An owner's vectors as a matrix, with the vectors added since the last search
    waiting aside."""

    approximate = False

    def __init__(self, np: Any, dims: int) -> None:
        self.np = np
        self.dims = dims
        self.ids: dict[int, int] = {}  # turn id -> row in the matrix
        self.rows = np.zeros(0, dtype=np.int64)  # row -> turn id (-1: removed)
        self.matrix = np.zeros((0, dims), dtype=np.float32)
        self.pending: dict[int, Any] = {}

    @property
    def size(self) -> int:
        return len(self.ids) + len(self.pending)

    def add(self, turn_id: int, vec: Any) -> None:
        if turn_id in self.ids:
            self.remove(turn_id)
        self.pending[turn_id] = vec

    def remove(self, turn_id: int) -> None:
        row = self.ids.pop(turn_id, None)
        if row is not None:
            self.rows[row] = -1
        self.pending.pop(turn_id, None)

    def settle(self) -> None:
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

    def nearest(self, query: Any, count: int, center: Any) -> list[int]:
        """Up to ``count`` turn ids, best first by centred cosine."""
        self.settle()
        np = self.np
        if not self.ids:
            return []
        count = min(count, len(self.ids))
        scores = centred_scores(np, self.matrix, query, center)
        scores[self.rows < 0] = -np.inf
        if count < len(scores):
            top = np.argpartition(-scores, count - 1)[:count]
        else:
            top = np.arange(len(scores))
        top = top[np.argsort(-scores[top])]
        return [int(self.rows[r]) for r in top if self.rows[r] >= 0]


class ApproxOwner:
    """An owner's vectors in an approximate index (see :mod:`.ann`)."""

    approximate = True

    def __init__(self, index: ApproximateIndex, *, saved: bool = True) -> None:
        self.index = index
        self.saved = saved  # False: built here, never written
        self.saved_at = time.monotonic()
        self.changes = 0  # changes applied since

    @property
    def size(self) -> int:
        return self.index.size

    def add_many(self, ids: list[int], vecs: Any) -> None:
        self.index.add(ids, vecs)
        self.changes += len(ids)

    def remove(self, turn_id: int) -> None:
        self.remove_many([turn_id])

    def remove_many(self, ids: list[int]) -> None:
        self.index.remove(ids)
        self.changes += len(ids)

    def nearest(self, query: Any, count: int, center: Any) -> list[int]:
        return self.index.nearest(query, count)

    def outgrown(self) -> bool:
        """Whether it holds four times the vectors it was trained on: its lists grew
        four times as long, and it is built again (trained on what it holds now)."""
        return self.size >= 4 * self.index.trained_on

    def due(self) -> bool:
        """Whether its snapshot is behind enough to write again."""
        return not self.saved or (
            self.changes >= SNAPSHOT_EVERY and (time.monotonic() - self.saved_at >= SNAPSHOT_AFTER)
        )

    def save(self, path: str, model: str, owner: str, seq: int, data: Any) -> None:
        """Write the snapshot ``data`` (:meth:`.ApproximateIndex.serialize`, taken at log
        position ``seq``): the index, then the sidecar naming its position."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        ApproximateIndex.write(data, path + ".faiss")
        meta = {
            "model": model,
            "owner": owner,
            "seq": seq,
            "trained_on": self.index.trained_on,
            "center": [float(x) for x in self.index.center],
        }
        tmp = f"{path}.{os.getpid()}.json.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(meta, fh)
        os.replace(tmp, path + ".json")
        self.saved, self.saved_at, self.changes = True, time.monotonic(), 0

    @classmethod
    def open(cls, np: Any, path: str, model: str, owner: str) -> tuple[ApproxOwner, int] | None:
        """The snapshot at ``path`` and the log position it holds, or ``None`` (missing,
        unreadable or of another model or owner)."""
        try:
            with open(path + ".json", encoding="utf-8") as fh:
                meta = json.load(fh)
            if meta.get("model") != model or meta.get("owner") != owner:
                return None
            seq = int(meta["seq"])
            center = np.asarray(meta["center"], dtype=np.float32)
            index = ApproximateIndex.load(path + ".faiss", center, int(meta["trained_on"]))
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn or foreign file: rebuilt, logged
            log.warning("feedback_plugin: vector snapshot %s unreadable (%s)", path, exc)
            return None
        return cls(index), seq


def snapshot_path(index_path: str, model: str, owner: str) -> str | None:
    """Where the snapshot of ``owner``'s vectors (``model``'s) lives, without suffix;
    ``None`` for an index in memory."""
    if index_path == ":memory:":
        return None
    name = hashlib.sha256(f"{model}\x00{owner}".encode()).hexdigest()[:24]
    return os.path.join(f"{index_path}.ann", name)
