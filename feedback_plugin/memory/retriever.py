"""PositiveMemoryRetriever: liked turns handed back to a chain as Documents."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator, Mapping
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

from ..backends.base import Hit
from ..calls import describe, parse
from ..errors import ArgumentTypeError, InvalidArgumentError, StoreError
from ..models import SessionQAEntry, check_id, check_score, check_user
from ..pool import beside, in_thread
from ..ratings import POSITIVE_MIN_SCORE, is_remembered
from . import MEMORY_SOURCE
from .fusion import fuse

if TYPE_CHECKING:
    from ..backends.base import MemorySearch, SessionKey
    from ..store import SessionStore

log = logging.getLogger("feedback_plugin")

__all__ = ["PositiveMemoryRetriever", "asearch_memory", "entry_document", "search_memory"]


def entry_document(entry: SessionQAEntry, relevance: float) -> Document:
    """A remembered turn as a Document: question and (corrected) answer in the text;
    its metadata's ``source`` is :data:`~feedback_plugin.memory.MEMORY_SOURCE`."""
    answer = entry.best_answer
    return Document(
        page_content=f"Question: {entry.question}\nAnswer: {answer}",
        metadata={
            "source": MEMORY_SOURCE,
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


MIN_SIMILARITY = 0.3
"""A turn found by meaning counts only at this cosine similarity or more: the nearest
vectors of a question about something else are still the nearest. 0.3 suits
all-MiniLM-L6-v2 (a paraphrase scores about 0.5-0.7, an unrelated question about
0.0-0.2); another model may need another floor (``min_similarity=``)."""


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
    lexical: bool = True,
    min_similarity: float = MIN_SIMILARITY,
) -> list[tuple[SessionQAEntry, float]]:
    """The ``k`` remembered turns most relevant to ``query``, with their relevance.

    By words (BM25) alone, or with ``embeddings`` also by meaning: the
    nearest vectors of the user's liked turns, fused with the word matches by
    reciprocal rank fusion, so a paraphrase finds its turn and an exact
    keyword (an error code, a product name) still wins. ``lexical=False``
    searches by meaning only. A turn found by meaning counts at cosine similarity
    ``min_similarity`` or more. Turns are embedded in the background when they
    become memory (see :mod:`feedback_plugin.backends.vectors`); a query
    embeds only itself.

    Every hit is re-read from the store, so a rating lowered or cleared a
    moment ago (in any process) never comes back. Raises :class:`StoreError`
    when memory or the store cannot be read.
    """
    plan = _Plan(
        query, k, user, session_id, min_score, metadata_filter, since, until, min_similarity
    )
    steps = plan.steps(embeddings, lexical)
    memory, caught_up = store.memory, False
    if embeddings is not None:
        _use(memory, embeddings)
    reply: Any = None
    while True:
        try:
            kind, arg = steps.send(reply)
        except StopIteration as stop:
            found: list[Found] = stop.value
            break
        if kind == "search":
            reply = _search(memory, not caught_up, *arg)
            caught_up = True
        elif kind == "searches":  # by meaning in the meaning lane, by words here, at once
            if not caught_up:
                _catch_up(memory)
                caught_up = True
            meaning = beside(_search, memory, False, *arg[1])
            reply = [_search(memory, False, *arg[0]), meaning.result()]
        elif kind == "embed":
            assert embeddings is not None
            try:
                reply = embeddings.embed_query(arg)
            except Exception as exc:
                _unembedded_query(exc, lexical)
                reply = None
        elif kind == "read":
            reply = store.get_many(arg, user=user)
        else:  # "stale"
            _refresh(store, arg, user)
            reply = None
    return plan.finish(found, min_relevance)


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
    lexical: bool = True,
    min_similarity: float = MIN_SIMILARITY,
) -> list[tuple[SessionQAEntry, float]]:
    """:func:`search_memory`, awaited: the memory index (SQLite) is read in the
    library's worker threads, hits are re-read with ``aget_many`` and the query
    embedded with ``aembed_query``, so the event loop never waits on I/O."""
    plan = _Plan(
        query, k, user, session_id, min_score, metadata_filter, since, until, min_similarity
    )
    steps = plan.steps(embeddings, lexical)
    memory, caught_up = store.memory, False
    if embeddings is not None:
        await in_thread(_use, memory, embeddings)
    reply: Any = None
    while True:
        try:
            kind, arg = steps.send(reply)
        except StopIteration as stop:
            found: list[Found] = stop.value
            break
        if kind == "search":  # one trip to a worker thread: catch up and search
            reply = await in_thread(_search, memory, not caught_up, *arg)
            caught_up = True
        elif kind == "searches":  # the two read threads at once, after one catch-up
            if not caught_up:
                await in_thread(_catch_up, memory)
                caught_up = True
            reply = list(
                await asyncio.gather(*(in_thread(_search, memory, False, *a) for a in arg))
            )
        elif kind == "embed":
            assert embeddings is not None
            try:
                reply = await embeddings.aembed_query(arg)
            except Exception as exc:
                _unembedded_query(exc, lexical)
                reply = None
        elif kind == "read":
            reply = await store.aget_many(arg, user=user)
        else:  # "stale"
            await in_thread(_refresh, store, arg, user)
            reply = None
    return plan.finish(found, min_relevance)


