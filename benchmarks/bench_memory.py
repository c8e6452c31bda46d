#!/usr/bin/env python3
"""Positive-memory benchmark: the retriever over a store of 100,000 turns.

Run from the repository root (inside the project's venv)::

    python benchmarks/bench_memory.py              # full run: 100,000 turns, a few minutes
    python benchmarks/bench_memory.py --quick      # smoke test: 5,000 turns, seconds
    python benchmarks/bench_memory.py --n 200000   # another store size
    python benchmarks/bench_memory.py --json benchmarks/results/memory.json
    python benchmarks/bench_memory.py --profile /tmp/prof   # + cProfile of (a) and (d)
    python benchmarks/bench_memory.py --backend redis       # the same on Redis (30,000 positive)
    python benchmarks/bench_memory.py --backend redis --redis redis://host:6379/15
    python benchmarks/bench_memory.py --only recall        # (e) alone: recall by meaning
    python benchmarks/bench_memory.py --only recall --embeddings fake   # code path only
    python benchmarks/bench_memory.py --only postgres      # the PostgreSQL rows alone
    python benchmarks/bench_memory.py --postgres postgresql://u@host:5432/db
    python benchmarks/bench_memory.py --no-postgres        # without the PostgreSQL rows

It prints one markdown table and a PASS/FAIL line per target, and always
exits 0: a failed target is a finding to report, not a crash. The header
gives the machine's load average during the run: on a shared machine the
timings grow with it.

The data set (one real diskcache directory in a temp dir)
---------------------------------------------------------
``n`` turns spread over ``n / 50`` sessions and 20 users (every session
belongs to one user). Each question is a question stem x an action x an
object x a product x a qualifier ("How can I export the invoice in Billing
portal on Android?"); no two turns share the (action, object, product,
qualifier) content, so every question is distinct. Each turn gets a
generated answer naming the same things plus a menu path. Turns are
recorded with the write-behind queue, then flushed. Then 30% of the turns
are rated positive (score 4 or 5) and 10% negative (1 or 2) with
``store.add_feedback``; the other 60% stay unrated.

Queries are *reworded* forms of stored questions, made by the benchmark:
always a different question stem ("How do I" -> "What's the way to"), plus
at least one of: a synonym swap (action and/or object: "export" ->
"download", "invoice" -> "bill"), a different word order (product and
qualifier first), dropping filler words (articles, pronouns, auxiliaries).

What is measured
----------------
(a) ``PositiveMemoryRetriever(store=store, user=u).invoke(q)`` latency, p50
    and p95 over 500 reworded queries of random stored turns, each scoped to
    the turn's owner (default ``k=4``). Targets: p50 <= 5 ms, p95 <= 20 ms.
    Three rounds over the same queries; the round with the lowest p50 is
    judged (other processes only ever add time) and every round is listed.
    Two information rows split the time, measured right after each query:
    the index search alone (``store.memory.search``) and the rest
    (re-reading hits from the store, Documents, callback machinery).
(b) Memory follows feedback at once: 200 trials of "record a new turn, rate
    it 5, query its question (k=5) right after ``add_feedback`` returns"; it
    must be in the results of that very next query. Also: rate
    it down (score 1), the next query must no longer return it; and 50
    trials where *another process* rates the turn and this process queries
    right after the other one's ``add_feedback`` returned.
(c) recall@5: 500 reworded forms of stored *positive* questions, each query
    scoped to the owning user, ``k=5``; the hit is the original turn's
    ``qa_id``. Target >= 0.9. Recall per rewording kind is reported too.
(d) Upgrade: close the store, delete the index file (``store.memory.path``
    and its -wal/-shm), reopen the store and time the first query, which
    builds the index from a full scan. Target <= 30 s. Checks: the rebuilt
    index holds every rated turn, and 50 queries return the same top 5 as
    before the rebuild.
(e) Recall by meaning, on stores of its own (diskcache, temp dirs, one user, every
    turn liked with score 5), three ways side by side: BM25 only
    (``search_memory(store, q, k=5)``), hybrid (``embeddings=emb``) and vectors only
    (``embeddings=emb, lexical=False``; "n/a" while ``search_memory`` has no
    ``lexical``), each with its recall@5 and p50/p95 query latency (query embedding
    included; ``emb.embed_query`` alone is timed too).

    - Paraphrases: ``benchmarks/data/paraphrases.json``, 66+ help-centre questions
      with answers, each with a query that asks the same in other words and shares
      no content word or stem with the question (``tests/test_paraphrase_set.py``
      checks that), stored first, then 1,000 liked distractors from
      :func:`distractors` (other questions of the same app, many naming what the
      queries name). Target: hybrid recall@5 >= 0.90 with the local model.
    - Reworded: 1,500 liked turns of the (c) kind and 200 reworded queries of them
      (``--quick``: 500 and 50). Target: hybrid recall@5 >= 0.98 and no lower than
      BM25 only.

    The model is ``feedback_plugin.embeddings.local()`` when it imports; otherwise
    ``DeterministicFakeEmbedding`` only exercises the code and the rows say "fake
    embeddings: not a recall figure" (targets shown for information). Before the
    queries are timed every turn gets its vector, and that "index build" is
    reported: with a library that embeds remembered turns in the background
    (``store.memory.wait_embedded``), the wait after the first hybrid query; without
    one, a first pass of every query (vectors are made for each query's
    candidates) and ``embed_documents`` of every turn, timed on its own.
    ``--only recall`` runs (e) alone; every run ends with it.

On Redis (``--backend redis``)
------------------------------
The same data set and (a)-(d) go into a Redis store (``--redis URL``, default
``redis://127.0.0.1:6379/15``) under a namespace of its own
(``bench-<uuid>``), whose keys are deleted at the end (``--keep`` keeps them).
There the memory index is a file per machine (in ``$FEEDBACK_PLUGIN_CACHE_DIR``,
set to the run's temp dir), built from a scan of the store on the first query
and kept fresh from the store's change stream, which every query reads first.
So:

- setup times the first ``ready_memory()`` (the build of the machine's index
  file) instead of the first ``add_feedback`` (on diskcache the one that builds
  the shared index);
- (a) is judged against the Redis target of the backend issue, p50 <= 20 ms
  with 30,000 positive turns (the default ``--n 100000`` rates 30,000 positive;
  with fewer, the row is information only); the diskcache targets (p50 <= 5 ms,
  p95 <= 20 ms) are shown as information. An extra row times the change-stream
  read (``ready_memory()``) alone;
- (d) "index build" deletes the index file, as on diskcache; the next query
  builds it from a full scan. Same 30 s target and checks. (A fresh process
  with the file in place: ``benchmarks/bench_first_query.py``.)

On PostgreSQL (every run, after (d); ``--only postgres`` alone)
---------------------------------------------------------------
``benchmarks/bench_postgres.py`` (also runnable alone; its docstring has the
details) loads the same data set, ``n`` turns of which 30% liked, into a
PostgreSQL namespace of its own (``--postgres URL``, default
``postgresql://postgres@127.0.0.1:5432/test``; ``bench-pg-<8 hex digits>``,
dropped at the end) with ``import_entries``, then, in rows marked
``[PostgreSQL]``: the retriever's p50 / p95 by words (targets p50 <= 10 ms,
p95 <= 30 ms, judged at any ``n``; the issue sets them at 100,000 turns) and
hybrid with word-hash embeddings (information), recall@5 (information), and
a fresh process's first query (target: within 2x the warm p50 plus a bare
connection's setup), with Redis's fresh-process figure from
``bench_first_query`` beside it. ``--no-postgres`` skips them, and so does an
unreachable server, with a row saying so.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import json
import multiprocessing as mp
import os
import platform
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Make the repository importable when the script is run without an install.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from _common import (  # noqa: E402  (benchmarks/_common.py)
    POSTGRES_URL,
    Row,
    print_rows,
    redis_unreachable,
    redis_versions,
)

from feedback_plugin import PositiveMemoryRetriever, SessionStore  # noqa: E402

# -- targets ------------------------------------------------------------------

P50_MAX_MS = 5.0
P95_MAX_MS = 20.0
RECALL_MIN = 0.9
BUILD_MAX_S = 30.0
REDIS_P50_MAX_MS = 20.0  # the Redis backend's target (backend issue), at 30,000 positive turns
REDIS_TARGET_POSITIVES = 30_000
REDIS_URL = "redis://127.0.0.1:6379/15"

USERS = 20
TURNS_PER_SESSION = 50
POSITIVE_SHARE = 0.30
NEGATIVE_SHARE = 0.10
FLUSH_EVERY = 20_000  # keep the write-behind queue well under its max_pending cap


@dataclass
class Settings:
    n: int = 100_000
    latency_queries: int = 500
    latency_rounds: int = 3
    warmup_queries: int = 30
    freshness_trials: int = 200
    cross_process_trials: int = 50
    recall_queries: int = 500
    same_results_queries: int = 50
    distractors: int = 1_000  # (e): liked distractor turns beside the paraphrase pairs
    reworded_turns: int = 1_500  # (e): liked turns of the (c) kind, one user
    reworded_queries: int = 200  # (e): reworded queries of them
    seed: int = 20240601


def quick_settings() -> Settings:
    return Settings(
        n=5_000,
        latency_queries=200,
        warmup_queries=10,
        freshness_trials=50,
        cross_process_trials=10,
        recall_queries=200,
        same_results_queries=20,
        reworded_turns=500,
        reworded_queries=50,
    )


# -- the data set ---------------------------------------------------------------

# (word as stored, synonyms a rewording may use instead)
ACTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("export", ("download", "save a copy of")),
    ("delete", ("remove", "erase")),
    ("share", ("send", "give access to")),
    ("rename", ("retitle", "relabel")),
    ("restore", ("recover", "bring back")),
    ("archive", ("shelve", "stash away")),
    ("move", ("transfer", "relocate")),
    ("duplicate", ("copy", "clone")),
    ("lock", ("protect", "freeze")),
    ("sync", ("synchronize", "keep in step")),
    ("import", ("upload", "load")),
    ("print", ("print out", "get a printout of")),
    ("tag", ("label", "categorize")),
    ("find", ("look up", "search for")),
    ("merge", ("combine", "join")),
    ("schedule", ("plan", "book")),
    ("encrypt", ("secure", "scramble")),
    ("pin", ("stick", "keep on top")),
    ("filter", ("narrow down", "sift")),
    ("sort", ("order", "arrange")),
    ("translate", ("localize",)),
    ("embed", ("insert", "put")),
    ("revert", ("roll back", "undo changes to")),
    ("audit", ("review", "inspect")),
    ("approve", ("sign off", "accept")),
    ("publish", ("release", "make public")),
    ("mute", ("silence", "quiet")),
    ("edit", ("modify", "change")),
    ("create", ("make", "set up")),
    ("reset", ("clear", "wipe")),
]

OBJECTS: list[tuple[str, tuple[str, ...]]] = [
    ("invoice", ("bill",)),
    ("notebook", ("journal",)),
    ("shared folder", ("team folder",)),
    ("recurring event", ("repeating meeting",)),
    ("attachment", ("attached file",)),
    ("draft", ("unsent message",)),
    ("template", ("boilerplate",)),
    ("signature", ("sign-off line",)),
    ("contact group", ("mailing list",)),
    ("spreadsheet", ("worksheet",)),
    ("comment thread", ("discussion",)),
    ("API key", ("access token",)),
    ("webhook", ("callback URL",)),
    ("backup", ("snapshot",)),
    ("user account", ("login",)),
    ("workspace", ("team space",)),
    ("project board", ("kanban",)),
    ("checklist", ("to-do list",)),
    ("voice memo", ("audio note",)),
    ("photo album", ("gallery",)),
    ("custom field", ("extra field",)),
    ("report", ("summary",)),
    ("dashboard", ("overview page",)),
    ("password", ("passphrase",)),
    ("audit log", ("activity history",)),
    ("subscription", ("plan",)),
    ("payment method", ("credit card",)),
    ("tax receipt", ("VAT receipt",)),
    ("calendar invite", ("meeting request",)),
    ("support ticket", ("help request",)),
    ("purchase order", ("PO",)),
    ("expense claim", ("reimbursement",)),
    ("job posting", ("vacancy",)),
    ("survey response", ("form answer",)),
    ("status update", ("announcement",)),
    ("guest link", ("public link",)),
    ("role permission", ("access right",)),
    ("data export", ("export file",)),
    ("time entry", ("logged hours",)),
    ("product catalog", ("item list",)),
]

PRODUCTS = [
    "Notes",
    "Mailbox",
    "Calendar",
    "Drive",
    "Chat",
    "Tasks",
    "Wiki",
    "Forms",
    "Sheets",
    "Slides",
    "Photos",
    "Contacts",
    "Billing portal",
    "Admin console",
    "Analytics",
    "Helpdesk",
    "CRM",
    "Inventory",
    "Payroll",
    "Timesheets",
    "Expenses",
    "Recruiting",
    "Learning hub",
    "Status page",
    "Password vault",
    "Whiteboard",
    "Video meetings",
    "Newsletter builder",
    "Survey studio",
    "Roadmaps",
]

QUALIFIERS = [
    "on Android",
    "on an iPhone",
    "from the web app",
    "while offline",
    "for a guest user",
    "in bulk",
    "without admin rights",
    "on a Mac",
    "on Windows",
    "after the trial ends",
    "for my whole team",
    "from a shared link",
    "on Linux",
    "in another language",
    "with a keyboard shortcut",
    "older than a year",
    "in dark mode",
    "before a deadline",
    "through the API",
    "on a Chromebook",
]

# Stems of stored questions: {act} action, {obj} object with article, {where} product + qualifier.
STORED_STEMS = [
    "How do I {act} {a_obj} in {where}?",
    "How can I {act} {the_obj} in {where}?",
    "Is it possible to {act} my {obj} in {where}?",
    "Can you tell me how to {act} {a_obj} in {where}?",
    "I need to {act} {a_obj} in {where}. What are the steps?",
    "What is the best way to {act} {the_obj} in {where}?",
]

# Stems a reworded query uses instead (never one of the stored ones).
QUERY_STEMS = [
    "What's the way to",
    "Any way to",
    "Steps to",
    "Please explain how to",
    "Help me",
    "Where do I go to",
    "How should I",
    "Quick question: how would I",
]

FILLER = {
    "a",
    "an",
    "the",
    "my",
    "i",
    "do",
    "to",
    "how",
    "can",
    "you",
    "me",
    "is",
    "it",
    "what",
    "what's",
    "whats",
    "s",
    "any",
    "way",
    "please",
    "explain",
    "help",
    "where",
    "go",
    "should",
    "would",
    "quick",
    "question",
    "steps",
    "in",
    "for",
    "on",
    "from",
    "with",
    "of",
    "while",
}

MENUS = ["Settings", "the toolbar", "the ••• menu", "File", "the sidebar", "Account", "Admin"]
SUBMENUS = ["Advanced", "Sharing", "Data", "Security", "Integrations", "History", "General"]
TIPS = [
    "Changes apply within a minute.",
    "You need edit rights on the item.",
    "A confirmation e-mail follows.",
    "The same option exists in the mobile app.",
    "It can be undone from the activity history for 30 days.",
    "Admins can turn this off for the organisation.",
]


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


@dataclass(frozen=True, slots=True)
class Content:
    action: int
    obj: int
    product: int
    qualifier: int


@dataclass(slots=True)
class Turn:
    content: Content
    user: str
    session_id: str
    question: str
    answer: str
    qa_id: str = ""
    score: int | None = None


def stored_question(c: Content, stem: int) -> str:
    act = ACTIONS[c.action][0]
    obj = OBJECTS[c.obj][0]
    where = f"{PRODUCTS[c.product]} {QUALIFIERS[c.qualifier]}"
    return STORED_STEMS[stem].format(
        act=act, obj=obj, a_obj=f"{_article(obj)} {obj}", the_obj=f"the {obj}", where=where
    )


def stored_answer(c: Content, rng: random.Random) -> str:
    act = ACTIONS[c.action][0]
    obj = OBJECTS[c.obj][0]
    return (
        f"To {act} {_article(obj)} {obj} in {PRODUCTS[c.product]} {QUALIFIERS[c.qualifier]}, "
        f"open {rng.choice(MENUS)} > {rng.choice(SUBMENUS)} and choose "
        f'"{act.capitalize()} {obj}". {rng.choice(TIPS)}'
    )


REWORDINGS = ("synonym", "order", "filler")


def reword(c: Content, rng: random.Random) -> tuple[str, tuple[str, ...]]:
    """A reworded question about ``c``, and the kinds of rewording applied.

    Always a new stem, plus at least one of synonym / order / filler.
    """
    kinds = [k for k in REWORDINGS if rng.random() < 0.5] or [rng.choice(REWORDINGS)]
    act, act_syn = ACTIONS[c.action]
    obj, obj_syn = OBJECTS[c.obj]
    if "synonym" in kinds:
        which = rng.choice(("action", "object", "both"))
        if which in ("action", "both"):
            act = rng.choice(act_syn)
        if which in ("object", "both"):
            obj = rng.choice(obj_syn)
    stem = rng.choice(QUERY_STEMS)
    the_obj = rng.choice((f"{_article(obj)} {obj}", f"the {obj}", f"my {obj}"))
    product, qualifier = PRODUCTS[c.product], QUALIFIERS[c.qualifier]
    if "order" in kinds:
        text = f"In {product} {qualifier}, {stem[0].lower()}{stem[1:]} {act} {the_obj}?"
    else:
        text = f"{stem} {act} {the_obj} in {product} {qualifier}?"
    if "filler" in kinds:
        words = [
            w
            for w in text.replace(",", "").replace("?", "").split()
            if w.lower().strip(":") not in FILLER
        ]
        text = " ".join(words)
    return text, ("stem", *kinds)


def contents(rng: random.Random, count: int) -> Iterator[Content]:
    """``count`` distinct contents, in random order."""
    space = len(ACTIONS) * len(OBJECTS) * len(PRODUCTS) * len(QUALIFIERS)
    if count > space * 0.8:
        raise SystemExit(f"--n {count:,} is too many: the vocabulary makes {space:,} questions")
    for code in rng.sample(range(space), count):
        code, q = divmod(code, len(QUALIFIERS))
        code, p = divmod(code, len(PRODUCTS))
        a, o = divmod(code, len(OBJECTS))
        yield Content(a, o, p, q)


def make_turn(c: Content, user: str, session_id: str, rng: random.Random) -> Turn:
    return Turn(
        content=c,
        user=user,
        session_id=session_id,
        question=stored_question(c, rng.randrange(len(STORED_STEMS))),
        answer=stored_answer(c, rng),
    )


# -- report -----------------------------------------------------------------------


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    load: list[tuple[str, float]] = field(default_factory=list)

    def add(
        self, name: str, value: str, target: str = "", ok: bool | None = None, info: bool = False
    ) -> None:
        self.rows.append(Row(name, value, target, ok, info))

    def mark_load(self, when: str) -> None:
        """Note the 1-minute load average: other processes inflate every timing."""
        if hasattr(os, "getloadavg"):
            self.load.append((when, os.getloadavg()[0]))


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def ms(seconds: float) -> float:
    return seconds * 1e3


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest-rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def profiled(directory: str | None, name: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; under ``--profile`` in cProfile, saving and printing the top entries."""
    if directory is None:
        return fn()
    prof = cProfile.Profile()
    result = prof.runcall(fn)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.prof")
    prof.dump_stats(path)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)
    print(f"\n===== cProfile: {name} ({path}) =====\n{out.getvalue()}", file=sys.stderr)
    return result


