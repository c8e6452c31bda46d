"""PositiveMemoryRetriever: liked turns handed back to a chain as Documents."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator

from ..errors import ArgumentTypeError, InvalidArgumentError, StoreError
from ..models import SessionQAEntry, check_id, check_score, check_user
from ..ratings import POSITIVE_MIN_SCORE, is_remembered

if TYPE_CHECKING:
    from ..backends.base import Hit, MemorySearch, SessionKey
    from ..store import SessionStore

log = logging.getLogger("feedback_plugin")

__all__ = ["PositiveMemoryRetriever", "entry_document", "search_memory"]

SEMANTIC_POOL = 50
"""Candidates a semantic ranking considers: the best lexical ones plus the most recent."""


def entry_document(entry: SessionQAEntry, relevance: float) -> Document:
    """A remembered turn as a Document: question and (corrected) answer in the text."""
    answer = entry.best_answer
    return Document(
        page_content=f"Question: {entry.question}\nAnswer: {answer}",
        metadata={
            "qa_id": entry.qa_id,
            "session_id": entry.session_id,
            "user_id": entry.user_id,
            "question": entry.question,
            "answer": answer,
            "original_answer": entry.answer,
            "correction": entry.correction,
            "feedback_score": entry.feedback_score,
            "feedback_text": entry.feedback_text,
            "time": entry.time.isoformat(),
            "metadata": entry.metadata,
            "relevance": relevance,
        },
    )


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def search_memory(
    store: SessionStore,
    query: str,
    *,
    k: int = 4,
    user: str | None = None,
    session_id: str | None = None,
    min_score: int = POSITIVE_MIN_SCORE,
    metadata_filter: Mapping[str, Any] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    min_relevance: float | None = None,
    embeddings: Embeddings | None = None,
) -> list[tuple[SessionQAEntry, float]]:
    """The ``k`` remembered turns most relevant to ``query``, with their relevance.

    Every hit is re-read from the store, so a rating lowered or cleared a
    moment ago (in any process) never comes back.
    """
    if not isinstance(query, str):
        raise ArgumentTypeError(f"query must be a string, got {type(query).__name__}")
    query = query.replace("\x00", " ")
    index = store.ready_memory()
    pool = max(k * 3, 10) if metadata_filter is None else max(k * 20, 100)
    if embeddings is not None:
        pool = max(pool, SEMANTIC_POOL)
    search = functools.partial(
        _search,
        store,
        index,
        user=user,
        min_score=min_score,
        session_id=session_id,
        since=since,
        until=until,
        metadata_filter=metadata_filter,
    )
    hits = search(query, limit=pool)
    found = _backed(store, index, hits, user, min_score, metadata_filter)
    # The index knows no metadata: while the filter leaves fewer than k of a
    # full pool, widen the pool (else better-matching turns that fail the
    # filter would hide every turn that passes it).
    while metadata_filter and len(found) < k and len(hits) == pool:
        pool *= 4
        hits = search(query, limit=pool)
        found = _backed(store, index, hits, user, min_score, metadata_filter)
    if embeddings is not None:  # semantic candidates: the most recent liked turns too
        seen = {(h.key, h.qa_id) for h in hits}
        recent = [h for h in search("", limit=SEMANTIC_POOL) if (h.key, h.qa_id) not in seen]
        found += _backed(store, index, recent, user, min_score, metadata_filter)

    if embeddings is not None and found:
        found = _semantic(embeddings, index, query, found)
    if min_relevance is not None:
        found = [f for f in found if f[1] >= min_relevance]
    return [(entry, relevance) for entry, relevance, _ in found[:k]]


_MISSING = object()


def _search(store: SessionStore, index: MemorySearch, query: str, **options: Any) -> list[Hit]:
    """``index.search``, its failures raised as the store's (:class:`StoreError`)."""
    hits: list[Hit] = store._io("memory", functools.partial(index.search, query, **options))
    return hits


Found = tuple[SessionQAEntry, float, "tuple[SessionKey, str]"]
"""A hit the store backs: the entry, its relevance, and its ``(session key, qa_id)``."""


def _backed(
    store: SessionStore,
    index: MemorySearch,
    hits: list[Hit],
    user: str | None,
    min_score: int,
    metadata_filter: Mapping[str, Any] | None,
) -> list[Found]:
    """The hits the store still backs (re-read, so never stale) that pass the filter.

    One ``get_many`` for all of them (a single round trip on Redis).
    """
    entries = store.get_many([(hit.key[1], hit.qa_id) for hit in hits], user=user)
    found: list[Found] = []
    for hit, entry in zip(hits, entries, strict=True):
        if entry is None or not is_remembered(entry, min_score):
            store.refresh_memory(hit.key[1], hit.qa_id, user=user)  # a stale row
            continue
        if metadata_filter and any(
            entry.metadata.get(key, _MISSING) != value for key, value in metadata_filter.items()
        ):
            continue
        found.append((entry, hit.relevance, (hit.key, hit.qa_id)))
    return found


