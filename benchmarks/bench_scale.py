#!/usr/bin/env python3
"""Memory at scale: query latency up to a million turns, and a fresh process's first query.

Run from the repository root (inside the project's venv); it takes long (about
30 minutes at the default sizes on 2 CPUs) and some GB of disk::

    python benchmarks/bench_scale.py                        # 10k / 100k / 1M shared, 1M per-user
    python benchmarks/bench_scale.py --quick                # 10k / 50k shared, 50k per-user
    python benchmarks/bench_scale.py --sizes 100000 --per-user 0
    python benchmarks/bench_memory.py --only scale [...]    # the same, from bench_memory

Stores (diskcache, in a temp dir; ``--dir`` to choose where):

* *shared*: ``n`` turns with no user (one memory everybody shares), 40 % liked
  (score 4 or 5), 10 % disliked, the rest unrated, for each ``--sizes`` n;
* *per-user*: ``--per-user`` turns across ``--users`` users (10,000: 100 turns,
  40 liked, each), queried in each turn's owner's scope.

Turns are written with ``import_entries`` (ratings included); the benchmark
data of ``bench_memory`` (questions of an action on an object in a product,
with a qualifier) plus an app version, so a million questions are distinct.
Queries are reworded forms of liked questions (``bench_memory.reword``).

Three ways to search, timed per query, interleaved (each query runs every
way, in turn-rotated order): words (``search_memory``, BM25), hybrid
(``embeddings=``) and vectors only (``lexical=False``). The embeddings are a
*word-hash* model (each word a fixed random vector, a text the normalised
sum): as fast as a dictionary lookup, so the times are the library's own,
and with the shape of real text embeddings (texts sharing words lie close),
which an approximate index needs to be measured fairly. The local model's
``embed_query`` time is reported on its own (add it to the hybrid time).

Also: the index build (words: ``ready_memory``; vectors: background
embedding, approximate index, snapshot), bytes per liked turn on disk, and a
fresh process's first query (words, then hybrid), with its peak RSS.

Targets (issue 13): shared 1M (400k liked) p50 <= 20 ms and p95 <= 60 ms, words
and hybrid; per-user in a 1M store p50 <= 5 ms; a fresh process's first query
<= 1 s at 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_memory as bm
import numpy as np
from _common import Row, print_rows
from langchain_core.embeddings import Embeddings

from feedback_plugin import SessionStore
from feedback_plugin.memory import search_memory
from feedback_plugin.models import SessionQAEntry

Where = tuple[str, str | None]
"""A store: its location (a directory, or a Redis URL) and namespace."""

VERSIONS = ["on version 1", "on version 2", "on version 3", "on the 2024 release",
            "on the 2025 release", "on the LTS build", "on the nightly build",
            "on the classic layout"]  # fmt: skip
LIKED, DISLIKED = 0.40, 0.10
MODES = ("words", "hybrid", "vectors")


class WordHashEmbeddings(Embeddings):
    """Each word a fixed pseudo-random unit vector (from its CRC32); a text the normalised
    sum of its words' vectors. Fast, and texts that share words lie close."""

    model = "word-hash-384"

    def __init__(self, dims: int = 384) -> None:
        self.dims = dims
        self._words: dict[str, Any] = {}

    def _word(self, word: str) -> Any:
        vec = self._words.get(word)
        if vec is None:
            rng = np.random.default_rng(zlib.crc32(word.encode()))
            vec = self._words[word] = rng.standard_normal(self.dims).astype(np.float32)
        return vec

    def _embed(self, text: str) -> list[float]:
        words = re.findall(r"\w+", text.lower()) or ["_"]
        total = np.sum([self._word(w) for w in words], axis=0)
        return (total / (np.linalg.norm(total) or 1.0)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


def log(msg: str) -> None:
    bm.log(msg)


def pct(values: list[float], q: float) -> float:
    return bm.pct(values, q)


def load() -> float:
    return os.getloadavg()[0]


def entries(n: int, users: int, seed: int) -> Iterator[tuple[SessionQAEntry, bm.Content, int]]:
    """``n`` turns: entry, its content, its app version. ``users`` 0: no user (shared)."""
    rng = random.Random(seed)
    space = len(bm.ACTIONS) * len(bm.OBJECTS) * len(bm.PRODUCTS) * len(bm.QUALIFIERS)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i, code in enumerate(rng.sample(range(space * len(VERSIONS)), n)):
        version, code = divmod(code, space)
        code, q = divmod(code, len(bm.QUALIFIERS))
        code, p = divmod(code, len(bm.PRODUCTS))
        a, o = divmod(code, len(bm.OBJECTS))
        c = bm.Content(a, o, p, q)
        user = f"user-{i % users:05d}" if users else None
        roll = rng.random()
        score = (
            rng.choice((4, 5))
            if roll < LIKED
            else (rng.choice((1, 2)) if roll < LIKED + DISLIKED else None)
        )
        question = bm.stored_question(c, rng.randrange(len(bm.STORED_STEMS)))
        entry = SessionQAEntry(
            qa_id=f"t{i:07d}",
            session_id=f"s{i // 50 if not users else (i // users) // 10:06d}",
            user_id=user,
            question=question[:-1] + f" {VERSIONS[version]}?",
            answer=bm.stored_answer(c, rng),
            time=start + timedelta(seconds=i),
            feedback_score=score,
            feedback_text=None if score is None else ("helpful" if score >= 4 else "wrong"),
            feedback_time=None if score is None else start + timedelta(seconds=i + 1),
        )
        yield entry, c, version


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def memory_bytes(index_path: str) -> tuple[int, int]:
    """Bytes of the memory index (its SQLite file and WAL) and of its vector snapshots."""
    index = sum(
        os.path.getsize(index_path + suffix)
        for suffix in ("", "-wal")
        if os.path.exists(index_path + suffix)
    )
    ann = Path(index_path + ".ann")
    return index, dir_bytes(ann) if ann.is_dir() else 0


class Scale:
    def __init__(self, args: argparse.Namespace, base: Path) -> None:
        self.args = args
        self.base = base
        self.rows: list[Row] = []
        self.data: dict[str, Any] = {}
        self.emb = WordHashEmbeddings()
        self.made: list[Where] = []

    def add(self, name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append(Row(name, value, target, ok))

    # -- one store -----------------------------------------------------------------

    def where(self, label: str) -> tuple[str, str | None]:
        """The store's location and namespace: a diskcache directory, or the Redis server
        under a namespace of its own."""
        if self.args.backend == "redis":
            return self.args.redis, f"bench-scale-{uuid.uuid4().hex[:8]}"
        return str(self.base / label.replace("/", "-")), None

    def build(self, label: str, n: int, users: int) -> tuple[Where, list[tuple[str | None, str]]]:
        path = self.where(label)
        self.made.append(path)
        store = SessionStore(path[0], namespace=path[1])
        picks: list[tuple[str | None, str]] = []
        rng = random.Random(n + users)
        liked = 0

        def feed() -> Iterator[SessionQAEntry]:
            nonlocal liked
            for entry, content, version in entries(n, users, seed=n + users):
                if entry.feedback_score is not None and entry.feedback_score >= 4:
                    liked += 1
                    if rng.random() < 0.01 or len(picks) < 50:
                        query = bm.reword(content, rng)[0].rstrip("?")
                        picks.append((entry.user_id, f"{query} {VERSIONS[version]}?"))
                yield entry

        log(f"{label}: importing {n:,} turns ({users or 'no'} users)")
        t0 = time.perf_counter()
        written = store.import_entries(feed(), batch_size=5_000)
        import_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.ready_memory()
        words_s = time.perf_counter() - t0
        index_b, _ = memory_bytes(store.memory.path)
        log(f"{label}: embedding {liked:,} liked turns (background)")
        t0 = time.perf_counter()
        user0 = picks[0][0]
        search_memory(store, "warm up", k=4, user=user0, embeddings=self.emb)
        embedded = store.memory.wait_embedded(7_200)
        # The memory is large now: its next query has the approximate index built (in
        # the background; the wait includes it) and saved for other processes.
        search_memory(store, "warm up", k=4, user=user0, embeddings=self.emb)
        embedded = store.memory.wait_embedded(7_200) and embedded
        vectors_s = time.perf_counter() - t0
        index_v, ann_b = memory_bytes(store.memory.path)
        store.close()
        self.add(
            f"{label}: import {written:,} turns ({liked:,} liked) / words index / vectors",
            f"{import_s:.0f} s / {words_s:.1f} s / {vectors_s:.0f} s"
            + ("" if embedded else " (not all embedded!)"),
        )
        self.add(
            f"{label}: bytes per liked turn on disk: words index / + vectors / snapshot",
            f"{index_b / liked:,.0f} / {(index_v - index_b) / liked:,.0f} / {ann_b / liked:,.0f}",
        )
        self.data[label] = {
            "turns": written, "liked": liked, "import_s": import_s, "words_index_s": words_s,
            "vectors_s": vectors_s, "index_bytes": index_b, "vector_bytes": index_v - index_b,
            "snapshot_bytes": ann_b,
        }  # fmt: skip
        random.Random(7).shuffle(picks)
        return path, picks[: self.args.queries]

    def latency(
        self,
        label: str,
        path: Where,
        picks: list[tuple[str | None, str]],
        target: tuple[float, float] | None,
    ) -> None:
        store = SessionStore(path[0], namespace=path[1])
        emb = self.emb
        calls = {
            "words": lambda u, q: search_memory(store, q, k=4, user=u),
            "hybrid": lambda u, q: search_memory(store, q, k=4, user=u, embeddings=emb),
            "vectors": lambda u, q: search_memory(
                store, q, k=4, user=u, embeddings=emb, lexical=False
            ),
        }  # fmt: skip
        for user, q in picks[:20]:  # warm-up: owners loaded, caches warm
            for call in calls.values():
                call(user, q)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        found: dict[str, int] = dict.fromkeys(MODES, 0)
        before = load()
        for i, (user, q) in enumerate(picks):
            order = MODES[i % 3 :] + MODES[: i % 3]
            for mode in order:
                t0 = time.perf_counter()
                hits = calls[mode](user, q)
                times[mode].append(time.perf_counter() - t0)
                found[mode] += bool(hits)
        store.close()
        cells = []
        for mode in MODES:
            p50, p95 = bm.ms(statistics.median(times[mode])), bm.ms(pct(times[mode], 0.95))
            cells.append(f"{mode} {p50:.1f} / {p95:.1f}")
            self.data.setdefault(label, {})[f"{mode}_p50_ms"] = p50
            self.data[label][f"{mode}_p95_ms"] = p95
        worst50 = max(bm.ms(statistics.median(times[m])) for m in ("words", "hybrid"))
        worst95 = max(bm.ms(pct(times[m], 0.95)) for m in ("words", "hybrid"))
        ok = None
        tgt = ""
        if target is not None:
            tgt = f"p50 <= {target[0]:g}" + (f", p95 <= {target[1]:g}" if target[1] else "")
            ok = worst50 <= target[0] and (not target[1] or worst95 <= target[1])
        self.add(
            f"{label}: query p50 / p95 ms ({len(picks)} queries, k=4; load {before:.1f})",
            "; ".join(cells),
            tgt,
            ok,
        )

    def fresh(
        self, label: str, path: Where, picks: list[tuple[str | None, str]], judge: bool
    ) -> None:
        """A new interpreter opens the store and times its first query (words, then hybrid)."""
        user, q = picks[-1]
        code = f"""
import json, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from bench_scale import WordHashEmbeddings
from feedback_plugin import SessionStore
from feedback_plugin.memory import search_memory
store = SessionStore({path[0]!r}, namespace={path[1]!r})
t0 = time.perf_counter()
a = search_memory(store, {q!r}, k=4, user={user!r})
t1 = time.perf_counter()
b = search_memory(store, {q!r}, k=4, user={user!r}, embeddings=WordHashEmbeddings())
t2 = time.perf_counter()
rss = 0.0  # VmHWM: this process's peak (ru_maxrss would carry the parent's over exec)
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        rss = int(line.split()[1]) / 1024
print(json.dumps([t1 - t0, t2 - t1, len(a), len(b), rss]))
store.close()
"""
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        if out.returncode:
            self.add(f"{label}: fresh process, first query", f"failed: {out.stderr[-300:]}")
            return
        words_s, hybrid_s, na, nb, rss = json.loads(out.stdout.strip().splitlines()[-1])
        self.data.setdefault(label, {}).update(
            {"fresh_words_s": words_s, "fresh_hybrid_s": hybrid_s, "fresh_rss_mb": rss}
        )
        self.add(
            f"{label}: fresh process: first query words / then first hybrid (peak RSS)",
            f"{words_s * 1000:.0f} ms / {hybrid_s * 1000:.0f} ms ({rss:,.0f} MB; hits {na}, {nb})",
            "<= 1 s each" if judge else "",
            (words_s <= 1.0 and hybrid_s <= 1.0) if judge else None,
        )

    def local_query_time(self) -> None:
        try:
            from feedback_plugin.embeddings import local

            model = local()
            model.embed_query("warm up")
        except Exception as exc:  # not installed
            self.add("local model embed_query p50 / p95", f"n/a ({type(exc).__name__})")
            return
        rng = random.Random(3)
        qs = [bm.reword(c, rng)[0] for c in bm.contents(rng, 100)]
        times = []
        for q in qs:
            t0 = time.perf_counter()
            model.embed_query(q)
            times.append(time.perf_counter() - t0)
        self.add(
            "all-MiniLM-L6-v2 embed_query alone, p50 / p95 (add to hybrid)",
            f"{bm.ms(statistics.median(times)):.1f} / {bm.ms(pct(times, 0.95)):.1f} ms",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="shared store sizes")
    parser.add_argument(
        "--per-user", type=int, default=1_000_000, help="per-user store size (0: none)"
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="10k / 50k shared, 50k per-user")
    parser.add_argument("--dir", help="where the temp stores go")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--backend", choices=("disk", "redis"), default="disk")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="for --backend redis")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.per_user, args.users, args.queries = "10000,50000", 50_000, 500, 100
    sizes = [int(x) for x in args.sizes.split(",") if x]
    base = Path(tempfile.mkdtemp(prefix="fp-bench-scale-", dir=args.dir))
    # Redis's memory index file goes to the temp dir, not the user's cache directory
    # (the fresh processes inherit it).
    os.environ["FEEDBACK_PLUGIN_CACHE_DIR"] = str(base / "cache")
    s = Scale(args, base)
    start_load = load()
    wall = time.perf_counter()
    try:
        for n in sizes:
            label = f"shared {n:,}"
            path, picks = s.build(label, n, 0)
            target = (20.0, 60.0) if n >= 1_000_000 else None
            s.fresh(label, path, picks, judge=n >= 100_000)
            s.latency(label, path, picks, target)
        if args.per_user:
            label = f"per-user {args.per_user:,} / {args.users:,} users"
            path, picks = s.build(label, args.per_user, args.users)
            s.fresh(label, path, picks, judge=args.per_user >= 100_000)
            s.latency(label, path, picks, (5.0, 0.0) if args.per_user >= 1_000_000 else None)
        s.local_query_time()
    finally:
        if not args.keep:
            for location, namespace in s.made:
                if namespace is not None:  # a Redis namespace of the run: its keys go
                    with SessionStore(location, namespace=namespace) as store:
                        store.backend.drop()  # type: ignore[attr-defined]
            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"stores kept in {base}")
    print(
        f"\nBackend: {args.backend}; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs;"
        " 1-minute load average "
        f"{start_load:.1f} at start, {load():.1f} at end; {time.perf_counter() - wall:.0f} s.\n"
    )
    print_rows(s.rows)
    if args.json:
        Path(args.json).write_text(json.dumps(s.data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
