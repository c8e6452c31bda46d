"""Positive memory: liked turns handed back to the chain.

Names load on first use (PEP 562). The index itself lives with the backends
(:mod:`feedback_plugin.backends.fts`): this package depends on the store,
never the reverse.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..backends.fts import MemoryIndex
    from .examples import PositiveExampleSelector
    from .retriever import PositiveMemoryRetriever, asearch_memory, search_memory

MEMORY_SOURCE = "feedback_plugin.memory"
"""The ``source`` metadata of a Document that is a remembered turn
(:func:`~.retriever.entry_document`: what :class:`PositiveMemoryRetriever` returns and
the ``search_positive_memory`` tool's artifact), next to its ``qa_id`` and
``session_id``. :class:`~feedback_plugin.FeedbackCallbackHandler` counts such
documents, returned inside a run, in the recorded turn's ``memory_ids``; other
retrievers' documents are plain context."""

__all__ = [
    "MEMORY_SOURCE",
    "MemoryIndex",
    "PositiveExampleSelector",
    "PositiveMemoryRetriever",
    "asearch_memory",
    "search_memory",
]

_LAZY = {
    "MemoryIndex": "..backends.fts",
    "PositiveExampleSelector": ".examples",
    "PositiveMemoryRetriever": ".retriever",
    "asearch_memory": ".retriever",
    "search_memory": ".retriever",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
