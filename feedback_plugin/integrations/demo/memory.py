"""How the demo chat finds a user's liked turns: by words, or by words and meaning.

With embeddings (the local model of :func:`feedback_plugin.embeddings.local`
when the ``semantic`` extra is installed; :func:`.content.embeddings_from_env`)
every memory query of the demo is :func:`search_memory` with them -- which
keeps out turns found by meaning alone that are not close to the question
(``min_similarity``) and answers by words when the query cannot be embedded --
and, while the local model is still loading (the app loads it as it starts, a
few seconds), memory is found by words, so no turn waits for the load.

:class:`ExplainedMemoryMiddleware` is ``FeedbackMiddleware`` with that query,
whose ``<liked_answers>`` examples say how each was found
(:func:`~feedback_plugin.integrations.explained_memory.explain_memory`)::

    <example qa_id="..." found_by="meaning" similarity="0.50">

``found_by`` is ``meaning`` (meaning alone) or ``words+meaning``; ``similarity``
is the cosine similarity to the question. An example found by words alone has
neither: the block is then ``FeedbackMiddleware``'s own. The offline responder
reuses a liked answer found by meaning from them; the chat's answer reports
them per memory. Needs the ``agents`` extra.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from langchain.agents.middleware import ModelRequest
from langchain_core.embeddings import Embeddings

from ...embeddings import LocalEmbeddings
from ...errors import StoreError
from ...memory.retriever import asearch_memory, search_memory
from ...middleware import FeedbackMiddleware, memory_block
from ...models import SessionQAEntry
from ...store import SessionStore
from ..explained_memory import FoundMemory, explain_memory, found_by_meaning

__all__ = [
    "ExplainedMemoryMiddleware",
    "asearch_by_meaning",
    "explained_block",
    "ready",
    "ready_embeddings",
    "search_by_meaning",
]

log = logging.getLogger("feedback_plugin")

Hits = list[tuple[SessionQAEntry, float]]


class ExplainedMemoryMiddleware(FeedbackMiddleware):
    """:class:`FeedbackMiddleware` finding memory by meaning too with ``embeddings`` once
    they are ready (by words while the local model loads, or with ``None``); each liked
    answer in the model's system message says how it was found (:func:`explained_block`)."""

    def __init__(
        self, store: SessionStore, *, embeddings: Embeddings | None, **options: Any
    ) -> None:
        super().__init__(store, embeddings=embeddings, **options)
        self.meaning = embeddings

    def _memories(self, request: ModelRequest[Any], question: str) -> str:
        if not question.strip():
            return ""
        _, user, _ = self._where(request.runtime)
        try:
            found = explain_memory(
                self.store,
                question,
                ready(self.meaning),  # the query's model: not one still loading
                k=self.k,
                user=user,
                min_score=self.min_score,
            )
        except StoreError:
            log.exception("feedback_plugin: memory unavailable; the agent answers without it")
            return ""
        return explained_block(found.hits)


def explained_block(hits: list[FoundMemory]) -> str:
    """:func:`~feedback_plugin.middleware.memory_block` of ``hits``, each example found by
    meaning with its ``found_by`` and ``similarity`` (two decimals); an example without
    them was found by words alone."""
    block = memory_block([hit.entry for hit in hits])
    for hit in hits:
        if not found_by_meaning(hit.found_by):
            continue
        tag = f'<example qa_id="{hit.entry.qa_id}"'
        attrs = f' found_by="{hit.found_by}"'
        if hit.similarity is not None:
            attrs += f' similarity="{hit.similarity:.2f}"'
        block = block.replace(f"{tag}>\n", f"{tag}{attrs}>\n", 1)
    return block


def ready(embeddings: Embeddings | None) -> Embeddings | None:
    """``embeddings``, or ``None`` while the local model is still loading."""
    if isinstance(embeddings, LocalEmbeddings) and not embeddings.loaded:
        log.info("feedback_plugin demo: the local model is loading; memory by words meanwhile")
        return None
    return embeddings


def ready_embeddings(embeddings: Embeddings) -> Callable[[], Embeddings | None]:
    """What the REST router's memory search takes: ``embeddings`` once they are ready."""
    return lambda: ready(embeddings)


def search_by_meaning(
    store: SessionStore, question: str, embeddings: Embeddings | None, **options: Any
) -> Hits:
    """:func:`search_memory` by words and meaning (by words while ``embeddings`` load or
    when they are ``None``). Raises :class:`StoreError` as ``search_memory`` does."""
    return search_memory(store, question, embeddings=ready(embeddings), **options)


async def asearch_by_meaning(
    store: SessionStore, question: str, embeddings: Embeddings | None, **options: Any
) -> Hits:
    """:func:`search_by_meaning`, awaited (:func:`asearch_memory`)."""
    return await asearch_memory(store, question, embeddings=ready(embeddings), **options)