# -- Redis ---------------------------------------------------------------------------


def drop_redis(where: Where) -> int:
    """Delete every key of the run's Redis namespace; return how many went."""
    store = where.open()
    try:
        return int(store.backend.drop())  # type: ignore[attr-defined]
    finally:
        store.close()


# -- building the store ---------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """The store under test: a diskcache directory, or a Redis URL and a namespace."""

    backend: str  # "disk" or "redis"
    location: str
    namespace: str | None = None

    @property
    def redis(self) -> bool:
        return self.backend == "redis"

    def open(self) -> SessionStore:
        return SessionStore(self.location, namespace=self.namespace)

    def describe(self) -> str:
        if self.redis:
            return f"Redis {self.location}, namespace {self.namespace!r}"
        return f"diskcache {self.location}"


@dataclass
class Data:
    where: Where
    turns: list[Turn]
    rng: random.Random
    fresh: Iterator[Content]  # contents no stored turn uses, for new turns

    @property
    def positives(self) -> list[Turn]:
        return [t for t in self.turns if t.score is not None and t.score >= 4]


def build(s: Settings, where: Where, rep: Report) -> tuple[SessionStore, Data]:
    rng = random.Random(s.seed)
    sessions = max(1, s.n // TURNS_PER_SESSION)
    all_contents = contents(rng, s.n + 10_000)
    turns: list[Turn] = []
    for i in range(s.n):
        sid = i % sessions
        turns.append(make_turn(next(all_contents), f"user-{sid % USERS:02d}", f"s{sid:05d}", rng))
    store = where.open()

    log(f"recording {s.n:,} turns ({sessions:,} sessions, {USERS} users) with write-behind")
    flush_total = 0.0
    start = time.perf_counter()
    for i, t in enumerate(turns, 1):
        t.qa_id = store.record(t.session_id, t.question, t.answer, user=t.user).qa_id
        if i % FLUSH_EVERY == 0:
            f0 = time.perf_counter()
            store.flush()
            flush_total += time.perf_counter() - f0
    loop_end = time.perf_counter()
    store.flush()
    end = time.perf_counter()
    flush_total += end - loop_end
    record_s = end - start
    dropped = store._writer.dropped  # the write-behind queue's drop counter
    rep.add(
        f"setup: record {s.n:,} turns (write-behind; flush every {FLUSH_EVERY:,} and at the end)",
        f"{record_s:.1f} s ({s.n / record_s:,.0f} turns/s; {flush_total:.1f} s of it in flush())",
    )

    # Ratings: 30% positive (4 or 5), 10% negative (1 or 2), in random order.
    order = list(range(s.n))
    rng.shuffle(order)
    n_pos, n_neg = round(s.n * POSITIVE_SHARE), round(s.n * NEGATIVE_SHARE)
    for idx in order[:n_pos]:
        turns[idx].score = rng.choice((4, 5))
    for idx in order[n_pos : n_pos + n_neg]:
        turns[idx].score = rng.choice((1, 2))
    rated = [turns[idx] for idx in order[: n_pos + n_neg]]
    rng.shuffle(rated)
    log(f"rating {n_pos:,} turns positive and {n_neg:,} negative with add_feedback")
    t0 = time.perf_counter()
    ok_first = store.add_feedback(
        rated[0].session_id, rated[0].qa_id, None, rated[0].score, user=rated[0].user
    )
    first_s = time.perf_counter() - t0
    failures = 0 if ok_first else 1
    times: list[float] = []
    start = time.perf_counter()
    for t in rated[1:]:
        score = t.score or 0
        c0 = time.perf_counter()
        ok = store.add_feedback(
            t.session_id, t.qa_id, "helpful" if score >= 4 else "wrong", score, user=t.user
        )
        times.append(time.perf_counter() - c0)
        failures += not ok
    feedback_s = time.perf_counter() - start + first_s
    # Ratings never write the index: the first memory query catches up with the
    # store's change feed (on diskcache it rebuilds from a scan once, here).
    t0 = time.perf_counter()
    store.ready_memory()
    build_s = time.perf_counter() - t0
    rep.add(
        "setup: first add_feedback (no index work: the rating and its feed record)",
        f"{first_s:.3f} s",
    )
    rep.add(
        "setup: first ready_memory() (the index is built from a scan of every turn)",
        f"{build_s:.2f} s",
    )
    rep.add(
        f"setup: add_feedback on the other {len(rated) - 1:,} rated turns "
        f"({n_pos:,} positive, {n_neg:,} negative in all)",
        f"{feedback_s - first_s:.1f} s (p50 {ms(statistics.median(times)):.2f} ms, "
        f"p95 {ms(pct(times, 0.95)):.2f} ms per call)",
    )
    stored = sum(1 for _ in store.iter_entries())
    indexed = store.memory.count()
    good = stored == s.n and dropped == 0 and failures == 0 and indexed == len(rated)
    rep.add(
        "setup: turns stored / rated turns indexed / add_feedback failures (check)",
        f"{stored:,} / {indexed:,} / {failures}"
        + (f" ({dropped} dropped by write-behind)" if dropped else ""),
        f"{s.n:,} / {len(rated):,} / 0",
        good,
    )
    rep.data["setup"] = {
        "n": s.n,
        "sessions": sessions,
        "users": USERS,
        "record_s": record_s,
        "record_flush_s": flush_total,
        "write_behind_dropped": dropped,
        "first_add_feedback_s": first_s,
        "add_feedback_s": feedback_s,
        "add_feedback_p50_ms": ms(statistics.median(times)),
        "add_feedback_p95_ms": ms(pct(times, 0.95)),
        "positive": n_pos,
        "negative": n_neg,
        "stored": stored,
        "indexed": indexed,
        "failures": failures,
    }
    return store, Data(where, turns, rng, all_contents)


# -- (a) latency --------------------------------------------------------------------


def bench_latency(
    s: Settings, store: SessionStore, data: Data, rep: Report, profile: str | None
) -> None:
    rng = random.Random(s.seed + 1)
    picks = [rng.choice(data.turns) for _ in range(s.warmup_queries + s.latency_queries)]
    queries = [(t.user, reword(t.content, rng)[0]) for t in picks]
    retrievers = {
        u: PositiveMemoryRetriever(store=store, user=u) for u in {t.user for t in data.turns}
    }
    for user, q in queries[: s.warmup_queries]:
        retrievers[user].invoke(q)
    timed = queries[s.warmup_queries :]
    log(f"(a) latency: {s.latency_rounds} rounds x {len(timed)} queries")

    index = store.memory
    redis = data.where.redis
    feed: list[float] = []  # Redis: ready_memory() alone (the change-stream read), per query

    def run() -> tuple[list[float], list[float], list[int]]:
        """Each query through the retriever, then the same index search alone (paired)."""
        out, alone, counts = [], [], []
        clock = time.perf_counter
        for user, q in timed:
            start = clock()
            docs = retrievers[user].invoke(q)
            out.append(clock() - start)
            counts.append(len(docs))
            # The index search alone, with the arguments search_memory passes (pool 12 for k=4).
            start = clock()
            index.search(q, user=user, limit=12, min_score=4)
            alone.append(clock() - start)
            if redis:
                start = clock()
                store.ready_memory()
                feed.append(clock() - start)
        return out, alone, counts

    # Several rounds over the same queries; the round with the lowest p50 is reported
    # (other processes on the machine only ever add time). Every round is listed too.
    rounds = [run() for _ in range(s.latency_rounds)]
    times, itimes, counts = min(rounds, key=lambda r: statistics.median(r[0]))
    p50, p95 = ms(statistics.median(times)), ms(pct(times, 0.95))
    i50, i95 = ms(statistics.median(itimes)), ms(pct(itimes, 0.95))
    rest = [a - b for a, b in zip(times, itimes, strict=True)]
    if redis:
        positives = len(data.positives)
        full = positives >= REDIS_TARGET_POSITIVES
        rep.add(
            f"(a) Redis: retriever.invoke p50 ({len(timed)} reworded queries, k=4, per user; "
            f"best of {len(rounds)} rounds; {positives:,} positive turns)",
            f"{p50:.2f} ms",
            f"<= {REDIS_P50_MAX_MS:g} ms"
            + ("" if full else f" (info: judged at {REDIS_TARGET_POSITIVES:,} positive)"),
            p50 <= REDIS_P50_MAX_MS,
            info=not full,
        )
        rep.add(
            "(a) Redis: retriever.invoke p95 (same round)",
            f"{p95:.2f} ms",
            f"<= {P95_MAX_MS:g} ms (info)",
            p95 <= P95_MAX_MS,
            info=True,
        )
        rep.add(
            "(a) Redis: the diskcache p50 target, for comparison",
            f"{p50:.2f} ms",
            f"<= {P50_MAX_MS:g} ms (info)",
            p50 <= P50_MAX_MS,
            info=True,
        )
    else:
        rep.add(
            f"(a) retriever.invoke p50 ({len(timed)} reworded queries, k=4, per user; "
            f"best of {len(rounds)} rounds)",
            f"{p50:.2f} ms",
            f"<= {P50_MAX_MS:g} ms",
            p50 <= P50_MAX_MS,
        )
        rep.add(
            "(a) retriever.invoke p95 (same round)",
            f"{p95:.2f} ms",
            f"<= {P95_MAX_MS:g} ms",
            p95 <= P95_MAX_MS,
        )
    rep.add(
        "(a) ... every round's p50 / p95",
        ", ".join(
            f"{ms(statistics.median(r[0])):.1f} / {ms(pct(r[0], 0.95)):.1f} ms" for r in rounds
        ),
    )
    rep.add(
        "(a) ... of which the index search alone (MemoryIndex.search, limit 12), p50 / p95",
        f"{i50:.2f} / {i95:.2f} ms",
    )
    rep.add(
        "(a) ... the rest (re-read hits from the store, Documents, callbacks), p50 / p95",
        f"{ms(statistics.median(rest)):.2f} / {ms(pct(rest, 0.95)):.2f} ms",
    )
    if redis:
        rep.add(
            "(a) ... Redis: ready_memory() alone (read the change stream), p50 / p95, all rounds",
            f"{ms(statistics.median(feed)):.2f} / {ms(pct(feed, 0.95)):.2f} ms",
        )
    rep.add(
        "(a) ... max, mean documents per query",
        f"{ms(max(times)):.1f} ms, {statistics.mean(counts):.2f} docs",
    )
    rep.data["latency"] = {
        "p50_ms": p50,
        "p95_ms": p95,
        "max_ms": ms(max(times)),
        "mean_ms": ms(statistics.mean(times)),
        "index_p50_ms": i50,
        "index_p95_ms": i95,
        "rest_p50_ms": ms(statistics.median(rest)),
        "mean_docs": statistics.mean(counts),
        "rounds_p50_ms": [ms(statistics.median(r[0])) for r in rounds],
        "rounds_p95_ms": [ms(pct(r[0], 0.95)) for r in rounds],
    }
    if redis:
        rep.data["latency"]["ready_memory_p50_ms"] = ms(statistics.median(feed))
        rep.data["latency"]["positives"] = len(data.positives)
    if profile:
        profiled(profile, "a_query_loop", run)


# -- (b) freshness ----------------------------------------------------------------------


def bench_freshness(s: Settings, store: SessionStore, data: Data, rep: Report) -> None:
    rng = random.Random(s.seed + 2)
    log(f"(b) freshness: {s.freshness_trials} trials of rate-then-query")
    seen_up = gone_down = 0
    lags: list[float] = []
    fb: list[float] = []
    for i in range(s.freshness_trials):
        user = f"user-{rng.randrange(USERS):02d}"
        turn = make_turn(next(data.fresh), user, f"fresh-{i % 20}", rng)
        turn.qa_id = store.record(turn.session_id, turn.question, turn.answer, user=user).qa_id
        # The turn's own question: this measures freshness, not ranking ((c) does that).
        query = turn.question
        retriever = PositiveMemoryRetriever(store=store, user=user, k=5)
        c0 = time.perf_counter()
        store.add_feedback(turn.session_id, turn.qa_id, None, 5, user=user)
        c1 = time.perf_counter()
        ids = [d.metadata["qa_id"] for d in retriever.invoke(query)]
        c2 = time.perf_counter()
        fb.append(c1 - c0)
        lags.append(c2 - c1)
        seen_up += turn.qa_id in ids
        if turn.qa_id not in ids:
            deep = PositiveMemoryRetriever(store=store, user=user, k=100).invoke(query)
            log(
                f"  (b) miss: {query!r}; in the top 100: "
                f"{turn.qa_id in [d.metadata['qa_id'] for d in deep]}"
            )
        store.add_feedback(turn.session_id, turn.qa_id, None, 1, user=user)
        ids = [d.metadata["qa_id"] for d in retriever.invoke(query)]
        gone_down += turn.qa_id not in ids
        turn.score = 1
        data.turns.append(turn)
    n = s.freshness_trials
    rep.add(
        "(b) rated 5, in the results of the NEXT query (same process)",
        f"next query: {seen_up}/{n} ({seen_up / n:.0%})",
        "next query, all",
        seen_up == n,
    )
    rep.add(
        "(b) ... add_feedback p50; add_feedback return -> next query's results, p50 / max",
        f"{ms(statistics.median(fb)):.2f} ms; {ms(statistics.median(lags)):.2f} / "
        f"{ms(max(lags)):.2f} ms",
    )
    rep.add(
        "(b) rated down to 1, gone from the next query (check)",
        f"{gone_down}/{n}",
        "all",
        gone_down == n,
    )
    rep.data["freshness"] = {
        "trials": n,
        "seen_next_query": seen_up,
        "gone_after_down": gone_down,
        "add_feedback_p50_ms": ms(statistics.median(fb)),
        "lag_p50_ms": ms(statistics.median(lags)),
        "lag_max_ms": ms(max(lags)),
    }
    if s.cross_process_trials:
        bench_cross_process(s, store, data, rep)


def _rater_proc(location: str, namespace: str | None, inbox: Any, outbox: Any) -> None:
    """Another process: record and rate the turns it is sent, report when rated."""
    store = SessionStore(location, namespace=namespace)
    while True:
        job = inbox.get()
        if job is None:
            break
        session_id, question, answer, user = job
        # wait=True: nothing goes through the write-behind thread here, so close()
        # below never races it (see the report: WriteBehind.close can hang 30 s).
        qa_id = store.record(session_id, question, answer, user=user, wait=True).qa_id
        ok = store.add_feedback(session_id, qa_id, None, 5, user=user)
        outbox.put((qa_id, ok, time.time()))
    store.close()


def bench_cross_process(s: Settings, store: SessionStore, data: Data, rep: Report) -> None:
    rng = random.Random(s.seed + 3)
    ctx = mp.get_context("spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    where = data.where
    proc = ctx.Process(target=_rater_proc, args=(where.location, where.namespace, inbox, outbox))
    proc.start()
    log(f"(b) cross-process: {s.cross_process_trials} trials, another process rates")
    seen = 0
    lags = []
    try:
        for i in range(s.cross_process_trials):
            user = f"user-{rng.randrange(USERS):02d}"
            turn = make_turn(next(data.fresh), user, f"xproc-{i % 10}", rng)
            query = turn.question
            retriever = PositiveMemoryRetriever(store=store, user=user, k=5)
            inbox.put((turn.session_id, turn.question, turn.answer, user))
            qa_id, ok, _rated_at = outbox.get(timeout=120)
            c0 = time.perf_counter()
            ids = [d.metadata["qa_id"] for d in retriever.invoke(query)]
            lags.append(time.perf_counter() - c0)
            seen += ok and qa_id in ids
            turn.qa_id, turn.score = qa_id, 5
            data.turns.append(turn)
    finally:
        inbox.put(None)
        proc.join(timeout=60)
    n = s.cross_process_trials
    rep.add(
        "(b) rated 5 in ANOTHER process, in this process's next query",
        f"next query: {seen}/{n} ({seen / n:.0%}); "
        f"that query p50 {ms(statistics.median(lags)):.2f} ms",
        "next query, all",
        seen == n,
    )
    rep.data["freshness"]["cross_process"] = {
        "trials": n,
        "seen_next_query": seen,
        "query_p50_ms": ms(statistics.median(lags)),
    }


# -- (c) recall ----------------------------------------------------------------------------


def top5(store: SessionStore, user: str, query: str) -> list[str]:
    docs = PositiveMemoryRetriever(store=store, user=user, k=5).invoke(query)
    return [d.metadata["qa_id"] for d in docs]


def ranked(store: SessionStore, user: str, query: str) -> tuple[list[float], set[str]]:
    """A top 5 up to the order of equal scores: its relevances, and the ids above the 5th's."""
    docs = PositiveMemoryRetriever(store=store, user=user, k=5).invoke(query)
    rel = [round(d.metadata["relevance"], 6) for d in docs]
    return rel, {d.metadata["qa_id"] for d, r in zip(docs, rel, strict=True) if r > rel[-1]}


def bench_recall(
    s: Settings, store: SessionStore, data: Data, rep: Report
) -> list[tuple[str, str]]:
    rng = random.Random(s.seed + 4)
    positives = [t for t in data.positives if t.session_id.startswith("s")]
    sample = rng.sample(positives, min(s.recall_queries, len(positives)))
    log(f"(c) recall@5: {len(sample)} reworded queries of positive turns")
    hits = 0
    by_kind: dict[str, list[int]] = {}
    misses: list[dict[str, Any]] = []
    for t in sample:
        query, kinds = reword(t.content, rng)
        got = top5(store, t.user, query)
        hit = t.qa_id in got
        hits += hit
        for k in kinds:
            by_kind.setdefault(k, [0, 0])
            by_kind[k][0] += hit
            by_kind[k][1] += 1
        if not hit and len(misses) < 10:
            misses.append({"query": query, "kinds": kinds, "stored": t.question})
    recall = hits / len(sample)
    rep.add(
        f"(c) recall@5, reworded queries of positive questions ({len(sample)}, owner's scope)",
        f"{recall:.3f} ({hits}/{len(sample)})",
        f">= {RECALL_MIN}",
        recall >= RECALL_MIN,
    )
    rep.add(
        "(c) ... recall@5 by rewording kind (every query has a new stem + >= 1 of these)",
        ", ".join(
            f"{k} {h / n:.3f} (n={n})" for k, (h, n) in sorted(by_kind.items()) if k != "stem"
        ),
    )
    rep.data["recall"] = {
        "recall_at_5": recall,
        "queries": len(sample),
        "by_kind": {k: h / n for k, (h, n) in by_kind.items()},
        "sample_misses": misses,
    }
    for m in misses[:5]:
        log(f"  miss: {m['query']!r} (stored: {m['stored']!r})")
    # Queries to compare before/after the rebuild in (d).
    return [(t.user, reword(t.content, rng)[0]) for t in sample[: s.same_results_queries]]


# -- (d) index build ------------------------------------------------------------------------


def bench_build(
    s: Settings,
    store: SessionStore,
    data: Data,
    rep: Report,
    compare: list[tuple[str, str]],
    profile: str | None,
) -> SessionStore:
    before = [ranked(store, u, q) for u, q in compare]
    rated = sum(1 for t in data.turns if t.score is not None)
    # Both backends keep the index in a file (Redis: one per machine, in the cache
    # directory, which main() points at the benchmark's temp dir): deleting it makes the
    # next query build it from a full scan of the store.
    path = store.memory.path
    store.close()
    removed = 0
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
            removed += 1
    shutil.rmtree(path + ".ann", ignore_errors=True)
    log(f"(d) index build: removed {path} ({removed} files), reopening and querying")
    what = "first query after deleting the index"
    store = data.where.open()
    user, query = compare[0]
    retriever = PositiveMemoryRetriever(store=store, user=user, k=5)
    start = time.perf_counter()
    profiled(profile, "d_first_query_builds_index", lambda: retriever.invoke(query))
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    retriever.invoke(query)
    second_ms = ms(time.perf_counter() - start)
    indexed = store.memory.count()
    after = [ranked(store, u, q) for u, q in compare]
    same = sum(a == b for a, b in zip(before, after, strict=True))
    stored = len(data.turns)
    rep.add(
        f"(d) {what} ({stored:,} turns: scan + build)",
        f"{build_s:.1f} s" + (" (under cProfile)" if profile else ""),
        f"<= {BUILD_MAX_S:g} s",
        build_s <= BUILD_MAX_S,
    )
    rep.add("(d) ... the query after it", f"{second_ms:.2f} ms")
    rep.add(
        "(d) rebuilt index: rated turns indexed; queries with the same top 5, up to ties (check)",
        f"{indexed:,} / {rated:,}; {same}/{len(compare)}",
        "all; all",
        indexed == rated and same == len(compare),
    )
    rep.data["build"] = {
        "seconds": build_s,
        "second_query_ms": second_ms,
        "indexed": indexed,
        "rated": rated,
        "same_top5": same,
        "compared": len(compare),
        "profiled": bool(profile),
    }
    return store


# -- (e) recall by meaning ------------------------------------------------------------------

DATA_DIR = Path(__file__).resolve().parent / "data"
PARAPHRASES = DATA_DIR / "paraphrases.json"
PARAPHRASE_RECALL_MIN = 0.90  # hybrid, with the local model
REWORDED_RECALL_MIN = 0.98  # hybrid, and no lower than BM25 alone
RECALL_USER = "reader"  # every turn of the (e) stores belongs to this one user
EMBED_WAIT_S = 1_800.0  # longest wait for the background embedding of a store
MODES = ("bm25", "hybrid", "vectors")
MODE_NAMES = {"bm25": "BM25 only", "hybrid": "hybrid", "vectors": "vectors only"}
NO_LEXICAL = "n/a (search_memory has no lexical= yet)"

# Distractors: other help-centre questions of the same app, many of them naming things
# the paraphrase queries name (login, inbox, pages, receipts, session, PIN...), so that
# word matching is tempted away from the stored pair the query means.
D_ACTIONS = [
    "rename",
    "pin",
    "hide",
    "reorder",
    "customise",
    "colour-code",
    "filter",
    "sort",
    "preview",
    "resize",
    "star",
    "duplicate",
    "archive",
    "comment on",
    "highlight",
    "translate",
    "bookmark",
    "collapse",
    "search",
    "mention someone in",
]
D_OBJECTS = [
    "the login screen background",
    "a credentials hint",
    "the inbox digest",
    "the premium tier badge",
    "a bank statement attachment",
    "the mobile widget",
    "the computer name in the device list",
    "a coworker's cursor colour",
    "a binder cover image",
    "the pages list",
    "a guest's display name",
    "the URL of a page",
    "a printable document layout",
    "a plain-text snippet",
    "the formatting toolbar",
    "the template gallery",
    "the alerts sound",
    "the pings badge",
    "the information panel",
    "the 2FA prompt",
    "a phone in my device list",
    "an iPad keyboard shortcut",
    "a PC keyboard shortcut",
    "the Samsung home-screen widget",
    "the Gmail add-on",
    "a to-do item",
    "the team chat channel list",
    "a secret key label",
    "the scripts console",
    "a workflow",
    "the checkout page",
    "the Visa card nickname",
    "the tax ID field",
    "the sidebar menu",
    "the black theme accent colour",
    "the text colour of a heading",
    "paragraph spacing",
    "a tick box",
    "a voice memo title",
    "a lecture notes template",
    "a blog post cover image",
    "the activity log",
    "a collaborator's avatar",
    "an external client's folder",
    "a page title",
    "a folder icon",
    "a label",
    "the trash bin view",
    "the history panel",
    "the session list",
    "my profile photo",
    "the space allowance meter",
    "the upload queue",
    "the help widget",
    "the status badge",
    "the organisation logo",
    "the employee directory",
    "the membership card",
    "the receipts list in the billing tab",
    "the PIN pad",
    # ... and as many that name nothing the queries name
    "a table",
    "a programming block",
    "an embedded video",
    "the quick-note hotkey",
    "a web clipper highlight",
    "a callout block",
    "a toggle list",
    "a kanban board",
    "a board column",
    "a calendar view",
    "a gallery view",
    "a footnote",
    "a heading anchor",
    "a table of contents",
    "a backlink",
    "the graph view",
    "a daily journal entry",
    "an agenda template",
    "a recurring task",
    "a due date",
    "a priority flag",
    "a sticky note",
    "a mind map",
    "a whiteboard frame",
    "a scanned photo",
    "a handwritten scan",
    "a bookmark group",
    "the favourites bar",
    "the recents list",
    "a saved search",
    "a smart collection",
    "the outline view",
    "a character count",
    "the reading estimate",
    "a spelling dictionary",
    "a custom emoji",
    "a cover photo",
    "an emoji icon",
    "a divider line",
    "a quote block",
    "a bulleted list",
    "a numbered list",
    "a column layout",
    "a synced block",
    "an inline database",
    "a database property",
    "a calculated property",
    "a rollup column",
    "a relation column",
    "a filter preset",
    "the focus mode",
    "the typewriter scrolling",
    "a zoom level",
    "the ruler",
    "a line height",
    "a highlighter colour",
    "a comment reaction",
    "a pinned comment",
    "a poll",
    "a countdown timer",
]
D_CONTEXTS = [
    "in the web app",
    "on Android",
    "on an iPhone",
    "in the desktop app",
    "for the whole workspace",
    "for a single notebook",
    "in a shared notebook",
    "from the keyboard",
    "in the weekly digest",
    "on a tablet",
    "in compact view",
    "in the sidebar",
    "for new members",
    "in a template",
    "while presenting",
    "in split view",
    "for guests",
    "on a Chromebook",
]
D_ACTION_STEMS = [
    "How do I {v} {o} {c}?",
    "Can I {v} {o} {c}?",
    "Is it possible to {v} {o} {c}?",
    "Where is the option to {v} {o} {c}?",
    "What's the quickest way to {v} {o} {c}?",
    "Why can't I {v} {o} {c}?",
]
D_PROBLEMS = [
    "greyed out",
    "missing",
    "out of date",
    "showing twice",
    "slow to load",
    "in the wrong language",
    "blank",
    "cut off",
]
D_FIXES = [
    "sign out and back in",
    "update to the latest version",
    "ask a workspace admin to check your role",
    "turn it off and on again under Settings > Labs",
    "clear the filter at the top of the list",
    "wait for the next sync (a few seconds) and reload",
]
D_PLANS = ["on every plan", "on Pro and Team plans", "on Team plans only", "in the beta channel"]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def distractors(count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` distinct help-centre (question, answer) pairs, deterministic for ``seed``.

    Three kinds: how-to questions (an action on a thing of the app, somewhere), "why is
    it ..." problems, and "does it work ..." questions; many name what the paraphrase
    queries name, none asks what a stored pair asks.
    """
    rng = random.Random(seed)
    out: dict[str, str] = {}
    while len(out) < count:
        o, c = rng.choice(D_OBJECTS), rng.choice(D_CONTEXTS)
        menu, sub, tip = rng.choice(MENUS), rng.choice(SUBMENUS), rng.choice(TIPS)
        kind = rng.random()
        if kind < 0.6:
            v = rng.choice(D_ACTIONS)
            q = rng.choice(D_ACTION_STEMS).format(v=v, o=o, c=c)
            a = f'To {v} {o} {c}, open {menu} > {sub} and choose "{_cap(v)}". {tip}'
        elif kind < 0.8:
            p = rng.choice(D_PROBLEMS)
            q = f"Why is {o} {p} {c}?"
            a = f"When {o} is {p} {c}, {rng.choice(D_FIXES)}. {tip}"
        else:
            q = rng.choice(("Does {o} work {c}?", "Is {o} available {c}?")).format(o=o, c=c)
            a = (
                f"{_cap(o)} is available {c} {rng.choice(D_PLANS)}; "
                f"find it under {menu} > {sub}. {tip}"
            )
        out.setdefault(q, a)
    return list(out.items())


def load_paraphrases() -> list[dict[str, str]]:
    pairs: list[dict[str, str]] = json.loads(PARAPHRASES.read_text(encoding="utf-8"))["pairs"]
    return pairs


@dataclass
class Embedder:
    """The embedding model of (e): the local model, or a fake one that only exercises code."""

    model: Any
    real: bool
    name: str
    load_s: float
    note: str = ""


def load_embeddings(choice: str) -> Embedder:
    """``feedback_plugin.embeddings.local()`` when it imports (``choice`` "auto" or "local"),
    else ``DeterministicFakeEmbedding(size=384)``: vectors of hashes, no meaning."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    note = ""
    if choice != "fake":
        start = time.perf_counter()
        try:
            from feedback_plugin.embeddings import local  # type: ignore[import-not-found]

            model = local()
            model.embed_query("warm-up")  # the first embedding imports and loads the model
        except Exception as exc:  # ImportError, or the model cannot be loaded
            note = f"the local model is not installed ({type(exc).__name__}: {exc})"
            if choice == "local":
                raise SystemExit(f"--embeddings local: {note}") from exc
            log(f"(e) {note}: fake embeddings, to exercise the code only")
        else:
            load_s = time.perf_counter() - start
            name = next(
                (
                    str(getattr(model, attr))
                    for attr in ("model_name", "model", "name")
                    if isinstance(getattr(model, attr, None), str)
                ),
                "",
            )
            return Embedder(model, True, f"{type(model).__name__}({name})", load_s)
    else:
        note = "--embeddings fake"
    model = DeterministicFakeEmbedding(size=384)
    return Embedder(model, False, "DeterministicFakeEmbedding(size=384)", 0.0, note)


def has_lexical_switch() -> bool:
    from feedback_plugin.memory import search_memory

    return "lexical" in inspect.signature(search_memory).parameters


def memory_store(where: Where, turns: list[tuple[str, str]], prefix: str) -> list[str]:
    """Record ``turns`` (question, answer) for :data:`RECALL_USER`, rate each 5; their qa_ids.

    Recorded in order, so the first turns are the oldest (the paraphrase pairs go first:
    none of them is among the most recent turns a semantic search may also consider).
    """
    store = where.open()
    try:
        ids = []
        for i, (question, answer) in enumerate(turns):
            sid = f"{prefix}{i // TURNS_PER_SESSION:04d}"
            ids.append(store.record(sid, question, answer, user=RECALL_USER).qa_id)
        store.flush()
        for i, qa_id in enumerate(ids):
            sid = f"{prefix}{i // TURNS_PER_SESSION:04d}"
            store.add_feedback(sid, qa_id, "helpful", 5, user=RECALL_USER)
        store.ready_memory()
    finally:
        store.close()
    return ids


@dataclass
class ModeResult:
    recall: float | None = None  # None: the mode is not available
    hits: int = 0
    times: list[float] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        if self.recall is None:
            return {"available": False}
        return {
            "recall_at_5": self.recall,
            "hits": self.hits,
            "p50_ms": ms(statistics.median(self.times)),
            "p95_ms": ms(pct(self.times, 0.95)),
            "sample_misses": self.misses[:5],
        }


def recall_modes(
    store: SessionStore, emb: Any, queries: list[tuple[str, str]], lexical: bool
) -> dict[str, ModeResult]:
    """recall@5 and per-query latency of each mode over ``queries`` ((query, expected qa_id))."""
    from feedback_plugin.memory import search_memory

    calls: dict[str, Callable[[str], Any] | None] = {
        "bm25": lambda q: search_memory(store, q, k=5, user=RECALL_USER),
        "hybrid": lambda q: search_memory(store, q, k=5, user=RECALL_USER, embeddings=emb),
        "vectors": (
            (
                lambda q: search_memory(
                    store, q, k=5, user=RECALL_USER, embeddings=emb, lexical=False
                )
            )
            if lexical
            else None
        ),
    }
    out: dict[str, ModeResult] = {}
    clock = time.perf_counter
    for mode, call in calls.items():
        res = out[mode] = ModeResult()
        if call is None:
            continue
        for query, expected in queries:
            start = clock()
            found = call(query)
            res.times.append(clock() - start)
            hit = expected in [entry.qa_id for entry, _ in found]
            res.hits += hit
            if not hit:
                res.misses.append(query)
        res.recall = res.hits / len(queries)
    return out


def embed_vectors(
    store: SessionStore, emb: Embedder, queries: list[str], texts: list[str], lexical: bool
) -> dict[str, Any]:
    """Get every turn of ``store`` a vector before queries are timed ("index build").

    With a library that embeds remembered turns in the background
    (``store.memory.wait_embedded``), the first hybrid query hands it the model and the
    wait is timed. Without one, vectors are computed on the query path for each query's
    candidates: one untimed pass of every query (hybrid, then vectors only) caches them,
    and embedding every turn's text at once is timed on its own as the cost of a full
    vector index.
    """
    from feedback_plugin.memory import search_memory

    memory = store.memory
    wait = getattr(memory, "wait_embedded", None)
    start = time.perf_counter()
    search_memory(store, queries[0], k=5, user=RECALL_USER, embeddings=emb.model)
    first_s = time.perf_counter() - start
    if callable(wait):
        w0 = time.perf_counter()
        done = bool(wait(EMBED_WAIT_S))
        wait_s = time.perf_counter() - w0
        return {
            "how": "background",
            "first_query_s": first_s,
            "wait_s": wait_s,
            "total_s": first_s + wait_s,
            "complete": done,
            "turns": len(texts),
        }
    w0 = time.perf_counter()
    for q in queries[1:]:
        search_memory(store, q, k=5, user=RECALL_USER, embeddings=emb.model)
    if lexical:
        for q in queries:
            search_memory(store, q, k=5, user=RECALL_USER, embeddings=emb.model, lexical=False)
    warm_s = time.perf_counter() - w0 + first_s
    d0 = time.perf_counter()
    for i in range(0, len(texts), 64):
        emb.model.embed_documents(texts[i : i + 64])
    direct_s = time.perf_counter() - d0
    return {
        "how": "on the query path",
        "first_query_s": first_s,
        "warm_pass_s": warm_s,
        "embed_all_s": direct_s,
        "turns": len(texts),
    }


def describe_build(b: dict[str, Any]) -> str:
    n = b["turns"]
    if b["how"] == "background":
        return (
            f"background embedding of {n:,} turns: {b['total_s']:.1f} s "
            f"({n / max(b['total_s'], 1e-9):,.0f} turns/s; first hybrid query "
            f"{b['first_query_s']:.2f} s, then wait_embedded() {b['wait_s']:.1f} s"
            + ("" if b["complete"] else f", TIMED OUT after {EMBED_WAIT_S:g} s")
            + ")"
        )
    return (
        f"no background embedding (store.memory has no wait_embedded): vectors made on "
        f"the query path, a first pass of every query {b['warm_pass_s']:.1f} s "
        f"(first query {b['first_query_s']:.2f} s); embed_documents of all {n:,} turns "
        f"directly: {b['embed_all_s']:.1f} s ({n / max(b['embed_all_s'], 1e-9):,.0f} turns/s)"
    )


def run_recall_set(
    label: str,
    where: Where,
    turns: list[tuple[str, str]],
    queries: list[tuple[str, int]],
    emb: Embedder,
    lexical: bool,
    rep: Report,
) -> dict[str, Any]:
    """One (e) store: record and rate ``turns``, give them vectors, then every mode."""
    from feedback_plugin.memory.retriever import entry_document

    log(f"(e) {label}: recording and rating {len(turns):,} turns")
    start = time.perf_counter()
    ids = memory_store(where, turns, prefix=f"{label[:4]}-")
    setup_s = time.perf_counter() - start
    store = where.open()
    try:
        texts = [
            entry_document(e, 0.0).page_content
            for e in store.iter_entries()
            if e.user_id == RECALL_USER
        ]
        timed = [(q, ids[i]) for q, i in queries]
        log(f"(e) {label}: vectors for {len(turns):,} turns ({emb.name})")
        build = embed_vectors(store, emb, [q for q, _ in timed], texts, lexical)
        rep.mark_load(f"(e) {label}")
        log(f"(e) {label}: {len(timed)} queries x {len(MODES)} modes")
        modes = recall_modes(store, emb.model, timed, lexical)
    finally:
        store.close()
    return {"setup_s": setup_s, "build": build, "modes": modes, "queries": len(timed)}


def bench_meaning(s: Settings, rep: Report, base: Path, choice: str) -> None:
    """(e) recall@5 by meaning: BM25 only, hybrid and vectors only, side by side."""
    rep.mark_load("(e)")
    emb = load_embeddings(choice)
    lexical = has_lexical_switch()
    fake = "" if emb.real else " (fake embeddings: not a recall figure)"
    log(f"(e) embeddings: {emb.name}" + (f" (loaded in {emb.load_s:.1f} s)" if emb.real else ""))

    pairs = load_paraphrases()
    extra = distractors(s.distractors, s.seed + 5)
    stored = [(p["stored_question"], p["stored_answer"]) for p in pairs]
    para = run_recall_set(
        "paraphrases",
        Where("disk", str(base / "recall-paraphrases")),
        stored + extra,
        [(p["query"], i) for i, p in enumerate(pairs)],
        emb,
        lexical,
        rep,
    )

    rng = random.Random(s.seed + 6)
    rew_turns = [make_turn(c, RECALL_USER, "", rng) for c in contents(rng, s.reworded_turns)]
    picks = rng.sample(range(len(rew_turns)), min(s.reworded_queries, len(rew_turns)))
    rew = run_recall_set(
        "reworded",
        Where("disk", str(base / "recall-reworded")),
        [(t.question, t.answer) for t in rew_turns],
        [(reword(rew_turns[i].content, rng)[0], i) for i in picks],
        emb,
        lexical,
        rep,
    )

    # The query's own embedding, alone (part of every hybrid and vectors-only query).
    qtimes = []
    for p in pairs:
        start = time.perf_counter()
        emb.model.embed_query(p["query"])
        qtimes.append(time.perf_counter() - start)

    def recall_cell(r: ModeResult) -> str:
        return NO_LEXICAL if r.recall is None else f"{r.recall:.3f} ({r.hits})"

    def latency_cell(r: ModeResult) -> str:
        if r.recall is None:
            return "n/a"
        return f"{ms(statistics.median(r.times)):.1f} / {ms(pct(r.times, 0.95)):.1f} ms"

    def cells(res: dict[str, Any], fn: Callable[[ModeResult], str]) -> str:
        return "; ".join(f"{MODE_NAMES[m]} {fn(res['modes'][m])}" for m in MODES)

    n_pairs, n_extra = len(pairs), len(extra)
    rep.add(
        f"(e) embedding model{fake}",
        emb.name
        + (f", loaded in {emb.load_s:.1f} s" if emb.real else "")
        + (f"; {emb.note}" if emb.note else ""),
    )
    rep.add(
        f"(e) paraphrases: {n_pairs} stored pairs + {n_extra:,} distractors, liked (5), "
        "one user: record + rate",
        f"{para['setup_s']:.1f} s",
    )
    rep.add("(e) ... vectors, index build", describe_build(para["build"]))
    hybrid = para["modes"]["hybrid"].recall or 0.0
    rep.add(
        f"(e) paraphrase recall@5 ({para['queries']} queries; no word shared with the "
        f"stored question){fake}",
        cells(para, recall_cell),
        f">= {PARAPHRASE_RECALL_MIN} (hybrid)" + (" (info)" if fake else ""),
        hybrid >= PARAPHRASE_RECALL_MIN,
        info=bool(fake),
    )
    rep.add(
        "(e) ... paraphrase query latency p50 / p95 (query embedding included)",
        cells(para, latency_cell),
    )
    rep.add(
        f"(e) ... embed_query alone ({len(qtimes)} paraphrase queries), p50 / p95",
        f"{ms(statistics.median(qtimes)):.1f} / {ms(pct(qtimes, 0.95)):.1f} ms",
    )
    rep.add(
        f"(e) reworded: {s.reworded_turns:,} liked turns of the (c) kind, one user: record + rate",
        f"{rew['setup_s']:.1f} s",
    )
    rep.add("(e) ... vectors, index build", describe_build(rew["build"]))
    r_bm25 = rew["modes"]["bm25"].recall or 0.0
    r_hybrid = rew["modes"]["hybrid"].recall or 0.0
    rep.add(
        f"(e) reworded recall@5 ({rew['queries']} queries, as in (c)){fake}",
        cells(rew, recall_cell),
        f">= {REWORDED_RECALL_MIN} (hybrid), hybrid >= BM25" + (" (info)" if fake else ""),
        r_hybrid >= REWORDED_RECALL_MIN and r_hybrid >= r_bm25,
        info=bool(fake),
    )
    rep.add(
        "(e) ... reworded query latency p50 / p95 (query embedding included)",
        cells(rew, latency_cell),
    )
    rep.data["meaning"] = {
        "model": emb.name,
        "real_model": emb.real,
        "model_load_s": emb.load_s,
        "note": emb.note,
        "lexical_switch": lexical,
        "embed_query_p50_ms": ms(statistics.median(qtimes)),
        "embed_query_p95_ms": ms(pct(qtimes, 0.95)),
        "side_by_side": side_by_side(para, rew, qtimes, fake),
    }
    for name, res in (("paraphrases", para), ("reworded", rew)):
        rep.data["meaning"][name] = {
            "setup_s": res["setup_s"],
            "build": res["build"],
            "queries": res["queries"],
            "modes": {m: res["modes"][m].summary() for m in MODES},
        }
    for m in para["modes"]["hybrid"].misses[:5]:
        log(f"  (e) hybrid paraphrase miss: {m!r}")


def side_by_side(
    para: dict[str, Any], rew: dict[str, Any], qtimes: list[float], fake: str
) -> list[list[str]]:
    """(e) as a table: a row per measure, a column per mode."""

    def row(name: str, res: dict[str, Any], fn: Callable[[ModeResult], str]) -> list[str]:
        return [name, *(fn(res["modes"][m]) for m in MODES)]

    def rec(r: ModeResult) -> str:
        return "n/a" if r.recall is None else f"{r.recall:.3f}"

    def lat(r: ModeResult) -> str:
        if r.recall is None:
            return "n/a"
        return f"{ms(statistics.median(r.times)):.1f} / {ms(pct(r.times, 0.95)):.1f}"

    q = f"{ms(statistics.median(qtimes)):.1f} / {ms(pct(qtimes, 0.95)):.1f}"
    return [
        [f"(e) recall by meaning{fake}", *(MODE_NAMES[m] for m in MODES)],
        row(f"paraphrases: recall@5 ({para['queries']} queries)", para, rec),
        row("paraphrases: latency p50 / p95, ms", para, lat),
        row(f"reworded: recall@5 ({rew['queries']} queries)", rew, rec),
        row("reworded: latency p50 / p95, ms", rew, lat),
        ["embed_query alone, p50 / p95, ms", "-", q, q],
    ]


def print_side_by_side(table: list[list[str]], lexical: bool) -> None:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print()
    print(line(table[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in table[1:]:
        print(line(r))
    if not lexical:
        print(f"\nvectors only: {NO_LEXICAL}")


# -- main -------------------------------------------------------------------------------------


def print_table(rep: Report, s: Settings, quick: bool, where: Where, only: str | None) -> None:
    import diskcache
    import langchain_core
    import pydantic

    if only == "recall":
        print(
            "\n## feedback_plugin positive-memory benchmark, (e) recall by meaning only"
            f"{' (--quick)' if quick else ''}\n"
        )
    elif only == "postgres":
        print(
            f"\n## feedback_plugin positive-memory benchmark, PostgreSQL only ({s.n:,} turns"
            f"{', --quick' if quick else ''})\n"
        )
    else:
        print(
            f"\n## feedback_plugin positive-memory benchmark ({s.n:,} turns"
            f"{', Redis backend' if where.redis else ''}{', --quick' if quick else ''})\n"
        )
    if where.redis:
        redis_info = rep.data.get("redis", {})
        print(
            f"Backend: Redis {redis_info.get('server', '?')} at {where.location} (redis-py "
            f"{redis_info.get('client', '?')}), namespace {where.namespace!r}"
            + (", kept" if redis_info.get("kept") else ", keys deleted after the run")
            + "; the memory index is a file per machine (SQLite FTS5, built from a scan, "
            "fed by the change stream).\n"
        )
    pg = rep.data.get("postgres", {})
    if pg.get("server"):
        print(
            f"[PostgreSQL] rows: PostgreSQL {pg['server']} at {pg['url']} (psycopg "
            f"{pg['client']}), namespace {pg['namespace']!r}, {pg['n']:,} turns loaded with "
            "import_entries, rows deleted after the run; searched on the server (tsvector, "
            "GIN, ts_rank_cd); hybrid with word-hash embeddings (bench_scale).\n"
        )
    print(
        f"Python {platform.python_version()}, SQLite {__import__('sqlite3').sqlite_version}, "
        f"langchain-core {langchain_core.__version__}, pydantic {pydantic.VERSION}, "
        f"diskcache {diskcache.__version__}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.machine()}; "
        + (
            "(e) stores: diskcache, one user, every turn liked (5).\n"
            if only == "recall"
            else f"{s.n // TURNS_PER_SESSION:,} sessions, {USERS} users, "
            f"{POSITIVE_SHARE:.0%} rated positive, {NEGATIVE_SHARE:.0%} negative.\n"
        )
    )
    if rep.load:
        cpus = os.cpu_count() or 1
        busy = max(v for _, v in rep.load) > cpus
        print(
            "1-minute load average at "
            + ", ".join(f"{w} {v:.1f}" for w, v in rep.load)
            + f" ({cpus} CPUs)"
            + (": the machine was busy, timings are inflated." if busy else ".")
            + "\n"
        )
    print_rows(rep.rows)
    meaning = rep.data.get("meaning")
    if meaning:
        print_side_by_side(meaning["side_by_side"], meaning["lexical_switch"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5,000 turns and fewer queries")
    parser.add_argument("--n", type=int, metavar="N", help="number of stored turns")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--dir", metavar="DIR", help="make the temporary store under DIR")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile the (a) query loop and the (d) build; .prof files in DIR",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    parser.add_argument(
        "--backend",
        choices=("disk", "redis"),
        default="disk",
        help="the store under test: a diskcache directory (default) or Redis",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=REDIS_URL,
        help=f"the Redis server for --backend redis (default {REDIS_URL})",
    )
    parser.add_argument(
        "--only",
        choices=("recall", "postgres"),
        help="run one section alone: recall = (e) recall by meaning (its own small stores), "
        "postgres = the PostgreSQL rows (bench_postgres.py)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=POSTGRES_URL,
        help=f"the PostgreSQL of the [PostgreSQL] rows (default {POSTGRES_URL})",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument(
        "--embeddings",
        choices=("auto", "local", "fake"),
        default="auto",
        help="(e): the local model if installed (auto, default), the local model or fail "
        "(local), or fake vectors that only exercise the code (fake)",
    )
    args = parser.parse_args(argv)
    s = quick_settings() if args.quick else Settings()
    if args.n is not None:
        if args.n < 1_000:
            parser.error("--n must be at least 1000")
        s.n = args.n
    rep = Report()
    if args.backend == "redis":
        why = redis_unreachable(args.redis)
        if why is not None:
            print(f"no Redis at {args.redis} ({why}): nothing to benchmark", flush=True)
            return 0
        where = Where("redis", args.redis, f"bench-{uuid.uuid4().hex}")
        server, client = redis_versions(args.redis)
        rep.data["redis"] = {"url": args.redis, "namespace": where.namespace}
        rep.data["redis"] |= {"server": server, "client": client, "kept": args.keep}
    base = Path(tempfile.mkdtemp(prefix="fp-bench-memory-", dir=args.dir))
    # Redis's memory index file goes to the temp dir, not the user's cache directory.
    os.environ["FEEDBACK_PLUGIN_CACHE_DIR"] = str(base / "cache")
    if args.backend == "disk":
        where = Where("disk", str(base / "store"))
    wall = time.perf_counter()
    try:
        rep.mark_load("start")
        if args.only is None:
            store, data = build(s, where, rep)
            rep.mark_load("(a)")
            bench_latency(s, store, data, rep, args.profile)
            rep.mark_load("(b)")
            bench_freshness(s, store, data, rep)
            compare = bench_recall(s, store, data, rep)
            rep.mark_load("(d)")
            store = bench_build(s, store, data, rep, compare, args.profile)
            store.close()
        if args.only in (None, "postgres") and not args.no_postgres:
            import bench_postgres

            pg = bench_postgres.settings(args.quick, s.n)
            bench_postgres.run(pg, rep, args.postgres, args.redis, base, keep=args.keep)
        if args.only in (None, "recall"):
            bench_meaning(s, rep, base, args.embeddings)
        rep.mark_load("end")
    finally:
        if args.keep:
            log(f"store kept in {where.describe()}")
        else:
            shutil.rmtree(base, ignore_errors=True)
            if where.redis:
                try:
                    log(f"deleted the {drop_redis(where):,} Redis keys of {where.describe()}")
                except Exception as exc:
                    log(f"could not delete the Redis keys of {where.describe()}: {exc}")
    log(f"done in {time.perf_counter() - wall:.0f} s")
    print_table(rep, s, args.quick, where, args.only)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        rep.data["settings"] = dict(s.__dict__)
        rep.data["loadavg_1min"] = dict(rep.load)
        rep.data["backend"] = where.backend
        rep.data["rows"] = [
            {"name": r.name, "value": r.value, "target": r.target, "ok": r.ok, "info": r.info}
            for r in rep.rows
        ]
        rep.data["all_pass"] = all(r.ok for r in rep.rows if r.ok is not None and not r.info)
        out.write_text(json.dumps(rep.data, indent=2, ensure_ascii=False) + "\n")
        log(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
