#!/usr/bin/env python3
"""Memory by meaning at scale: the vector store under the memory index, without a model.

Run from the repository root (inside the project's venv)::

    python benchmarks/bench_vectors.py            # 10k and 100k liked turns of one owner
    python benchmarks/bench_vectors.py --quick    # 2k and 10k
    python benchmarks/bench_vectors.py --sizes 10000,100000,400000

Vectors are random unit vectors of 384 dimensions (all-MiniLM-L6-v2's size),
written straight into the memory index file through the embedder's own path
(``lease`` / ``store``), so what is measured is the store and the search, not
a model: the time to store them (bytes per vector), a query's p50 / p95 by
meaning for one owner holding them all, a fresh process's first query (it
loads the owner's vectors), and per-user queries in a store of many users.
Prints one table with the load average; always exits 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feedback_plugin.backends.fts import MemoryIndex
from feedback_plugin.models import SessionQAEntry

DIMS = 384
QUERIES = 200
TARGET_P50_MS = 20.0
TARGET_USER_P50_MS = 5.0


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def fill(path: str, n: int, users: int, rng: np.random.Generator) -> tuple[MemoryIndex, float]:
    """``n`` liked turns spread over ``users`` owners, each with a random unit vector."""
    index = MemoryIndex(path)
    for i in range(n):
        index.apply(
            SessionQAEntry(
                qa_id=f"q{i}",
                session_id=f"s{i // 20}",
                question=f"question {i}",
                answer=f"answer {i}",
                feedback_score=5,
                user_id=None if users == 1 else f"u{i % users}",
            )
        )
    vectors = index._vector_store()
    vectors.select("random-384")
    start = time.perf_counter()
    while True:
        stamp, batch = vectors.lease(4096)
        if not batch:
            break
        vecs = rng.standard_normal((len(batch), DIMS)).astype(np.float32)
        vectors.store("random-384", stamp, {t: v for (t, _), v in zip(batch, vecs, strict=True)})
    return index, time.perf_counter() - start


def timed(index: MemoryIndex, rng: np.random.Generator, user: str | None) -> list[float]:
    out = []
    for _ in range(QUERIES):
        query = rng.standard_normal(DIMS).astype(np.float32).tolist()
        start = time.perf_counter()
        index.search_by_vector(query, model="random-384", user=user, limit=12, min_score=4)
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None)
    args = parser.parse_args()
    sizes = [2_000, 10_000] if args.quick else [10_000, 100_000]
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    rng = np.random.default_rng(7)
    rows: list[tuple[str, str, str, str]] = []
    print(f"load average before: {load()}", file=sys.stderr)
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "memory.sqlite3")
            index, stored = fill(path, n, 1, rng)
            first_start = time.perf_counter()
            index.search_by_vector(
                [1.0] * DIMS, model="random-384", user=None, limit=12, min_score=4
            )
            first = (time.perf_counter() - first_start) * 1e3
            times = timed(index, rng, None)
            size = os.path.getsize(path)
            index.close()
            fresh = MemoryIndex(path)
            start = time.perf_counter()
            fresh.search_by_vector(
                [1.0] * DIMS, model="random-384", user=None, limit=12, min_score=4
            )
            fresh_ms = (time.perf_counter() - start) * 1e3
            fresh.close()
        p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[18]
        ok = "PASS" if p50 <= TARGET_P50_MS else "**FAIL**"
        rows += [
            (f"one owner, {n:,} liked: store the vectors", f"{stored:.1f} s "
             f"({stored / n * 1e6:.0f} µs per vector)", "", ""),
            (f"one owner, {n:,} liked: file size", f"{size / 1e6:.0f} MB "
             f"({size / n:,.0f} bytes per liked turn, text index included)", "", ""),
            (f"one owner, {n:,} liked: query by meaning p50 / p95",
             f"{p50:.2f} / {p95:.2f} ms", f"p50 <= {TARGET_P50_MS:.0f} ms", ok),
            (f"one owner, {n:,} liked: first query of the process / of a fresh process",
             f"{first:.0f} / {fresh_ms:.0f} ms", "<= 1,000 ms",
             "PASS" if max(first, fresh_ms) <= 1000 else "**FAIL**"),
        ]  # fmt: skip
    users, n = (200, 10_000) if args.quick else (2_000, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        index, _ = fill(os.path.join(tmp, "memory.sqlite3"), n, users, rng)
        times = []
        for i in range(QUERIES):
            times += timed_one(index, rng, f"u{i % users}")
        index.close()
    p50 = statistics.median(times)
    rows.append(
        (f"per user: {n:,} liked over {users:,} users, query p50 (first query per user included)",
         f"{p50:.2f} ms", f"<= {TARGET_USER_P50_MS:.0f} ms",
         "PASS" if p50 <= TARGET_USER_P50_MS else "**FAIL**")
    )  # fmt: skip
    print(f"\n## Memory by meaning: the vector store (random {DIMS}-dim vectors, no model)\n")
    print(f"2 CPUs; load average after: {load()}\n")
    print("| measurement | value | target | result |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


def timed_one(index: MemoryIndex, rng: np.random.Generator, user: str) -> list[float]:
    query = rng.standard_normal(DIMS).astype(np.float32).tolist()
    start = time.perf_counter()
    index.search_by_vector(query, model="random-384", user=user, limit=12, min_score=4)
    return [(time.perf_counter() - start) * 1e3]


if __name__ == "__main__":
    sys.exit(main())