def _semantic(
    embeddings: Embeddings,
    index: MemorySearch,
    query: str,
    found: list[Found],
) -> list[Found]:
    """Re-rank by 0.5 × normalised BM25 + 0.5 × cosine similarity (vectors cached)."""
    kind = type(embeddings)
    model = f"{kind.__module__}.{kind.__qualname__}:{getattr(embeddings, 'model', '')}"
    cached = index.vectors(model, [ref for _, _, ref in found])
    missing = [(entry, ref) for entry, _, ref in found if ref not in cached]
    if missing:
        texts = [entry_document(e, 0.0).page_content for e, _ in missing]
        new = dict(zip((ref for _, ref in missing), embeddings.embed_documents(texts), strict=True))
        index.save_vectors(model, new)
        cached.update(new)
    qvec = embeddings.embed_query(query) if query.strip() else None
    top = max((rel for _, rel, _ in found), default=0.0) or 1.0
    scored = [
        (entry, 0.5 * rel / top + 0.5 * (_cosine(qvec, cached[ref]) if qvec else 0.0), ref)
        for entry, rel, ref in found
    ]
    scored.sort(key=lambda f: f[1], reverse=True)
    return scored


class PositiveMemoryRetriever(BaseRetriever):
    """Positively rated turns, ranked by relevance to the query.

    Returns turns with ``feedback_score >= min_score`` (or a correction) of
    this ``user``, across all their sessions or just ``session_id``. Lowering
    or clearing a rating removes the turn from the very next query.

    >>> import tempfile
    >>> from feedback_plugin import SessionStore
    >>> store = SessionStore(tempfile.mkdtemp())
    >>> t = store.record("s1", "How do I reset my password?", "Settings > Security > Reset.")
    >>> store.thumbs("s1", t.qa_id, up=True)
    True
    >>> docs = PositiveMemoryRetriever(store=store).invoke("password reset")
    >>> docs[0].metadata["answer"]
    'Settings > Security > Reset.'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any = Field(description="the SessionStore to remember from")
    k: int = 4
    user: str | None = None
    session_id: str | None = None
    min_score: int = POSITIVE_MIN_SCORE
    metadata_filter: dict[str, Any] | None = None
    """Only turns whose metadata has these exact values, e.g. ``{"prompt_version": "v2"}``."""
    since: datetime | None = None
    until: datetime | None = None
    min_relevance: float | None = None
    """Drop hits less relevant than this (BM25 relevance, or the hybrid score with embeddings)."""
    embeddings: Embeddings | None = None
    """Optional: rank semantically, hybrid with the lexical score."""
    raise_on_error: bool = False
    """Raise :class:`StoreError` when memory cannot be read. By default the
    retriever logs the error and returns no documents: memory is an aid, and
    the chain answers without it."""

    @field_validator("store")
    @classmethod
    def _is_store(cls, value: Any) -> Any:
        from ..store import SessionStore

        if not isinstance(value, SessionStore):
            raise ArgumentTypeError(f"store must be a SessionStore, got {type(value).__name__}")
        return value

    @field_validator("k")
    @classmethod
    def _positive_k(cls, value: int) -> int:
        if value < 1:
            raise InvalidArgumentError("k must be >= 1")
        return value

    @field_validator("min_score", mode="before")  # before: no lax coercion of True, 4.0, "4"
    @classmethod
    def _score(cls, value: int) -> int:
        checked = check_score(value)
        assert checked is not None
        return checked

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        return check_user(value)

    @field_validator("session_id")
    @classmethod
    def _session(cls, value: str | None) -> str | None:
        return None if value is None else check_id(value)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        options: dict[str, Any] = {
            "k": self.k,
            "user": self.user,
            "session_id": self.session_id,
            "min_score": self.min_score,
            "metadata_filter": self.metadata_filter,
            "since": self.since,
            "until": self.until,
            "min_relevance": self.min_relevance,
            "embeddings": self.embeddings,
        }
        unknown = set(kwargs) - set(options)
        if unknown:
            raise ArgumentTypeError(f"unexpected retriever options: {sorted(unknown)}")
        options.update(kwargs)
        try:
            found = search_memory(self.store, query, **options)
        except StoreError:
            if self.raise_on_error:
                raise
            log.exception("feedback_plugin: memory unavailable; answering without it")
            return []
        return [entry_document(entry, relevance) for entry, relevance in found]
