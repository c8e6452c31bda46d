"""ApproximateIndex: nearest vectors of a large memory without reading them all.

An owner's vectors are searched exactly (:class:`~.vectors.VectorStore`) until
they number :data:`APPROX_MIN`; past that, an exact query reads 1.5 KB per
vector (400,000 liked turns: 600 MB, 40 ms and more a query on 2 CPUs), so
the owner gets an approximate index: faiss's inverted file with 8-bit scalar
quantisation (``IVF{n},SQ8``, inner product over normalised vectors).

Why faiss IVF-SQ8 (measured here on 50,000 clustered 384-d vectors, 2 CPUs,
against usearch's HNSW): it trains and fills in 3 s (usearch: 6.5 s in int8,
10 s in f16), answers in 0.12-0.17 ms at recall@10 0.98 (usearch int8:
0.17 ms at 0.92), keeps 420 bytes a vector on disk (usearch: 533) and opens a
saved index in 11 ms. It takes additions and removals by id after training,
which keeps it in step with the embeddings log; faiss is Meta's, maintained,
with wheels for every platform the project supports (``faiss-cpu``, in the
``semantic`` extra). Without it, every owner is searched exactly.

The index holds *centred* vectors (the memory's mean direction removed, see
:mod:`.vectors`), with the centre it was built with; it only proposes
candidates, which the vector store scores exactly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["APPROX_MIN", "ApproximateIndex", "available"]

log = logging.getLogger("feedback_plugin")

APPROX_MIN = 20_000
"""Vectors an owner has before it is searched approximately (exact: about 10 ms here)."""

PROBE_SHARE = 24
"""Lists probed per query: one in this many (at least 16)."""


def _faiss() -> Any:
    # faiss's loader logs at INFO each build it tries (an AVX2 one missing is normal):
    # noise in an app that logs INFO, so it says only what goes wrong.
    loader = logging.getLogger("faiss.loader")
    if loader.level == logging.NOTSET:
        loader.setLevel(logging.WARNING)
    import faiss  # the semantic extra

    return faiss


def available() -> bool:
    """Whether faiss imports (the ``semantic`` extra)."""
    try:
        _faiss()
    except ImportError:
        return False
    return True


class ApproximateIndex:
    """One owner's centred vectors in a faiss IVF-SQ8 index, by turn id.

    Not thread-safe: the vector store calls it under its lock.
    """

    def __init__(self, index: Any, center: Any, trained_on: int) -> None:
        self.index = index
        self.center = center  # float32 (dims,): the mean removed before indexing
        self.trained_on = trained_on  # vectors it was trained with (see ApproxOwner.outgrown)
        self._ivf = _faiss().extract_index_ivf(index)
        self._ivf.nprobe = max(16, self._ivf.nlist // PROBE_SHARE)

    @classmethod
    def build(cls, ids: Any, vectors: Any, center: Any) -> ApproximateIndex:
        """Train on (a sample of) ``vectors`` (normalised float32 rows) and add them all."""
        faiss = _faiss()
        import numpy as np

        count, dims = vectors.shape
        nlist = max(64, min(4096, int(4 * count**0.5)))
        centred = _centred(np, vectors, center)
        index = faiss.index_factory(dims, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        sample = min(count, nlist * 40)
        rows = np.random.default_rng(count).choice(count, sample, replace=False)
        index.train(centred[np.sort(rows)])
        index.add_with_ids(centred, np.asarray(ids, dtype=np.int64))
        return cls(index, center, count)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: Sequence[int], vectors: Any) -> None:
        """Add (or replace) the vectors of ``ids``."""
        import numpy as np

        if not len(ids):
            return
        self.remove(ids)
        centred = _centred(np, np.asarray(vectors, dtype=np.float32), self.center)
        self.index.add_with_ids(centred, np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Sequence[int]) -> None:
        import numpy as np

        if len(ids):
            self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def nearest(self, query: Any, count: int) -> list[int]:
        """Up to ``count`` candidate turn ids for the normalised ``query``, best first."""
        import numpy as np

        if not self.size:
            return []
        q = _centred(np, query.reshape(1, -1), self.center)
        _, found = self.index.search(q, min(count, self.size))
        return [int(i) for i in found[0] if i >= 0]

    def serialize(self) -> Any:
        """The index as bytes (a numpy uint8 array): a copy, to write while it changes."""
        return _faiss().serialize_index(self.index)

    @staticmethod
    def write(data: Any, path: str) -> None:
        """Write serialised ``data`` atomically (a temporary file, then a rename): readers
        see the old file or the new."""
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(memoryview(data))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, center: Any, trained_on: int) -> ApproximateIndex:
        return cls(_faiss().read_index(path), center, trained_on)


def _centred(np: Any, vectors: Any, center: Any) -> Any:
    out = vectors - center
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(out / norms, dtype=np.float32)
