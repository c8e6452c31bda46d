"""Fusion: one ranking from the turns found by words and the turns found by meaning.

Reciprocal rank fusion (RRF), with the words' votes weighed by how much of
the query each turn holds, and the query's identifiers decisive:

* a turn at rank ``r`` by meaning scores ``1 / (RRF_K + r)``;
* a turn at rank ``r`` by words scores
  ``WORDS_WEIGHT * coverage ** COVERAGE_POWER / (RRF_K + r)``, where ``coverage``
  is the weighted share of the query's content words (stop words dropped,
  crudely stemmed) found in the turn's question and answer: a turn holding
  every word of the query outvotes one that is only first by meaning;
* a turn found by words that holds every *identifier* of the query -- a word
  with a digit ("E-4012", "v2"), or in capitals ("SSO", "SAML") -- gets a
  whole first-rank vote more, ``1 / (RRF_K + 1)``: an error code or a
  product name the user typed wins over turns that are only near in meaning.

Why not plain RRF: BM25 ranks *something* first for any query that shares a
word with memory. On paraphrases ("I forgot my login credentials" for "How
do I reset my password?") the words' top hits are turns that share one
everyday word, found both ways, and plain RRF put them above the turn found
by meaning alone: recall@5 on the project's paraphrase set fell from 0.75
(meaning alone) to 0.50. RRF's steps are small (rank 1 and 2 differ by
1/61 - 1/62), so a partial match must weigh much less than a step: a turn
holding a quarter of the query's words gets 0.05 % of a first-rank vote, half
of them 3 %, nine tenths of them about one vote, all of them two.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "COVERAGE_POWER",
    "RRF_K",
    "WORDS_WEIGHT",
    "content_words",
    "coverage",
    "fuse",
    "identifiers",
]

RRF_K = 60
"""Reciprocal rank fusion's constant: a hit at rank r in one list scores 1 / (RRF_K + r)."""

WORDS_WEIGHT = 2.0
"""A word hit holding the whole query counts this many first-rank votes (at its rank)."""

COVERAGE_POWER = 6
"""How steeply a partial word match loses its vote (coverage 0.5: 1/64 of it)."""

_WORD = re.compile(r"\w+")
_IDENTIFIER = re.compile(r"\b(?:\w*\d\w*|[A-Z][A-Z0-9]{2,})\b")

_STOP = """
a about after again all also am an and any are as at be because been before being
but by can could did do does doing done for from get gets got had has have having he
her here hers him his how i if in into is it its just me might more most my no nor
not now of off on once only or other our ours out over own please same she should so
some such than that the their theirs them then there these they this those through
to too under until up us very want was we were what when where which while who whom
why will with would you your yours
"""
STOP_WORDS = frozenset(_STOP.split())
"""Words that say nothing of what a question is about."""


def _stem(word: str) -> str:
    for suffix, longer_than in (("ing", 5), ("ed", 4), ("s", 3)):
        if word.endswith(suffix) and len(word) > longer_than:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> dict[str, float]:
    """The text's content words (lower case, stemmed), each with its weight."""
    out: dict[str, float] = {}
    for word in _WORD.findall(text.lower()):
        if word in STOP_WORDS or (len(word) < 2 and not word.isdigit()):
            continue
        out[_stem(word)] = 3.0 if any(c.isdigit() for c in word) else 1.0
    return out


def identifiers(text: str) -> frozenset[str]:
    """The identifiers ``text`` names (lower case): words with a digit, or in capitals."""
    return frozenset(m.lower() for m in _IDENTIFIER.findall(text) if len(m) >= 2)


def coverage(query: dict[str, float], text: str) -> float:
    """The weighted share of ``query``'s content words found in ``text`` (0..1)."""
    total = sum(query.values())
    if not total:
        return 0.0
    held = content_words(text)
    return sum(w for word, w in query.items() if word in held) / total


def fuse(
    query: str,
    by_words: Sequence[Any],
    by_meaning: Sequence[Any],
    text_of: dict[Any, str],
) -> list[tuple[Any, float]]:
    """``(ref, relevance)`` best first, relevance scaled to 0..1 (1: first in both lists
    and holding every query word; an identifier's vote may add more, capped at 1).

    ``by_words`` and ``by_meaning`` are refs, best first; ``text_of`` the text of each
    ref still remembered (a ref without one is dropped).
    """
    words = content_words(query)
    wanted = identifiers(query)
    first = 1.0 / (RRF_K + 1)
    scores: dict[Any, float] = {}
    for rank, ref in enumerate(by_meaning, 1):
        if ref in text_of:
            scores[ref] = scores.get(ref, 0.0) + 1.0 / (RRF_K + rank)
    for rank, ref in enumerate(by_words, 1):
        if ref in text_of:
            text = text_of[ref]
            vote = WORDS_WEIGHT * coverage(words, text) ** COVERAGE_POWER / (RRF_K + rank)
            if wanted and wanted <= set(_WORD.findall(text.lower())):
                vote += first
            scores[ref] = scores.get(ref, 0.0) + vote
    top = (1 + WORDS_WEIGHT) * first
    order = sorted(scores, key=lambda ref: scores[ref], reverse=True)
    return [(ref, min(1.0, scores[ref] / top)) for ref in order]
