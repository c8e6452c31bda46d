"""How the demo chat finds a user's liked turns: by words, or by words and meaning.

With embeddings (the local model of :func:`feedback_plugin.embeddings.local`
when the ``semantic`` extra is installed; :func:`.content.embeddings_from_env`)
every memory query of the demo is :func:`search_memory` with them -- which
keeps out turns found by meaning alone that are not close to the question
(``min_similarity``) and answers by words when the query cannot be embedded --
and, while the local model is still loading (the app loads it as it starts, a
few seconds), memory is found by words, so no turn waits for the load.

:class:`SemanticMemoryMiddleware` is ``FeedbackMiddleware`` with that query.
Needs the ``agents`` extra.
"""

from __future__ import annotations

import logging
from typing import Any

from langchain.agents.middleware import ModelRequest
from langchain_core.embeddings import Embeddings

from ...embeddings import LocalEmbeddings
from ...memory.retriever import asearch_memory, search_memory
from ...middleware import FeedbackMiddleware
from ...models import SessionQAEntry
from ...store import SessionStore

__all__ = [
    "SemanticMemoryMiddleware",
    "asearch_by_meaning",
    "search_by_meaning",
]

log = logging.getLogger("feedback_plugin")

Hits = list[tuple[SessionQAEntry, float]]


class SemanticMemoryMiddleware(FeedbackMiddleware):
    """:class:`FeedbackMiddleware` finding memory by meaning with ``embeddings`` once they
    are ready (by words while the local model loads)."""

    def __init__(self, store: SessionStore, *, embeddings: Embeddings, **options: Any) -> None:
        super().__init__(store, embeddings=embeddings, **options)
        self.meaning = embeddings

    def _memories(self, request: ModelRequest[Any], question: str) -> str:
        self.embeddings = _ready(self.meaning)  # the query's model: not one still loading
        return super()._memories(request, question)


def _ready(embeddings: Embeddings | None) -> Embeddings | None:
    """``embeddings``, or ``None`` while the local model is still loading."""
    if isinstance(embeddings, LocalEmbeddings) and not embeddings.loaded:
        log.info("feedback_plugin demo: the local model is loading; memory by words meanwhile")
        return None
    return embeddings


def search_by_meaning(
    store: SessionStore, question: str, embeddings: Embeddings | None, **options: Any
) -> Hits:
    """:func:`search_memory` by words and meaning (by words while ``embeddings`` load or
    when they are ``None``). Raises :class:`StoreError` as ``search_memory`` does."""
    return search_memory(store, question, embeddings=_ready(embeddings), **options)


async def asearch_by_meaning(
    store: SessionStore, question: str, embeddings: Embeddings | None, **options: Any
) -> Hits:
    """:func:`search_by_meaning`, awaited (:func:`asearch_memory`)."""
    return await asearch_memory(store, question, embeddings=_ready(embeddings), **options)
