"""Which of a query's words a memory search looks for, and over which rows it ranks.

Design
------
FTS5 ranks every row that matches any word of an ``OR`` query. A query of
everyday words ("how do I change my account settings") matches most of a
help desk's rated turns, and ranking them all took 50-400 ms at 100k-1M
turns. Words that most rows hold tell the rows apart least (BM25 gives a
word in more than half the rows no weight at all), so a search looks for
its rarest words:

1. A word's *document frequency* is the number of rows holding it, read from
   the index's ``fts5vocab`` table (``turns_vocab``, type ``row``). The
   vocabulary holds stemmed terms, so each word is first tokenized exactly
   as the index tokenizes text: it goes through a private in-memory FTS5
   table with the same tokenizer (``porter unicode61 remove_diacritics 2``)
   and an ``fts5vocab`` ``instance`` table over it yields its terms
   (``resetting`` -> ``reset``, ``naïve`` -> ``naiv``). A word of several
   terms (``a_b``, searched as a phrase) counts as its rarest term.
2. Words that no row holds cost nothing and are always kept (a count may be
   a minute old: see below). Of the others, the :data:`MAX_KEPT` rarest whose
   frequency is at most :data:`COMMON_FRACTION` of the index's rows are
   kept and ranked over every row they match; more frequent words are
   dropped.
3. When every word is that common, the :data:`COMMON_KEPT` rarest are kept,
   so the query still finds something, and BM25 ranks the last
   :data:`WINDOW` rows indexed that match them, not all of them (rows are
   indexed as they are rated; a rebuild indexes in the store's scan order).
4. If the kept words find fewer hits than asked for, the rest are the last
   rows indexed that match a dropped word, after every hit of the kept
   words, with relevance 0 (as a query without words gets): a search
   returns as many hits as searching for every word would. They are not
   ranked: BM25 would count the rows of every common word again, a cost
   that grows with the whole index, not with the user's rows.

Small indexes (under :data:`MIN_ROWS` rows) are searched for every word over
every row: every query is fast there. Per-user queries keep the owner token
``AND``, so they visit that user's rows only, whatever words are kept.
Frequencies and the row count are cached per process for :data:`STATS_TTL`
seconds (reading the frequency of a word in most rows walks its whole list
of rows); a stale count can only change which words are kept, never what a
kept word matches. BM25 itself counts the rows of every word searched for
on each query: a cost that grows with the index, which the kept words keep
small; a small owner's rows (at most :data:`~.fts_rank.SMALL_OWNER`) are
ranked in Python instead, from the cached counts (:mod:`.fts_rank`).

At scale (a million turns): kept words that still match many rows (more than
:data:`STRICT_ABOVE` in all) first rank only the rows holding all but one of
the :data:`STRICT_WORDS` rarest, then the last :data:`WINDOW` rows of the
rest; a large owner (its token in more than :data:`COMMON_FRACTION` of the
rows: a shared memory) is filtered in SQL, not intersected with its token,
whose list of rows would be read on every query; and with a MATCH the owner
is always a filter on FTS5's rows (``+t.owner``), never the driver of the
join, which would run the MATCH once per row of the owner.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass

from .fts_rank import SMALL_OWNER, WALK_RATIO, rank_rows
from .fts_schema import ANSWER_WEIGHT, QUESTION_WEIGHT, or_query

__all__ = [
    "COMMON_FRACTION",
    "COMMON_KEPT",
    "MAX_KEPT",
    "MIN_ROWS",
    "STATS_TTL",
    "STRICT_ABOVE",
    "STRICT_WORDS",
    "WINDOW",
    "Plan",
    "TermPicker",
    "select_turns",
]

MAX_KEPT = 6
"""Words a query keeps at most (the rarest), besides words no row holds."""

COMMON_FRACTION = 0.2
"""A word held by more than this fraction of the index's rows is common: dropped when
the query has rarer words."""

COMMON_KEPT = 2
"""Words kept (the rarest) when every word of the query is common."""

WINDOW = 2_000
"""Matching rows ranked (the last indexed) when every word of a query is common."""

STRICT_ABOVE = 20_000
"""Rows the kept words match at most (the sum of their frequencies) before a query first
looks only at rows holding all but one of its :data:`STRICT_WORDS` rarest words."""

STRICT_WORDS = 4
"""The rarest kept words the strict first look counts (at least 3 make it worth it)."""

MIN_ROWS = 5_000
"""Indexes with fewer rows are searched for every word of a query."""

STATS_TTL = 60.0
"""Seconds a word's document frequency (and the row count) is reused in a process."""