_MISSING = object()

Ref = tuple["SessionKey", str]
Found = tuple[SessionQAEntry, float, Ref]
"""A hit the store backs: the entry, its relevance, and its ``(session key, qa_id)``."""

Step = tuple[str, Any]
"""What the search needs next: ``("search", (query or vector, limit, options, model))``
-> hits, ``("searches", [search, search])`` -> both hit lists (the caller may run them
at once), ``("embed", text)`` -> the query's vector, ``("read", refs)`` -> entries,
``("stale", refs)`` -> None."""


def _checked_query(query: str) -> str:
    if not isinstance(query, str):
        raise ArgumentTypeError(f"query must be a string, got {type(query).__name__}")
    return query.replace("\x00", " ")


class _Plan:
    """The search's logic as the steps it asks for (its I/O is the caller's: the sync
    and the async search share this one core)."""

    def __init__(
        self,
        query: str,
        k: int,
        user: str | None,
        session_id: str | None,
        min_score: int,
        metadata_filter: Mapping[str, Any] | None,
        since: datetime | None,
        until: datetime | None,
        min_similarity: float = 0.0,
    ) -> None:
        self.query = _checked_query(query)
        self.min_similarity = min_similarity
        self.k, self.min_score, self.metadata_filter = k, min_score, metadata_filter
        self.options: dict[str, Any] = {
            "user": user,
            "min_score": min_score,
            "session_id": session_id,
            "since": since,
            "until": until,
        }

    def steps(
        self, embeddings: Embeddings | None, lexical: bool
    ) -> Generator[Step, Any, list[Found]]:
        k, metadata_filter = self.k, self.metadata_filter
        semantic = embeddings is not None and bool(self.query.strip())
        if not lexical and embeddings is None:
            raise InvalidArgumentError("lexical=False searches by meaning: give embeddings")
        words = lexical or not semantic  # a query without words: the most recent turns
        model = _model(embeddings) if embeddings is not None else ""
        qvec = (yield ("embed", self.query)) if semantic else None
        pool = max(k * 3, 10) if metadata_filter is None else max(k * 20, 100)
        while True:
            by_words: list[Hit] = []
            near: list[Hit] = []
            lexical_search = (self.query, pool, self.options, None)
            meaning_search = (qvec, pool, self.options, model)
            if words and qvec is not None:  # at once: the caller may run them side by side
                by_words, near = yield ("searches", [lexical_search, meaning_search])
            elif words:
                by_words = yield ("search", lexical_search)
            elif qvec is not None:
                near = yield ("search", meaning_search)
            by_meaning = [h for h in near if h.relevance >= self.min_similarity]
            legs = [leg for leg, on in ((by_words, words), (by_meaning, qvec is not None)) if on]
            if len(legs) == 1:
                found = yield from self._backed(legs[0])
            else:
                found = yield from self._fused(by_words, by_meaning)
            # The index knows no metadata: while the filter leaves fewer than k of a
            # full pool, widen the pool (else better-matching turns that fail the
            # filter would hide every turn that passes it).
            if not (metadata_filter and len(found) < k and any(len(x) == pool for x in legs)):
                return found
            pool *= 4

    def _backed(self, hits: list[Hit]) -> Generator[Step, Any, list[Found]]:
        """The hits the store still backs (re-read in one ``get_many``, unless the search
        read them itself: :attr:`Hit.payload`) that pass the filter."""
        unread = [(hit.key[1], hit.qa_id) for hit in hits if hit.payload is None]
        read = iter((yield ("read", unread)) if unread else ())
        entries = [next(read) if hit.payload is None else parse(hit.payload) for hit in hits]
        found: list[Found] = []
        stale: list[tuple[str, str]] = []
        wanted = self.metadata_filter
        for hit, entry in zip(hits, entries, strict=True):
            if entry is None or not is_remembered(entry, self.min_score):
                stale.append((hit.key[1], hit.qa_id))
                continue
            if wanted and any(entry.metadata.get(k, _MISSING) != v for k, v in wanted.items()):
                continue
            found.append((entry, hit.relevance, (hit.key, hit.qa_id)))
        if stale:
            yield ("stale", stale)
        return found

    def _fused(
        self, by_words: list[Hit], by_meaning: list[Hit]
    ) -> Generator[Step, Any, list[Found]]:
        """Both legs' hits, re-read once, in the order of :func:`.fusion.fuse`."""
        union = list({(h.key, h.qa_id): h for h in [*by_meaning, *by_words]}.values())
        backed = yield from self._backed(union)
        found = {ref: (entry, ref) for entry, _, ref in backed}
        text = {ref: f"{entry.question}\n{entry.best_answer}" for ref, (entry, _) in found.items()}
        return [
            (found[ref][0], relevance, ref)
            for ref, relevance in fuse(
                self.query,
                [(h.key, h.qa_id) for h in by_words],
                [(h.key, h.qa_id) for h in by_meaning],
                text,
            )
        ]

    def finish(
        self, found: list[Found], min_relevance: float | None
    ) -> list[tuple[SessionQAEntry, float]]:
        if min_relevance is not None:
            found = [f for f in found if f[1] >= min_relevance]
        return [(entry, relevance) for entry, relevance, _ in found[: self.k]]


