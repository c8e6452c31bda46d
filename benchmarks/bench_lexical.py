#!/usr/bin/env python3
"""Lexical memory search over everyday words: every word vs the rarest words.

Run from the repository root (inside the project's venv)::

    python benchmarks/bench_lexical.py               # 100,000 rated turns, a minute or two
    python benchmarks/bench_lexical.py --quick       # 10,000 turns, seconds
    python benchmarks/bench_lexical.py --n 300000    # another index size
    python benchmarks/bench_lexical.py --keep /tmp/lexical   # build once, reuse the index

The index is a :class:`~feedback_plugin.backends.fts.MemoryIndex` file (WAL,
as a diskcache store keeps beside its cache) filled directly with
``MemoryIndex.apply`` (no store): ``n`` liked help-centre questions built
from a vocabulary where "how", "my", "account", "change" and "settings"
appear in most rows (stop words are never searched; "account" 70%,
"change" 60%, "settings" 55% of rows), one of 60 topic words ("password",
"invoice", ... ~1.5% each) and, in one row of three, one of 3,000 rare
product words. 90% of the rows belong to one owner (a shared help desk:
the worst case, every row is that owner's) and 10% to 100 users of 100
rows each.

Query kinds (``--queries`` of each, random):

- common: everyday words only ("how do I change my account settings");
- topic: everyday words and a topic word ("change my account password");
- rare: everyday words and a rare product word;
- user: a topic query scoped to one of the small users (100 rows).

Each query runs both ways, interleaved in one process (order alternating):
*every word* (``MemoryIndex._every_word = True``: the FTS5 ``OR`` of every
non-stop word, ranked over every matching row, the query builder before
:mod:`feedback_plugin.backends.fts_terms`) and *rarest words* (the
default). ``limit=12``, what ``PositiveMemoryRetriever`` asks for with
``k=4``. Reported per kind: p50/p95 of ``search()`` each way, and recall
agreement with the every-word ranking, two ways: *top-5 overlap*, the mean
share of the every-word top 5 that the rarest-words search also returns in
its top 5; and *as good*, the mean share of the rarest-words top 5 whose
every-word BM25 score is at least the every-word 5th best score (less
0.01): BM25 cannot tell such hits from the every-word top 5 except by
words in more than half the rows (weight 1e-6), so the choice among them
is a tie-break. A last row times rarest-words searches with the
word-frequency cache cleared before each one (the first query of its words
in a process, every minute). The header gives the load average: timings
grow with it on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import sqlite3  # noqa: E402

from feedback_plugin import SessionQAEntry  # noqa: E402
from feedback_plugin.backends.fts import MemoryIndex  # noqa: E402
from feedback_plugin.backends.fts_schema import (  # noqa: E402
    ANSWER_WEIGHT,
    QUESTION_WEIGHT,
    match_query,
    owner_key,
    owner_token,
)
from feedback_plugin.backends.fts_terms import TermPicker  # noqa: E402

_TOPIC_WORDS = (
    "password email invoice refund subscription plan profile photo username language "
    "timezone notification alert address phone card payment receipt export import backup "
    "device login logout session token key webhook integration calendar report dashboard "
    "widget theme font avatar billing tax currency discount coupon voucher order shipping "
    "delivery tracking return warranty license seat team member role permission folder "
    "file upload download share link signature"
)
TOPICS = _TOPIC_WORDS.split()
PHRASES = [
    "How do I change my account {w} settings?",
    "How can I change the {w} on my account?",
    "Where do I change my {w} in account settings?",
    "How do I set up my account {w}?",
    "Can I change my account {w} from the settings page?",
    "How to reset my {w} for my account",
    "Why can't I change my {w}?",
    "How do I remove the {w} from my account settings?",
]
ANSWERS = [
    "Open Settings, choose Account, then change the {w} and save.",
    "Go to your account page, select {w} and click Change.",
    "In the app, tap the menu, open settings and edit the {w}.",
]
COMMON_QUERIES = [
    "how do I change my account settings",
    "change account settings",
    "how can I change my account",
    "account settings change",
    "where do I change settings on my account",
    "how do I set my account",
]


def rare_words(n: int, rng: random.Random) -> list[str]:
    syllables = "ka lo mi ne ru sa ti vo ze pa qui dor fen gal hix jun".split()  # noqa: SIM905
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(syllables) for _ in range(3)) + rng.choice("xzq"))
    return sorted(words)


def question(rng: random.Random, topic: str, rare: str | None) -> str:
    text = rng.choice(PHRASES).format(w=topic)
    if rare is not None:
        text += f" I use the {rare} app."
    return text


def build(path: Path, n: int, rng: random.Random, rares: list[str]) -> MemoryIndex:
    index = MemoryIndex(path)
    started = time.perf_counter()
    for i in range(n):
        topic = rng.choice(TOPICS)
        rare = rng.choice(rares) if rng.random() < 1 / 3 else None
        user = None if i % 10 else f"user{(i // 10) % 100}"
        index.apply(
            SessionQAEntry(
                qa_id=f"q{i}",
                session_id=f"s{i // 50}",
                question=question(rng, topic, rare),
                answer=rng.choice(ANSWERS).format(w=topic),
                feedback_score=5,
                user_id=user,
            )
        )
    print(f"built {n:,} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return index


def queries(kind: str, count: int, rng: random.Random, rares: list[str]) -> list[str]:
    out = []
    for _ in range(count):
        if kind == "common":
            out.append(rng.choice(COMMON_QUERIES))
        elif kind in ("topic", "user"):
            out.append(f"{rng.choice(COMMON_QUERIES)} {rng.choice(TOPICS)}")
        else:
            out.append(f"{rng.choice(COMMON_QUERIES)} {rng.choice(rares)}")
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    index: MemoryIndex, query: str, user: str | None, every: bool
) -> tuple[float, list[tuple[str, float]]]:
    index._every_word = every
    started = time.perf_counter()
    hits = index.search(query, user=user, limit=12, min_score=4)
    elapsed = (time.perf_counter() - started) * 1000
    index._every_word = False
    return elapsed, [(h.qa_id, h.relevance) for h in hits]


def every_word_scores(
    con: sqlite3.Connection, query: str, user: str | None, qa_ids: list[str]
) -> dict[str, float]:
    """The every-word BM25 score (as ``search`` reports it) of these turns of ``user``."""
    owner = owner_key(None, user)
    marks = ",".join("?" * len(qa_ids))
    rows = con.execute(
        f"SELECT t.qa_id, -bm25(turns_fts, 0.0, {QUESTION_WEIGHT}, {ANSWER_WEIGHT})"
        " FROM turns_fts JOIN turns t ON t.id = turns_fts.rowid"
        f" WHERE turns_fts MATCH ? AND t.owner = ? AND t.qa_id IN ({marks})",
        (
            f'tok:"{owner_token(owner)}" AND {{question answer}}:({match_query(query)})',
            owner,
            *(f'"{q}"' for q in qa_ids),
        ),
    ).fetchall()
    return {str(q)[1:-1]: float(rel) for q, rel in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="rated turns in the index")
    parser.add_argument("--queries", type=int, default=200, help="queries of each kind")
    parser.add_argument("--quick", action="store_true", help="10,000 turns, 50 queries")
    parser.add_argument("--keep", type=Path, help="a directory to keep (and reuse) the index in")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    n, count = (10_000, 50) if args.quick else (args.n, args.queries)
    rng = random.Random(args.seed)
    rares = rare_words(3_000, rng)
    directory = args.keep or Path(tempfile.mkdtemp(prefix="bench-lexical-"))
    path = directory / f"memory-{n}-{args.seed}.sqlite3"
    index = MemoryIndex(path) if path.exists() else build(path, n, rng, rares)
    load_before = os.getloadavg()[0]
    try:
        rows = index.count()
        print(f"# lexical search, {rows:,} rated turns, {count} queries per kind")
        print(f"# load average (1 min) before the queries: {load_before:.2f}; after: ", end="")
        results: list[tuple[str, ...]] = []
        con = sqlite3.connect(path)
        for kind in ("common", "topic", "rare", "user"):
            before: list[float] = []
            after: list[float] = []
            overlap: list[float] = []
            as_good: list[float] = []
            for i, q in enumerate(queries(kind, count, rng, rares)):
                user = f"user{rng.randrange(100)}" if kind == "user" else None
                order: list[bool] = [True, False] if i % 2 else [False, True]
                got: dict[bool, tuple[float, list[tuple[str, float]]]] = {}
                for every in order:
                    got[every] = run(index, q, user, every)
                before.append(got[True][0])
                after.append(got[False][0])
                every_top, picked = got[True][1][:5], [h for h, _ in got[False][1][:5]]
                if every_top:
                    top = {h for h, _ in every_top}
                    overlap.append(len(top & set(picked)) / len(top))
                    fifth = every_top[-1][1]
                    scores = every_word_scores(con, q, user, picked)
                    good = sum(scores.get(h, -1e9) >= fifth - 0.01 for h in picked)
                    as_good.append(good / len(every_top))
            results.append(
                (
                    kind,
                    f"{statistics.median(before):.1f} / {pct(before, 0.95):.1f}",
                    f"{statistics.median(after):.1f} / {pct(after, 0.95):.1f}",
                    f"{statistics.median(before) / statistics.median(after):.1f}x",
                    f"{statistics.mean(overlap):.2f}" if overlap else "n/a",
                    f"{statistics.mean(as_good):.2f}" if as_good else "n/a",
                )
            )
        cold = _cold(index, queries("topic", count, rng, rares))
        con.close()
        print(f"{os.getloadavg()[0]:.2f}\n")
        header = ("queries", "every word p50 / p95 ms", "rarest words p50 / p95 ms")
        header += ("p50 speed-up", "top-5 overlap", "as good")
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for row in results:
            print("| " + " | ".join(row) + " |")
        print(
            f"| topic, word counts not cached | | {statistics.median(cold):.1f} / "
            f"{pct(cold, 0.95):.1f} | | | |"
        )
    finally:
        index.close()
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def _cold(index: MemoryIndex, texts: list[str]) -> list[float]:
    """Rarest-words searches, each with the word-frequency cache cleared first."""
    times: list[float] = []
    fresh: Callable[[], TermPicker] = TermPicker
    for q in texts:
        index._terms = fresh()
        index._terms.terms("warm")  # the tokenizer's own connection is opened once
        times.append(run(index, q, None, False)[0])
    return times


if __name__ == "__main__":
    raise SystemExit(main())
