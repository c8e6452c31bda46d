"""BM25 for a small owner's rows, computed here instead of by FTS5.

FTS5's ``bm25()`` counts, on every query, the rows of the whole index that
hold each word searched for (its idf): a walk of each word's full list of
rows. For a user's own memory that walk is most of the query -- at a million
turns, 2-5 ms for everyday words, to rank some forty rows. The counts are in
the index's vocabulary already (``turns_vocab``, read through the
:class:`~.fts_terms.TermPicker`'s cache), and the totals BM25 needs in FTS5's
averages record, so an owner with at most :data:`SMALL_OWNER` rows, when the
words' lists are :data:`WALK_RATIO` times longer than that, has its matching
rows read once (no rank) and scored here, with FTS5's formula:

    score = sum over words of idf * f * (k1 + 1) / (f + k1 * (1 - b + b * D / avgD))

``idf = ln((N - n + 0.5) / (n + 0.5))`` (at least 1e-6), ``f`` the word's
occurrences in the row weighted by column, ``D`` the row's tokens, ``avgD``
the index's mean, ``k1 = 1.2``, ``b = 0.75``. A row's words are tokenized by
the index's own tokenizer (the picker's, cached per word), so scores agree
with ``bm25()`` up to rounding (a test checks the order).
"""

from __future__ import annotations

import math
import re
import sqlite3
from typing import TYPE_CHECKING

from .fts_schema import ANSWER_WEIGHT, QUESTION_WEIGHT

if TYPE_CHECKING:
    from .fts_terms import Row, TermPicker

__all__ = ["SMALL_OWNER", "WALK_RATIO", "averages", "rank_rows"]

SMALL_OWNER = 2_000
"""Rows an owner has at most to be ranked here (more: by FTS5's ``bm25()``)."""

WALK_RATIO = 20
"""...and only when ``bm25()`` would walk this many times more rows (the query words'
counts in the whole index) than the owner has: tokenizing a row here costs about as
much as FTS5 reading twenty entries of a list of rows. In a small index, ``bm25()``."""

K1, B = 1.2, 0.75
_TOKEN = re.compile(r"[^\W_]+")  # unicode61: runs of letters and digits


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """SQLite's varint at ``at``: its value and the position after it."""
    value = 0
    for i in range(8):
        byte = data[at + i]
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, at + i + 1
    return (value << 8) | data[at + 8], at + 9


def averages(con: sqlite3.Connection) -> tuple[int, float] | None:
    """FTS5's rows and mean tokens per row (its averages record); ``None`` if empty."""
    row = con.execute("SELECT block FROM turns_fts_data WHERE id = 1").fetchone()
    if row is None or not row[0]:
        return None
    data = bytes(row[0])
    rows, at = _varint(data, 0)
    tokens = 0
    while at < len(data):
        count, at = _varint(data, at)
        tokens += count
    if rows <= 0:
        return None
    return rows, tokens / rows


def rank_rows(
    con: sqlite3.Connection,
    picker: TermPicker,
    words: list[str],
    candidates: list[tuple[str, str, int, float, str, str]],
    limit: int,
) -> list[Row] | None:
    """The best ``limit`` of ``candidates`` (``session_id, qa_id, id, time, question,
    answer``) for ``words``, each a single index term; ``None`` when this cannot rank
    them as ``bm25()`` would (a word of several terms, an empty index)."""
    stats = averages(con)
    terms = [picker.terms(w) for w in words]
    if stats is None or any(len(t) != 1 for t in terms):
        return None
    total, mean = stats
    idf: dict[str, float] = {}
    for (term,) in terms:
        # (a cached count may be a minute old: more rows than the index holds now)
        n = min(picker.term_frequency(con, term), total)
        idf[term] = max(math.log((total - n + 0.5) / (n + 0.5)), 1e-6)
    scored: list[tuple[float, float, int, str, str]] = []
    for session_id, qa_id, row_id, when, question, answer in candidates:
        freq = dict.fromkeys(idf, 0.0)
        length = 1  # the owner token's column
        for text, weight in ((question, QUESTION_WEIGHT), (answer, ANSWER_WEIGHT)):
            for word in _TOKEN.findall(text):
                for term in picker.terms(word):
                    length += 1
                    if term in freq:
                        freq[term] += weight
        norm = K1 * (1 - B + B * length / mean)
        score = sum(idf[t] * f * (K1 + 1) / (f + norm) for t, f in freq.items() if f)
        scored.append((score, when, row_id, session_id, qa_id))
    scored.sort(key=lambda s: (s[0], s[1], s[2]), reverse=True)
    return [(sid, qa, score, rid) for score, _, rid, sid, qa in scored[:limit]]
