"""PositiveMemoryRetriever: liked turns handed back to a chain as Documents."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, field_validator

from ..calls import describe
from ..errors import ArgumentTypeError, InvalidArgumentError, StoreError
from ..models import SessionQAEntry, check_id, check_score, check_user
from ..pool import in_thread
from ..ratings import POSITIVE_MIN_SCORE, is_remembered

if TYPE_CHECKING:
    from ..backends.base import Hit, MemorySearch, SessionKey
    from ..store import SessionStore

log = logging.getLogger("feedback_plugin")

__all__ = ["PositiveMemoryRetriever", "asearch_memory", "entry_document", "search_memory"]

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
    moment ago (in any process) never comes back. Raises :class:`StoreError`
    when memory or the store cannot be read.
    """
    steps = _steps(
        query,
        k,
        user,
        session_id,
        min_score,
        metadata_filter,
        since,
        until,
        semantic=embeddings is not None,
    )
    finish = _finish(embeddings, min_relevance, k)
    memory, caught_up = store.memory, False
    reply: Any = None
    while True:
        try:
            kind, arg = steps.send(reply)
        except StopIteration as stop:
            found: list[Found] = stop.value
            break
        if kind == "search":
            reply = _search(memory, arg[0], not caught_up, limit=arg[1], **arg[2])
            caught_up = True
        elif kind == "read":
            reply = store.get_many(arg, user=user)
        else:  # "stale"
            _refresh(store, arg, user)
            reply = None
    if embeddings is None or not found:
        return finish(found, {}, None)
    model, refs = _model(embeddings), [ref for _, _, ref in found]
    cached = memory.vectors(model, refs)
    texts = _unembedded(found, cached)
    if texts:
        new = dict(zip(texts, embeddings.embed_documents(list(texts.values())), strict=True))
        memory.save_vectors(model, new)
        cached.update(new)
    qvec = embeddings.embed_query(steps_query(query)) if query.strip() else None
    return finish(found, cached, qvec)


async def asearch_memory(
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
    """:func:`search_memory`, awaited: the memory index (SQLite) is read in the
    library's worker pool, hits are re-read with ``aget_many`` and embedded with
    ``aembed_*``, so the event loop never waits on I/O."""
    steps = _steps(
        query,
        k,
        user,
        session_id,
        min_score,
        metadata_filter,
        since,
        until,
        semantic=embeddings is not None,
    )
    finish = _finish(embeddings, min_relevance, k)
    memory, caught_up = store.memory, False
    reply: Any = None
    while True:
        try:
            kind, arg = steps.send(reply)
        except StopIteration as stop:
            found: list[Found] = stop.value
            break
        if kind == "search":  # one trip to a worker thread: catch up and search
            reply = await in_thread(_search, memory, arg[0], not caught_up, limit=arg[1], **arg[2])
            caught_up = True
        elif kind == "read":
            reply = await store.aget_many(arg, user=user)
        else:  # "stale"
            await in_thread(_refresh, store, arg, user)
            reply = None
    if embeddings is None or not found:
        return finish(found, {}, None)
    model, refs = _model(embeddings), [ref for _, _, ref in found]
    cached = await in_thread(memory.vectors, model, refs)
    texts = _unembedded(found, cached)
    if texts:
        vectors = await embeddings.aembed_documents(list(texts.values()))
        new = dict(zip(texts, vectors, strict=True))
        await in_thread(memory.save_vectors, model, new)
        cached.update(new)
    qvec = await embeddings.aembed_query(steps_query(query)) if query.strip() else None
    return finish(found, cached, qvec)


_MISSING = object()

Ref = tuple["SessionKey", str]
Found = tuple[SessionQAEntry, float, Ref]
"""A hit the store backs: the entry, its relevance, and its ``(session key, qa_id)``."""

Step = tuple[str, Any]
"""What the search needs next: ``("search", (query, limit, options))`` -> hits,
``("read", refs)`` -> entries, ``("stale", refs)`` -> None."""


def steps_query(query: str) -> str:
    if not isinstance(query, str):
        raise ArgumentTypeError(f"query must be a string, got {type(query).__name__}")
    return query.replace("\x00", " ")


def _steps(
    query: str,
    k: int,
    user: str | None,
    session_id: str | None,
    min_score: int,
    metadata_filter: Mapping[str, Any] | None,
    since: datetime | None,
    until: datetime | None,
    *,
    semantic: bool = False,
) -> Generator[Step, Any, list[Found]]:
    """The search's logic as the steps it asks for (its I/O is the caller's: the sync
    and the async search share this one core)."""
    query = steps_query(query)
    options = {
        "user": user,
        "min_score": min_score,
        "session_id": session_id,
        "since": since,
        "until": until,
        "metadata_filter": metadata_filter,
    }

    def backed(hits: list[Hit]) -> Generator[Step, Any, list[Found]]:
        """The hits the store still backs (re-read in one ``get_many``) that pass the filter."""
        entries = yield ("read", [(hit.key[1], hit.qa_id) for hit in hits])
        found: list[Found] = []
        stale: list[tuple[str, str]] = []
        for hit, entry in zip(hits, entries, strict=True):
            if entry is None or not is_remembered(entry, min_score):
                stale.append((hit.key[1], hit.qa_id))
                continue
            if metadata_filter and any(
                entry.metadata.get(key, _MISSING) != value for key, value in metadata_filter.items()
            ):
                continue
            found.append((entry, hit.relevance, (hit.key, hit.qa_id)))
        if stale:
            yield ("stale", stale)
        return found

    pool = max(k * 3, 10) if metadata_filter is None else max(k * 20, 100)
    if semantic:
        pool = max(pool, SEMANTIC_POOL)
    hits: list[Hit] = yield ("search", (query, pool, options))
    found = yield from backed(hits)
    # The index knows no metadata: while the filter leaves fewer than k of a
    # full pool, widen the pool (else better-matching turns that fail the
    # filter would hide every turn that passes it).
    while metadata_filter and len(found) < k and len(hits) == pool:
        pool *= 4
        hits = yield ("search", (query, pool, options))
        found = yield from backed(hits)
    if semantic:  # semantic candidates: the most recent liked turns too
        seen = {(h.key, h.qa_id) for h in hits}
        recent: list[Hit] = yield ("search", ("", SEMANTIC_POOL, options))
        found += yield from backed([h for h in recent if (h.key, h.qa_id) not in seen])
    return found


def _search(memory: MemorySearch, query: str, catch_up: bool, **options: Any) -> list[Hit]:
    """``memory.search`` (after ``catch_up``: every change made in any process seen),
    its failures raised as the store's (:class:`StoreError`)."""
    try:
        if catch_up:
            memory.catch_up()
        return memory.search(query, **options)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"memory search failed: {describe(exc)}") from exc


