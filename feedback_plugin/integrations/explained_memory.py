"""A memory search that says how it found each hit: by words, by meaning, or both.

:func:`~feedback_plugin.memory.search_memory` with embeddings fuses two searches
(by words, BM25; by meaning, cosine similarity) into one relevance per hit. The
demo chat and ``GET /api/memory`` tell their user more: how the query was
searched (``"words+meaning"``, or ``"words"``: no embeddings, the model still
loading, or the query could not be embedded) and, for each hit, which half
found it and its cosine similarity to the query.

:func:`explain_memory` (and :func:`aexplain_memory`, awaited) runs
``search_memory`` as usual and, when it searches by meaning too, each half on
its own: by meaning (``lexical=False``; its relevance is the similarity) and by
words (``embeddings=None``), over the pool of candidates each half hands the
fusion (``max(3 k, 10)``). The query is embedded twice (a few milliseconds
with the local model); without embeddings it is one ordinary search.
Only the retriever's public functions are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.embeddings import Embeddings

from ..errors import StoreError
from ..memory.retriever import asearch_memory, search_memory
from ..models import SessionQAEntry
from ..store import SessionStore

__all__ = [
    "BY_MEANING",
    "BY_WORDS",
    "SEARCH_HEADER",
    "ExplainedSearch",
    "FoundBy",
    "FoundMemory",
    "Search",
    "aexplain_memory",
    "explain_memory",
    "found_by_meaning",
]

Search = Literal["words+meaning", "words"]
"""How a query was searched: by words and by meaning (fused), or by words only."""
FoundBy = Literal["words", "meaning", "words+meaning"]
"""Which half of the search found a hit."""
BY_WORDS: Search = "words"
BY_MEANING: Search = "words+meaning"
SEARCH_HEADER = "X-Memory-Search"
"""The response header ``GET /api/memory`` says how it searched in (``Search``)."""


@dataclass(frozen=True)
class FoundMemory:
    """A remembered turn, its relevance, and how it was found."""

    entry: SessionQAEntry
    relevance: float
    """``search_memory``'s relevance: the fused score (0..1) by words and meaning, else BM25."""
    found_by: FoundBy
    similarity: float | None
    """Its cosine similarity to the query, when the meaning half found it."""


@dataclass(frozen=True)
class ExplainedSearch:
    search: Search
    hits: list[FoundMemory]


def found_by_meaning(found_by: str | None) -> bool:
    """Whether a hit ``found_by`` this was found by meaning (alone or with words)."""
    return found_by in ("meaning", "words+meaning")


def _by_words(hits: list[tuple[SessionQAEntry, float]]) -> ExplainedSearch:
    return ExplainedSearch(BY_WORDS, [FoundMemory(e, r, "words", None) for e, r in hits])


def _pool(k: int) -> int:
    """The candidates each half of a fused search hands the fusion."""
    return max(k * 3, 10)


Key = tuple[str, str]


def _key(entry: SessionQAEntry) -> Key:
    return entry.session_id, entry.qa_id


def _explained(
    fused: list[tuple[SessionQAEntry, float]],
    by_meaning: list[tuple[SessionQAEntry, float]],
    by_words: list[tuple[SessionQAEntry, float]],
) -> ExplainedSearch:
    similar = {_key(e): s for e, s in by_meaning}
    worded = {_key(e) for e, _ in by_words}
    hits = []
    for entry, relevance in fused:
        similarity = similar.get(_key(entry))
        in_words = _key(entry) in worded
        found_by: FoundBy = (
            "words" if similarity is None else "words+meaning" if in_words else "meaning"
        )
        hits.append(FoundMemory(entry, relevance, found_by, similarity))
    return ExplainedSearch(BY_MEANING, hits)


def explain_memory(
    store: SessionStore,
    query: str,
    embeddings: Embeddings | None,
    *,
    k: int = 4,
    **options: Any,
) -> ExplainedSearch:
    """:func:`~feedback_plugin.memory.search_memory` (``options``: its other keywords),
    with how the query was searched and how each hit was found.

    Raises :class:`StoreError` as ``search_memory`` does.
    """
    if embeddings is None or not query.strip():  # an empty query: the newest turns, by words
        return _by_words(search_memory(store, query, k=k, **options))
    try:
        by_meaning = search_memory(
            store, query, k=_pool(k), embeddings=embeddings, lexical=False, **options
        )
    except StoreError:  # the query could not be embedded (or the store failed: raised again)
        return _by_words(search_memory(store, query, k=k, **options))
    fused = search_memory(store, query, k=k, embeddings=embeddings, **options)
    by_words = search_memory(store, query, k=_pool(k), **options) if fused else []
    return _explained(fused, by_meaning, by_words)


async def aexplain_memory(
    store: SessionStore,
    query: str,
    embeddings: Embeddings | None,
    *,
    k: int = 4,
    **options: Any,
) -> ExplainedSearch:
    """:func:`explain_memory`, awaited (:func:`~feedback_plugin.memory.asearch_memory`)."""
    if embeddings is None or not query.strip():
        return _by_words(await asearch_memory(store, query, k=k, **options))
    try:
        by_meaning = await asearch_memory(
            store, query, k=_pool(k), embeddings=embeddings, lexical=False, **options
        )
    except StoreError:
        return _by_words(await asearch_memory(store, query, k=k, **options))
    fused = await asearch_memory(store, query, k=k, embeddings=embeddings, **options)
    by_words = await asearch_memory(store, query, k=_pool(k), **options) if fused else []
    return _explained(fused, by_meaning, by_words)