def _search(
    memory: MemorySearch,
    catch_up: bool,
    what: Any,
    limit: int,
    options: dict[str, Any],
    model: str | None,
) -> list[Hit]:
    """One leg of the search: by words (``what`` a text) or by meaning (a vector of
    ``model``), after ``catch_up`` (every change made in any process seen); its
    failures raised as the store's (:class:`StoreError`)."""
    if catch_up:
        _catch_up(memory)
    try:
        if model is None:
            return memory.search(what, limit=limit, **options)
        return memory.search_by_vector(what, model=model, limit=limit, **options)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"memory search failed: {describe(exc)}") from exc


def _catch_up(memory: MemorySearch) -> None:
    """Have the memory see every change made in any process; failures as the store's."""
    try:
        memory.catch_up()
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"memory search failed: {describe(exc)}") from exc


def _unembedded_query(exc: Exception, lexical: bool) -> None:
    """The query could not be embedded (the model failed): by words alone, logged; or,
    searching by meaning only, the store's error."""
    if not lexical:
        raise StoreError(f"the query could not be embedded: {describe(exc)}") from exc
    log.error("feedback_plugin: query not embedded, memory found by words only: %s", describe(exc))


def _use(memory: MemorySearch, embeddings: Embeddings) -> None:
    """Have the memory keep its turns embedded with this model (idempotent)."""
    try:
        memory.use_embeddings(_model(embeddings), embeddings)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"memory cannot use the embeddings: {describe(exc)}") from exc


def _refresh(store: SessionStore, refs: list[tuple[str, str]], user: str | None) -> None:
    """Bring stale index rows in line with the store."""
    for session_id, qa_id in refs:
        store.refresh_memory(session_id, qa_id, user=user)


def _model(embeddings: Embeddings) -> str:
    """The id vectors of this embedding model are kept under: its class's name and its
    model name. Not the class's module: the same class is ``__main__.X`` in a script
    and ``app.X`` in the worker that imports it, and another id re-embeds every turn
    (for every process of the store)."""
    kind = type(embeddings)
    name = getattr(embeddings, "model", "") or getattr(embeddings, "model_name", "")
    return f"{kind.__qualname__}:{name}"


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
    """Drop hits less relevant than this: the BM25 relevance by words alone; with
    ``embeddings``, the fused score (0..1, 1 for a turn first by words and by meaning that
    holds every word of the query)."""
    min_similarity: float = MIN_SIMILARITY
    """With ``embeddings``: the cosine similarity a turn found by meaning needs."""
    embeddings: Embeddings | None = None
    """Optional: find turns by meaning too (vectors made in the background, fused with
    the word matches by reciprocal rank fusion)."""
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
            "min_similarity": self.min_similarity,
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
