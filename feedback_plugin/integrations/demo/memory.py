"""How the demo chat finds a user's liked turns: by words, or by words and meaning.

With embeddings (the local model of :func:`feedback_plugin.embeddings.local`
when the ``semantic`` extra is installed; :func:`.content.embeddings_from_env`)
every memory query of the demo is :func:`search_memory` with them, and:

* a liked turn that only the meaning side found must be close enough to the
  question (:data:`MIN_SIMILARITY`): the nearest vectors of a user's liked
  turns come back whatever they are about, so after 👍 on "How do I reset my
  password?" the question "Can I export my notes as a PDF?" would otherwise
  be shown the password answer;
* while the local model is still loading (the app loads it as it starts, a
  few seconds) memory is found by words, so no turn waits for the load;
* when the embeddings fail, memory is found by words and the error is logged.

:class:`SemanticMemoryMiddleware` is ``FeedbackMiddleware`` with that query.
Needs the ``agents`` extra.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from langchain.agents.middleware import ModelRequest
from langchain_core.embeddings import Embeddings

from ...embeddings import LocalEmbeddings
from ...errors import StoreError
from ...memory.retriever import asearch_memory, entry_document, search_memory
from ...middleware import FeedbackMiddleware, memory_block
from ...models import SessionQAEntry
from ...store import SessionStore

__all__ = [
    "MIN_SIMILARITY",
    "SemanticMemoryMiddleware",
    "asearch_by_meaning",
    "search_by_meaning",
]

log = logging.getLogger("feedback_plugin")

MIN_SIMILARITY = 0.3
"""The cosine similarity between the question and a liked turn (its ``"Question: …
Answer: …"`` text) that a turn found by meaning alone needs. For all-MiniLM-L6-v2 on
the paraphrase set of ``benchmarks/data/paraphrases.json``: 68 of 76 paraphrases
reach it, 2 % of the pairs of different questions do."""

Hits = list[tuple[SessionQAEntry, float]]


class SemanticMemoryMiddleware(FeedbackMiddleware):
    """:class:`FeedbackMiddleware` whose one memory query per turn is
    :func:`search_by_meaning` with ``embeddings``; the turn goes on whatever it finds."""

    def __init__(self, store: SessionStore, *, embeddings: Embeddings, **options: Any) -> None:
        super().__init__(store, **options)
        self.meaning = embeddings
        """The embeddings of the memory query."""

    def _memories(self, request: ModelRequest[Any], question: str) -> str:
        if not question.strip():
            return ""
        _, user, _ = self._where(request.runtime)
        try:
            hits = search_by_meaning(
                self.store, question, self.meaning, k=self.k, user=user, min_score=self.min_score
            )
        except StoreError:
            log.exception("feedback_plugin: memory unavailable; the agent answers without it")
            return ""
        return memory_block([entry for entry, _ in hits])


def _ready(embeddings: Embeddings | None) -> Embeddings | None:
    """``embeddings``, or ``None`` while the local model is still loading."""
    if isinstance(embeddings, LocalEmbeddings) and not embeddings.loaded:
        log.info("feedback_plugin demo: the local model is loading; memory by words meanwhile")
        return None
    return embeddings


def search_by_meaning(
    store: SessionStore, question: str, embeddings: Embeddings | None, **options: Any
) -> Hits:
    """:func:`search_memory` by words and meaning, without the turns found by meaning
    alone that are not close (:data:`MIN_SIMILARITY`); by words when ``embeddings`` is
    ``None``, is loading or fails. Raises :class:`StoreError` as ``search_memory`` does."""
    ready = _ready(embeddings)
    if ready is None:
        return search_memory(store, question, **options)
    try:
        hits = search_memory(store, question, embeddings=ready, **options)
        by_words = search_memory(store, question, **options)
        far = _far(hits, by_words)
        if not far:
            return hits
        vectors = ready.embed_documents([question, *far.values()])
        return _close(hits, far, vectors)
    except StoreError:
        raise
    except Exception:
        log.exception("feedback_plugin demo: memory search by meaning failed; by words instead")
        return search_memory(store, question, **options)


async def asearch_by_meaning(
    store: SessionStore, question: str, embeddings: Embeddings | None, **options: Any
) -> Hits:
    """:func:`search_by_meaning`, awaited (:func:`asearch_memory`, ``aembed_documents``)."""
    ready = _ready(embeddings)
    if ready is None:
        return await asearch_memory(store, question, **options)
    try:
        hits = await asearch_memory(store, question, embeddings=ready, **options)
        by_words = await asearch_memory(store, question, **options)
        far = _far(hits, by_words)
        if not far:
            return hits
        vectors = await ready.aembed_documents([question, *far.values()])
        return _close(hits, far, vectors)
    except StoreError:
        raise
    except Exception:
        log.exception("feedback_plugin demo: memory search by meaning failed; by words instead")
        return await asearch_memory(store, question, **options)


def _key(entry: SessionQAEntry) -> tuple[str, str]:
    return entry.session_id, entry.qa_id


def _far(hits: Hits, by_words: Hits) -> dict[tuple[str, str], str]:
    """The texts of the hits that words did not find (their closeness is to be checked)."""
    words = {_key(entry) for entry, _ in by_words}
    return {
        _key(entry): entry_document(entry, 0.0).page_content
        for entry, _ in hits
        if _key(entry) not in words
    }


def _close(hits: Hits, far: dict[tuple[str, str], str], vectors: list[list[float]]) -> Hits:
    """``hits`` less those of ``far`` whose vector is not close to the question's
    (``vectors``: the question's, then one per text of ``far``)."""
    question, rest = vectors[0], vectors[1:]
    apart = {
        key
        for key, vector in zip(far, rest, strict=True)
        if _cosine(question, vector) < MIN_SIMILARITY
    }
    return [(entry, relevance) for entry, relevance in hits if _key(entry) not in apart]


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