_CACHE_MAX = 50_000  # words or terms remembered before the caches start over
_TOKENIZER = "porter unicode61 remove_diacritics 2"  # as the index's (fts_schema.SCHEMA)


@dataclass(frozen=True)
class Plan:
    """How one query searches: ``kept`` words first, ranked over every row they match
    (the last :data:`WINDOW` only when ``common``), then ``dropped`` words to fill up."""

    kept: list[str]
    dropped: list[str]
    common: bool = False


class TermPicker:
    """Chooses the words a query searches for (see the module docstring); one per index."""

    def __init__(
        self,
        *,
        min_rows: int = MIN_ROWS,
        max_kept: int = MAX_KEPT,
        common_fraction: float = COMMON_FRACTION,
        common_kept: int = COMMON_KEPT,
        ttl: float = STATS_TTL,
    ) -> None:
        self.min_rows = min_rows
        self.max_kept = max_kept
        self.common_fraction = common_fraction
        self.common_kept = common_kept
        self.ttl = ttl
        self._lock = threading.Lock()  # the tokenizer's connection
        self._tokenizer: sqlite3.Connection | None = None
        self._pid = 0  # the process that opened the tokenizer (never used across a fork)
        self._terms: dict[str, tuple[str, ...]] = {}  # word -> its index terms
        self._frequency: dict[str, tuple[int, float]] = {}  # term -> (rows, read at)
        self._rows: tuple[int, float] = (0, -float("inf"))

    def plan(self, con: sqlite3.Connection, words: list[str]) -> Plan:
        """How to search for ``words`` on the index connection ``con``."""
        rows = self.rows(con)
        if rows < self.min_rows:
            return Plan(words, [])
        return self.choose(words, [self.frequency(con, w) for w in words], rows)

    def choose(self, words: list[str], frequencies: list[int], rows: int) -> Plan:
        """The plan for ``words`` of these frequencies in an index of ``rows`` rows (words
        kept in query order: words no row holds, and the rarest others)."""
        held = sorted((f, i) for i, f in enumerate(frequencies) if f > 0)  # ties: query order
        limit = self.common_fraction * rows
        chosen = [i for f, i in held if f <= limit][: self.max_kept]
        common = not chosen and bool(held)
        if common:
            chosen = [i for _, i in held[: self.common_kept]]
        keep = set(chosen) | {i for i, f in enumerate(frequencies) if f <= 0}
        return Plan(
            [w for i, w in enumerate(words) if i in keep],
            [w for i, w in enumerate(words) if i not in keep],
            common,
        )

    def strict(self, con: sqlite3.Connection, kept: list[str]) -> str | None:
        """For kept words that match many rows: an FTS5 expression matching the rows that
        hold all but one of the :data:`STRICT_WORDS` rarest (``None``: not worth it).

        Every word appears in as many of its clauses as every other, so BM25 over it
        ranks those rows as BM25 over the words would."""
        held = sorted((f, w) for w in kept if (f := self.frequency(con, w)) > 0 and '"' not in w)
        if len(held) < 3 or sum(f for f, _ in held) <= STRICT_ABOVE:
            return None
        rarest = [w for _, w in held[:STRICT_WORDS]]
        clauses = [
            "(" + " AND ".join(f'"{w}"' for w in rarest if w != left) + ")" for left in rarest
        ]
        return " OR ".join(clauses)

    def common_owner(self, con: sqlite3.Connection, token: str) -> bool:
        """Whether the owner token is in more than :data:`COMMON_FRACTION` of the rows: then
        the owner is better filtered in SQL than intersected in FTS5 (which reads the
        token's whole list of rows on every query)."""
        rows = self.rows(con)
        return rows >= self.min_rows and self._term_frequency(con, token) > (
            self.common_fraction * rows
        )

    # -- statistics ----------------------------------------------------------

    def rows(self, con: sqlite3.Connection) -> int:
        """Rows in the index (every namespace), at most ``ttl`` seconds old."""
        count, at = self._rows
        now = time.monotonic()
        if now - at > self.ttl:
            count = int(con.execute("SELECT count(*) FROM turns").fetchone()[0])
            self._rows = (count, now)
        return count

    def frequency(self, con: sqlite3.Connection, word: str) -> int:
        """Rows holding ``word`` (its rarest term); 0 for a word without terms."""
        terms = self.terms(word)
        if not terms:
            return 0
        return min(self._term_frequency(con, term) for term in terms)

    def term_frequency(self, con: sqlite3.Connection, term: str) -> int:
        """Rows holding the index term ``term`` (cached, at most ``ttl`` seconds old)."""
        return self._term_frequency(con, term)

    def _term_frequency(self, con: sqlite3.Connection, term: str) -> int:
        now = time.monotonic()
        cached = self._frequency.get(term)
        if cached is not None and now - cached[1] <= self.ttl:
            return cached[0]
        row = con.execute("SELECT doc FROM turns_vocab WHERE term = ?", (term,)).fetchone()
        count = 0 if row is None else int(row[0])
        if len(self._frequency) >= _CACHE_MAX:
            self._frequency.clear()
        self._frequency[term] = (count, now)
        return count

    def terms(self, word: str) -> tuple[str, ...]:
        """The index's terms for ``word``: what its tokenizer makes of it."""
        found = self._terms.get(word)
        if found is not None:
            return found
        with self._lock:
            con = self._tokenizer
            if con is None or self._pid != os.getpid():
                con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                con.execute(f"CREATE VIRTUAL TABLE words USING fts5(word, tokenize='{_TOKENIZER}')")
                con.execute("CREATE VIRTUAL TABLE word_terms USING fts5vocab(words, instance)")
                self._tokenizer, self._pid = con, os.getpid()
            con.execute("INSERT INTO words(rowid, word) VALUES (1, ?)", (word,))
            try:
                found = tuple(
                    term
                    for (term,) in con.execute(
                        "SELECT term FROM word_terms ORDER BY offset"
                    ).fetchall()
                )
            finally:
                con.execute("DELETE FROM words")
        if len(self._terms) >= _CACHE_MAX:
            self._terms.clear()
        self._terms[word] = found
        return found

    def close(self) -> None:
        with self._lock:
            if self._tokenizer is not None and self._pid == os.getpid():
                self._tokenizer.close()
            self._tokenizer = None