def _refresh(store: SessionStore, refs: list[tuple[str, str]], user: str | None) -> None:
    """Bring stale index rows in line with the store."""
    for session_id, qa_id in refs:
        store.refresh_memory(session_id, qa_id, user=user)


def _model(embeddings: Embeddings) -> str:
    """The id vectors of this embedding model are cached under."""
    kind = type(embeddings)
    return f"{kind.__module__}.{kind.__qualname__}:{getattr(embeddings, 'model', '')}"


def _unembedded(found: list[Found], cached: Mapping[Any, Any]) -> dict[Ref, str]:
    """The texts of the candidates with no cached vector, by ``(session key, qa_id)``."""
    return {
        ref: entry_document(entry, 0.0).page_content for entry, _, ref in found if ref not in cached
    }


def _finish(
    embeddings: Embeddings | None, min_relevance: float | None, k: int
) -> Callable[
    [list[Found], Mapping[Any, Any], list[float] | None], list[tuple[SessionQAEntry, float]]
]:
    """The last step: rank (hybrid with vectors, if any), drop the less relevant, keep k."""

    def finish(
        found: list[Found], vectors: Mapping[Any, Any], qvec: list[float] | None
    ) -> list[tuple[SessionQAEntry, float]]:
        if embeddings is not None and found:
            found = _hybrid(found, vectors, qvec)
        if min_relevance is not None:
            found = [f for f in found if f[1] >= min_relevance]
        return [(entry, relevance) for entry, relevance, _ in found[:k]]

    return finish


def _hybrid(
    found: list[Found], vectors: Mapping[Any, Any], qvec: list[float] | None
) -> list[Found]:
    """Re-rank by 0.5 × normalised BM25 + 0.5 × cosine similarity."""
    top = max((rel for _, rel, _ in found), default=0.0) or 1.0
    scored = [
        (entry, 0.5 * rel / top + 0.5 * (_cosine(qvec, vectors[ref]) if qvec else 0.0), ref)
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
        options = self._options(kwargs)
        try:
            found = search_memory(self.store, query, **options)
        except StoreError as exc:
            return self._unavailable(exc)
        return [entry_document(entry, relevance) for entry, relevance in found]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        try:
            found = await asearch_memory(self.store, query, **self._options(kwargs))
        except StoreError as exc:
            return self._unavailable(exc)
        return [entry_document(entry, relevance) for entry, relevance in found]

    def _options(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """This retriever's search options, overridden by the call's."""
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
        return options

    def _unavailable(self, exc: StoreError) -> list[Document]:
        if self.raise_on_error:
            raise exc
        log.error("feedback_plugin: memory unavailable; answering without it", exc_info=exc)
        return []