Row = tuple[str, str, float, int]
"""``(session_id, qa_id, relevance, row id)`` of a turn found."""


def select_turns(
    con: sqlite3.Connection,
    picker: TermPicker | None,
    words: list[str],
    owner_tok: str,
    where: list[str],
    args: list[object],
    limit: int,
) -> list[Row]:
    """The best ``limit`` turns for ``words`` among the owner's rows passing ``where``
    (SQL over ``turns t``, with ``args``), as ``picker`` plans (see the module
    docstring; ``None``: every word, ranked over every row it matches); without
    words, the most recent turns."""
    if not words:
        return con.execute(
            f"SELECT t.session_id, t.qa_id, 0.0, t.id FROM turns t"
            f" WHERE {' AND '.join(where)} ORDER BY t.time DESC, t.id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
    plan = Plan(words, []) if picker is None else picker.plan(con, words)
    # With a MATCH, the rows come from FTS5 and the owner is a filter on them: written
    # "+t.owner", or SQLite drives the join from the owner's index and runs the whole
    # MATCH once per row of the owner (25x slower for a user's 40 rows at 1M turns).
    where = ["+t.owner = ?" if w == "t.owner = ?" else w for w in where]

    def matching(rel: str, found: list[Row], window: int | None) -> str:
        sql = (
            f"SELECT t.session_id, t.qa_id, {rel} AS rel, t.id, t.time"
            " FROM turns_fts JOIN turns t ON t.id = turns_fts.rowid"
            f" WHERE turns_fts MATCH ? AND {' AND '.join(where)}"
            + (f" AND t.id NOT IN ({','.join('?' * len(found))})" if found else "")
        )
        if window is None:
            return sql
        # the last rows indexed: FTS5 walks them in rowid order and stops
        return f"SELECT * FROM ({sql} ORDER BY turns_fts.rowid DESC LIMIT {int(window)})"

    # A large owner (a memory everybody shares) is filtered by ``where`` alone.
    by_token = picker is None or not picker.common_owner(con, owner_tok)

    def params(expression: str | None, found: list[Row]) -> list[object]:
        words = f"{{question answer}}:({expression})"
        match = f'tok:"{owner_tok}" AND {words}' if by_token else words
        return [match, *args, *(r[3] for r in found)]

    bm25 = f"-bm25(turns_fts, 0.0, {QUESTION_WEIGHT}, {ANSWER_WEIGHT})"
    ranked = " ORDER BY rel DESC, time DESC, id DESC LIMIT ?"
    # A small owner's rows are few whatever the words match: ranked all at once. (BM25
    # counts the rows of every phrase searched, so the strict look's clauses, which
    # repeat each word, would cost more than they save there.)
    strict = None
    ranked_here: list[Row] | None = None
    if picker is not None and not plan.common and not by_token:
        strict = picker.strict(con, plan.kept)
    found: list[Row] = []
    if strict is not None:  # rows holding all but one of the rarest words first
        found = [r[:4] for r in con.execute(matching(bm25, [], None) + ranked,
                                            (*params(strict, []), limit))]  # fmt: skip
    small = by_token and picker is not None and not plan.common
    if small:  # ranked here when that reads fewer rows than bm25()'s walk would
        assert picker is not None
        owner_rows = picker.term_frequency(con, owner_tok)
        walked = sum(picker.frequency(con, w) for w in plan.kept)
        small = owner_rows <= SMALL_OWNER and owner_rows * WALK_RATIO < walked
    if small and len(found) < limit:  # every matching row of the owner, ranked here
        assert picker is not None
        candidates = con.execute(
            "SELECT t.session_id, t.qa_id, t.id, t.time, t.question, t.answer"
            " FROM turns_fts JOIN turns t ON t.id = turns_fts.rowid"
            f" WHERE turns_fts MATCH ? AND {' AND '.join(where)}",
            params(or_query(plan.kept), []),
        ).fetchall()
        ranked_here = rank_rows(con, picker, plan.kept, candidates, limit)
        if ranked_here is not None:
            found = ranked_here
    if len(found) < limit and not (small and ranked_here is not None):
        window = max(WINDOW, 20 * limit) if plan.common or strict is not None else None
        found += [
            r[:4]
            for r in con.execute(
                matching(bm25, found, window) + ranked,
                (*params(or_query(plan.kept), found), limit - len(found)),
            )
        ]
    if len(found) < limit and plan.dropped:
        found += [
            r[:4]
            for r in con.execute(
                matching("0.0", found, limit - len(found)) + " ORDER BY id DESC",
                params(or_query(plan.dropped), found),
            )
        ]
    return found
